"""The Markdown summary of ``docs/bench/*.json``: the numbers a README quotes, with the machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cnn_bench.files import write_text_atomic


def _machine(m: dict[str, Any]) -> list[str]:
    gpu = m["gpu"] or "none"
    return [
        f"- CPU: {m['cpu']}, {m['cpu_cores']} cores ({m['torch_threads']} torch threads), "
        f"1-minute load average at the start {m['load_average_1min']}, "
        f"at the end {m.get('load_average_1min_end', 'not recorded')}, "
        f"OMP_WAIT_POLICY={m['omp_wait_policy'] or 'unset'}",
        f"- GPU: {gpu}",
        f"- torch {m['torch']}, torchvision {m['torchvision']}, lightning {m['lightning']}, "
        f"Python {m['python']}",
    ]


def _spread(s: dict[str, float], fmt: str = ".0f") -> str:
    return f"{s['median']:{fmt}} (min {s['min']:{fmt}}, max {s['max']:{fmt}}, n={s['n']})"


def overhead(r: dict[str, Any]) -> list[str]:
    return [
        f"`{r['config']}` ({r['arch']}, batch {r['batch_size']}, {r['precision']}, "
        f"{r['device']}): {r['steps_timed']} timed steps after {r['warmup_steps']} warm-up "
        f"steps, {r['repeats']} interleaved pairs.",
        "",
        "| | images/s: median (min, max) |",
        "| --- | --- |",
        f"| `cnn-bench fit` (callbacks, progress bar, W&B offline) | "
        f"{_spread(r['lightning_images_per_s'])} |",
        f"| hand-written PyTorch loop | {_spread(r['plain_images_per_s'])} |",
        f"| **ratio** (target >= {r['target']}) | **{_spread(r['ratio'], '.3f')}** |",
        "",
        "Per CPU-second of the process (blind to other work on a shared machine):",
        "",
        "| | images per CPU-second: median (min, max) |",
        "| --- | --- |",
        f"| `cnn-bench fit` | {_spread(r['lightning_images_per_cpu_s'])} |",
        f"| hand-written PyTorch loop | {_spread(r['plain_images_per_cpu_s'])} |",
        f"| **ratio** | **{_spread(r['cpu_ratio'], '.3f')}** |",
        *_large(r.get("large")),
        *_step_costs(r.get("step_costs")),
    ]


def _large(r: dict[str, Any] | None) -> list[str]:
    if not r:
        return []
    return [
        "",
        f"The other end, `{r['config']}` ({r['arch']}, batch {r['batch_size']}): "
        f"{r['steps_timed']} timed steps, {r['repeats']} pairs: `cnn-bench fit` "
        f"{_spread(r['lightning_images_per_s'], '.1f')} images/s, the hand-written loop "
        f"{_spread(r['plain_images_per_s'], '.1f')}; ratio **{_spread(r['ratio'], '.3f')}**.",
    ]


def _step_costs(c: dict[str, Any] | None) -> list[str]:
    """Where a step's time goes, part by part and callback by callback."""
    if not c:
        return []
    step = c["step_us"]
    lines = [
        "",
        f"Where one step goes ({c['profiler']}, one more run: {step:,.0f} us per step; "
        f"the {c.get('profiler_record_us', 0):.1f} us it records for an empty block is taken "
        "off each hook):",
        "",
        "| part of the step | us per step | share |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {k} | {v:,.0f} | {v / step:.1%} |" for k, v in c["parts_us"].items()]
    lines += ["", "| callback (all its hooks) | us per step | share |", "| --- | ---: | ---: |"]
    lines += [f"| {k} | {v:,.1f} | {v / step:.2%} |" for k, v in c["callbacks_us"].items()]
    return lines


def datapath(r: dict[str, Any]) -> list[str]:
    c = r["cifar10"]
    lines = [
        f"Batch {r['batch_size']}, {r['device']}; images per CPU-second count the main "
        "process and the pipeline's own DataLoader workers.",
        "",
        "| CIFAR-10, median (min, max) of interleaved runs | images/s | images per CPU-second |",
        "| --- | ---: | ---: |",
    ]
    per_cpu = "datamodule_images_per_cpu_s" in c
    rows = (
        ("`CIFAR10DataModule`, augmentation on the device", "datamodule"),
        (
            f"torchvision per-image PIL pipeline, {c['pil_pipeline_workers']} workers",
            "pil_pipeline",
        ),
    )
    for label, key in rows:
        cpu = _spread(c[f"{key}_images_per_cpu_s"]) if per_cpu else "-"
        lines.append(f"| {label} | {_spread(c[f'{key}_spread'])} | {cpu} |")
    lines += [
        f"| {c['consumer']} training consumes | {c['consumer_training_images_per_s']:,.1f} | |",
        "",
        f"DataModule / PIL pipeline: **{c['ratio_to_pil']:.1f}x** on the wall clock"
        + (
            f" (pairs: {_spread(c['ratio_to_pil_spread'], '.1f')}), "
            f"**{c['cpu_ratio_to_pil']['median']:.1f}x** per CPU-second (pairs: "
            f"{_spread(c['cpu_ratio_to_pil'], '.1f')})"
            if per_cpu
            else ""
        )
        + f" (target {c['targets']['ratio_to_pil']}x); DataModule / {c['consumer']} training: "
        f"**{c['ratio_to_consumer']:.1f}x** (target {c['targets']['ratio_to_consumer']}x).",
    ]
    if "imagenet" in r:
        lines += ["", f"ImageNet: {r['imagenet']}"]
    return lines


