"""``cnn-bench report RUNS_DIR``: a Markdown results table and PNG plots from local runs.

Reads every ``metrics.json`` (written by ``RunSummary``) under ``RUNS_DIR`` with the
``config.yaml`` beside it; no W&B account is needed. Runs whose configs differ only in
the seed (and in where and under which name they were logged) form one row, with the
mean and standard deviation over the seeds. Writes ``report.md``, ``results.json``,
``learning_curves.png``, ``top1_vs_params.png`` and ``top1_vs_time.png``.

    cnn-bench report runs --out runs/report
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from cnn_bench.files import write_text_atomic
from cnn_bench.runs import METRICS_FILE
from cnn_bench.stats import mean_interval

# Config entries that name or place a run rather than define the experiment.
_RUN_IDENTITY = (
    ("seed_everything",),
    ("trainer", "logger"),
    ("trainer", "default_root_dir"),
    ("data", "init_args", "data_dir"),
    ("ckpt_path",),
    ("test_after_fit",),
)
_LABEL_KEYS = 3  # differing config values named in a row's label


class ReportError(ValueError):
    """Nothing to report; the message says what to do."""


def _experiment(config: dict[str, Any]) -> dict[str, Any]:
    """The config's entries that define the experiment, flattened to dotted keys."""
    for path in _RUN_IDENTITY:
        node = config
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = json.dumps(node, sort_keys=True, default=str)

    walk(config, "")
    return flat


def load_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Every run under ``runs_dir``: its ``metrics.json`` plus ``dir`` and ``key``."""
    runs = []
    for path in sorted(runs_dir.rglob(METRICS_FILE)):
        config_path = path.parent / "config.yaml"
        try:
            run = json.loads(path.read_text())
            config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
            if not isinstance(run, dict) or not isinstance(config, dict | None):
                raise ValueError("not a run record")
            run.setdefault("history", [])
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
            # A run killed while writing, or a file edited by hand: the other runs still count.
            reason = (str(err).splitlines() or [type(err).__name__])[0]
            print(f"cnn-bench report: warning: skipping {path.parent}: {reason}", file=sys.stderr)
            continue
        run["dir"] = str(path.parent)
        run["config"] = _experiment(config) if config else {"run": run["dir"]}
        run["key"] = json.dumps(run["config"], sort_keys=True)
        runs.append(run)
    return _merge_test_runs(runs)


def _merge_test_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A ``cnn-bench test`` run of a checkpoint inside another run's folder is part of that
    run: its test metrics join the run's (the run's own, from ``--test_after_fit``, are
    kept where both have one) instead of a row of its own."""
    by_dir = {Path(r["dir"]).resolve(): r for r in runs}
    kept = []
    for run in runs:
        checkpoint = run.get("checkpoint")
        owner = None
        if checkpoint and not run["history"] and run.get("test"):
            owner = next(
                (by_dir[p] for p in Path(checkpoint).resolve().parents if p in by_dir), None
            )
        if owner is None or owner is run:
            kept.append(run)
        else:
            owner["test"] = {**run["test"], **owner.get("test", {})}
    return kept


def _values(runs: list[dict[str, Any]], get: Any) -> list[float]:
    values = [get(run) for run in runs]
    return [v for v in values if v is not None]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per experiment: runs grouped by config, metrics averaged over seeds."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run["key"], []).append(run)
    rows = []
    for members in groups.values():
        first = members[0]
        row: dict[str, Any] = {
            "arch": first.get("arch"),
            "dataset": first.get("dataset"),
            "params": first.get("params"),
            "macs": first.get("macs"),
            "epochs": first.get("epochs"),
            "fit_seconds": _mean(_values(members, lambda r: r.get("fit_seconds"))),
            "images_per_sec": _mean(
                _values(
                    members,
                    lambda r: (
                        r["history"][-1].get("train/images_per_sec") if r["history"] else None
                    ),
                )
            ),
            "seeds": sorted({r.get("seed") for r in members}, key=str),
            "runs": [r["dir"] for r in members],
            "history": _mean_history(members),
        }
        for metric in ("test/acc1", "test/acc5", "test/tta_acc1"):
            values = _values(members, lambda r, m=metric: r.get("test", {}).get(m))
            row[metric] = mean_interval(values) if values else None
        rows.append(row)
    _label(rows, [members[0]["config"] for members in groups.values()])
    return sorted(
        rows, key=lambda r: (str(r["dataset"]), -((r["test/acc1"] or {}).get("mean") or -1.0))
    )


def _label(rows: list[dict[str, Any]], configs: list[dict[str, Any]]) -> None:
    """``<arch>-<dataset>``, followed by the config values that tell apart experiments of
    one architecture on one data set (``lr=0.1, weight_decay=0.0005``)."""
    names = [f"{row['arch']}-{row['dataset']}" for row in rows]
    for row, name, config in zip(rows, names, configs, strict=True):
        others = [c for c, n in zip(configs, names, strict=True) if n == name]
        # Model and data settings first: they are what sweeps and studies vary.
        keys = sorted(
            {k for c in others for k in {*c, *config} if c.get(k) != config.get(k)},
            key=lambda k: (not k.startswith("model."), not k.startswith("data."), k),
        )
        values = [
            f"{k.rsplit('.', 1)[-1]}={json.loads(config[k]) if k in config else '-'}"
            for k in keys[:_LABEL_KEYS]
        ]
        row["label"] = f"{name} ({', '.join(values)})" if values else name


