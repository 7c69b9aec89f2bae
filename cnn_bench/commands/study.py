"""``cnn-bench study NAME``: run a study's grid, aggregate over seeds, plot, write it up.

Every grid point and seed is a normal ``cnn-bench fit --test_after_fit true`` subprocess
(its own W&B run, all in one W&B group named after the study, offline without
credentials), followed, with ``test_last: true``, by ``cnn-bench test`` of its
``last.ckpt``: the best-validation checkpoint alone would early-stop every study of a
training curve. A finished run leaves ``<runs>/studies/<name>/<run id>.json``; started
again, the study skips those and resumes the unfinished one with ``--ckpt_path last``.

Writes ``docs/studies/<name>/`` (or ``--out``): ``results.csv`` (one row per run),
``summary.json`` (mean and 95% interval of every metric over seeds), the figures and
``README.md`` (``cnn_bench/commands/study_report.py``).

    cnn-bench study double_descent [--budget cpu|full] [--seeds N] [--out DIR] [--sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from cnn_bench import studies
from cnn_bench.files import write_text_atomic
from cnn_bench.runs import METRICS_FILE
from cnn_bench.studies import Run, Study, StudyError, cli_value


def _relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive
        return str(path)


def base_words(study: Study, run: Run) -> list[str]:
    """The options shared by a run's fit and its last-checkpoint test."""
    words = []
    for config in study.configs:
        words += ["--config", _relative(config)]
    words += [f"--{key}={cli_value(value)}" for key, value in run.args.items()]
    return [*words, "--seed_everything", str(run.seed)]


def _logger_words(study: Study, runs_dir: Path, run_id: str, name: str) -> list[str]:
    return [
        "--trainer.logger.init_args.save_dir",
        str(runs_dir),
        "--trainer.logger.init_args.id",
        run_id,
        "--trainer.logger.init_args.group",
        study.name,
        "--trainer.logger.init_args.name",
        name,
    ]


def fit_command(study: Study, run: Run, runs_dir: Path) -> list[str]:
    name = f"{study.name}-{run.point}-s{run.seed}"
    return [
        "fit",
        *base_words(study, run),
        # The experiment name is what --ckpt_path last matches a run folder by.
        "--experiment",
        f"{study.name}.{run.point}",
        "--test_after_fit",
        "true",
        *_logger_words(study, runs_dir, run.run_id, name),
        "--ckpt_path",
        "last",
    ]


def _find_metrics(runs_dir: Path, run_id: str) -> dict[str, Any] | None:
    # <save_dir>/<project>/<run id>/metrics.json; the project comes from the config.
    path = next(iter(runs_dir.glob(f"*/{run_id}/{METRICS_FILE}")), None)
    return None if path is None else {**json.loads(path.read_text()), "_dir": str(path.parent)}


