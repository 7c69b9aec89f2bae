"""Start a network from trained weights: a cnn_bench checkpoint, a state-dict file,
torchvision's or timm's published weights (from their local caches: nothing is
downloaded when the machine is offline).

The registered networks have torchvision's parameter names, so a torchvision ResNet-18
state dict loads into ``resnet18`` key for key. When the number of classes differs, the
classifier head (the layers with ``num_classes`` outputs) keeps its fresh
initialisation and everything else is loaded; any other difference is an error that
lists the keys.

``embed:<source>`` loads a shallower network of the ResNet family into a deeper one
(ResNet-18 into ResNet-34): each stage's first blocks get the source's weights and the
blocks it does not have become the identity, their residual branch ending in a zero
(the last batch norm's scale and shift, or the last convolution of a pre-activation
block), so the deeper network computes exactly what the shallower one did.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import torch
from torch import Tensor, nn


class PretrainedError(ValueError):
    """Weights that cannot be loaded into the network; the message says why."""


def head_modules(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The layers that output class scores: linear layers with ``num_classes`` outputs
    (GoogLeNet's auxiliary classifiers too), else, for an all-convolutional network
    (NiN), its last convolution with ``num_classes`` output channels."""
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    heads = [m for m in linear if m.out_features == num_classes]
    if heads:
        return heads
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return [m for m in convs if m.out_channels == num_classes][-1:]


def head_parameter_names(model: nn.Module, num_classes: int) -> set[str]:
    heads = {id(m) for m in head_modules(model, num_classes)}
    return {
        f"{name}.{p}" if name else p
        for name, module in model.named_modules()
        if id(module) in heads
        for p, _ in module.named_parameters(recurse=False)
    }


def _read(source: str) -> dict[str, Tensor]:
    kind, _, name = source.partition(":")
    if kind == "torchvision" and name:
        from torchvision.models import get_weight

        try:
            weights = get_weight(name)
        except (ValueError, KeyError) as err:
            raise PretrainedError(
                f"unknown torchvision weights {name!r} (e.g. ResNet18_Weights.IMAGENET1K_V1)"
            ) from err
        try:  # quiet: torch announces a download on stderr even when it then fails
            with contextlib.redirect_stderr(io.StringIO()):
                return weights.get_state_dict(progress=False)
        except OSError as err:  # offline, and not in the torch hub cache
            raise PretrainedError(
                f"torchvision weights {name} are not in the local cache "
                f"({torch.hub.get_dir()}/checkpoints) and cannot be downloaded here: "
                "download them where there is internet, or give the file's path"
            ) from err
    if kind == "timm" and name:
        import timm

        try:
            return timm.create_model(name, pretrained=True).state_dict()
        except Exception as err:  # timm raises many kinds when offline or unknown
            reason = (str(err).splitlines() or [type(err).__name__])[0]
            raise PretrainedError(f"timm weights {name}: {reason}") from err
    path = Path(source)
    if not path.is_file():
        raise PretrainedError(
            f"{source}: no such file (give a checkpoint or state-dict file, "
            "torchvision:<weights name> or timm:<model name>)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise PretrainedError(
            f"{path}: not a readable weights file ({type(err).__name__})"
        ) from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        # A cnn_bench checkpoint: the network's weights are under "model."
        state = {
            k.removeprefix("model."): v
            for k, v in state["state_dict"].items()
            if k.startswith("model.")
        }
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PretrainedError(f"{path}: not a state dict or a cnn_bench checkpoint")
    return state


def _listed(keys: list[str], limit: int = 4) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > limit else ""
    return ", ".join(sorted(keys)[:limit]) + more


def _added_blocks(own: set[str], given: set[str]) -> set[str]:
    """The residual blocks (``layer<i>.<j>``) of ``own`` keys that ``given`` lacks entirely
    and that come after every block ``given`` has in their stage."""

    def block(key: str) -> tuple[str, int] | None:
        m = re.match(r"(layer\d+)\.(\d+)\.", key)
        return (m.group(1), int(m.group(2))) if m else None

    depth: dict[str, int] = {}
    for key in given:
        if b := block(key):
            depth[b[0]] = max(depth.get(b[0], -1), b[1])
    return {
        f"{b[0]}.{b[1]}"
        for key in own - given
        if (b := block(key)) is not None and b[0] in depth and b[1] > depth[b[0]]
    }


def _make_identity(model: nn.Module, names: set[str]) -> None:
    for name in names:
        block = model.get_submodule(name)
        tail = block.residual_tail()
        nn.init.zeros_(tail.weight)
        if getattr(tail, "bias", None) is not None:
            nn.init.zeros_(tail.bias)


def load_pretrained(model: nn.Module, source: str, num_classes: int) -> list[str]:
    """Load ``source`` into ``model`` in place; returns the head parameters that kept their
    fresh initialisation because the source has another number of classes."""
    embed = source.startswith("embed:")
    source = source.removeprefix("embed:")
    state = _read(source)
    own = model.state_dict()
    added = _added_blocks(set(own), set(state)) if embed else set()
    if embed and not added and set(state) <= set(own):
        raise PretrainedError(f"embed:{source} has every block of this network: nothing to embed")
    if added and not all(hasattr(model.get_submodule(b), "residual_tail") for b in added):
        raise PretrainedError("embed: works for the ResNet family (residual blocks) only")
    own = {k: v for k, v in own.items() if ".".join(k.split(".")[:2]) not in added}
    head = head_parameter_names(model, num_classes)
    resized = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    fresh = [k for k in resized if k in head and own[k].shape[1:] == state[k].shape[1:]]
    problems = []
    if missing := sorted(own.keys() - state.keys()):
        problems.append(f"missing {_listed(missing)}")
    if unexpected := sorted(state.keys() - own.keys()):
        problems.append(f"unexpected {_listed(unexpected)}")
    if shapes := sorted(set(resized) - set(fresh)):
        problems.append(f"other shapes for {_listed(shapes)}")
    if problems:
        raise PretrainedError(f"{source} does not fit this network: {'; '.join(problems)}")
    model.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)
    _make_identity(model, added)
    return sorted(fresh)
