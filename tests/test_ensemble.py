"""Ensembles at test time: the members' probabilities averaged, checked by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnn_bench.data import augment
from cnn_bench.data.cifar10 import FOLDER
from cnn_bench.data.safe_pickle import load_pickle
from cnn_bench.ensemble import EnsembleConfig, EnsembleError, combine
from cnn_bench.predict import load_classifier
from tests.conftest import REPO, clean_env, run_cli
from tests.wandb_files import read_wandb_run

LENET = str(REPO / "configs/experiment/lenet5_cifar10.yaml")


def test_combine_is_the_weighted_mean_of_the_scores() -> None:
    a = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    b = torch.tensor([[0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    assert torch.allclose(combine([a, b], EnsembleConfig()), (a + b) / 2)
    weighted = combine([a, b], EnsembleConfig(weights=[3.0, 1.0]))
    assert torch.allclose(weighted, 0.75 * a + 0.25 * b)
    # the ensemble's top class can be neither member's: 0.4/0.5/0.1 -> class 1
    assert weighted.argmax(1).tolist() == [0, 2] and combine([a, b], EnsembleConfig()).argmax(
        1
    ).tolist() == [1, 2]
    with pytest.raises(EnsembleError, match="2 members but 3 weights"):
        combine([a, b], EnsembleConfig(weights=[1.0, 1.0, 1.0]))


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory: pytest.TempPathFactory, cifar_root: Path) -> list[Path]:
    paths = []
    for seed in (1, 2):
        root = tmp_path_factory.mktemp(f"seed{seed}")
        fit = run_cli(
            ["fit", "--config", LENET, "--seed_everything", str(seed)]
            + ["--trainer.max_steps", "40", "--trainer.limit_val_batches", "1"],
            cwd=root,
            env=clean_env(root, CNN_BENCH_DATA=str(cifar_root)),
        )
        assert fit.returncode == 0, fit.stderr[-3000:]
        (path,) = root.rglob("last.ckpt")
        paths.append(path)
    return paths


def _test(tmp_path: Path, cifar_root: Path, ckpt: Path, members: list[str], *extra: str):
    done = run_cli(
        ["test", "--config", LENET, "--ckpt_path", str(ckpt)]
        + ["--model.ensemble.members", f"[{', '.join(members)}]"]
        + ["--data.eval_batch_size", "100", "--trainer.limit_test_batches", "3", *extra],
        cwd=tmp_path,
        env=clean_env(tmp_path, CNN_BENCH_DATA=str(cifar_root)),
    )
    return done


def test_ensemble_accuracy_equals_the_average_computed_by_hand(
    tmp_path: Path, cifar_root: Path, two_checkpoints: list[Path]
) -> None:
    first, second = two_checkpoints
    done = _test(tmp_path, cifar_root, first, [str(second)])
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    summary = read_wandb_run(run_dir).summary
    # by hand: the first 300 test images through both networks
    batch = load_pickle(cifar_root / FOLDER / "test_batch")
    images = torch.from_numpy(batch[b"data"][:300].reshape(-1, 3, 32, 32))
    labels = torch.tensor(batch[b"labels"][:300])
    probs = []
    for path in (first, second):
        model, data = load_classifier(path)
        x = augment.normalize(images, torch.tensor(data["mean"]), torch.tensor(data["std"]))
        with torch.no_grad():
            probs.append(model(x).softmax(dim=1))
    accuracy = [(p.argmax(1) == labels).float().mean().item() for p in probs]
    ensemble = ((probs[0] + probs[1]).argmax(1) == labels).float().mean().item()
    assert summary["test/acc1"] == pytest.approx(accuracy[0], abs=1e-6)
    assert summary["test/member1_acc1"] == pytest.approx(accuracy[1], abs=1e-6)
    assert summary["test/ensemble_acc1"] == pytest.approx(ensemble, abs=1e-6)
    assert not torch.allclose(probs[0], probs[1], atol=1e-3)  # two different networks


def test_an_ensemble_of_one_or_of_twins_is_the_member(
    tmp_path: Path, cifar_root: Path, two_checkpoints: list[Path]
) -> None:
    first, _ = two_checkpoints
    for i, members in enumerate(([], [str(first)])):
        where = tmp_path / str(i)
        where.mkdir()
        done = _test(where, cifar_root, first, members)
        assert done.returncode == 0, done.stderr[-3000:]
        (run_dir,) = (where / "wandb").glob("offline-run-*")
        summary = read_wandb_run(run_dir).summary
        assert summary["test/ensemble_acc1"] == summary["test/acc1"]
        assert summary["test/ensemble_acc5"] == summary["test/acc5"]


def test_members_of_other_data_are_refused_in_one_line(
    tmp_path: Path, cifar_root: Path, two_checkpoints: list[Path]
) -> None:
    first, second = two_checkpoints
    other = tmp_path / "other.ckpt"
    checkpoint = torch.load(second, weights_only=True)
    checkpoint["data"]["classes"] = [f"c{i}" for i in range(10)]
    torch.save(checkpoint, other)
    for members, message in (
        ([str(other)], f"ensemble member {other} was trained on other classes"),
        ([str(tmp_path / "none*.ckpt")], "matches no file"),
    ):
        done = _test(tmp_path, cifar_root, first, members)
        assert done.returncode == 2, done.stderr[-3000:]
        assert message in done.stderr and "Traceback" not in done.stderr


def test_combine_of_the_first_k_members_uses_their_weights_only() -> None:
    a, b, c = torch.eye(3)[[0]], torch.eye(3)[[1]], torch.eye(3)[[2]]
    assert torch.allclose(combine([a, b, c], EnsembleConfig(), first=1), a)
    assert torch.allclose(combine([a, b, c], EnsembleConfig(), first=2), (a + b) / 2)
    weighted = EnsembleConfig(weights=[3.0, 1.0, 4.0])
    assert torch.allclose(combine([a, b, c], weighted, first=2), 0.75 * a + 0.25 * b)
    assert torch.allclose(combine([a, b, c], weighted), (3 * a + b + 4 * c) / 8)


def test_cumulative_ensembles_with_test_time_views(
    tmp_path: Path, cifar_root: Path, two_checkpoints: list[Path]
) -> None:
    """The ensemble of the first k, each member over its flipped views: k = 1 is the tested
    network's own TTA accuracy, k = 2 the whole ensemble."""
    first, second = two_checkpoints
    done = _test(
        tmp_path,
        cifar_root,
        first,
        [str(second)],
        "--model.ensemble.cumulative",
        "true",
        "--model.tta.views",
        "flip",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    summary = read_wandb_run(run_dir).summary
    assert summary["test/ensemble_k1_acc1"] == summary["test/tta_acc1"]
    assert summary["test/ensemble_k2_acc1"] == summary["test/ensemble_acc1"]
    assert summary["test/ensemble_k2_acc5"] == summary["test/ensemble_acc5"]
    # the member's own accuracy is over its views too: by hand, image and mirror averaged
    batch = load_pickle(cifar_root / FOLDER / "test_batch")
    images = torch.from_numpy(batch[b"data"][:300].reshape(-1, 3, 32, 32))
    labels = torch.tensor(batch[b"labels"][:300])
    model, data = load_classifier(second)
    x = augment.normalize(images, torch.tensor(data["mean"]), torch.tensor(data["std"]))
    with torch.no_grad():
        probs = model(x).softmax(1) + model(x.flip(3)).softmax(1)
    accuracy = (probs.argmax(1) == labels).float().mean().item()
    assert summary["test/member1_acc1"] == pytest.approx(accuracy, abs=1e-6)


def test_a_run_group_is_its_runs_last_checkpoints_in_seed_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from cnn_bench.ensemble import member_paths

    for run_id, group, seed, has_checkpoint in (
        ("b", "mine", 1, True),
        ("a", "mine", 2, True),
        ("c", "mine", 0, True),
        ("d", "other", 3, True),
        ("e", "mine", 4, False),  # a test run of the group: no checkpoints
    ):
        folder = tmp_path / "cnn_bench" / run_id
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"group": group, "seed": seed}))
        if has_checkpoint:
            (folder / "checkpoints" / "last.ckpt").write_bytes(b"")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    found = member_paths(EnsembleConfig(members=["group:mine"]))
    assert [p.parent.parent.name for p in found] == ["c", "b", "a"]
    with pytest.raises(EnsembleError, match="'group:none' matches no file"):
        member_paths(EnsembleConfig(members=["group:none"]))
