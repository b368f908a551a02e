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

With ``workers`` > 1, :func:`run_grid` runs up to that many models at once, each in a worker process of its own
(``spawn``: every worker imports divrl afresh and loads its own copy of the model; nothing is shared), with
``threads`` torch threads each. Every run seeds itself from (seed, step) and every evaluation from its training seed,
so the run folders and metrics files are those of the serial grid whatever order the workers finish in (on the same
device and thread count: float rounding depends on both). Which models are finished and what each needs is decided
in the main process before the first worker starts (every refusal of a kept run comes first); the results are read
back, the base's included, in the grid's order once all workers are done. A model that fails in its worker is
reported at once with its name; the other models run on, and the grid then ends in one :class:`GridRunError` naming
every failed model (the finished ones are kept for ``--resume``). ``workers`` 1, the default, runs everything in
this process, model after model.

``device`` (``cpu``, the default, or ``cuda``) is where every model trains and is evaluated, in this process or in
each worker; with ``cuda`` every worker uses the one visible GPU. Training follows the recipe's ``model.dtype``
(``auto``: bfloat16 on a GPU); every evaluation, the base's included, runs in float32 on either device, as
``benchmarks/sweep_countdown.py``'s did, so that the base and the trained models are sampled at one precision.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divrl.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from divrl.eval import compare
from divrl.eval.bootstrap import METRICS, ComparisonError, Difference, Estimate, Run, bootstrap_means, seed_label
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
DEVICES = ("cpu", "cuda")
"""Where a grid's models train and are evaluated (``--device``)."""


class GridRunError(RuntimeError):
    """Models of a parallel grid failed in their workers; the message names each one (one line)."""


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
    """Hooks :func:`run_grid` calls around each model (base evaluations included); the default does nothing but
    report a failed model on stderr."""

    def start(self, index: int, total: int, seed: int, name: str, todo: str) -> None:
        """Model ``index`` (1-based) of ``total`` begins; ``todo`` says what runs (``train 80 steps + eval``)."""

    def done(self, index: int, total: int, seed: int, name: str, seconds: float | None) -> None:
        """Model ``index`` is complete; ``seconds`` is what it cost now, ``None`` when it was kept from before."""

    def failed(self, index: int, total: int, seed: int, name: str, error: str, detail: str) -> None:
        """Model ``index`` failed in its worker (``workers`` > 1 only; in this process an error propagates):
        ``error`` is one line, ``detail`` the worker's traceback."""
        if detail.strip():
            print(detail.rstrip(), file=sys.stderr)
        print(f"failed: {run_name(seed, name)} ({index}/{total}): {error}", file=sys.stderr)


class RunLines(Progress):
    """One line per model as it finishes (or fails), with the time so far: the progress of a parallel grid, whose
    workers show no bars of their own."""

    def __init__(self, what: str) -> None:
        from rich.console import Console

        self.what = what
        self.console = Console()
        self.begin = time.perf_counter()
        self.finished = 0

    def done(self, index: int, total: int, seed: int, name: str, seconds: float | None) -> None:
        self.finished += 1
        elapsed = (time.perf_counter() - self.begin) / 60
        how = "finished before, kept" if seconds is None else f"done in {seconds / 60:.1f} min"
        where = f"{self.what} {self.finished}/{total} finished: {label(name)}, seed {seed}"
        self.console.print(f"{where} {how} (elapsed {elapsed:.1f} min)", highlight=False)

    def failed(self, index: int, total: int, seed: int, name: str, error: str, detail: str) -> None:
        self.finished += 1
        failure_lines(self.console, f"{self.what} {self.finished}/{total}", seed, name, error, detail)


def failure_lines(console: Any, where: str, seed: int, name: str, error: str, detail: str) -> None:
    """A model that failed in its worker on a rich ``console``: the worker's traceback (dim), then one red line."""
    from rich.text import Text

    if detail.strip():
        console.print(Text(detail.rstrip(), style="dim"), soft_wrap=True)
    console.print(
        Text.assemble((f"{where} FAILED", "bold red"), f": {label(name)}, seed {seed}: {error}"), soft_wrap=True
    )


def run_name(seed: int, name: str) -> str:
    """How messages name a model of the grid: its folder under the grid's ``out`` (``seed0/grpo``)."""
    return f"seed{seed}/{name}"


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


def check_execution(workers: int, threads: int, device: str) -> None:
    """Refuse a bad ``--workers``, ``--threads`` or ``--device`` with one line (before anything is written); ``cuda``
    needs a GPU that torch sees."""
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {threads}")
    if device not in DEVICES:
        raise ConfigError(f"--device must be one of {list(DEVICES)}, got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: torch sees no CUDA GPU here; use --device cpu")


