"""``cnn-bench bench`` runs on a tiny setting and writes well-formed numbers; not a speed test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cnn_bench.bench.common import busy
from tests.conftest import run_cli

SECTIONS = ("overhead", "datapath", "imagenet", "throughput", "time_to_accuracy")


def _load(out: Path, name: str) -> dict:
    record = json.loads((out / f"{name}.json").read_text())
    assert record["section"] == name
    machine = record["machine"]
    assert machine["cpu_cores"] >= 1 and machine["cpu"] and machine["torch"]
    assert machine["device"] in ("cpu", "cuda")
    # the load at both ends, and the verdict that follows from it
    assert {"load_average_1min", "load_average_1min_end"} <= set(machine)
    assert record["valid"] == (busy(machine) is None)
    assert record.get("invalid_because") == busy(machine)
    return record["results"]


def test_a_section_measured_on_a_busy_machine_is_marked_not_valid() -> None:
    machine = {"cpu_cores": 2, "load_average_1min": 0.4, "load_average_1min_end": 0.9}
    assert busy(machine) is None
    assert busy({**machine, "load_average_1min_end": 2.5}) == (
        "the machine was busy: 1-minute load average 2.5 at the end, on 2 cores"
    )
    both = busy({**machine, "load_average_1min": 7.35, "load_average_1min_end": 3.0})
    assert both == (
        "the machine was busy: 1-minute load average 7.35 at the start, 3.0 at the end, on 2 cores"
    )


def test_tiny_bench_writes_every_section(tmp_path: Path, cli_env: dict[str, str]) -> None:
    out = tmp_path / "bench"
    done = run_cli(
        ["bench", "--tiny", "--seeds", "0", "1", "--out", str(out)], cwd=tmp_path, env=cli_env
    )
    assert done.returncode == 0, done.stderr[-3000:]

    overhead = _load(out, "overhead")
    assert overhead["arch"] == "lenet5" and overhead["steps_timed"] == 4
    ratio = overhead["lightning_images_per_s"]["median"] / overhead["plain_images_per_s"]["median"]
    assert abs(overhead["ratio"]["median"] - ratio) < 1e-9  # one pair: median of one ratio
    assert all(v > 0 for v in overhead["ratios"])
    # Where the step goes: every default callback has a row, and the parts add up.
    costs = overhead["step_costs"]
    for name in ("StopOnNonFinite", "ProgressBar", "LearningRateMonitor", "SaveLastOnEnd"):
        assert costs["callbacks_us"][name] >= 0, name
    assert abs(sum(costs["parts_us"].values()) - costs["step_us"]) < 1e-6 * costs["step_us"]
    assert costs["parts_us"]["backward"] > 0 and costs["profiler_record_us"] > 0
    assert overhead["large"]["ratio"]["median"] > 0

    cifar = _load(out, "datapath")["cifar10"]
    for key in (
        "datamodule_images_per_s",
        "pil_pipeline_images_per_s",
        "consumer_training_images_per_s",
    ):
        assert cifar[key] > 0, key
    assert (
        cifar["ratio_to_pil"]
        == cifar["datamodule_images_per_s"] / cifar["pil_pipeline_images_per_s"]
    )
    # Per CPU-second, the PIL pipeline's two worker processes are counted with it.
    assert cifar["pil_pipeline_worker_processes"] == cifar["pil_pipeline_workers"]
    assert cifar["datamodule_worker_processes"] == 0
    assert cifar["cpu_ratio_to_pil"]["median"] > 0
    per_cpu = cifar["pil_pipeline_images_per_cpu_s"]["median"]
    assert per_cpu > 0

    rows = _load(out, "throughput")["rows"]
    measured = {(r["mode"], r["precision"], r["channels_last"], r["fuse_bn"]) for r in rows}
    assert len(measured) == len(rows) == 12
    assert measured == {
        (mode, precision, cl, fuse)
        for mode in ("training", "inference")
        for precision in ("32-true", "bf16-mixed")
        for cl in (False, True)
        for fuse in ((False, True) if mode == "inference" else (False,))
    }
    assert all(r["model"] == "lenet5" and r["images_per_s"] > 0 for r in rows)

    tta = _load(out, "time_to_accuracy")
    assert tta["arch"] == "airbench94" and tta["steps"] == 2 and tta["epochs"] == 1
    assert 0 <= tta["test_acc1"] <= tta["test_acc5"] <= 1
    assert tta["tta"] and 0 <= tta["test_tta_acc1"] <= 1
    # One run per seed, the first one's numbers at the top, the mean over both beside.
    assert tta["seeds"] == [0, 1] and len(tta["runs"]) == 2
    assert tta["test_acc1"] == tta["runs"][0]["test_acc1"]
    mean = sum(run["test_tta_acc1"] for run in tta["runs"]) / 2
    assert abs(tta["over_seeds"]["test_tta_acc1"]["mean"] - mean) < 1e-12

    summary = (out / "README.md").read_text()
    invalid = [json.loads((out / f"{n}.json").read_text()).get("invalid_because") for n in SECTIONS]
    assert summary.count("**Not valid: ") == sum(bool(r) for r in invalid)
    for title in (
        "Framework overhead",
        "Data path",
        "ImageNet data path",
        "Per-architecture throughput",
        "Time to accuracy",
    ):
        assert f"## {title}" in summary
    assert f"{overhead['ratio']['median']:.3f}" in summary
    assert f"{100 * tta['test_acc1']:.2f}%" in summary


def test_tiny_imagenet_section_compares_the_loaders_on_a_written_tree(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    out, tree = tmp_path / "bench", tmp_path / "tree"
    args = ["bench", "imagenet", "--tiny", "--out", str(out), "--imagenet-tree", str(tree)]
    done = run_cli(args, cwd=tmp_path, env=cli_env)
    assert done.returncode == 0, done.stderr[-3000:]
    r = _load(out, "imagenet")
    assert r["tree"]["files"] == len(list(tree.rglob("*.JPEG"))) == 2 * (12 + 2)
    assert r["batch_size"] == 8 and r["workers"] == 2 and r["repeats"] == 1
    for name in ("datamodule", "datamodule_full_decode", "torchvision"):
        p = r[name]
        for key in ("images_per_s", "images_per_cpu_s", "per_worker_images_per_s"):
            assert p[key]["n"] == 1 and p[key]["median"] > 0, (name, key)
        # Every image costs CPU somewhere: per CPU-second of all processes is the lowest.
        assert p["images_per_cpu_s"]["median"] <= p["per_worker_images_per_s"]["median"]
        assert p["workers_for_network"] == math.ceil(3000 / p["per_worker_images_per_s"]["median"])
    ratio = r["ratio_to_torchvision"]["datamodule"]["images_per_s"]["median"]
    ours, theirs = (r[name]["images_per_s"]["median"] for name in ("datamodule", "torchvision"))
    assert ratio == ours / theirs  # one pair: the median of one ratio
    summary = (out / "README.md").read_text()
    assert "## ImageNet data path" in summary and f"**{ratio:.2f}" in summary
    # A second run reads the tree it finds (and refuses a loader without workers).
    stamp = (tree / "tree.json").stat().st_mtime_ns
    zero = run_cli([*args, "--imagenet-workers", "0"], cwd=tmp_path, env=cli_env)
    assert zero.returncode == 2 and "Traceback" not in zero.stderr
    assert zero.stderr.strip().splitlines()[-1] == (
        "cnn-bench: error: the ImageNet data path is measured with at least one worker"
    )
    assert (tree / "tree.json").stat().st_mtime_ns == stamp


def test_missing_data_is_one_line(tmp_path: Path, cli_env: dict[str, str]) -> None:
    cli_env["CNN_BENCH_DATA"] = str(tmp_path / "nowhere")
    done = run_cli(
        ["bench", "datapath", "--tiny", "--out", str(tmp_path / "b")], cwd=tmp_path, env=cli_env
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("cnn-bench: error: CIFAR-10 not found")
    assert "Traceback" not in done.stderr


def test_unknown_section_is_refused(tmp_path: Path, cli_env: dict[str, str]) -> None:
    done = run_cli(["bench", "speed"], cwd=tmp_path, env=cli_env)
    assert done.returncode == 2
    assert "unknown section speed" in done.stderr


def test_every_compiled_setting_is_timed_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twelve compiled settings of one network: each runs its own compiled graph, not
    eager code after dynamo's recompile limit (dynamo with its eager backend: the same
    graph capture and guards as inductor, without the C++ compile time)."""
    from cnn_bench.bench import throughput

    monkeypatch.setattr(throughput, "COMPILE_BACKEND", "eager")
    rows = throughput.measure(["lenet5@32"], True, 0.01, {32: 4})["rows"]
    compiled = [r for r in rows if r["compile"]]
    assert len(compiled) == 12
    assert all(r["compiled_graphs"] >= 1 for r in compiled), [
        r["compiled_graphs"] for r in compiled
    ]
    assert all(r["compiled_graphs"] == 0 for r in rows if not r["compile"])


