"""A study's write-up: ``results.csv``, ``summary.json``, the figures and ``README.md``.

Every metric of a grid point is summarised over its seeds by ``mean_interval`` (mean,
sample standard deviation, 95% Student-t interval), as ``cnn-bench seeds`` does; the
figures draw the mean with the interval as a band. A hand-written ``notes.md`` in the
output folder (what the run shows) is kept and shown in the README.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from pathlib import Path
from typing import Any

from cnn_bench.files import atomic_open, write_text_atomic
from cnn_bench.stats import mean_interval
from cnn_bench.studies import Study

_FIXED = ("point", "seed", "run_id", "run_dir")
NOTES_FILE = "notes.md"
_LISTS = ("history", "layers")  # per-epoch and per-layer records: figures, not CSV columns


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def aggregate(study: Study, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per grid point, in the study's order: its values and every metric's
    mean and interval over the seeds."""
    points: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        points.setdefault(row["point"], []).append(row)
    summary = []
    for point, group in points.items():
        names = sorted({k for r in group for k, v in r.items() if _numeric(v)} - {"seed"})
        names = [n for n in names if n not in study.grid_keys]
        metrics = {
            name: mean_interval([r[name] for r in group if _numeric(r.get(name))]) for name in names
        }
        summary.append(
            {
                "point": point,
                **{key: group[0].get(key) for key in study.grid_keys},
                "seeds": [r["seed"] for r in group],
                "metrics": metrics,
            }
        )
    return summary