def _mean_history(runs: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per-epoch metrics averaged over the runs that reached that epoch."""
    longest = max(len(r["history"]) for r in runs)
    history = []
    for epoch in range(longest):
        rows = [r["history"][epoch] for r in runs if len(r["history"]) > epoch]
        keys = sorted({k for row in rows for k in row})
        history.append({k: _mean([row[k] for row in rows if k in row]) for k in keys})
    return history


def _count(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{hours}h{minutes:02d}m"
        if hours
        else f"{minutes}m{secs:02d}s"
        if minutes
        else (f"{secs}s")
    )


def _percent(stat: dict[str, Any] | None) -> str:
    if stat is None:
        return "-"
    text = f"{100 * stat['mean']:.2f}"
    return text if stat["std"] is None else f"{text} ± {100 * stat['std']:.2f}"


def markdown(rows: list[dict[str, Any]], plots: list[str]) -> str:
    lines = [
        "| experiment | architecture | dataset | params | MACs | epochs | wall time | "
        "train images/s | test top-1 (%) | test top-5 (%) | top-1 TTA (%) | seeds |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ips = "-" if r["images_per_sec"] is None else f"{r['images_per_sec']:.0f}"
        lines.append(
            f"| {r['label']} | {r['arch']} | {r['dataset']} | {_count(r['params'])} | "
            f"{_count(r['macs'])} | {r['epochs']} | {_duration(r['fit_seconds'])} | {ips} | "
            f"{_percent(r['test/acc1'])} | {_percent(r['test/acc5'])} | "
            f"{_percent(r['test/tta_acc1'])} | {len(r['runs'])} |"
        )
    lines += [
        "",
        "MACs: multiply-adds of one forward pass of one image at the native input "
        "size. ± is the standard deviation over seeds.",
        "",
    ]
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    lines += ["", "| experiment | seed | run folder |", "| --- | ---: | --- |"]
    for r in rows:
        lines += [
            f"| {r['label']} | {seed} | {d} |"
            for seed, d in zip(
                r["seeds"] if len(r["seeds"]) == len(r["runs"]) else ["-"] * len(r["runs"]),
                r["runs"],
                strict=True,
            )
        ]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], out: Path) -> list[str]:
    """Learning curves, top-1 vs parameters and top-1 vs training time, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    paths = []
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, row in enumerate(rows):
        color = f"C{i % 10}"
        epochs = [h["epoch"] + 1 for h in row["history"]]
        for key, ax, style in (
            ("train/loss", loss_ax, "-"),
            ("val/loss", loss_ax, "--"),
            ("train/acc1", acc_ax, "-"),
            ("val/acc1", acc_ax, "--"),
        ):
            points = [(e, h[key]) for e, h in zip(epochs, row["history"], strict=True) if key in h]
            if points:
                xs, ys = zip(*points, strict=True)
                scale = 100 if "acc" in key else 1
                ax.plot(
                    xs,
                    [scale * y for y in ys],
                    style,
                    color=color,
                    marker=".",
                    label=row["label"] if key.startswith("train") else None,
                )
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="Loss (train solid, val dashed)")
    acc_ax.set(xlabel="epoch", ylabel="top-1 (%)", title="Top-1 accuracy (train solid, val dashed)")
    last_epoch = max((len(row["history"]) for row in rows), default=1)
    for ax in (loss_ax, acc_ax):
        ax.set_xlim(0.5, last_epoch + 0.5)  # whole epochs on the axis, even for one
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
    _legend_below(fig, loss_ax)
    paths.append(_save(fig, out / "learning_curves.png"))

    tested = [r for r in rows if r["test/acc1"] is not None]
    for x_key, name, xlabel, fmt in (
        ("params", "top1_vs_params", "parameters", _count),
        ("fit_seconds", "top1_vs_time", "training wall time", _duration),
    ):
        points = [r for r in tested if r[x_key]]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for i, r in enumerate(points):
            stat = r["test/acc1"]
            ax.errorbar(
                r[x_key],
                100 * stat["mean"],
                yerr=100 * (stat["std"] or 0),
                fmt="o",
                color=f"C{i % 10}",
                capsize=3,
                label=r["label"],
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _, f=fmt: f(x)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(
            xlabel=f"{xlabel} (log scale)", ylabel="test top-1 (%)", title=f"Test top-1 vs {xlabel}"
        )
        ax.grid(alpha=0.3)
        _legend_below(fig, ax)
        paths.append(_save(fig, out / f"{name}.png"))
    return paths


def _legend_below(fig: Any, ax: Any) -> None:
    # Below the axes, so that long experiment labels never squeeze the plot.
    fig.tight_layout()
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="upper left", bbox_to_anchor=(0.02, 0.0), fontsize=8, frameon=False
    )


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="cnn-bench report",
        description="Collect local runs (metrics.json + config.yaml) into a Markdown table "
        "and PNG plots; no W&B account needed.",
    )
    parser.add_argument("runs_dir", help="folder searched for runs (e.g. runs)")
    parser.add_argument("--out", help="output folder (default: RUNS_DIR/report)")
    args = parser.parse_args(argv)
    runs_dir = Path(args.runs_dir)
    try:
        if not runs_dir.is_dir():
            raise ReportError(f"no folder {runs_dir}: give the folder runs were saved in")
        runs = load_runs(runs_dir)
        if not runs:
            raise ReportError(
                f"no runs (no {METRICS_FILE}) under {runs_dir}: train with "
                "`cnn-bench fit` first, or give the folder runs were saved in"
            )
    except ReportError as err:
        print(f"cnn-bench report: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else runs_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(runs)
    plots = plot(rows, out)
    text = markdown(rows, plots)
    write_text_atomic(out / "report.md", text)
    write_text_atomic(out / "results.json", json.dumps(rows, indent=1, default=str) + "\n")
    print(text + f"\nwritten to {out}/report.md with {len(plots)} plots")
    return 0
