"""``cnn-bench lr-find --config X [fit options]``: the learning-rate range test.

Lightning's ``Tuner.lr_find`` (Smith 2017, "Cyclical learning rates"): ``--num_training``
optimizer steps of the configured run with the learning rate raised exponentially from
``--min_lr`` to ``--max_lr``, recording the training loss; the suggestion is the rate of
the loss's steepest descent. Nothing of the search is kept in the network, and no run,
checkpoint or W&B run is written: only ``lr_find.csv`` (rate, loss, Lightning's running
average of it) and ``lr_find.png`` in ``--out``. Train with the suggestion as
``--model.optimizer.lr`` (divided by the ``lr_scale`` printed when ``--model.lr_scaling``
is on, since the search sets the rate the optimizer uses).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="cnn-bench lr-find",
        description=__doc__.split("\n")[0],
        epilog="Every other option is a `cnn-bench fit` option (--config, --model.*, --data.*).",
    )
    p.add_argument("--min_lr", type=float, default=1e-6)
    p.add_argument("--max_lr", type=float, default=1.0)
    p.add_argument("--num_training", type=int, default=100, help="steps of the search")
    p.add_argument("--out", type=Path, default=Path("lr_find"), help="folder of the results")
    args, fit_args = p.parse_known_args(argv)
    if not 0 < args.min_lr < args.max_lr:
        p.error("need 0 < --min_lr < --max_lr")
    if args.num_training < 2:
        p.error("--num_training must be at least 2")

    from lightning.pytorch.tuner import Tuner

    from cnn_bench.cli import cli

    # No logger: the search is not a run (its steps would be a W&B run of their own).
    run = cli([*fit_args, "--trainer.logger", "false"], run=False)
    # Each step's own loss as well: Lightning's curve is a running average whose bias
    # correction is one step off (the first value is about half the loss), so the raw
    # losses go beside it in the file and the figure.
    raw: list = []
    training_step = run.model.training_step

    def recording_step(*args: object, **kwargs: object):
        loss = training_step(*args, **kwargs)
        raw.append(loss.detach())
        return loss

    run.model.training_step = recording_step
    finder = Tuner(run.trainer).lr_find(
        run.model,
        datamodule=run.datamodule,
        min_lr=args.min_lr,
        max_lr=args.max_lr,
        num_training=args.num_training,
        update_attr=False,
    )
    if finder is None:  # not rank zero
        return 0
    rates, smoothed = finder.results["lr"], finder.results["loss"]
    losses = [float(x) for x in raw[: len(rates)]]
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "lr_find.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lr", "loss", "smoothed_loss"])
        writer.writerows(zip(rates, losses, smoothed, strict=True))
    suggestion = finder.suggestion()
    _plot(rates, losses, smoothed, suggestion, args.out / "lr_find.png")
    scale = run.model.lr_scale()
    if suggestion is None or not math.isfinite(suggestion):
        print(
            f"cnn-bench lr-find: no suggestion (the loss never fell over {len(rates)} steps); "
            f"the curve is in {args.out / 'lr_find.png'}",
            file=sys.stderr,
        )
        return 1
    advice = f"--model.optimizer.lr {suggestion / scale:.3g}"
    if scale != 1.0:
        advice += f" (lr_scale {scale:g} is applied on top)"
    print(
        f"cnn-bench lr-find: suggested learning rate {suggestion:.3g} after {len(rates)} steps "
        f"from {args.min_lr:g} to {args.max_lr:g}: train with {advice}; "
        f"curve in {args.out / 'lr_find.png'}",
        file=sys.stderr,
    )
    return 0


def _plot(
    rates: list[float],
    losses: list[float],
    smoothed: list[float],
    suggestion: float | None,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(rates, losses, color="tab:blue", alpha=0.35, marker=".", label="training loss")
    ax.plot(rates, smoothed, color="tab:blue", label="running average (Lightning's)")
    if suggestion is not None and math.isfinite(suggestion):
        ax.axvline(
            suggestion, color="tab:red", linestyle="--", label=f"suggestion {suggestion:.3g}"
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate range test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
