"""GoogLeNet's auxiliary classifiers and the helper the LightningModule uses."""

from __future__ import annotations

import torch

from cnn_bench.models import AUX_LOSS_WEIGHT, create_model, split_aux
from cnn_bench.models.googlenet import GoogLeNetOutputs


def test_aux_outputs_in_training_only() -> None:
    torch.manual_seed(0)
    model = create_model("googlenet", 5, variant="cifar", aux_logits=True)
    x = torch.randn(2, 3, 32, 32)
    out = model.train()(x)
    assert isinstance(out, GoogLeNetOutputs)
    logits, aux = split_aux(out)
    assert logits is out.logits and len(aux) == 2
    assert all(a.shape == (2, 5) for a in aux)
    assert not torch.allclose(aux[0], aux[1])  # two different classifiers
    model.eval()
    assert isinstance(model(x), torch.Tensor)


def test_aux_default_on_for_imagenet_off_for_cifar() -> None:
    with torch.device("meta"):
        assert create_model("googlenet", image_size=224).aux1 is not None
        assert create_model("googlenet", image_size=32).aux1 is None


def test_split_aux_of_plain_tensor() -> None:
    t = torch.zeros(2, 3)
    main, aux = split_aux(t)
    assert main is t and aux == []


def test_paper_aux_weight() -> None:
    assert AUX_LOSS_WEIGHT == 0.3


def test_ceil_mode_pooling_gives_7x7_at_224() -> None:
    model = create_model("googlenet", 10, aux_logits=False).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        x = model.maxpool1(model.conv1(x))
        assert x.shape[-1] == 56  # floor mode would give 55
        x = model.maxpool2(model.conv3(model.conv2(x)))
        x = model.maxpool3(model.inception3b(model.inception3a(x)))
        assert x.shape[-1] == 14
