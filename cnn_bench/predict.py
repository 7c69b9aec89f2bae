"""Classify image files with a trained checkpoint: no data set, no Trainer.

    from cnn_bench.predict import load_classifier, predict_images
    model, data = load_classifier("runs/cnn_bench/<run id>/checkpoints/last.ckpt")
    rows = predict_images(model, data, ["cat.jpg", "dog.png"])
    rows[0]["top"]  # [("cat", 0.81), ("dog", 0.11), ...]

Images are decoded as in training (any format ``cnn-bench data-check`` accepts, the same
header checks and pixel limit), resized and centre-cropped as the test split is
(shorter side to ``eval_resize``, or to the input size, then the centre square), and
normalised with the checkpoint's own mean and std.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms import v2

from cnn_bench.checkpoint import read_checkpoint
from cnn_bench.data import augment
from cnn_bench.data.common import DataError
from cnn_bench.data.decode import UnreadableImage, decode_rgb, is_image_file
from cnn_bench.data.folders import image_files
from cnn_bench.module import ImageClassifier
from cnn_bench.tta import TTAConfig, center_crop
from cnn_bench.tta import predict as tta_predict


def load_classifier(checkpoint: str | Path) -> tuple[ImageClassifier, dict[str, Any]]:
    """The checkpoint's network in eval mode on the CPU, and its data's description."""
    path = Path(checkpoint)
    model = ImageClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    data = read_checkpoint(path, mmap=True).get("data")
    if not data or not data.get("mean"):
        raise DataError(
            f"{path} does not say how its images were normalised (a checkpoint from before "
            "cnn_bench saved it): test it with `cnn-bench test --config <its config.yaml>`"
        )
    if not data.get("classes"):
        data["classes"] = [str(i) for i in range(model.hparams.num_classes)]
    return model.eval(), data


def find_images(inputs: Iterable[str | Path]) -> list[tuple[Path, str | None]]:
    """Image files given directly or found in folders (flat, or one subfolder per class),
    each with the name of the subfolder it lies in (its label, when it is a class)."""
    found: list[tuple[Path, str | None]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            for path in image_files(item):
                parts = path.relative_to(item).parts
                found.append((path, parts[0] if len(parts) > 1 else None))
        elif item.is_file() and is_image_file(item):
            found.append((item, None))
        else:
            raise DataError(f"{item}: not an image file or a folder of images")
    return found


def predict_images(
    model: ImageClassifier,
    data: dict[str, Any],
    paths: Iterable[str | Path],
    top_k: int = 5,
    batch_size: int = 64,
    tta: TTAConfig | None = None,
    members: Sequence[ImageClassifier] = (),
) -> list[dict[str, Any]]:
    """One row per file: ``file``, ``top`` (the ``top_k`` (class, probability) pairs) or,
    for a file that cannot be decoded, ``error``. With ``tta``, each network's
    probabilities are averaged over the test-time views (not ``augment``, which needs the
    data set); with ``members``, over the networks too (an ensemble)."""
    if tta is not None and tta.views == "augment":
        raise DataError(
            "test-time views 'augment' need the data set: use cnn-bench predict --config"
        )
    size = data["image_size"] or model.hparams.image_size
    # Five and ten crops are cut from the evaluation resize, as the test split's are.
    crops = tta is not None and tta.views in ("five_crop", "ten_crop")
    side = (data.get("eval_resize") or size) if crops else size
    resize = v2.Compose([v2.Resize(data.get("eval_resize") or size), v2.CenterCrop(side)])
    mean, std = torch.tensor(data["mean"]), torch.tensor(data["std"])
    classes = data["classes"]
    k = min(top_k, len(classes))
    rows: list[dict[str, Any]] = []
    pending: list[tuple[int, torch.Tensor]] = []  # (row, image) decoded, not yet classified

    def flush() -> None:
        if not pending:
            return
        images = augment.normalize(torch.stack([image for _, image in pending]), mean, std)
        with torch.inference_mode():
            probs = sum(_probabilities(net, images, size, tta) for net in (model, *members))
            probs = probs / (1 + len(members))
        values, indices = probs.topk(k, dim=1)
        for (row, _), p, i in zip(pending, values.tolist(), indices.tolist(), strict=True):
            rows[row]["top"] = [(classes[c], v) for c, v in zip(i, p, strict=True)]
        pending.clear()

    for path in map(Path, paths):
        rows.append({"file": str(path)})
        try:
            pending.append((len(rows) - 1, resize(decode_rgb(path))))
        except (UnreadableImage, OSError) as err:
            rows[-1]["error"] = str(err).splitlines()[0]
        if len(pending) == batch_size:
            flush()
    flush()
    return rows


def _probabilities(
    net: ImageClassifier, images: torch.Tensor, size: int, tta: TTAConfig | None
) -> torch.Tensor:
    if tta is None:
        return net(center_crop(images, size)).float().softmax(dim=1)
    scores = tta_predict(net, images, tta, size)
    return scores if tta.average == "probs" else scores.softmax(dim=1)
