"""Hostile input: the fault suite."""
