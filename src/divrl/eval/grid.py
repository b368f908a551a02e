"""A grid of Countdown recipes × training seeds, trained from one base and evaluated on named splits: the machinery
that ``divrl demo`` and ``divrl bench`` share (each writes its own report from the results).

:func:`plan_grid` checks everything a grid needs (the recipes and ``--set`` overrides, that all recipes share one
base model and task, the evaluation splits) and writes nothing; :func:`run_grid` then evaluates the base and trains
and evaluates every (method, seed) in ``<out>/seed<i>/<method>/``, seed by seed, so that a grid cut short after a
seed already holds complete single-seed results.

Resuming is file-based: a run folder whose metrics file of every split exists is finished and is neither trained
nor evaluated again; one whose final checkpoint exists is only evaluated on the splits it lacks; one cut short in
training continues from its latest complete checkpoint (:func:`divrl.trainer.common.latest_checkpoint`); one with
no complete checkpoint starts over. A finished or partial run whose ``config.yaml`` differs from the recipe now
(another recipe file, another ``--set``) is refused with one line naming the first differing fields, so that one
report never mixes two settings of a method. Each run folder's ``timing.json`` accumulates the seconds spent
training and evaluating it (over resumes), for the wall times a report states.

The evaluation of seed ``i`` uses sampling seed ``1000 + i`` on every split and for every model, the base included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divrl.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from divrl.eval import compare
from divrl.eval.bootstrap import METRICS, ComparisonError, Difference, Estimate, Run, bootstrap_means
from divrl.trainer.common import RunFolderError, checkpoint_name, checkpoint_step, latest_checkpoint, read_metrics
from divrl.trainer.config import RLConfig

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
"""The packaged recipes; ``configs/`` in a checkout links here."""
LABELS = {"grpo": "GRPO", "r1_zero_div": "R1-zero-Div", "darling": "DARLING", "setpo": "SetPO"}
"""How reports name a method; any other recipe is named by its file name."""
TIMING = "timing.json"
EVAL_SEED = 1000
"""Sampling seed of the evaluation of training seed ``i``: ``EVAL_SEED + i``."""
IGNORED_FIELDS = ("threads",)
"""Config fields that may differ between a kept run and the recipe now (they do not change what is trained)."""


def label(name: str) -> str:
    return LABELS.get(name, name)


def known_recipes(task: str = "countdown") -> list[str]:
    """The recipe names of ``task`` (``configs/<task>/*.yaml``), read now: recipes added since are included."""
    return sorted(p.stem for p in (RECIPES / task).glob("*.yaml"))


def recipe(method: str, seed: int, steps: int | None = None, overrides: Sequence[str] = ()) -> RLConfig:
    """The Countdown recipe ``method`` with ``seed``, ``steps`` (``None``: the recipe's own) and ``overrides``.

    Raises:
        ConfigError: an unknown method (naming the known ones) or a bad recipe or override.
    """
    path = RECIPES / "countdown" / f"{method}.yaml"
    if not path.is_file():
        raise ConfigError(f"--methods: unknown method {method!r}; known (configs/countdown/*.yaml): {known_recipes()}")
    extra = ([] if steps is None else [f"steps={steps}"]) + [f"seed={seed}", *overrides]
    data = apply_overrides(load_yaml(path), extra)
    data.setdefault("name", method)
    return from_dict(RLConfig, data)


def config_diff(before: Any, now: Any, where: str = "") -> list[str]:
    """Dotted paths at which two plain config trees differ (``optim.lr``, ``loss.1.options.lam``)."""
    if isinstance(before, dict) and isinstance(now, dict):
        return [
            d
            for key in sorted(set(before) | set(now), key=str)
            for d in config_diff(before.get(key), now.get(key), f"{where}.{key}" if where else str(key))
        ]
    if isinstance(before, list) and isinstance(now, list) and len(before) == len(now):
        return [d for i, (a, b) in enumerate(zip(before, now, strict=True)) for d in config_diff(a, b, f"{where}.{i}")]
    return [] if before == now else [where or "(root)"]


def check_kept_run(run_dir: Path, cfg: RLConfig) -> None:
    """Refuse a kept run whose ``config.yaml`` differs from ``cfg`` (ignoring :data:`IGNORED_FIELDS`); a run folder
    without ``config.yaml`` (nothing trained yet) passes."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    try:
        before = to_dict(from_dict(RLConfig, load_yaml(path)))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}; delete {run_dir} to train it again") from None
    diff = [d for d in config_diff(before, to_dict(cfg)) if d.split(".")[0] not in IGNORED_FIELDS]
    if diff:
        shown = "; ".join(f"{d}: {_at(before, d)!r} there, {_at(to_dict(cfg), d)!r} now" for d in diff[:3])
        raise ConfigError(
            f"{run_dir}: trained with another config than the recipe now ({shown}"
            + (f"; {len(diff) - 3} more" if len(diff) > 3 else "")
            + f"); delete {run_dir} to train it again, or use another --out"
        )


def _at(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(tree, dict):
            tree = tree.get(part)
        elif isinstance(tree, list) and part.isdigit() and int(part) < len(tree):
            tree = tree[int(part)]
        else:
            return None
    return tree


def check_manifest(path: Path, settings: Mapping[str, Any], kind: str) -> None:
    """Refuse to resume the ``kind`` (demo, bench) whose manifest ``path`` records other ``settings`` (a folder from
    before the manifest existed is taken as it is)."""
    if not path.exists():
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: unreadable ({exc}); --overwrite starts the {kind} over") from None
    changed = [k for k in settings if before.get(k) != settings[k]]
    if changed:
        diff = "; ".join(f"{k}: {before.get(k)!r} there, {settings[k]!r} now" for k in changed)
        raise RunFolderError(
            f"--resume {path.parent}: the {kind} there was made with other settings ({diff}); use the same ones, "
            "another --out, or --overwrite"
        )


@dataclass(frozen=True)
class Grid:
    """What a grid trains and evaluates; built by :func:`plan_grid`, which checks it before anything is written.

    Attributes:
        methods: recipe names, in training order.
        seeds: training seeds ``0 .. seeds-1`` per method.
        splits: evaluation splits; each has its metrics file (:func:`divrl.eval.compare.metrics_filename`).
        steps: RL steps per run; ``None``: each recipe's own.
        overrides: ``--set`` values applied to every recipe.
        eval_n: samples per problem on every split.
        task: the task object shared by every recipe.
        problems: the problems of each split.
        base_path: the base policy every recipe starts from.
        max_new_tokens: the longest evaluation completion (the recipes' rollout length).
    """

    methods: tuple[str, ...]
    seeds: int
    splits: tuple[str, ...]
    steps: int | None
    overrides: tuple[str, ...]
    eval_n: int
    task: Any
    problems: dict[str, list[Any]]
    base_path: str
    max_new_tokens: int

    def config(self, method: str, seed: int) -> RLConfig:
        return recipe(method, seed, self.steps, self.overrides)

    @property
    def files(self) -> dict[str, str]:
        return {split: compare.metrics_filename(split) for split in self.splits}

    def runs(self) -> list[tuple[int, str]]:
        """(seed, name) of every model in order: per seed the base, then every method."""
        return [(seed, name) for seed in range(self.seeds) for name in ("base", *self.methods)]


def plan_grid(
    methods: Sequence[str],
    seeds: int,
    splits: Sequence[str],
    problems: Mapping[str, int | None],
    eval_n: int,
    steps: int | None = None,
    overrides: Sequence[str] = (),
) -> Grid:
    """Check and resolve a grid (writes nothing); ``problems[split]`` is the number of problems of each split
    (``None``: the whole split).

    Raises:
        ConfigError: a bad count, a method named twice, an unknown method, a bad recipe or override (estimator
            and loss options included), recipes that start from different bases or tasks, a split the task lacks.
    """
    from divrl.tasks import get_task
    from divrl.trainer.common import input_errors
    from divrl.trainer.plan import check_methods

    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if eval_n < 1:
        raise ConfigError(f"samples per problem must be >= 1, got {eval_n}")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    if not methods:
        raise ConfigError("--methods: no method to train")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods names a method twice: {list(methods)}")
    splits = tuple(splits)
    if not splits or len(set(splits)) != len(splits):
        raise ConfigError(f"splits must name each evaluation split once, got {list(splits)}")
    for split in splits:
        try:
            compare.metrics_filename(split)
        except ComparisonError as exc:
            raise ConfigError(f"--split: {exc}") from None
    configs = {m: recipe(m, 0, steps, overrides) for m in methods}
    for cfg in configs.values():
        check_methods(cfg)  # fail fast on a bad recipe or override, before the first method trains
    first = methods[0]
    for m, cfg in configs.items():
        for what, mine, theirs in (
            ("model.path", cfg.model.path, configs[first].model.path),
            ("task", to_dict(cfg.task), to_dict(configs[first].task)),
        ):
            if mine != theirs:
                raise ConfigError(
                    f"recipes {first!r} and {m!r} differ in {what} ({theirs!r} vs {mine!r}); one comparison needs "
                    "one base and one task (--set applies to all)"
                )
    task_cfg = configs[first].task
    with input_errors(f"task {task_cfg.name!r}"):
        task = get_task(task_cfg.name, **task_cfg.options)
    chosen = {}
    for split in splits:
        try:
            chosen[split] = task.problems(split, n=problems.get(split))
        except ValueError as exc:  # e.g. task options that leave no ood split: say so before anything trains
            raise ConfigError(f"task.options: evaluation split {split!r}: {exc}") from None
    return Grid(
        methods=tuple(methods),
        seeds=seeds,
        splits=splits,
        steps=steps,
        overrides=tuple(overrides),
        eval_n=eval_n,
        task=task,
        problems=chosen,
        base_path=configs[first].model.path,
        max_new_tokens=configs[first].rollout.max_new_tokens,
    )


class Progress:
    """Hooks :func:`run_grid` calls around each model (base evaluations included); the default does nothing."""

    def start(self, index: int, total: int, seed: int, name: str, todo: str) -> None:
        """Model ``index`` (1-based) of ``total`` begins; ``todo`` says what runs (``train 80 steps + eval``)."""

    def done(self, index: int, total: int, seed: int, name: str, seconds: float | None) -> None:
        """Model ``index`` is complete; ``seconds`` is what it cost now, ``None`` when it was kept from before."""


@dataclass
class GridResults:
    """Every model's results: per split and name, one metrics dict and its file per seed; per method the training
    curves (``metrics.jsonl``) per seed; per name the :data:`TIMING` record per seed."""

    results: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    sources: dict[str, dict[str, list[Path]]] = field(default_factory=dict)
    curves: dict[str, list[list[dict[str, Any]]]] = field(default_factory=dict)
    timing: dict[str, list[dict[str, float]]] = field(default_factory=dict)


def read_timing(run_dir: Path) -> dict[str, float]:
    """The :data:`TIMING` record of a run folder (``train_s``, ``eval_s``); zeros when missing or unreadable."""
    try:
        data = json.loads((run_dir / TIMING).read_text(encoding="utf-8"))
        return {k: float(data.get(k, 0.0)) for k in ("train_s", "eval_s")}
    except (OSError, ValueError, TypeError, AttributeError):
        return {"train_s": 0.0, "eval_s": 0.0}


def _add_timing(run_dir: Path, **seconds: float) -> None:
    record = read_timing(run_dir)
    for key, value in seconds.items():
        record[key] += value
    tmp = run_dir / (TIMING + ".tmp")
    tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
    tmp.replace(run_dir / TIMING)


def run_grid(grid: Grid, out: Path, progress: Progress | None = None) -> GridResults:
    """Evaluate the base and train and evaluate every method for every seed into ``out`` (module docstring: what
    is kept and what runs again), calling ``progress`` around each model. Returns every model's results."""
    from divrl.eval.evaluate import evaluate, write_metrics
    from divrl.models import load_policy
    from divrl.trainer.common import input_errors
    from divrl.trainer.rl import train

    progress = progress or Progress()
    files = grid.files
    found = GridResults({s: {} for s in grid.splits}, {s: {} for s in grid.splits})

    def evaluate_missing(run_dir: Path, model_path: str | None, seed: int) -> None:
        """Evaluate the model once on every split whose metrics file is missing (same samples and seed per split)."""
        todo = [split for split in grid.splits if not (run_dir / files[split]).exists()]
        if not todo:
            return
        if model_path is None:
            final = latest_checkpoint(run_dir)
            assert final is not None
            model_path = str(final)
        start = time.perf_counter()
        with input_errors(f"model.path {model_path!r}"):
            model, tok = load_policy(model_path)
        for split in todo:
            m = evaluate(
                model,
                tok,
                grid.task,
                grid.problems[split],
                grid.eval_n,
                max_new_tokens=grid.max_new_tokens,
                seed=EVAL_SEED + seed,
            )
            m["split"] = split
            write_metrics(m, run_dir / files[split])
        _add_timing(run_dir, eval_s=time.perf_counter() - start)

    def collect(name: str, run_dir: Path) -> None:
        for split in grid.splits:
            path = run_dir / files[split]
            found.results[split].setdefault(name, []).append(json.loads(path.read_text()))
            found.sources[split].setdefault(name, []).append(path)
        found.timing.setdefault(name, []).append(read_timing(run_dir))

    runs = grid.runs()
    for index, (seed, name) in enumerate(runs, start=1):
        run_dir = out / f"seed{seed}" / name
        have = [files[split] for split in grid.splits if (run_dir / files[split]).exists()]
        if name == "base":
            todo = "" if len(have) == len(grid.splits) else "eval"
            progress.start(index, len(runs), seed, name, todo)
            start = time.perf_counter()
            evaluate_missing(run_dir, grid.base_path, seed)
        else:
            cfg = grid.config(name, seed)
            check_kept_run(run_dir, cfg)
            ckpt = final = None
            done = True
            if len(have) < len(grid.splits):
                ckpt = latest_checkpoint(run_dir)
                final = checkpoint_name(cfg.steps)
                done = ckpt is not None and ckpt.name == final
                if not done and have:  # training on would evaluate another model than the one in `have`
                    raise ConfigError(
                        f"{run_dir}: holds {', '.join(have)} but not {final} to evaluate on the other splits with "
                        f"the same model; delete {run_dir} to train and evaluate it again"
                    )
            if len(have) == len(grid.splits):
                todo = ""
            elif done:
                todo = "eval"
            else:
                left = cfg.steps - (0 if ckpt is None else checkpoint_step(ckpt) or 0)
                todo = f"train {left} steps + eval" if ckpt is None else f"train {left} more steps + eval"
            progress.start(index, len(runs), seed, name, todo)
            start = time.perf_counter()
            if not done:  # continue from the latest complete checkpoint, or start over a run cut before one
                train(cfg, run_dir, resume=ckpt is not None, overwrite=ckpt is None)
                _add_timing(run_dir, train_s=time.perf_counter() - start)
            if todo:
                evaluate_missing(run_dir, None, seed)
        collect(name, run_dir)
        if name != "base":
            found.curves.setdefault(name, []).append(read_metrics(run_dir))
        progress.done(index, len(runs), seed, name, time.perf_counter() - start if todo else None)
    return found


@dataclass(frozen=True)
class Intervals:
    """The noise-aware comparison on one split: every model vs ``baseline`` and each model's bootstrap intervals
    (``bands``: the pass@k plot's bands, or a leaderboard's cells)."""

    baseline: str
    comparisons: dict[str, dict[str, Difference]]
    notes: list[str]
    bands: dict[str, dict[str, Estimate]]
    resamples: int
    metrics: tuple[str, ...] = ()


def groups_of(
    results: Mapping[str, Sequence[dict[str, Any]]], sources: Mapping[str, Sequence[Path]]
) -> dict[str, list[Run]]:
    """Per name, one :class:`~divrl.eval.bootstrap.Run` per seed (raises ``ComparisonError`` for a metrics dict
    without per-problem results, naming its file)."""
    return {
        name: [Run.from_metrics(m, str(path)) for m, path in zip(runs, sources[name], strict=True)]
        for name, runs in results.items()
    }


def intervals(
    results: Mapping[str, Sequence[dict[str, Any]]],
    sources: Mapping[str, Sequence[Path]],
    baseline: str,
    band_metrics: Sequence[str],
    resamples: int = 2000,
    wanted: Sequence[str] = METRICS,
) -> Intervals | str:
    """Paired bootstrap differences vs ``baseline`` (of the ``wanted`` metrics that every run supports) and each
    model's interval of ``band_metrics``, or why they cannot be computed (e.g. a reused ``metrics.json`` written
    before divrl kept per-problem results)."""
    try:
        groups = groups_of(results, sources)
        metrics, left_out = compare.available_metrics(groups, wanted)
        comparisons = compare.compare_groups(groups, baseline, metrics, resamples=resamples)
        bands = {name: bootstrap_means(runs, band_metrics, resamples=resamples) for name, runs in groups.items()}
    except ComparisonError as exc:
        return f"{exc} (delete it and run again to evaluate it again)"
    notes = [*compare.noise_notes(comparisons, baseline, LABELS), *left_out]
    return Intervals(baseline, comparisons, notes, bands, resamples, tuple(metrics))


__all__ = [
    "EVAL_SEED",
    "LABELS",
    "RECIPES",
    "Grid",
    "GridResults",
    "Intervals",
    "Progress",
    "check_kept_run",
    "check_manifest",
    "config_diff",
    "intervals",
    "known_recipes",
    "label",
    "plan_grid",
    "read_timing",
    "recipe",
    "run_grid",
]
