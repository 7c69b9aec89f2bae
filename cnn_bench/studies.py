"""A study: a grid of ``cnn-bench fit`` runs declared in ``configs/studies/<name>.yaml``.

This module reads and checks a study file and expands it into runs; running them,
aggregating and plotting is ``cnn_bench.commands.study``. A study file holds:

```yaml
description: one paragraph: what is measured and why
configs: [../experiment/mlp_cifar10.yaml]   # base config(s), relative to this file
args: {model.arch_kwargs.depth: 1}          # overrides shared by every run (any CLI key)
variants:                                   # optional: named bundles of overrides
  sgd_wd: {model.optimizer.init_args.weight_decay: 1.0e-3}
  sgd_l2: {model.l2_penalty: 1.0e-3}
grid: {model.arch_kwargs.width: [4, 16, 64]}  # every combination, times every variant
seeds: 2
test_last: true                             # also test last.ckpt (test_last/*)
compare_weights: [[sgd_wd, sgd_l2]]         # largest final-weight difference, per seed
extra_tests:                                # more tests of last.ckpt, with these options:
  test_precise_bn: {bn_test.mode: precise}  #   metrics test_precise_bn/acc1, ...
table: [train/loss]                         # more columns of the README's table
budgets:                                    # --budget NAME (cpu is the default)
  cpu: {seeds: 2, args: {trainer.max_epochs: 5}}
  full: {seeds: 3, grid: {...}, args: {...}}
plots:
  - {file: error_vs_params.png, x: params, y: [test/error, train/error], logx: true,
     reference: [{x: 40000, label: interpolation threshold}]}
  - {file: std.png, kind: layers, y: std, logy: true,   # init_activations by depth,
     where: {model.arch_kwargs.width: 16}}             # of the points with this value
```

Plot kinds: ``sweep`` (a metric against a grid value or ``params``), ``history`` (per
epoch) and ``layers`` (per layer at initialisation: ``std`` or ``mean`` of the record
``--run_summary.activation_stats N`` writes, one line per grid point).

A run's identity is a hash of the study, its budget, its arguments and its seed: the
same study started again finds the same runs, and a changed study gets new ones.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STUDY_DIR = Path(__file__).resolve().parents[1] / "configs" / "studies"
_TOP_KEYS = {"description", "configs", "args", "variants", "grid", "seeds", "test_last"}
_TOP_KEYS |= {"budgets", "plots", "compare_weights", "extra_tests", "table"}
_BUDGET_KEYS = {"seeds", "args", "grid", "variants", "description"}
_PLOT_KEYS = {"file", "kind", "x", "y", "logx", "logy", "reference", "title", "ylabel"}
_PLOT_KEYS |= {"xlabel", "series", "epochs_from", "where"}


PLOT_KINDS = ("sweep", "history", "layers")


class StudyError(ValueError):
    """A study file or option that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class Run:
    """One ``cnn-bench fit`` of a study: a grid point at one seed."""

    point: str  # the grid point's label, the same for every seed
    values: dict[str, Any]  # the grid values (and variant) of the point
    args: dict[str, Any]  # every override given to fit, shared ones included
    seed: int
    run_id: str


@dataclass
class Study:
    name: str
    path: Path
    description: str
    configs: list[Path]
    budget: str
    budget_description: str
    seeds: list[int]
    runs: list[Run]
    plots: list[dict[str, Any]]
    test_last: bool
    # Pairs of variants whose final weights are compared, seed by seed.
    compare_weights: list[tuple[str, str]] = field(default_factory=list)
    grid_keys: list[str] = field(default_factory=list)
    # Metric prefix -> options of one more test of each run's last.ckpt.
    extra_tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    table: list[str] = field(default_factory=list)  # extra columns of the README table


def available() -> list[str]:
    return sorted(p.stem for p in STUDY_DIR.glob("*.yaml"))


