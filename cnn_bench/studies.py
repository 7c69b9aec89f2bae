"""A study: a grid of ``cnn-bench fit`` runs declared in ``configs/studies/<name>.yaml``.

This module reads and checks a study file and expands it into runs; running them,
aggregating and plotting is ``cnn_bench.commands.study``. A study file holds:

```yaml
description: one paragraph: what is measured and why
configs: [../experiment/mlp_cifar10.yaml]   # base config(s), relative to this file
args: {model.arch_kwargs.depth: 1}          # overrides shared by every run (any CLI key)
variants:                                   # optional: named bundles of overrides
  sgd_wd: {model.optimizer.init_args.weight_decay: 1.0e-3}
  sgd_l2: {model.l2_penalty: 1.0e-3, grid: {model.arch_kwargs.width: [8, 32]}}
grid: {model.arch_kwargs.width: [4, 16, 64]}  # every combination, times every variant;
                                            # a variant's grid: replaces a key's values
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
  - {file: chosen.png, kind: history, y: [train/loss], selected: true}
select:                                     # optional: choose on validation
  over: model.arch_kwargs.width             # the grid key(s) chosen
  by: variant                               # one choice per value of these (default:
                                            # every other grid key)
  metric: val_best/acc1                     # mean over seeds; any column of results.csv
  mode: max                                 # or min (a loss, an error)
early_stopping: {monitor: val/acc1, mode: max, patience: 10}   # optional, see below
```

``select`` picks, among the points that share their ``by`` values, the one whose
``metric`` (mean over seeds) is best; grid keys in neither ``over`` nor ``by`` are
chosen jointly with ``over``. The report lists the choice with every candidate's value
and the chosen point's test metrics; a plot with ``selected: true`` draws the chosen
points only. The whole grid stays in ``results.csv`` and ``summary.json``.

``early_stopping`` trains nothing differently: from each run's recorded validation
history the report computes the epoch at which Lightning's ``EarlyStopping`` with these
settings would have stopped (``early_stop/epochs``) and the validation value of the best
epoch until then, and marks it on the history figures.

After the runs, an optional ``ensemble:`` section tests each grid point's seeds as one
ensemble (``cnn_bench/commands/study_ensemble.py``): the ensemble of the first k seeds
for every k, once per test-time augmentation setting, each a ``cnn-bench test`` of the
seeds' ``last.ckpt`` files, into ``ensembles.csv``, a figure and a README section:

```yaml
ensemble:
  tta: [none, flip, flip_translate]          # --model.tta.views of each test
  args: {data.eval_batch_size: 1000}         # options added to those tests
  plot: {file: ensemble_vs_k.png, title: ...}  # top-1 against k, a line per setting
```

Plot kinds: ``sweep`` (a metric against a grid value or ``params``), ``history`` (per
epoch) and ``layers`` (per layer at initialisation: ``std`` or ``mean`` of the record
``--run_summary.activation_stats N`` writes, one line per grid point).

A run's identity is a hash of the study, its budget, its arguments and its seed: the
same study started again finds the same runs, and a changed study gets new ones.

A run can start from an earlier run's weights: ``{ckpt:POINT}`` in a string value is
replaced, when the run starts, by the ``last.ckpt`` of grid point ``POINT``'s run with
the same seed (``model.pretrained: "embed:{ckpt:resnet18}"``). ``POINT`` must come
earlier in the study (variants run in the order written, then the grid); the source's
identity is part of the run's, so a changed source trains its followers again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

STUDY_DIR = Path(__file__).resolve().parents[1] / "configs" / "studies"
_TOP_KEYS = {"description", "configs", "args", "variants", "grid", "seeds", "test_last"}
_TOP_KEYS |= {"budgets", "plots", "compare_weights", "select", "early_stopping"}
_TOP_KEYS |= {"extra_tests", "table"}
_BUDGET_KEYS = {"seeds", "args", "grid", "variants", "description"}
_PLOT_KEYS = {"file", "kind", "x", "y", "logx", "logy", "reference", "title", "ylabel"}
_PLOT_KEYS |= {"xlabel", "series", "epochs_from", "selected", "where"}
_TOP_KEYS |= {"ensemble"}
_ENSEMBLE_KEYS = {"tta", "args", "plot"}
_SELECT_KEYS = {"over", "by", "metric", "mode"}
_EARLY_KEYS = {"monitor", "mode", "patience"}
PLOT_KINDS = ("sweep", "history", "layers")


class StudyError(ValueError):
    """A study file or option that cannot be used; the message says what to change."""


# ``{ckpt:POINT}``: the last.ckpt of an earlier point's run with the same seed.
_CKPT = re.compile(r"\{ckpt:([^{}]+)\}")


def checkpoint_sources(args: dict[str, Any]) -> list[str]:
    """The points whose ``last.ckpt`` the string values of ``args`` name."""
    return [p for v in args.values() if isinstance(v, str) for p in _CKPT.findall(v)]


def resolve_checkpoints(run: Run, finished: dict[tuple[str, int], Path]) -> Run:
    """``run`` with each ``{ckpt:POINT}`` replaced by the ``last.ckpt`` of POINT's run at
    the same seed, from ``finished`` (point, seed) -> run folder."""

    def path(match: re.Match) -> str:
        point = match.group(1)
        folder = finished.get((point, run.seed))
        ckpt = None if folder is None else Path(folder) / "checkpoints" / "last.ckpt"
        if ckpt is None or not ckpt.is_file():
            missing = f" ({ckpt} is missing)" if ckpt else ""
            raise StudyError(
                f"run {run.point} seed {run.seed} starts from the last.ckpt of {point} seed"
                f" {run.seed}, which has not been trained{missing}"
            )
        return str(ckpt)

    args = {k: _CKPT.sub(path, v) if isinstance(v, str) else v for k, v in run.args.items()}
    return replace(run, args=args)


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
    # The ensemble: section (tta, args, plot), checked; None without one.
    ensemble: dict[str, Any] | None = None
    # Validation choice: {over: [keys], by: [keys], metric: name, mode: max|min}, or None.
    select: dict[str, Any] | None = None
    # Where EarlyStopping would have stopped: {monitor, mode, patience}, or None.
    early_stopping: dict[str, Any] | None = None
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


def _ensemble_section(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    from typing import get_args

    from cnn_bench.tta import Views

    section = _mapping(value, "ensemble")
    _check_keys(section, _ENSEMBLE_KEYS, "ensemble")
    views = section.get("tta", ["none"])
    if not isinstance(views, list) or not views or not set(views) <= set(get_args(Views)):
        raise StudyError(f"ensemble.tta must be a list of {list(get_args(Views))}, not {views!r}")
    plot = _mapping(section.get("plot"), "ensemble.plot")
    _check_keys(plot, {"file", "title", "ylabel"}, "ensemble.plot")
    if plot and "file" not in plot:
        raise StudyError("ensemble.plot needs file:")
    return {"tta": views, "args": _mapping(section.get("args"), "ensemble.args"), "plot": plot}


def _keys(value: Any, what: str) -> list[str]:
    keys = [value] if isinstance(value, str) else value
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise StudyError(f"{what} must be a grid key or a list of grid keys, not {value!r}")
    return keys


def parse_select(value: Any, grid_keys: list[str]) -> dict[str, Any] | None:
    """``select:`` checked against the study's grid keys, ``by`` filled in."""
    if value is None:
        return None
    spec = _mapping(value, "select")
    _check_keys(spec, _SELECT_KEYS, "select")
    if "over" not in spec or "metric" not in spec:
        raise StudyError("select needs over: (the grid key chosen) and metric: (e.g. val/acc1)")
    over = _keys(spec["over"], "select.over")
    by = _keys(spec.get("by", [k for k in grid_keys if k not in over]), "select.by")
    for key in over + by:
        if key not in grid_keys:
            raise StudyError(f"select: {key!r} is not a grid key; grid keys: {grid_keys}")
    if set(over) & set(by) or not over:
        raise StudyError(f"select: over {over} and by {by} must be different grid keys")
    if not isinstance(spec["metric"], str):
        raise StudyError(f"select.metric must be a metric name, not {spec['metric']!r}")
    mode = spec.get("mode", "max")
    if mode not in ("max", "min"):
        raise StudyError(f"select.mode is max or min, not {mode!r}")
    return {"over": over, "by": by, "metric": spec["metric"], "mode": mode}