def imagenet(r: dict[str, Any]) -> list[str]:
    t = r["tree"]
    names = {
        "datamodule": "`ImageNetDataModule` (fast_decode, the default)",
        "datamodule_full_decode": "`ImageNetDataModule`, fast_decode=False",
        "torchvision": "torchvision `ImageFolder`, RandomResizedCrop, flip, ToTensor, Normalize",
    }
    lines = [
        f"{t['files']} JPEGs of {t['classes']} classes (`jpeg_tree`, seed {t['seed']}, quality "
        f"{t['quality']}, {t['mean_pixels'] / 1e3:.0f}k pixels on average, {t['large_files']} "
        f"of about 2000 x 1500), batch {r['batch_size']}, {r['workers']} workers, "
        f"{r['batches_per_run']} timed batches per run, {r['repeats']} interleaved runs of "
        f"each, {r['device']}; float normalised batches on the device for all three.",
        "",
        "| training loader | images/s | images per CPU-second (main + workers) "
        f"| images/s per worker (its CPU time) | workers for {r['network_images_per_s']:,} "
        "images/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, label in names.items():
        p = r[name]
        lines.append(
            f"| {label} | {_spread(p['images_per_s'])} | {_spread(p['images_per_cpu_s'])} | "
            f"{_spread(p['per_worker_images_per_s'])} | {p['workers_for_network']} |"
        )
    ratios = r["ratio_to_torchvision"]
    lines += [
        "",
        "Against torchvision, pair by pair (median, min, max):",
    ]
    for name in ("datamodule", "datamodule_full_decode"):
        q = ratios[name]
        lines.append(
            f"- {names[name]}: images/s **{_spread(q['images_per_s'], '.2f')}x** (target "
            f">= {r['target_ratio']}x), per CPU-second {_spread(q['images_per_cpu_s'], '.2f')}x, "
            f"per worker {_spread(q['per_worker_images_per_s'], '.2f')}x"
        )
    return lines


def throughput(r: dict[str, Any]) -> list[str]:
    lines = [
        "| model | size | batch | mode | precision | channels_last | compile | fuse_bn "
        "| images/s |",
        "| --- | ---: | ---: | --- | --- | --- | --- | --- | ---: |",
    ]
    for row in r["rows"]:
        flags = ["yes" if row[k] else "no" for k in ("channels_last", "compile", "fuse_bn")]
        lines.append(
            f"| {row['model']} | {row['image_size']} | {row['batch_size']} | {row['mode']} | "
            f"{row['precision']} | {' | '.join(flags)} | {row['images_per_s']:,.1f} |"
        )
    return lines


def time_to_accuracy(r: dict[str, Any]) -> list[str]:
    how = "stopped by the budget" if r["stopped_by_budget"] else "schedule completed"
    tta = (
        f"{100 * r['test_tta_acc1']:.2f}% with flip-and-translate test-time augmentation"
        if r.get("test_tta_acc1") is not None
        else "no test-time augmentation"
    )
    return [
        f"`{r['config']}`: {r['arch']} {r['arch_kwargs'] or ''}, batch {r['batch_size']}, "
        f"budget {r['budget_s']:.0f} s.",
        "",
        f"**Test top-1 {100 * r['test_acc1']:.2f}%** ({tta}; top-5 "
        f"{100 * r['test_acc5']:.2f}%) after {r['train_s']:.0f} s of training "
        f"({r['epochs']:.2f} epochs, {r['steps']} steps, {how}; "
        f"{r['images_per_s']:,.0f} images/s).",
        *_over_seeds(r),
    ]


def _over_seeds(r: dict[str, Any]) -> list[str]:
    o = r.get("over_seeds")
    if not o:
        return []

    def pct(key: str) -> str:
        m = o[key]
        std = f" ± {100 * m['std']:.2f}" if m.get("std") is not None else ""
        return f"{100 * m['mean']:.2f}%{std} (min {100 * m['min']:.2f}, max {100 * m['max']:.2f})"

    lines = ["", f"Over seeds {', '.join(map(str, r['seeds']))} (mean ± std):", ""]
    lines += [
        "| seed | test top-1 | with TTA | epochs | training s |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for seed, run in zip(r["seeds"], r["runs"], strict=True):
        tta = run.get("test_tta_acc1")
        lines.append(
            f"| {seed} | {100 * run['test_acc1']:.2f}% | "
            f"{'-' if tta is None else f'{100 * tta:.2f}%'} | {run['epochs']:.2f} | "
            f"{run['train_s']:.0f} |"
        )
    lines += [
        "",
        f"Test top-1 {pct('test_acc1')}"
        + (f"; with TTA {pct('test_tta_acc1')}." if "test_tta_acc1" in o else "."),
    ]
    return lines


SECTIONS = {
    "overhead": ("Framework overhead", overhead),
    "datapath": ("Data path", datapath),
    "imagenet": ("ImageNet data path", imagenet),
    "throughput": ("Per-architecture throughput", throughput),
    "time_to_accuracy": ("Time to accuracy on CIFAR-10", time_to_accuracy),
}


def write_summary(out: Path) -> Path:
    """``out/README.md`` from every section's JSON found in ``out``."""
    records = {
        name: json.loads((out / f"{name}.json").read_text())
        for name in SECTIONS
        if (out / f"{name}.json").is_file()
    }
    lines = ["# cnn-bench bench", ""]
    for name, record in records.items():
        title, render = SECTIONS[name]
        lines += [
            f"## {title}",
            "",
            f"`{record['results']['command']}` on",
            "",
            *_machine(record["machine"]),
            "",
            *(
                [
                    f"**Not valid: {record['invalid_because']}.** Measure it again when idle.",
                    "",
                ]
                if record.get("valid") is False
                else []
            ),
            *render(record["results"]),
            "",
        ]
    path = out / "README.md"
    write_text_atomic(path, "\n".join(lines))
    return path
