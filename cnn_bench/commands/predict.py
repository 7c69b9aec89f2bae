"""``cnn-bench predict --ckpt_path X --images PATH ...``: classify your own image files.

PATH is an image file or a folder of them (flat, or one subfolder per class, whose name
is then the true label). Writes a CSV (default ``predictions.csv`` in the checkpoint's
run folder): the file, the true label when its folder names one of the classes, and the
top-k classes with their probabilities. Files that cannot be decoded are named on stderr
and in the CSV, and skipped. (Without ``--images``, ``cnn-bench predict`` predicts the
configured data's test split through Lightning, as ``fit`` and ``test`` run.)
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from cnn_bench.data.common import DataError
from cnn_bench.runs import PREDICTIONS_FILE


def _default_out(checkpoint: Path) -> Path:
    # <run dir>/checkpoints/x.ckpt -> <run dir>/predictions.csv
    parent = checkpoint.parent
    return (parent.parent if parent.name == "checkpoints" else parent) / PREDICTIONS_FILE


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cnn-bench predict", description=__doc__.split("\n")[0])
    p.add_argument("--ckpt_path", type=Path, required=True, help="a cnn-bench checkpoint")
    p.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    p.add_argument("--out", type=Path, help="the CSV to write (default: in the run folder)")
    p.add_argument("--top_k", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument(
        "--tta",
        choices=("none", "flip", "flip_translate", "five_crop", "ten_crop"),
        default="none",
        help="average over test-time views (as --model.tta.views)",
    )
    p.add_argument(
        "--ensemble", nargs="+", default=[], type=Path, help="more checkpoints to average with"
    )
    args = p.parse_args(argv)
    if not args.ckpt_path.is_file():
        print(f"cnn-bench: error: no checkpoint at {args.ckpt_path}", file=sys.stderr)
        return 2
    if args.top_k < 1 or args.batch_size < 1:
        p.error("--top_k and --batch_size must be at least 1")
    from cnn_bench.predict import find_images, load_classifier, predict_images
    from cnn_bench.tta import TTAConfig

    try:
        model, data = load_classifier(args.ckpt_path)
        members = []
        for path in args.ensemble:
            if not path.is_file():
                raise DataError(f"no checkpoint at {path}")
            member, theirs = load_classifier(path)
            if theirs["classes"] != data["classes"]:
                raise DataError(f"{path} was trained on other classes than {args.ckpt_path}")
            members.append(member)
        found = find_images(args.images)
    except DataError as err:
        print(f"cnn-bench: error: {err}", file=sys.stderr)
        return 2
    if not found:
        print(f"cnn-bench: error: no image files in {' '.join(args.images)}", file=sys.stderr)
        return 2
    tta = None if args.tta == "none" else TTAConfig(views=args.tta)
    try:
        rows = predict_images(
            model, data, [p for p, _ in found], args.top_k, args.batch_size, tta, members
        )
    except DataError as err:
        print(f"cnn-bench: error: {err}", file=sys.stderr)
        return 2
    classes = set(data["classes"])
    k = min(args.top_k, len(data["classes"]))
    out = args.out or _default_out(args.ckpt_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    correct = labelled = 0
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        header = ["file", "label"]
        header += [f"{what}{i}" for i in range(1, k + 1) for what in ("class", "prob")]
        writer.writerow([*header, "error"])
        for row, (_, folder) in zip(rows, found, strict=True):
            label = folder if folder in classes else ""
            if "error" in row:
                print(f"cnn-bench predict: skipped {row['file']}: {row['error']}", file=sys.stderr)
                writer.writerow([row["file"], label, *[""] * (2 * k), row["error"]])
                continue
            top = [x for name, prob in row["top"] for x in (name, f"{prob:.4f}")]
            writer.writerow([row["file"], label, *top, ""])
            if label:
                labelled += 1
                correct += row["top"][0][0] == label
    summary = f"cnn-bench predict: {len(rows)} images -> {out}"
    if labelled:
        summary += f"; top-1 {100 * correct / labelled:.2f}% on the {labelled} labelled by folder"
    print(summary, file=sys.stderr)
    return 0
