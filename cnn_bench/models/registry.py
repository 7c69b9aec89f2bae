"""One registry for every network: ``@register_model`` on a one-line builder.

A builder takes ``num_classes``, ``in_chans`` and keyword arguments and returns a
plain ``nn.Module``. The registry fails loudly: registering a name twice raises,
and an unknown name lists the closest registered names.

CIFAR and ImageNet versions of one architecture share a name and differ by the
``variant`` keyword (``"cifar"``: 32x32 inputs, ``"imagenet"``: 224x224). A builder
that exists in both takes ``variant``; when the caller does not give it,
``create_model`` picks it from ``image_size`` (at most 64 pixels means CIFAR).
Builders whose layer sizes depend on the resolution (the MLP) name an ``image_size``
parameter, and ``create_model`` passes it on.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

Builder = Callable[..., nn.Module]
Variant = Literal["cifar", "imagenet"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Builder
    family: str
    variants: tuple[str, ...]  # the first is the default when no image size is known


NATIVE_SIZE = {"cifar": 32, "imagenet": 224}
# The networks of the ImageNet papers, each with a CIFAR version (the ImageNet one first).
IMAGENET_AND_CIFAR = ("imagenet", "cifar")


_REGISTRY: dict[str, ModelEntry] = {}


class UnknownModelError(KeyError):
    """A model name that is not registered; the message lists the close matches."""

    def __str__(self) -> str:
        return str(self.args[0])


class ModelArgumentError(TypeError):
    """A keyword the network does not take (``--model.arch_kwargs``)."""


def register_model(
    fn: Builder | None = None,
    *,
    name: str | None = None,
    variants: tuple[str, ...] | None = None,
) -> Builder | Callable[[Builder], Builder]:
    """Register a builder under its function name (or ``name``).

    ``variants`` lists the input regimes it supports; a builder with more than one
    must accept a ``variant`` keyword. Left out, it is the ``VARIANTS`` of the family
    module (given once for all its builders), else CIFAR only. The family is the
    module the builder lives in (``cnn_bench.models.resnet`` -> ``resnet``).
    """

    def wrap(builder: Builder) -> Builder:
        key = name or builder.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered by {_REGISTRY[key].builder}")
        family = builder.__module__.rsplit(".", 1)[-1]
        chosen = variants or getattr(sys.modules[builder.__module__], "VARIANTS", ("cifar",))
        _REGISTRY[key] = ModelEntry(key, builder, family, tuple(chosen))
        return builder

    return wrap(fn) if fn is not None else wrap


def _lookup(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Run `cnn-bench models` to list every model."
        )
    return _REGISTRY[name]


def default_variant(entry: ModelEntry, image_size: int | None) -> str:
    """The variant a network should use for images of ``image_size`` pixels."""
    if image_size is None:
        return entry.variants[0]
    wanted = "cifar" if image_size <= 64 else "imagenet"
    return wanted if wanted in entry.variants else entry.variants[0]


def create_model(
    name: str,
    num_classes: int = 1000,
    in_chans: int = 3,
    image_size: int | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered network by name; ``timm/<name>`` builds an untrained timm model.

    ``image_size`` chooses the default ``variant`` of networks that have two, and reaches
    only the builders that name an ``image_size`` parameter.
    """
    if name.startswith("timm/"):
        import timm

        return timm.create_model(
            name.removeprefix("timm/"),
            pretrained=False,
            num_classes=num_classes,
            in_chans=in_chans,
            **kwargs,
        )
    entry = _lookup(name)
    if len(entry.variants) > 1:
        kwargs.setdefault("variant", default_variant(entry, image_size))
    if image_size is not None and "image_size" in inspect.signature(entry.builder).parameters:
        kwargs.setdefault("image_size", image_size)
    try:
        return entry.builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as err:
        # A keyword the caller gave that the network does not take is the caller's mistake,
        # said in one line; any other TypeError is a bug and keeps its traceback.
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        if unknown is None or unknown[1] not in kwargs:
            raise
        raise ModelArgumentError(
            f"model {name!r} takes no keyword {unknown[1]!r} (--model.arch_kwargs); its "
            f"keywords are those of {err.args[0].split('(')[0].removesuffix('.__init__')}"
            f" ({entry.builder.__module__})"
        ) from None


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_entry(name: str) -> ModelEntry:
    return _lookup(name)