def cli_value(value: Any) -> str:
    """A YAML value as a command-line word: ``true``, ``0.001``, ``{a: 1}``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StudyError(f"{what} must be a mapping of option to value, not {value!r}")
    return value


def _check_keys(given: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise StudyError(f"{what}: unknown key(s) {', '.join(unknown)}; known: {sorted(allowed)}")


def _label(values: dict[str, Any]) -> str:
    """``width=16`` from ``{model.arch_kwargs.width: 16}``: the last word of each key."""
    return ",".join(f"{k.rsplit('.', 1)[-1]}={cli_value(v)}" for k, v in values.items()) or "base"


def read_file(path: Path) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(path.read_text())
    except OSError as err:
        raise StudyError(f"study {path} cannot be read: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise StudyError(f"study {path} is not valid YAML{where}") from None
    if not isinstance(spec, dict):
        raise StudyError(f"study {path} is not a mapping (configs:, grid:, budgets:, plots:)")
    return spec


def load(name_or_path: str, budget: str = "cpu", seeds: int | None = None) -> Study:
    """The study ``name_or_path`` (a name under configs/studies/ or a file) at ``budget``."""
    path = Path(name_or_path)
    if not path.is_file():
        path = STUDY_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise StudyError(f"no study {name_or_path!r}; known: {', '.join(available()) or 'none'}")
    spec = read_file(path)
    _check_keys(spec, _TOP_KEYS, f"study {path}")
    budgets = _mapping(spec.get("budgets"), "budgets")
    if budget not in budgets:
        raise StudyError(f"study {path.stem} has no budget {budget!r}; known: {sorted(budgets)}")
    chosen = _mapping(budgets[budget], f"budget {budget}")
    _check_keys(chosen, _BUDGET_KEYS, f"budget {budget}")

    configs = spec.get("configs") or []
    configs = [configs] if isinstance(configs, str) else configs
    if not configs:
        raise StudyError(f"study {path.stem} names no base config (configs: [...])")
    config_paths = [(path.parent / c).resolve() for c in configs]
    for c in config_paths:
        if not c.is_file():
            raise StudyError(f"study {path.stem}: no config file {c}")

    shared = _mapping(spec.get("args"), "args") | _mapping(chosen.get("args"), "budget args")
    grid = _mapping(chosen.get("grid", spec.get("grid")), "grid")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise StudyError(f"grid {key} must be a non-empty list of values")
    variants = _mapping(chosen.get("variants", spec.get("variants")), "variants") or {"": {}}
    n_seeds = seeds if seeds is not None else chosen.get("seeds", spec.get("seeds", 1))
    if not isinstance(n_seeds, int) or isinstance(n_seeds, bool) or n_seeds < 1:
        raise StudyError(f"seeds must be a positive integer, not {n_seeds!r}")

    runs = []
    for variant, extra in variants.items():
        for combo in itertools.product(*grid.values()):
            values = dict(zip(grid, combo, strict=True))
            label = _label(values)
            if variant:
                label = f"{variant}" if label == "base" else f"{variant},{label}"
                values = {"variant": variant, **values}
            point = dict(zip(grid, combo, strict=True))
            args = shared | _mapping(extra, f"variant {variant}") | point
            for seed in range(n_seeds):
                key = [path.stem, budget, label, args, seed]
                key = json.dumps(key, sort_keys=True, default=str)
                run_id = f"{path.stem[:12]}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
                runs.append(Run(label, values, args, seed, run_id))

    grid_keys = (["variant"] if variants.keys() != {""} else []) + list(grid)
    plots = spec.get("plots") or []
    if not isinstance(plots, list):
        raise StudyError("plots must be a list of figures")
    for i, plot in enumerate(plots):
        plot = _mapping(plot, f"plots[{i}]")
        _check_keys(plot, _PLOT_KEYS, f"plots[{i}]")
        if "file" not in plot or "y" not in plot:
            raise StudyError(f"plots[{i}] needs file: and y:")
        where = _mapping(plot.get("where"), f"plots[{i}].where")
        if set(where) - set(grid_keys):
            raise StudyError(f"plots[{i}].where: keys must be grid keys {grid_keys}, not {where}")
        if plot.get("kind", "sweep") not in PLOT_KINDS:
            kinds = ", ".join(PLOT_KINDS)
            raise StudyError(f"plots[{i}].kind is one of {kinds}, not {plot['kind']!r}")
    pairs = spec.get("compare_weights") or []
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and set(pair) <= set(variants)):
            known = sorted(variants)
            raise StudyError(f"compare_weights: {pair!r} is not a pair of variants {known}")
    extra_tests = _mapping(spec.get("extra_tests"), "extra_tests")
    for prefix, options in extra_tests.items():
        _mapping(options, f"extra_tests.{prefix}")
        if not str(prefix).replace("_", "").isalnum() or prefix in ("test", "test_last"):
            raise StudyError(f"extra_tests: {prefix!r} is not a usable metric prefix (test_x)")
    table = spec.get("table") or []
    if not isinstance(table, list) or not all(isinstance(t, str) for t in table):
        raise StudyError(f"table must be a list of metric names, not {table!r}")
    return Study(
        name=path.stem,
        path=path,
        description=str(spec.get("description", "")).strip(),
        configs=config_paths,
        budget=budget,
        budget_description=str(chosen.get("description", "")).strip(),
        seeds=list(range(n_seeds)),
        runs=runs,
        plots=plots,
        test_last=bool(spec.get("test_last", True)),
        compare_weights=[tuple(p) for p in pairs],
        grid_keys=grid_keys,
        extra_tests={str(k): v or {} for k, v in extra_tests.items()},
        table=table,
    )
