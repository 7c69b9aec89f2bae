"""An ImageFolder tree read as files and as litdata chunks: training images/s and reads.

``python -m cnn_bench.bench.litdata TREE CHUNKS [--out docs/bench]`` writes CHUNKS from
TREE with ``cnn-bench data-optimize`` when it holds none, then times one training epoch
of the ImageFolder DataModule in each format, interleaved (folder, litdata, folder, ...),
with the same workers, batch and transforms: the images/s, and what the loader's workers
read (``/proc/<pid>/io``: bytes through read calls and the number of calls) against the
bytes and files the epoch stands on. The results go to ``OUT/litdata.json`` and
``OUT/litdata.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from cnn_bench.bench.common import cpu_seconds, load_average, machine_info, write_json
from cnn_bench.commands import data_optimize
from cnn_bench.data.imagefolder import ImageNetDataModule
from cnn_bench.data.streaming import MANIFEST
from cnn_bench.files import write_text_atomic


def _io(pid: int | str) -> dict[str, int]:
    """A process's read counters: bytes through read calls (``rchar``, page cache
    included), read calls (``syscr``) and bytes fetched from the storage (``read_bytes``)."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return {key: int(fields[key]) for key in ("rchar", "syscr", "read_bytes")}


def _epoch(dm: ImageNetDataModule) -> dict[str, Any]:
    """One training epoch through the DataModule's loader: images/s and the reads of the
    main process and of its workers (read before they exit: they persist)."""
    loader = dm.train_dataloader()
    before, cpu_before = _io("self"), cpu_seconds()
    start, images = time.perf_counter(), 0
    for batch, _ in loader:
        images += len(batch)
    seconds = time.perf_counter() - start
    pids = [w.pid for w in loader._iterator._workers]
    workers = [_io(pid) for pid in pids]
    after = _io("self")
    reads = {key: after[key] - before[key] + sum(w[key] for w in workers) for key in after}
    # The workers started with the epoch: all their CPU time is the epoch's.
    cpu = cpu_seconds(set(pids)) - cpu_before
    del loader
    return {
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "cpu_seconds": cpu,
        "cpu_ms_per_1000_images": 1e6 * cpu / images,
        **reads,
    }


def _module(data_dir: Path, folder: str, fmt: str, args: argparse.Namespace) -> Any:
    torch.manual_seed(0)
    dm = ImageNetDataModule(
        data_dir=str(data_dir),
        folder=folder,
        test_split=args.test_split,
        image_size=args.image_size,
        eval_resize=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.workers,
        pin_memory=False,
        format=fmt,
    )
    dm.setup()
    return dm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnn_bench.bench.litdata", description=__doc__)
    parser.add_argument("tree", type=Path, help="an ImageFolder tree (train/ and the test split)")
    parser.add_argument("chunks", type=Path, help="its chunks (written here when missing)")
    parser.add_argument("--test-split", default="val")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    args = parser.parse_args(argv)
    machine = machine_info()
    tree, chunks = args.tree.resolve(), args.chunks.resolve()
    optimize_seconds = None
    if not (chunks / MANIFEST).is_file():
        start = time.perf_counter()
        done = data_optimize.main(
            [
                str(tree),
                str(chunks),
                "--test-split",
                args.test_split,
                "--workers",
                str(args.workers),
            ]
        )
        if done:
            return done
        optimize_seconds = time.perf_counter() - start
    manifest = json.loads((chunks / MANIFEST).read_text())
    sources = {"folder": (tree.parent, tree.name), "litdata": (chunks.parent, chunks.name)}
    runs: dict[str, list[dict[str, Any]]] = {"folder": [], "litdata": []}
    for repeat in range(args.repeats):
        for fmt, (data_dir, folder) in sources.items():
            run = _epoch(_module(data_dir, folder, fmt, args))
            run["load_average_1min"] = load_average()
            runs[fmt].append(run)
            print(f"{fmt} {repeat}: {run['images_per_s']:,.0f} images/s", file=sys.stderr)
    files = _module(tree.parent, tree.name, "folder", args).datasets["train"].files
    chunk_files = list((chunks / manifest["splits"]["train"]["folder"]).glob("chunk-*.bin"))
    stored = {
        "folder": {"files": len(files), "bytes": sum(f.stat().st_size for f in files)},
        "litdata": {"files": len(chunk_files), "bytes": sum(f.stat().st_size for f in chunk_files)},
    }
    results = {
        "tree": str(args.tree),
        "split": "train (less the hold-out)",
        "batch_size": args.batch_size,
        "workers": args.workers,
        "image_size": args.image_size,
        "optimize_seconds": optimize_seconds,
        "stored": stored,
        "formats": {
            fmt: {
                "images_per_s_median": statistics.median(r["images_per_s"] for r in rs),
                "cpu_ms_per_1000_images_median": statistics.median(
                    r["cpu_ms_per_1000_images"] for r in rs
                ),
                "runs": rs,
            }
            for fmt, rs in runs.items()
        },
    }
    formats = results["formats"]
    results["litdata_over_folder"] = (
        formats["litdata"]["images_per_s_median"] / formats["folder"]["images_per_s_median"]
    )
    results["folder_cpu_over_litdata_cpu"] = (
        formats["folder"]["cpu_ms_per_1000_images_median"]
        / formats["litdata"]["cpu_ms_per_1000_images_median"]
    )
    write_json(args.out / "litdata.json", "litdata", machine, results)
    rewrite_markdown(args.out)
    return 0