@pytest.mark.slow
def test_time_to_accuracy_trains_every_planned_step_within_the_budget(
    tmp_path: Path, cifar_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step count is planned from a short ``cnn-bench fit`` of the recipe itself, so
    the run trains every planned step and ``max_time`` never cuts its schedule."""
    from cnn_bench.bench import time_to_accuracy

    for name, value in {
        "CNN_BENCH_DATA": str(cifar_root),
        "HOME": str(tmp_path),
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
    }.items():
        monkeypatch.setenv(name, value)
    result = time_to_accuracy.measure(30.0, tmp_path)
    assert result["calibration_images_per_s"] > 0
    assert result["steps"] == result["planned_steps"] >= 3
    assert not result["stopped_by_budget"] and result["train_s"] < 30.0
    assert (tmp_path / "calibration").is_dir()  # the calibration was a Lightning run


def test_gpu_check_runs_every_section_on_a_cpu_and_says_it_had_no_gpu(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    # What a GPU machine runs, on the CPU with a tiny network: every code path but CUDA's.
    out = tmp_path / "gpu"
    done = run_cli(
        ["bench", "gpu", "--allow-cpu", "--tiny", "--out", str(out)],
        cwd=tmp_path,
        env=cli_env,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "gpu.json").read_text())
    assert "gpu" not in record["device"] and record["machine"]["device"] == "cpu"
    assert (out / "gpu.md").read_text().startswith("# GPU check: no GPU")
    rows = record["training"]
    assert {(r["precision"], r["channels_last"], r["compile"]) for r in rows} == {
        (p, cl, c)
        for p in ("32-true", "16-mixed", "bf16-mixed")
        for cl, c in ((False, False), (True, False), (True, True))
    }
    assert all(r["images_per_s"] > 0 for r in rows)
    assert all(r["compiled_graphs"] >= 1 for r in rows if r["compile"])  # compiled, not eager
    assert [r["precision"] for r in record["lightning"]] == ["32-true", "16-mixed", "bf16-mixed"]
    assert all(r["loss_finite"] for r in record["lightning"])
    assert record["ddp"] == {"skipped": "fewer than 2 GPUs"}
    t = record["time_to_94"]
    assert not t["reached_94"] and t["seconds_to_94"] is None  # two steps reach no 94%
    imagenet = record["imagenet_datapath"]
    assert imagenet["workers"] >= 1 and imagenet["tree"]["files"] == 2 * (12 + 2)
    assert imagenet["images_per_s"] > 0 and imagenet["per_worker_images_per_s"] > 0
    assert imagenet["workers_for_network"] == math.ceil(3000 / imagenet["per_worker_images_per_s"])