def worker_threads(threads: int, workers: int) -> int:
    """torch threads of each worker of a parallel grid: ``threads``, or with 0 the CPU cores shared out (>= 1)."""
    return threads if threads > 0 else max(1, (os.cpu_count() or 1) // workers)


@dataclass(frozen=True)
class ModelPlan:
    """What one model of the grid still needs, decided from its folder before it runs (:func:`plan_model`).

    Attributes:
        index: 1-based position in :meth:`Grid.runs`.
        seed: training seed (the evaluation's sampling seed is ``EVAL_SEED + seed``).
        name: ``base`` or a recipe name.
        run_dir: ``<out>/seed<seed>/<name>``.
        todo: what runs, for the progress lines: ``""`` (finished: nothing), ``eval``, ``train N steps + eval``.
        cfg: the recipe's config (``None`` for the base).
        train: whether it trains (on from ``resume``'s latest checkpoint, or from the start).
        resume: continue the run in ``run_dir`` from its latest complete checkpoint (else start it over).
    """

    index: int
    seed: int
    name: str
    run_dir: Path
    todo: str
    cfg: RLConfig | None = None
    train: bool = False
    resume: bool = False


def plan_model(grid: Grid, out: Path, index: int, seed: int, name: str) -> ModelPlan:
    """What model ``name`` of ``seed`` still needs (module docstring: what is kept and what runs again).

    Raises:
        ConfigError: a kept run trained with another config than the recipe now, or one evaluated on some splits
            whose final checkpoint is missing.
    """
    files = grid.files
    run_dir = out / run_name(seed, name)
    have = [files[split] for split in grid.splits if (run_dir / files[split]).exists()]
    if name == "base":
        return ModelPlan(index, seed, name, run_dir, "" if len(have) == len(grid.splits) else "eval")
    cfg = grid.config(name, seed)
    check_kept_run(run_dir, cfg)
    ckpt = None
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
    return ModelPlan(index, seed, name, run_dir, todo, cfg, train=not done, resume=ckpt is not None)


def run_model(grid: Grid, plan: ModelPlan, device: str = "cpu", bars: bool = True) -> None:
    """Train (if ``plan.train``) and evaluate ``plan``'s model on every split whose metrics file is missing (same
    samples and seed on every split), adding the seconds to its :data:`TIMING` record; ``bars``: tqdm bars."""
    from divrl.eval.evaluate import evaluate, write_metrics
    from divrl.models import load_policy
    from divrl.trainer.common import input_errors
    from divrl.trainer.rl import train

    run_dir, files = plan.run_dir, grid.files
    if plan.train:  # continue from the latest complete checkpoint, or start over a run cut before one
        assert plan.cfg is not None
        start = time.perf_counter()
        quiet = {} if bars else {"progress": False}
        train(plan.cfg, run_dir, resume=plan.resume, overwrite=not plan.resume, device=device, **quiet)
        _add_timing(run_dir, train_s=time.perf_counter() - start)
    if not plan.todo:
        return
    todo = [split for split in grid.splits if not (run_dir / files[split]).exists()]
    if not todo:
        return
    if plan.name == "base":
        model_path = grid.base_path
    else:
        final = latest_checkpoint(run_dir)
        assert final is not None
        model_path = str(final)
    start = time.perf_counter()
    with input_errors(f"model.path {model_path!r}"):
        model, tok = load_policy(model_path, device=device, dtype="float32")  # a bf16-trained model too
    for split in todo:
        m = evaluate(
            model,
            tok,
            grid.task,
            grid.problems[split],
            grid.eval_n,
            max_new_tokens=grid.max_new_tokens,
            seed=EVAL_SEED + plan.seed,
            **({} if bars else {"progress": False}),
        )
        m["split"] = split
        write_metrics(m, run_dir / files[split])
    _add_timing(run_dir, eval_s=time.perf_counter() - start)


def _init_worker(threads: int, parent: int) -> None:
    """A worker process of a parallel grid starts: its torch threads, and a watch that ends it within seconds of
    the main process ``parent`` ending, however it ended (a killed grid leaves no worker training behind; the run
    it was on continues from its latest complete checkpoint on ``--resume``)."""
    import threading

    import torch
    from transformers.utils import logging as hf_logging

    if threads > 0:
        torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()  # many workers' load/save bars: noise

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        os._exit(1)

    threading.Thread(target=watch, name="divrl-parent-watch", daemon=True).start()


def _run_in_worker(grid: Grid, plan: ModelPlan, device: str) -> float:
    """One model in a worker process (no bars: the main process prints a line per model); returns its seconds."""
    start = time.perf_counter()
    run_model(grid, plan, device, bars=False)
    return time.perf_counter() - start


def _error_line(exc: BaseException) -> tuple[str, str]:
    """A worker's exception as one line, and the worker's traceback (``concurrent.futures`` keeps it as the
    exception's cause)."""
    from divrl.cliutil import one_line

    cause = exc.__cause__
    detail = str(cause) if cause is not None and type(cause).__name__ == "_RemoteTraceback" else ""
    return one_line(f"{type(exc).__name__}: {exc}"), detail


def run_grid(
    grid: Grid,
    out: Path,
    progress: Progress | None = None,
    workers: int = 1,
    threads: int = 0,
    device: str = "cpu",
) -> GridResults:
    """Evaluate the base and train and evaluate every method for every seed into ``out`` (module docstring: what
    is kept and what runs again, and how ``workers`` > 1 runs them), calling ``progress`` around each model, on
    ``device``. ``threads``: torch threads of each worker (:func:`worker_threads`; with one worker, the caller's
    setting applies). Returns every model's results.

    Raises:
        ConfigError: a bad ``workers``, ``threads`` or ``device``; a kept run that cannot be reused.
        GridRunError: (``workers`` > 1) models that failed in their workers, after the others ran.
    """
    check_execution(workers, threads, device)
    progress = progress or Progress()
    files = grid.files
    found = GridResults({s: {} for s in grid.splits}, {s: {} for s in grid.splits})

    def collect(name: str, run_dir: Path) -> None:
        for split in grid.splits:
            path = run_dir / files[split]
            found.results[split].setdefault(name, []).append(json.loads(path.read_text()))
            found.sources[split].setdefault(name, []).append(path)
        found.timing.setdefault(name, []).append(read_timing(run_dir))
        if name != "base":
            found.curves.setdefault(name, []).append(read_metrics(run_dir))

    runs = grid.runs()
    if workers == 1:  # in this process, model after model
        for index, (seed, name) in enumerate(runs, start=1):
            plan = plan_model(grid, out, index, seed, name)
            progress.start(index, len(runs), seed, name, plan.todo)
            start = time.perf_counter()
            run_model(grid, plan, device)
            collect(name, plan.run_dir)
            progress.done(index, len(runs), seed, name, time.perf_counter() - start if plan.todo else None)
        return found

    plans = [plan_model(grid, out, index, seed, name) for index, (seed, name) in enumerate(runs, start=1)]
    for plan in plans:
        if not plan.todo:
            progress.start(plan.index, len(runs), plan.seed, plan.name, "")
            progress.done(plan.index, len(runs), plan.seed, plan.name, None)
    failed = _run_parallel(grid, [p for p in plans if p.todo], len(runs), progress, workers, threads, device)
    if failed:
        raise GridRunError(
            f"{len(failed)} of {len(runs)} models failed: "
            + "; ".join(f"{run_name(p.seed, p.name)} ({error})" for p, error in failed)
            + f"; the others are finished and kept in {out}: fix the cause and continue with --resume"
        )
    for plan in plans:
        collect(plan.name, plan.run_dir)
    return found


def _run_parallel(
    grid: Grid,
    plans: Sequence[ModelPlan],
    total: int,
    progress: Progress,
    workers: int,
    threads: int,
    device: str,
) -> list[tuple[ModelPlan, str]]:
    """Run ``plans`` in up to ``workers`` spawned processes, in order, a new one as soon as one finishes; returns
    the failed ones with their one-line errors (a broken pool, e.g. a worker killed for memory, fails every model
    not finished and starts no other)."""
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    failed: list[tuple[ModelPlan, str]] = []
    if not plans:
        return failed
    queue = deque(plans)
    pending: dict[Future[float], ModelPlan] = {}
    size = min(workers, len(plans))
    pool = ProcessPoolExecutor(
        size,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(worker_threads(threads, workers), os.getpid()),
    )
    try:
        while queue or pending:
            while queue and len(pending) < size:  # a model starts when a worker is free (its start line then)
                plan = queue.popleft()
                progress.start(plan.index, total, plan.seed, plan.name, plan.todo)
                pending[pool.submit(_run_in_worker, grid, plan, device)] = plan
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=lambda f: pending[f].index):
                plan = pending.pop(future)
                try:
                    seconds = future.result()
                except BrokenProcessPool as exc:
                    error, detail = _error_line(exc)
                    error = f"{error} (a worker died, e.g. killed for memory: no other model starts)"
                    failed.append((plan, error))
                    progress.failed(plan.index, total, plan.seed, plan.name, error, detail)
                    while queue:
                        left = queue.popleft()
                        failed.append((left, "not started: the worker pool broke"))
                except Exception as exc:  # one failed model must not lose the others: report it, run on
                    error, detail = _error_line(exc)
                    failed.append((plan, error))
                    progress.failed(plan.index, total, plan.seed, plan.name, error, detail)
                else:
                    progress.done(plan.index, total, plan.seed, plan.name, seconds)
    except BaseException:  # e.g. Ctrl-C: stop the workers now (each run keeps its latest complete checkpoint)
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return sorted(failed, key=lambda f: f[0].index)


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
        name: [Run.from_metrics(m, str(path), seed_label(path)) for m, path in zip(runs, sources[name], strict=True)]
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
    "DEVICES",
    "EVAL_SEED",
    "LABELS",
    "RECIPES",
    "Grid",
    "GridResults",
    "GridRunError",
    "Intervals",
    "ModelPlan",
    "Progress",
    "RunLines",
    "check_execution",
    "check_kept_run",
    "check_manifest",
    "config_diff",
    "failure_lines",
    "intervals",
    "known_recipes",
    "label",
    "plan_grid",
    "plan_model",
    "read_timing",
    "recipe",
    "run_grid",
    "run_model",
    "run_name",
    "worker_threads",
]