def select(study: Study, summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points ``select:`` chooses: per combination of the ``by`` values (in the study's
    order), the point whose ``metric`` (mean over seeds) is best, with every candidate's
    value. Points without the metric are not candidates."""
    if study.select is None:
        return []
    by, metric = study.select["by"], study.select["metric"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for entry in summary:
        if metric in entry["metrics"]:
            groups.setdefault(tuple(str(entry.get(k)) for k in by), []).append(entry)
    better = max if study.select["mode"] == "max" else min
    chosen = []
    for group in groups.values():
        best = better(group, key=lambda e: e["metrics"][metric]["mean"])
        chosen.append(
            {
                **{key: best.get(key) for key in study.grid_keys},
                "point": best["point"],
                "metric": metric,
                "value": best["metrics"][metric]["mean"],
                "candidates": {e["point"]: e["metrics"][metric]["mean"] for e in group},
                "metrics": best["metrics"],
            }
        )
    return chosen


def early_stop(history: list[dict[str, Any]], monitor: str, mode: str, patience: int) -> dict:
    """Where Lightning's ``EarlyStopping(monitor, mode, patience)`` (``min_delta`` 0) would
    have stopped this history: the epochs trained by then and the best epoch among them
    (0-based, as ``best_epoch``). ``stopped`` is false when it would not have stopped."""
    best, best_epoch, wait, epochs = None, None, 0, 0
    for h in history:
        if not _numeric(h.get(monitor)):
            continue
        epochs, value = h["epoch"] + 1, h[monitor]
        if best is None or (value > best if mode == "max" else value < best):
            best, best_epoch, wait = value, h["epoch"], 0
            continue
        wait += 1
        if wait >= patience:
            return {"epochs": epochs, "best_epoch": best_epoch, "best": best, "stopped": True}
    return {"epochs": epochs, "best_epoch": best_epoch, "best": best, "stopped": False}


def _with_early_stop(study: Study, row: dict[str, Any]) -> dict[str, Any]:
    spec = study.early_stopping
    found = early_stop(row.get("history") or [], spec["monitor"], spec["mode"], spec["patience"])
    if found["best"] is None:
        return row
    name = spec["monitor"].split("/", 1)[1]
    extra = {
        "early_stop/epochs": found["epochs"],
        "early_stop/stopped": found["stopped"],
        "early_stop/best_epoch": found["best_epoch"],
        f"early_stop/{name}": found["best"],
    }
    if name == "acc1":
        extra["early_stop/error"] = 1.0 - found["best"]
    return {**row, **extra}


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns and k not in _LISTS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def _xvalue(entry: dict[str, Any], x: str) -> Any:
    return entry["metrics"][x]["mean"] if x in entry["metrics"] else entry.get(x)


def _series_of(entry: dict[str, Any], key: str | None) -> str:
    return "" if key is None else str(entry.get(key, ""))


def _band(ax: Any, xs: list, stats: list[dict[str, Any]], label: str, **style: Any) -> None:
    means = [s["mean"] for s in stats]
    (line,) = ax.plot(xs, means, marker="o", markersize=3, label=label, **style)
    if all(s["ci95"] is not None for s in stats):
        low = [s["ci95"][0] for s in stats]
        high = [s["ci95"][1] for s in stats]
        ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


def _history_stats(rows: list[dict[str, Any]], metric: str) -> tuple[list, list]:
    """Per epoch, the mean and interval of ``metric`` over the rows (seeds) of one point."""
    by_epoch: dict[int, list[float]] = {}
    stage, _, name = metric.partition("/")
    for row in rows:
        for h in row.get("history") or []:
            value = h.get(metric)
            if value is None and name == "error" and _numeric(h.get(f"{stage}/acc1")):
                value = 1.0 - h[f"{stage}/acc1"]  # the zero-one error, as in the table
            if _numeric(value):
                by_epoch.setdefault(h["epoch"], []).append(value)
    epochs = sorted(by_epoch)
    return [e + 1 for e in epochs], [mean_interval(by_epoch[e]) for e in epochs]


def _layer_stats(rows: list[dict[str, Any]], stat: str) -> tuple[list, list]:
    """Per layer depth, the mean and interval of ``stat`` (``std``, ``mean``) at
    initialisation over the rows (seeds) of one point."""
    by_depth: dict[int, list[float]] = {}
    for row in rows:
        for layer in row.get("layers") or []:
            if _numeric(layer.get(stat)):
                by_depth.setdefault(layer["depth"], []).append(layer[stat])
    depths = sorted(by_depth)
    return depths, [mean_interval(by_depth[d]) for d in depths]


def x_names(summary: list[dict[str, Any]], x: str) -> list[str]:
    """The names on a sweep's x axis (``model.arch``: resnet8, resnet14, ...) in the
    study's order, one tick each: sorted as text, resnet14 would come before resnet8."""
    return list(dict.fromkeys(v for e in summary if isinstance(v := _xvalue(e, x), str)))


def plot(study: Study, spec: dict[str, Any], summary, rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ys = spec["y"] if isinstance(spec["y"], list) else [spec["y"]]
    where = spec.get("where") or {}
    summary = [e for e in summary if all(e.get(k) == v for k, v in where.items())]
    if spec.get("selected"):
        chosen = {c["point"] for c in select(study, summary)}
        summary = [e for e in summary if e["point"] in chosen]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    kind = spec.get("kind", "sweep")
    if kind == "sweep":
        x = spec.get("x", "params")
        names = x_names(summary, x)

        def position(entry: dict[str, Any]) -> Any:
            value = _xvalue(entry, x)
            return names.index(value) if isinstance(value, str) else value

        groups: dict[str, list[dict[str, Any]]] = {}
        for entry in summary:
            groups.setdefault(_series_of(entry, spec.get("series")), []).append(entry)
        for series, entries in groups.items():
            entries = [e for e in entries if _xvalue(e, x) is not None]
            entries.sort(key=position)
            for y in ys:
                have = [e for e in entries if y in e["metrics"]]
                if have:
                    xs = [position(e) for e in have]
                    label = f"{series}: {y}" if series else y
                    _band(ax, xs, [e["metrics"][y] for e in have], label)
        if names:
            ax.set_xticks(range(len(names)), names)
        ax.set_xlabel(spec.get("xlabel", x))
    else:
        # One colour per point and one line style per metric, so that a point's
        # training and validation curves (its gap) read as a pair.
        per_point = _history_stats if kind == "history" else _layer_stats
        for i, entry in enumerate(summary):
            group = [r for r in rows if r["point"] == entry["point"]]
            for y, dashes in zip(ys, itertools.cycle(["-", "--", ":", "-."])):
                xs, stats = per_point(group, y)
                label = f"{entry['point']}: {y}" if len(ys) > 1 else entry["point"]
                if xs:
                    _band(ax, xs, stats, label, color=f"C{i % 10}", linestyle=dashes)
            stops = entry["metrics"].get("early_stop/epochs")
            if stops is not None and study.early_stopping and kind == "history":
                es = study.early_stopping
                ax.axvline(
                    stops["mean"],
                    color=ax.lines[-1].get_color() if ax.lines else "black",
                    linestyle=":",
                    linewidth=1.5,
                    label=f"{entry['point']}: EarlyStopping({es['monitor']}, patience"
                    f" {es['patience']}) stops after epoch {stops['mean']:.0f}",
                )
        default = "epoch" if kind == "history" else "layer (conv and linear, input first)"
        ax.set_xlabel(spec.get("xlabel", default))
    for ref in spec.get("reference") or []:
        if "x" in ref:
            ax.axvline(ref["x"], color="black", linestyle="--", linewidth=1, label=ref.get("label"))
        if "y" in ref:
            ax.axhline(ref["y"], color="grey", linestyle=":", linewidth=1, label=ref.get("label"))
    if spec.get("logx"):
        ax.set_xscale("log")
    if spec.get("logy"):
        ax.set_yscale("log")
    ax.set_ylabel(spec.get("ylabel", ", ".join(ys)))
    seeds = len(study.seeds)
    band = f"; bands: 95% interval over {seeds} seeds" if seeds > 1 else ""
    ax.set_title(f"{spec.get('title', study.name)}\n({study.budget} budget{band})", fontsize=10)
    finish_figure(fig, ax, path)


def finish_figure(fig, ax, path: Path) -> None:
    """Every study figure's grid, legend and atomic PNG write, in one place."""
    import matplotlib.pyplot as plt

    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def _cell(stats: dict[str, Any] | None, name: str) -> str:
    if stats is None:
        return "-"
    # Accuracies and errors in %: test/acc1, test/tta_acc1, test/ensemble_acc5, .../error.
    percent = name.endswith(("acc1", "acc5", "/error"))
    scale, unit = (100, "") if percent else (1, "")
    mean = scale * stats["mean"]
    text = f"{mean:.2f}" if percent else (f"{mean:,.0f}" if abs(mean) >= 1000 else f"{mean:.4g}")
    if stats["ci95"] is not None and stats["std"] > 0:
        half = scale * (stats["ci95"][1] - stats["ci95"][0]) / 2
        text += f" ± {half:.2f}" if percent else f" ± {half:.3g}"
    return text + unit


def _table_metrics(study: Study, summary: list[dict[str, Any]]) -> list[str]:
    wanted = ["params"]
    for spec in study.plots:
        if spec.get("kind", "sweep") == "sweep":
            wanted += [spec.get("x", "params")]  # a metric on the x axis (trainable_params)
            wanted += spec["y"] if isinstance(spec["y"], list) else [spec["y"]]
    wanted += study.table
    wanted += ["test/error", "test_last/error", "train/error", "best_epoch"]
    wanted += ["early_stop/epochs", "early_stop/error", "early_stop/loss", "fit_seconds"]
    present = {name for entry in summary for name in entry["metrics"]}
    return [n for n in dict.fromkeys(wanted) if n in present]


def _minutes(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def readme(study: Study, summary, info: dict[str, Any], figures: list[str], notes: str) -> str:
    low, high = info.get("runs_load_1min") or (None, None)
    m = info["machine"]
    names = _table_metrics(study, summary)
    lines = [f"# Study `{study.name}`", "", study.description, ""]
    if notes:
        lines += ["## What this run shows", "", notes.strip(), ""]
    lines += [f"![{f}]({f})" for f in figures] + [""]
    lines += [
        "## How it was made",
        "",
        "```bash",
        info["command"],
        "```",
        "",
        f"- budget `{study.budget}`: {study.budget_description or '-'}",
        f"- {len(study.seeds)} seed(s) per point, {sum(len(e['seeds']) for e in summary)} runs;"
        " errors are zero-one errors in %, ± is the half-width of the 95% Student-t interval"
        " over seeds",
        "- `test/*`: the best-validation checkpoint; `test_last/*`: the last one (final"
        " epoch); `train/*`: the mean over the last epoch's training batches",
        f"- machine: {m['cpu']}, {m['cores']} cores, load average (1, 5, 15 min)"
        f" {', '.join(f'{v:.1f}' for v in m['load_start'])} at the start and"
        f" {', '.join(f'{v:.1f}' for v in m['load_end'])} at the end of the last invocation"
        + (f"; the runs met a 1-minute load of {low:.1f} to {high:.1f}" if low is not None else "")
        + f"; torch {m['torch']}"
        + "".join(f", {k}={v}" for k, v in (m.get("threads") or {}).items()),
        f"- wall time: {_minutes(info['wall_seconds_all_runs'])} for all runs"
        f" ({_minutes(info['wall_seconds_this_invocation'])} in the last invocation)",
        "",
        "## Results (mean over seeds)",
        "",
        "| " + " | ".join(["point", *names]) + " |",
        "| --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for entry in summary:
        cells = [_cell(entry["metrics"].get(n), n) for n in names]
        lines.append(f"| {entry['point']} | " + " | ".join(cells) + " |")
    chosen = select(study, summary)
    if chosen:
        lines += _selection_table(study, chosen)
    if info.get("weight_differences"):
        lines += [
            "",
            "Largest absolute difference between the final weights (`last.ckpt`) of two runs"
            " with the same seed:",
            "",
            "| run A | run B | seed | max abs difference | largest weight |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for d in info["weight_differences"]:
            cells = [d["a"], d["b"], d["seed"], f"{d['max_abs']:.3g}", f"{d['max_weight']:.3g}"]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if info.get("ensembles"):
        from cnn_bench.commands.study_ensemble import readme_lines

        lines += readme_lines(info["ensembles"])
    lines += ["", "One row per run: [results.csv](results.csv); every metric: summary.json.", ""]
    return "\n".join(lines)


def _selection_table(study: Study, chosen: list[dict[str, Any]]) -> list[str]:
    """The README's table of the validation choice: what was chosen among which candidates,
    and the chosen point's test metrics."""
    spec = study.select
    metric = spec["metric"]
    tests = ("test/acc1", "test_last/acc1")
    tests = [n for n in tests if any(n in c["metrics"] for c in chosen)]
    what = ", ".join(f"`{k}`" for k in spec["over"])
    per = ", ".join(f"`{k}`" for k in spec["by"]) or "the whole grid"
    lines = [
        "",
        f"## Chosen on validation: {what}, per {per}",
        "",
        f"Per group, the point with the {'highest' if spec['mode'] == 'max' else 'lowest'}"
        f" `{metric}` (mean over seeds; a tie goes to the first); candidates: every point of"
        " the group with its value of that metric.",
        "",
        "| " + " | ".join([*spec["by"], "chosen", metric, *tests, "candidates"]) + " |",
        "|" + " --- |" * (len(spec["by"]) + 1) + " ---: |" * (1 + len(tests)) + " --- |",
    ]
    for c in chosen:
        cells = [str(c.get(k)) for k in spec["by"]] + [c["point"]]
        cells.append(_cell(c["metrics"][metric], metric))
        cells += [_cell(c["metrics"].get(n), n) for n in tests]
        cells.append(
            "; ".join(
                f"{p}: {_cell({'mean': v, 'ci95': None}, metric)}"
                for p, v in c["candidates"].items()
            )
        )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def weight_differences(study: Study, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each pair in ``compare_weights`` and each seed (and other grid values), the
    largest absolute difference between the two runs' final weights (``last.ckpt``)."""
    import torch

    def weights(row: dict[str, Any]) -> dict[str, Any]:
        path = Path(row["run_dir"]) / "checkpoints" / "last.ckpt"
        return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]

    def key(row: dict[str, Any]) -> tuple:
        return tuple((k, row.get(k)) for k in study.grid_keys if k != "variant") + (row["seed"],)

    found = []
    for a, b in study.compare_weights:
        first = {key(r): r for r in rows if r.get("variant") == a}
        for k, row_b in ((key(r), r) for r in rows if r.get("variant") == b):
            if k not in first:
                continue
            wa, wb = weights(first[k]), weights(row_b)
            diff = max(
                float((wa[n].double() - wb[n].double()).abs().max())
                for n in wa
                if n.startswith("model.") and wa[n].is_floating_point()
            )
            scale = max(float(wa[n].abs().max()) for n in wa if n.startswith("model."))
            found.append(
                {"a": a, "b": b, "seed": row_b["seed"], "max_abs": diff, "max_weight": scale}
            )
    return found


def write(study: Study, rows: list[dict[str, Any]], info: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if study.early_stopping:
        rows = [_with_early_stop(study, row) for row in rows]
    summary = aggregate(study, rows)
    if study.compare_weights:
        info = {**info, "weight_differences": weight_differences(study, rows)}
    write_csv(rows, out / "results.csv")
    chosen = select(study, summary)
    document = {**info, "points": summary}
    if study.select is not None:
        document["selected"] = {**study.select, "points": chosen}
    write_text_atomic(out / "summary.json", json.dumps(document, indent=1) + "\n")
    figures = []
    for spec in study.plots:
        plot(study, spec, summary, rows, out / spec["file"])
        figures.append(spec["file"])
    if info.get("ensembles"):
        from cnn_bench.commands import study_ensemble

        figures += study_ensemble.write(study, info["ensembles"], out)
    notes_file = out / NOTES_FILE
    notes = notes_file.read_text() if notes_file.is_file() else ""
    write_text_atomic(out / "README.md", readme(study, summary, info, figures, notes))
