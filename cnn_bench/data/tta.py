"""Test-time augmentation moved beside evaluation, to ``cnn_bench.tta``; this name stays
so that imports and YAML paths written for it keep working."""

from cnn_bench.tta import Augment, TTAConfig, Views, center_crop, num_views, predict, views

__all__ = ["Augment", "TTAConfig", "Views", "center_crop", "num_views", "predict", "views"]