def _with_errors(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    """``prefix/acc1``, ``prefix/loss``... plus ``prefix/error`` (zero-one error, 1 - top-1)."""
    out = {f"{prefix}/{k.split('/', 1)[1]}": v for k, v in metrics.items() if "/" in k}
    if f"{prefix}/acc1" in out:
        out[f"{prefix}/error"] = 1.0 - out[f"{prefix}/acc1"]
    return out


def row_of(
    study: Study,
    run: Run,
    fit: dict[str, Any],
    last: dict[str, Any] | None,
    extra: dict[str, dict[str, Any]] | None = None,
) -> dict:
    """One run's results: its values, size, time, best and last test, final-epoch training."""
    history = fit.get("history") or []
    final = history[-1] if history else {}
    train = {k: v for k, v in final.items() if k.startswith("train/") and "per_sec" not in k}
    val = {k: v for k, v in final.items() if k.startswith("val/")}
    row: dict[str, Any] = {
        "point": run.point,
        **{key: run.values.get(key) for key in study.grid_keys},
        "seed": run.seed,
        "run_id": run.run_id,
        "run_dir": fit["_dir"],
        "params": fit.get("params"),
        "trainable_params": fit.get("trainable_params"),
        "epochs": fit.get("epochs"),
        "fit_seconds": fit.get("fit_seconds"),
        **_with_errors("train", train),
        **_with_errors("val", val),
        **_with_errors("test", fit.get("test") or {}),
    }
    accs = [h["val/acc1"] for h in history if "val/acc1" in h]
    if accs:
        row["val_best/acc1"] = max(accs)
        row["best_epoch"] = history[[h.get("val/acc1") for h in history].index(max(accs))]["epoch"]
    if last is not None:
        row.update(_with_errors("test_last", last.get("test") or {}))
    for prefix, metrics in (extra or {}).items():
        row.update(_with_errors(prefix, metrics.get("test") or {}))
    if fit.get("init_activations"):
        row["layers"] = fit["init_activations"]
    row["history"] = [
        {k: v for k, v in h.items() if k in ("epoch", "step") or "/" in k} for h in history
    ]
    for h in row["history"]:  # training and validation error curves (1 - top-1), too
        h.update({f"{s}/error": 1.0 - h[f"{s}/acc1"] for s in ("train", "val") if f"{s}/acc1" in h})
    return row


def _call(words: list[str], log: str) -> int:
    print(f"cnn-bench study: {log}: {shlex.join(['cnn-bench', *words])}", flush=True)
    return subprocess.call([sys.executable, "-m", "cnn_bench.cli", *words])


def test_last(
    study: Study,
    run: Run,
    runs_dir: Path,
    where: str,
    ckpt: Path,
    tag: str,
    options: dict[str, Any],
) -> dict[str, Any]:
    """``cnn-bench test`` of a run's ``last.ckpt`` with ``options`` added; its record."""
    test_id = f"{run.run_id}-{tag}"
    words = [
        "test",
        *base_words(study, run),
        *[f"--{key}={cli_value(value)}" for key, value in options.items()],
        "--ckpt_path",
        str(ckpt),
        *_logger_words(study, runs_dir, test_id, f"{study.name}-{run.point}-s{run.seed}-{tag}"),
    ]
    code = _call(words, f"{where} test of last.ckpt" + (f" ({tag})" if options else ""))
    found = _find_metrics(runs_dir, test_id)
    if code != 0 or found is None:
        raise StudyError(f"testing {ckpt} failed (exit code {code}); see above")
    return found


def run_one(study: Study, run: Run, runs_dir: Path, where: str) -> dict[str, Any]:
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    code = _call(fit_command(study, run, runs_dir), f"{where} fit")
    fit = _find_metrics(runs_dir, run.run_id)
    if code != 0 or fit is None or not fit.get("test"):
        raise StudyError(f"run {run.point} seed {run.seed} failed (exit code {code}); see above")
    ckpt = Path(fit["_dir"]) / "checkpoints" / "last.ckpt"
    last = test_last(study, run, runs_dir, where, ckpt, "last", {}) if study.test_last else None
    extra = {
        prefix: test_last(study, run, runs_dir, where, ckpt, prefix, options)
        for prefix, options in study.extra_tests.items()
    }
    row = row_of(study, run, fit, last, extra)
    row["wall_seconds"] = time.perf_counter() - started
    # The run's own load: a later report-only invocation measures another moment.
    row["load_1min"] = [load_start, os.getloadavg()[0]]
    return row


def sweep_yaml(study: Study) -> str:
    """The W&B sweep(s) equivalent to the study: one grid sweep per variant."""
    documents = []
    variants: dict[str, list[Run]] = {}
    for run in study.runs:
        variants.setdefault(str(run.values.get("variant", "")), []).append(run)
    for variant, runs in variants.items():
        first = runs[0]
        grid_keys = [k for k in study.grid_keys if k != "variant"]
        fixed = {k: v for k, v in first.args.items() if k not in grid_keys}
        command = ["${env}", "cnn-bench", "fit"]
        for config in study.configs:
            command += ["--config", _relative(config)]
        command += [f"--{k}={cli_value(v)}" for k, v in fixed.items()]
        command += ["--test_after_fit=true", "${args}"]
        parameters = {
            key: {"values": sorted({r.values[key] for r in runs}, key=str)} for key in grid_keys
        }
        parameters["seed_everything"] = {"values": study.seeds}
        name = f"{study.name}-{variant}" if variant else study.name
        documents.append(
            {
                "name": f"{name} ({study.budget})",
                "program": "cnn-bench",
                "method": "grid",
                "metric": {"name": "val/acc1", "goal": "maximize"},
                "command": command,
                "parameters": parameters,
            }
        )
    return "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in documents)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")


