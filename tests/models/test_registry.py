"""The registry fails loudly and picks variants from the image size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnn_bench.models import create_model, list_models, model_entry, register_model
from cnn_bench.models.registry import UnknownModelError


def test_registering_a_name_twice_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model(lambda **kw: nn.Identity(), name="resnet18")


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownModelError, match="resnet18") as info:
        create_model("resnet81")
    assert "Did you mean" in str(info.value)
    assert isinstance(info.value, KeyError)


def test_variant_follows_image_size() -> None:
    with torch.device("meta"):
        assert create_model("resnet18", image_size=32).conv1.kernel_size == (3, 3)
        assert create_model("resnet18", image_size=224).conv1.kernel_size == (7, 7)
        # ImageNet networks default to their ImageNet form, as torchvision's.
        assert create_model("resnet18").conv1.kernel_size == (7, 7)


def test_registered_names() -> None:
    expected = {
        "mlp",
        "logreg",
        "lenet5",
        "alexnet",
        "nin",
        "googlenet",
        *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
        *(f"resnet{d}" for d in (18, 34, 50, 101, 152)),
        *(f"resnetv2_{d}" for d in (18, 34, 50, 101, 152)),
        *(f"seresnet{d}" for d in (18, 34, 50, 101, 152)),
        "resnet50_v1",
        "resnext50_32x4d",
        "resnext101_32x8d",
        "resnext29_32x4d",
        "seresnext50_32x4d",
    }
    assert expected <= set(list_models())
    assert list_models("vgg1?_bn") == ["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]


def test_families_and_variants() -> None:
    assert model_entry("seresnext50_32x4d").family == "resnet"
    assert model_entry("resnet50").variants == ("imagenet", "cifar")
    assert model_entry("nin").variants == ("cifar",)
