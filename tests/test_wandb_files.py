"""The offline W&B run reader, checked against values written through ``wandb`` itself.

The tracking tests read what the project logged with ``tests/wandb_files.py``; this makes
sure the reader returns exactly what ``wandb`` wrote, including a history long enough to
span several 32 KiB blocks of the run file, so those tests are not the project's writer
agreeing with itself.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import clean_env
from tests.wandb_files import read_wandb_run

WRITER = textwrap.dedent(
    """
    import wandb
    run = wandb.init(project="reader-check", name="written-by-wandb", group="g1",
                     tags=["a", "b"], config={"lr": 0.125, "arch": "lenet5"})
    for step in range(3000):
        run.log({"loss": 1.0 / (step + 1), "acc": step / 3000, "note": f"row {step}"}, step=step)
    run.config.update({"later": [1, 2]})
    run.summary["best"] = 0.875
    run.finish()
    """
)


def test_the_reader_returns_what_wandb_wrote(tmp_path: Path) -> None:
    env = clean_env(tmp_path, WANDB_MODE="offline", WANDB_SILENT="true")
    subprocess.run([sys.executable, "-c", WRITER], env=env, check=True, timeout=300)
    (folder,) = (tmp_path / "wandb").glob("offline-run-*")
    assert (next(folder.glob("run-*.wandb"))).stat().st_size > 3 * 32 * 1024  # several blocks
    run = read_wandb_run(folder)
    assert (run.name, run.group, sorted(run.tags)) == ("written-by-wandb", "g1", ["a", "b"])
    assert run.config["lr"] == 0.125 and run.config["arch"] == "lenet5"
    assert run.config["later"] == [1, 2]
    assert run.metric("loss") == [1.0 / (s + 1) for s in range(3000)]
    assert run.metric("note")[-1] == "row 2999"
    assert [row["_step"] for row in run.history] == list(range(3000))
    assert run.summary["best"] == 0.875