def machine(load_start: tuple[float, ...]) -> dict[str, Any]:
    from importlib.metadata import version

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_start": list(load_start),
        "load_end": list(os.getloadavg()),
        "torch": version("torch"),
        # Thread settings change small networks' speed 10x on a busy machine.
        "threads": {k: v for k, v in os.environ.items() if k in THREAD_VARIABLES},
    }


def _load_range(rows: list[dict[str, Any]]) -> list[float] | None:
    loads = [v for row in rows for v in row.get("load_1min") or []]
    return [min(loads), max(loads)] if loads else None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="cnn-bench study",
        description="Run a study (configs/studies/NAME.yaml): every grid point and seed as "
        "a cnn-bench fit + test, then a table, a summary over seeds and figures.",
    )
    parser.add_argument("name", help=f"a study: {', '.join(studies.available())}, or a file")
    parser.add_argument("--budget", default="cpu", help="a budget of the study (default cpu)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per point (the budget's)")
    parser.add_argument("--out", default=None, help="where to write (docs/studies/NAME)")
    parser.add_argument(
        "--runs_dir",
        default=os.environ.get("WANDB_DIR", "runs"),
        help="where the runs go, as fit's logger save_dir ($WANDB_DIR, else runs/)",
    )
    parser.add_argument("--sweep", action="store_true", help="print the W&B sweep YAML instead")
    parser.add_argument("--dry_run", action="store_true", help="print the fit commands only")
    args = parser.parse_args(argv)
    try:
        if args.seeds is not None and args.seeds < 1:
            raise StudyError(f"--seeds must be at least 1, not {args.seeds}")
        study = studies.load(args.name, args.budget, args.seeds)
    except StudyError as err:
        print(f"cnn-bench study: error: {err}", file=sys.stderr)
        return 2
    runs_dir = Path(args.runs_dir)
    if args.sweep:
        print(sweep_yaml(study), end="")
        return 0
    if args.dry_run:
        for run in study.runs:
            print(shlex.join(["cnn-bench", *fit_command(study, run, runs_dir)]))
        return 0
    from cnn_bench.commands import study_report

    out = Path(args.out) if args.out else Path("docs") / "studies" / study.name
    done_dir = runs_dir / "studies" / study.name
    load_start = os.getloadavg()
    started = time.perf_counter()
    rows = []
    finished: dict[tuple[str, int], Path] = {}  # for {ckpt:POINT}: (point, seed) -> run folder
    for i, run in enumerate(study.runs, 1):
        where = f"run {i}/{len(study.runs)} ({run.point}, seed {run.seed})"
        done = done_dir / f"{run.run_id}.json"
        if done.is_file():
            print(f"cnn-bench study: {where}: done before, skipped", flush=True)
            rows.append(json.loads(done.read_text()))
        else:
            try:
                row = run_one(study, studies.resolve_checkpoints(run, finished), runs_dir, where)
            except StudyError as err:
                print(f"cnn-bench study: error: {err}", file=sys.stderr)
                return 1
            write_text_atomic(done, json.dumps(row, indent=1) + "\n")
            rows.append(row)
        finished[run.point, run.seed] = Path(rows[-1]["run_dir"])
    ensembles = None
    if study.ensemble is not None:
        from cnn_bench.commands import study_ensemble

        try:
            ensembles = study_ensemble.run(study, rows, runs_dir)
        except StudyError as err:
            print(f"cnn-bench study: error: {err}", file=sys.stderr)
            return 1
    command = shlex.join(["cnn-bench", "study", *argv])
    info = {
        "study": study.name,
        "budget": study.budget,
        "command": command,
        "machine": machine(load_start),
        "wall_seconds_this_invocation": time.perf_counter() - started,
        # Each run's own load, at its start and end (runs recorded before had none).
        "runs_load_1min": _load_range(rows),
        "wall_seconds_all_runs": sum(r.get("wall_seconds", 0.0) for r in rows),
    }
    if ensembles is not None:
        info["ensembles"] = ensembles
    study_report.write(study, rows, info, out)
    print(f"cnn-bench study: {len(rows)} runs; written to {out}/ (README.md, results.csv, ...)")
    return 0
