"""``cnn-bench seeds``: one experiment trained and tested with N seeds, and its spread.

Each seed is a ``cnn-bench fit --test_after_fit true`` subprocess with its own W&B run
(grouped together in W&B); the test top-1 and top-5 of the best checkpoints are then
summarised as mean, sample standard deviation and a 95% Student-t interval, written
as JSON and Markdown to ``<runs dir>/seeds/<group>.{json,md}``.

    cnn-bench seeds --config configs/experiment/lenet5_cifar10.yaml --n 3 -- --trainer.max_epochs 5
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

from cnn_bench.files import write_text_atomic
from cnn_bench.runs import METRICS_FILE
from cnn_bench.stats import mean_interval

METRICS = ("test/acc1", "test/acc5")


def _run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _find_metrics(runs_dir: Path, run_id: str) -> Path | None:
    # <save_dir>/<project>/<run id>/metrics.json; the project comes from the config.
    return next(iter(runs_dir.glob(f"*/{run_id}/{METRICS_FILE}")), None)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"  # no top-5 with 5 classes or fewer


def _markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# {summary['group']}: {len(summary['runs'])} seeds of {summary['config']}",
        "",
        "| seed | run | test top-1 (%) | test top-5 (%) |",
        "| ---: | --- | ---: | ---: |",
    ]
    for run in summary["runs"]:
        lines.append(
            f"| {run['seed']} | {run['run_dir']} | {100 * run['test/acc1']:.2f} | "
            f"{_percent(run.get('test/acc5'))} |"
        )
    lines += [
        "",
        "| metric | mean (%) | std (%) | 95% interval (%) |",
        "| --- | ---: | ---: | --- |",
    ]
    for name in (m for m in METRICS if m in summary):
        s = summary[name]
        std = "-" if s["std"] is None else f"{100 * s['std']:.2f}"
        ci = "-" if s["ci95"] is None else f"[{100 * s['ci95'][0]:.2f}, {100 * s['ci95'][1]:.2f}]"
        lines.append(f"| {name} | {100 * s['mean']:.2f} | {std} | {ci} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    else:
        extra = []
    parser = argparse.ArgumentParser(
        prog="cnn-bench seeds",
        description="Fit and test one experiment with seeds 0..N-1 and report the spread "
        "of test top-1 and top-5. Arguments after -- go to every `cnn-bench fit`.",
    )
    parser.add_argument("--config", required=True, help="experiment YAML (configs/experiment/)")
    parser.add_argument("--n", type=int, default=3, help="number of seeds (default 3)")
    parser.add_argument("--first_seed", type=int, default=0, help="seeds run from this one")
    parser.add_argument(
        "--runs_dir",
        default=os.environ.get("WANDB_DIR", "runs"),
        help="where the runs go, as fit's logger save_dir ($WANDB_DIR, else runs/)",
    )
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    if not Path(args.config).is_file():
        parser.error(f"no experiment config at {args.config}")
    runs_dir = Path(args.runs_dir)
    group = f"{Path(args.config).stem}-{_run_id()}"
    runs = []
    for seed in range(args.first_seed, args.first_seed + args.n):
        run_id = _run_id()
        command = [
            sys.executable,
            "-m",
            "cnn_bench.cli",
            "fit",
            "--config",
            args.config,
            "--seed_everything",
            str(seed),
            "--test_after_fit",
            "true",
            "--trainer.logger.init_args.save_dir",
            str(runs_dir),
            "--trainer.logger.init_args.id",
            run_id,
            "--trainer.logger.init_args.group",
            group,
            *extra,
        ]
        print(f"cnn-bench seeds: seed {seed}: {' '.join(command[2:])}", flush=True)
        code = subprocess.call(command)
        metrics_path = _find_metrics(runs_dir, run_id)
        if code != 0 or metrics_path is None:
            print(
                f"cnn-bench seeds: error: the run with seed {seed} failed (exit code {code}); "
                "fix the error above and run again",
                file=sys.stderr,
            )
            return code or 1
        test = json.loads(metrics_path.read_text())["test"]
        runs.append(
            {
                "seed": seed,
                "run_id": run_id,
                "run_dir": str(metrics_path.parent),
                **{name: test[name] for name in METRICS if name in test},
            }
        )
    summary = {
        "config": args.config,
        "group": group,
        "extra_args": extra,
        "runs": runs,
        **{
            name: mean_interval([run[name] for run in runs])
            for name in METRICS
            if all(name in run for run in runs)
        },
    }
    out = runs_dir / "seeds"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"{group}.json", json.dumps(summary, indent=1) + "\n")
    markdown = _markdown(summary)
    write_text_atomic(out / f"{group}.md", markdown)
    print(markdown + f"\nwritten to {out / group}.json and .md")
    return 0