def _markdown(record: dict[str, Any]) -> str:
    r, m = record["results"], record["machine"]
    loads = [run["load_average_1min"] for rs in r["formats"].values() for run in rs["runs"]]
    lines = [
        "# ImageFolder files against litdata chunks",
        "",
        f"One training epoch of `{r['tree']}` ({r['split']}) through the ImageFolder "
        f"DataModule: batch {r['batch_size']}, {r['workers']} workers, "
        f"{r['image_size']}-pixel crops, decoded and cropped in the workers; formats "
        "interleaved. Read calls and MB read are what the loader's processes asked the "
        "kernel for through read calls (`/proc/<pid>/io`: syscr, rchar; page cache "
        "included). litdata maps its chunks into memory (mmap) instead: its bytes arrive "
        "as page faults, which those counters miss, so what it reads is the stored MB of "
        "the chunks, in a few files rather than one per image.",
        "",
        f"Machine: {m['cpu']}, {m['cpu_cores']} cores, shared with other work: 1-minute "
        f"load average {min(loads)} to {max(loads)} during the runs (over the core count "
        "means the numbers are noisy; the ratio of interleaved runs is the steadier figure).",
        "",
        "| format | images/s (median) | runs | CPU ms per 1000 images (median) | read calls "
        "| MB via read calls | stored: files | stored: MB |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for fmt, f in r["formats"].items():
        runs = ", ".join(f"{run['images_per_s']:,.0f}" for run in f["runs"])
        last = f["runs"][-1]
        stored = r["stored"][fmt]
        lines.append(
            f"| {fmt} | {f['images_per_s_median']:,.0f} | {runs} | "
            f"{f['cpu_ms_per_1000_images_median']:,.0f} | {last['syscr']:,} | "
            f"{last['rchar'] / 1e6:,.1f} | {stored['files']:,} | {stored['bytes'] / 1e6:,.1f} |"
        )
    lines += [
        "",
        f"litdata / folder, images/s: {r['litdata_over_folder']:.2f}x; CPU time per image "
        f"(the loader's processes, user and system; steadier under load than the wall "
        f"clock), folder / litdata: {r['folder_cpu_over_litdata_cpu']:.2f}x.",
    ]
    fetched = [run["read_bytes"] for f in r["formats"].values() for run in f["runs"]]
    lines.append(
        f"Bytes fetched from storage (read_bytes) were at most {max(fetched) / 1e6:.1f} MB "
        "a run: both formats read from the page cache, so this measures the cost per image "
        "of opening and reading a file against reading a chunk, not a disk or a network."
    )
    if r["optimize_seconds"]:
        lines.append(
            f"Writing the chunks (`cnn-bench data-optimize`) took {r['optimize_seconds']:.0f} s."
        )
    if not record.get("valid", True):
        lines += ["", f"Not a clean measurement: {record['invalid_because']}."]
    return "\n".join(lines + ["", *SEVERAL_NODES]) + "\n"


# How the chunks are used beyond one machine: the same command on every node, the chunks
# on a disk each node reads or in a bucket; litdata gives each process its shard.
SEVERAL_NODES = [
    "## On several nodes",
    "",
    "Write the chunks once, to a disk every node reads or to a bucket (boto3's usual",
    "credentials: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` or `~/.aws`; a bucket's chunks",
    "are cached on each node under `~/.lightning/chunks`, or `$LITDATA_CACHE_DIR`):",
    "",
    "```bash",
    "cnn-bench data-optimize /data/imagenet /shared/imagenet-chunks --workers 16",
    "cnn-bench data-optimize /data/imagenet s3://my-bucket/imagenet-chunks --workers 16",
    "```",
    "",
    "Then start the same command on each node, `NODE_RANK` 0 to N-1 (Lightning's own",
    "launcher; under SLURM or torchrun the environment gives the ranks):",
    "",
    "```bash",
    "MASTER_ADDR=node0 MASTER_PORT=29500 NODE_RANK=0 cnn-bench fit \\",
    "  --config configs/experiment/resnet50_imagenet.yaml \\",
    "  --data.format litdata --data.data_dir /shared --data.folder imagenet-chunks \\",
    "  --trainer.strategy ddp --trainer.num_nodes 2 --trainer.devices 8",
    "",
    "MASTER_ADDR=node0 MASTER_PORT=29500 NODE_RANK=0 cnn-bench fit \\",
    "  --config configs/experiment/resnet50_imagenet.yaml \\",
    "  --data.format litdata --data.data_dir s3://my-bucket --data.folder imagenet-chunks \\",
    "  --trainer.strategy ddp --trainer.num_nodes 2 --trainer.devices 8",
    "```",
    "",
    "`--ckpt_path last` resumes mid-epoch: the checkpoint holds the training loader's",
    "position, for the same number of processes, workers and batch size.",
]


def rewrite_markdown(out: Path) -> None:
    """``OUT/litdata.md`` again from ``OUT/litdata.json``, without measuring."""
    record = json.loads((out / "litdata.json").read_text())
    write_text_atomic(out / "litdata.md", _markdown(record))


if __name__ == "__main__":
    sys.exit(main())
