"""A study's ``ensemble:`` step: each grid point's seeds tested as one ensemble.

After the runs, for each grid point and each test-time augmentation setting of the
section, one ``cnn-bench test`` of the first seed's ``last.ckpt`` with the other seeds'
as ``--model.ensemble.members`` and ``--model.ensemble.cumulative true``: one pass over
the test set gives the ensemble of the first k seeds for every k, and each seed's own
accuracy under the same views (their mean is the mean single model). A test done before
(its record is found under the runs folder) is not repeated. Writes ``ensembles.csv``,
the figure and the README's "Ensembles" section.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cnn_bench.commands.study import _call, _find_metrics, _logger_words, base_words, cli_value
from cnn_bench.commands.study_report import finish_figure
from cnn_bench.studies import Run, Study, StudyError

CSV_FILE = "ensembles.csv"


def _test_words(study: Study, runs: list[Run], ckpts: list[Path], views: str) -> list[str]:
    extra = [f"--{k}={cli_value(v)}" for k, v in study.ensemble["args"].items()]
    members = json.dumps([str(c) for c in ckpts[1:]])
    return [
        "test",
        *base_words(study, runs[0]),
        *extra,
        "--ckpt_path",
        str(ckpts[0]),
        f"--model.ensemble.members={members}",
        "--model.ensemble.cumulative=true",
        f"--model.tta.views={views}",
    ]


def run(study: Study, rows: list[dict[str, Any]], runs_dir: Path) -> list[dict[str, Any]]:
    """One row per grid point, setting and ensemble size k: the ensemble's top-1 and
    top-5, the k-th seed's own top-1 and the mean single model's."""
    run_dirs = {row["run_id"]: Path(row["run_dir"]) for row in rows}
    points: dict[str, list[Run]] = {}
    for r in study.runs:
        points.setdefault(r.point, []).append(r)
    results = []
    for point, runs in points.items():
        runs.sort(key=lambda r: r.seed)
        ckpts = [run_dirs[r.run_id] / "checkpoints" / "last.ckpt" for r in runs]
        for views in study.ensemble["tta"]:
            # The id names the members' count, so a study with more seeds tests again.
            test_id = f"{runs[0].run_id}-ens{len(runs)}-{views}"
            found = _find_metrics(runs_dir, test_id)
            if found is None:
                name = f"{study.name}-{point}-ensemble{len(runs)}-{views}"
                words = [*_test_words(study, runs, ckpts, views)]
                words += _logger_words(study, runs_dir, test_id, name)
                code = _call(words, f"ensemble of {len(runs)} seeds of {point}, TTA {views}")
                found = _find_metrics(runs_dir, test_id)
                if code != 0 or found is None:
                    raise StudyError(f"the ensemble test of {point} ({views}) failed (exit {code})")
            test = found["test"]
            singles = [test["test/tta_acc1"]]
            singles += [test[f"test/member{i}_acc1"] for i in range(1, len(runs))]
            for k in range(1, len(runs) + 1):
                results.append(
                    {
                        "point": point,
                        "tta": views,
                        "k": k,
                        "acc1": test[f"test/ensemble_k{k}_acc1"],
                        "acc5": test.get(f"test/ensemble_k{k}_acc5"),
                        "member_acc1": singles[k - 1],
                        "single_mean_acc1": sum(singles) / len(singles),
                    }
                )
    return results


def plot(study: Study, results: list[dict[str, Any]], path: Path) -> None:
    """Top-1 against ensemble size, one line per point and setting; the mean single
    model of each as a dotted line of the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = study.ensemble["plot"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    several = len({r["point"] for r in results}) > 1
    lines: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        lines.setdefault((r["point"], r["tta"]), []).append(r)
    for (point, views), group in lines.items():
        name = f"{point}, TTA {views}" if several else f"TTA {views}"
        ks = [r["k"] for r in group]
        (line,) = ax.plot(ks, [100 * r["acc1"] for r in group], marker="o", label=name)
        mean = 100 * group[0]["single_mean_acc1"]
        ax.axhline(mean, color=line.get_color(), linestyle=":", linewidth=1.2)
        ax.plot([], [], color=line.get_color(), linestyle=":", label=f"{name}: mean single model")
    ax.set_xticks(sorted({r["k"] for r in results}))
    ax.set_xlabel("ensemble size k (the first k seeds)")
    ax.set_ylabel(spec.get("ylabel", "test top-1 (%)"))
    ax.set_title(f"{spec.get('title', study.name)}\n({study.budget} budget)", fontsize=10)
    finish_figure(fig, ax, path)


def write(study: Study, results: list[dict[str, Any]], out: Path) -> list[str]:
    """``ensembles.csv`` and the figure (if the section names one); the figure files."""
    from cnn_bench.commands.study_report import write_csv

    write_csv(results, out / CSV_FILE)
    if not study.ensemble["plot"]:
        return []
    plot(study, results, out / study.ensemble["plot"]["file"])
    return [study.ensemble["plot"]["file"]]


def readme_lines(results: list[dict[str, Any]]) -> list[str]:
    """Per point, a table of test top-1 (%): a row per ensemble size, a column per setting."""
    lines = ["", "## Ensembles", ""]
    lines += [
        "Test top-1 (%) of the ensemble of the first k seeds (`last.ckpt`, softmax"
        " probabilities averaged), for each test-time augmentation setting; the last row"
        f" is the mean of the seeds alone. Every number: [{CSV_FILE}]({CSV_FILE}).",
    ]
    for point in dict.fromkeys(r["point"] for r in results):
        group = [r for r in results if r["point"] == point]
        settings = list(dict.fromkeys(r["tta"] for r in group))
        if len({r["point"] for r in results}) > 1:
            lines += ["", f"`{point}`:"]
        lines += ["", "| k | " + " | ".join(f"TTA {v}" for v in settings) + " |"]
        lines.append("| ---: | " + " | ".join("---:" for _ in settings) + " |")
        for k in sorted({r["k"] for r in group}):
            cells = [next(r for r in group if r["tta"] == v and r["k"] == k) for v in settings]
            lines.append(f"| {k} | " + " | ".join(f"{100 * c['acc1']:.2f}" for c in cells) + " |")
        means = [next(r for r in group if r["tta"] == v)["single_mean_acc1"] for v in settings]
        lines.append("| mean single | " + " | ".join(f"{100 * m:.2f}" for m in means) + " |")
    return lines