def parse_early_stopping(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    spec = _mapping(value, "early_stopping")
    _check_keys(spec, _EARLY_KEYS, "early_stopping")
    monitor, mode, patience = spec.get("monitor"), spec.get("mode", "max"), spec.get("patience")
    if not isinstance(monitor, str) or "/" not in monitor:
        raise StudyError(f"early_stopping.monitor must be a metric like val/acc1, not {monitor!r}")
    if mode not in ("max", "min"):
        raise StudyError(f"early_stopping.mode is max or min, not {mode!r}")
    if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
        raise StudyError(f"early_stopping.patience must be a positive integer, not {patience!r}")
    return {"monitor": monitor, "mode": mode, "patience": patience}


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

    runs: list[Run] = []
    ids: dict[tuple[str, int], str] = {}  # (point, seed) -> run id, of the runs so far
    for variant, extra in variants.items():
        extra = dict(_mapping(extra, f"variant {variant}"))
        # A variant's own values for some grid keys (an optimizer's learning rates).
        own = _mapping(extra.pop("grid", None), f"variant {variant} grid")
        for key, values in own.items():
            if key not in grid or not isinstance(values, list) or not values:
                raise StudyError(
                    f"variant {variant} grid: {key} must be a key of the study's grid"
                    f" ({', '.join(grid) or 'none'}) with a non-empty list of values"
                )
        point_grid = grid | own
        for combo in itertools.product(*point_grid.values()):
            values = dict(zip(point_grid, combo, strict=True))
            label = _label(values)
            if variant:
                label = f"{variant}" if label == "base" else f"{variant},{label}"
                values = {"variant": variant, **values}
            point = dict(zip(point_grid, combo, strict=True))
            args = shared | extra | point
            for seed in range(n_seeds):
                key = [path.stem, budget, label, args, seed]
                for source in checkpoint_sources(args):
                    if (source, seed) not in ids:
                        earlier = sorted({p for p, _ in ids}) or ["none"]
                        raise StudyError(
                            f"{label}: {{ckpt:{source}}} names no earlier point of the study"
                            f" (earlier: {', '.join(earlier)})"
                        )
                    key.append(ids[source, seed])
                key = json.dumps(key, sort_keys=True, default=str)
                run_id = f"{path.stem[:12]}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
                runs.append(Run(label, values, args, seed, run_id))
                ids[label, seed] = run_id

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
    select = parse_select(spec.get("select"), grid_keys)
    if select is None and any(p.get("selected") for p in plots):
        raise StudyError("a plot with selected: true needs a select: (over:, metric:)")
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
        select=select,
        early_stopping=parse_early_stopping(spec.get("early_stopping")),
        ensemble=_ensemble_section(spec.get("ensemble")),
        extra_tests={str(k): v or {} for k, v in extra_tests.items()},
        table=table,
    )
