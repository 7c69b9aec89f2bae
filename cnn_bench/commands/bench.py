"""``cnn-bench bench``: measure the template's speed and write it to ``docs/bench``.

Five sections, each a JSON file with the machine it ran on, and one Markdown summary
(``README.md``) of all of them:

1. ``overhead``: ``cnn-bench fit`` against a hand-written loop, interleaved;
2. ``datapath``: images/s of the DataModule against torchvision's PIL pipeline and
   against what ResNet-18 training consumes;
3. ``imagenet``: ``ImageNetDataModule``'s training loader against torchvision's
   ``ImageFolder`` pipeline on a generated tree of ImageNet-sized JPEGs;
4. ``throughput``: per-architecture training and inference images/s under every switch;
5. ``time_to_accuracy``: the fast CIFAR-10 recipe within a wall-clock budget.

``cnn-bench bench gpu [...]`` is ``cnn-bench gpu-check [...]``: the GPU check, which
writes ``docs/bench/gpu.json`` and ``gpu.md`` (``cnn_bench/commands/gpu_check.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from cnn_bench.bench import markdown
from cnn_bench.bench.common import bench_device, machine_info, write_json
from cnn_bench.data.common import DataError, default_data_dir
from cnn_bench.models.registry import NATIVE_SIZE, UnknownModelError, list_models, model_entry

SECTION_NAMES = tuple(markdown.SECTIONS)

# Steps that fit a tiny setting, for checking the tool itself in seconds.
TINY_FIT = (
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.limit_test_batches",
    "1",
    "--trainer.max_epochs",
    "1",
    "--data.batch_size",
    "64",
    "--data.eval_batch_size",
    "200",
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    from cnn_bench.bench.overhead import DEFAULT_CONFIG, LARGE_CONFIG
    from cnn_bench.bench.throughput import DEFAULT_MODELS

    p = argparse.ArgumentParser(prog="cnn-bench bench", description=__doc__.split("\n")[0])
    p.add_argument(
        "sections",
        nargs="*",
        metavar="SECTION",
        help=f"any of {', '.join(SECTION_NAMES)} (default: all)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("docs/bench"),
        help="folder for the JSON files and README.md (default: docs/bench)",
    )
    p.add_argument(
        "--data-dir",
        help="folder holding cifar-10-batches-py (default: $CNN_BENCH_DATA, else ./data)",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="a few steps of everything: checks the tool, measures nothing useful",
    )
    g = p.add_argument_group("overhead")
    g.add_argument("--overhead-config", type=Path, default=DEFAULT_CONFIG)
    g.add_argument("--steps", type=int, default=110, help="training steps per run (default 110)")
    g.add_argument("--warmup", type=int, default=10, help="untimed first steps (default 10)")
    g.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="interleaved pairs, also of the data pipelines (default 5)",
    )
    g.add_argument(
        "--large-config",
        type=Path,
        default=LARGE_CONFIG,
        help="the network with a large step, measured as well (default: ResNet-18)",
    )
    g.add_argument("--large-steps", type=int, default=10, help="its steps per run (default 10)")
    g.add_argument("--large-warmup", type=int, default=2, help="its untimed steps (default 2)")
    g.add_argument("--large-repeats", type=int, default=3, help="its pairs (default 3)")
    g = p.add_argument_group("data path")
    g.add_argument(
        "--consumer",
        default="resnet18",
        help="network whose training speed the data path is compared with",
    )
    g.add_argument("--batch-size", type=int, default=128)
    g = p.add_argument_group("imagenet data path")
    g.add_argument(
        "--imagenet-tree",
        type=Path,
        help="the JPEG tree, written there when missing, reused when present "
        "(default: DATA_DIR/imagenet-like-CLASSESxIMAGES)",
    )
    g.add_argument("--imagenet-classes", type=int, default=10)
    g.add_argument("--imagenet-images", type=int, default=320, help="training images per class")
    g.add_argument("--imagenet-workers", type=int, default=2)
    g.add_argument("--imagenet-batch-size", type=int, default=256)
    g.add_argument("--imagenet-batches", type=int, default=6, help="timed batches per run")
    g = p.add_argument_group("throughput")
    g.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        help="name@size entries (default: %(default)s)",
    )
    g.add_argument("--all", action="store_true", help="every registered model at each native size")
    g.add_argument(
        "--compile",
        action="store_true",
        help="also torch.compile each network (slow to build on a CPU)",
    )
    g.add_argument(
        "--seconds",
        type=float,
        default=1.0,
        help="minimum timed seconds per measurement (default 1)",
    )
    g = p.add_argument_group("time to accuracy")
    g.add_argument(
        "--budget",
        type=float,
        default=600,
        help="training budget in seconds, Lightning's max_time (default 600)",
    )
    g.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="one run per seed, the same planned steps (default: 0)",
    )
    args = p.parse_args(argv)
    unknown = [s for s in args.sections if s not in SECTION_NAMES]
    if unknown:
        p.error(f"unknown section {', '.join(unknown)}; choose from {', '.join(SECTION_NAMES)}")
    args.sections = args.sections or list(SECTION_NAMES)
    if args.all:
        args.models = [
            f"{n}@{NATIVE_SIZE[v]}" for n in list_models() for v in model_entry(n).variants
        ]
    if args.tiny:
        args.steps, args.warmup, args.repeats, args.seconds = 6, 2, 1, 0.05
        args.large_config, args.large_steps, args.large_warmup, args.large_repeats = (
            args.overhead_config,
            4,
            1,
            1,
        )
        args.consumer, args.models, args.budget = "lenet5", ["lenet5@32"], 60
        args.imagenet_classes, args.imagenet_images = 2, 12
        args.imagenet_batch_size, args.imagenet_batches = 8, 2
    return args


def run_section(name: str, args: argparse.Namespace, root: Path) -> dict:
    from cnn_bench.bench import (
        datapath,
        imagenet_path,
        jpeg_tree,
        overhead,
        throughput,
        time_to_accuracy,
    )

    if args.data_dir:
        os.environ["CNN_BENCH_DATA"] = args.data_dir
    if name == "overhead":
        result = overhead.measure(args.overhead_config, args.steps, args.warmup, args.repeats, root)
        result["step_costs"] = overhead.step_costs(
            args.overhead_config, args.steps, args.warmup, root / "profiled"
        )
        result["large"] = overhead.measure(
            args.large_config,
            args.large_steps,
            args.large_warmup,
            args.large_repeats,
            root / "large",
        )
        return result
    if name == "datapath":
        result = datapath.measure(
            args.data_dir, args.batch_size, args.consumer, args.seconds, args.repeats
        )
        # ImageFolder trees decode JPEGs in DataLoader workers: their speed is the
        # decoder's and the disk's, which this in-memory comparison does not measure.
        result["imagenet"] = "not measured here: the imagenet section measures ImageFolder trees"
        return result
    if name == "imagenet":
        data_dir = Path(os.environ.get("CNN_BENCH_DATA") or default_data_dir())
        shape = f"{args.imagenet_classes}x{args.imagenet_images}"
        # The tiny tree is the run's own: it checks the writer too, and leaves nothing behind.
        tree = args.imagenet_tree or (
            root / "tree" if args.tiny else data_dir / f"imagenet-like-{shape}"
        )
        summary = jpeg_tree.write_tree(
            tree, data_dir / "cifar10-jpeg", args.imagenet_classes, args.imagenet_images
        )
        result = imagenet_path.measure(
            tree,
            args.imagenet_batch_size,
            args.imagenet_workers,
            args.imagenet_batches,
            max(args.repeats, 1),
        )
        return {**result, "tree": {**summary, "path": str(tree)}}
    if name == "throughput":
        gpu = bench_device().type == "cuda"
        # Small batches on a CPU keep each measurement to seconds; its speed barely varies.
        batches = {32: 512, 224: 128} if gpu else {32: 32, 224: 8}
        return throughput.measure(args.models, args.compile, args.seconds, batches)
    return time_to_accuracy.measure(
        args.budget, root, TINY_FIT if args.tiny else (), seeds=tuple(args.seeds)
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["gpu"]:
        from cnn_bench.commands import gpu_check

        return gpu_check.main(argv[1:])
    args = parse_args(argv)
    command = " ".join(["cnn-bench", "bench", *argv])
    try:
        with tempfile.TemporaryDirectory(prefix="cnn-bench-") as tmp:
            for name in args.sections:
                machine, start = machine_info(), time.perf_counter()
                print(f"cnn-bench bench: {name} ...", file=sys.stderr, flush=True)
                result = run_section(name, args, Path(tmp) / name)
                result["section_seconds"] = time.perf_counter() - start
                result["command"] = command
                write_json(args.out / f"{name}.json", name, machine, result)
    except (DataError, UnknownModelError) as err:
        print(f"cnn-bench: error: {err}", file=sys.stderr)
        return 2
    summary = markdown.write_summary(args.out)
    print(
        f"cnn-bench bench: wrote {summary} and {', '.join(f'{n}.json' for n in args.sections)}",
        file=sys.stderr,
    )
    return 0
