"""``divrl bench``: the leaderboard. Every listed Countdown recipe (default: every ``configs/countdown/*.yaml``
found at run time) is trained for N seeds from the shared base and evaluated, with the base, on the ``test`` and
``ood`` splits (:mod:`divrl.eval.grid`, the machinery of ``divrl demo``); then one markdown file (default
``docs/leaderboard.md``) holds, per split:

- the leaderboard: pass@1, pass@8, pass@32 and distinct correct classes per method, each the mean over seeds and
  problems with its 95% bootstrap interval (seeds, then problems: :func:`divrl.eval.bootstrap.bootstrap_means`),
  sorted by pass@32;
- the paired difference of each method to the baseline (GRPO) with its 95% interval and a "within noise" mark when
  the interval contains 0 (:func:`divrl.eval.compare.compare_groups`, the statistics of ``divrl compare``);
- a picture beside the file, pass@1 against pass@32 per method with interval bars (the diversity-quality frontier);

and a header naming the command, the versions (divrl and its commit, torch, transformers), the machine, the date and
the wall time (this invocation's, and the training and evaluation time recorded per run in ``timing.json``).

The runs live in ``--out`` (default ``runs/bench``): ``seed<i>/<method>/`` per run (``metrics.json`` for test,
``metrics-<split>.json`` for another split, so ``divrl compare runs/bench [--split ood]`` recomputes the
differences), ``bench.json`` (the settings) and ``summary.json`` (every number of the leaderboard). As with every
``divrl`` output folder, one that holds a bench is refused unless ``--resume`` (continue it: finished runs are kept,
a run cut short continues from its latest checkpoint; the settings must be those of ``bench.json``, while methods and
seeds may be added) or ``--overwrite`` (start over).

``--workers N`` trains and evaluates N models at once, each in a process of its own, and ``--device cuda`` puts
every model on the GPU (:mod:`divrl.eval.grid`): the run folders and metrics files are those of one model at a time
on the same device with the same threads; the base's and the leaderboard's numbers are read in the main process once
every model is done.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from divrl.config import ConfigError
from divrl.eval import compare, grid
from divrl.eval.bootstrap import METRICS, ComparisonError, Difference, Estimate
from divrl.eval.demo import comparison_record, split_note, split_title
from divrl.eval.grid import Intervals, label
from divrl.trainer.common import RunLayout, check_run_folder, remove_run

console = Console()

MANIFEST = "bench.json"
BENCH_RUN = RunLayout("a bench", (MANIFEST, "summary.json"), ("seed[0-9]*",))
SPLITS = ("test", "ood")
"""The bench's evaluation splits by default; the first heads the leaderboard."""
METRIC_NAMES = {"distinct_correct_classes": "distinct correct classes"}
RESAMPLES = 2000


@dataclass(frozen=True)
class Board:
    """One split of the leaderboard.

    Attributes:
        split: the evaluation split.
        problems: how many problems every model was evaluated on.
        found: the differences to the baseline and every model's intervals (``bands``) of ``columns`` and the
            frontier's two metrics.
        columns: the leaderboard's metrics: pass@1, pass@8, pass@32, distinct correct classes, those every run
            supports (pass@32 needs 32 samples; with n < 32 samples, pass@n is added).
        frontier: the picture's (x, y) metrics: pass@1 and pass@32 (pass@n with fewer samples n).
        rows: model names in leaderboard order: trained methods by descending y, the base last.
        seeds: runs (training seeds) per model.
        minutes: per model, the mean minutes of training and evaluation per seed recorded in ``timing.json``
            (``None`` when none was recorded).
        note: what the split's problems are.
    """

    split: str
    problems: int
    found: Intervals
    columns: tuple[str, ...]
    frontier: tuple[str, str]
    rows: tuple[str, ...]
    seeds: dict[str, int]
    minutes: dict[str, float | None]
    note: str = ""


def make_board(
    split: str,
    results: Mapping[str, Sequence[dict[str, Any]]],
    sources: Mapping[str, Sequence[Path]],
    baseline: str,
    timing: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
    note: str = "",
    resamples: int = RESAMPLES,
) -> Board:
    """The leaderboard of one split from every model's metrics dicts (one per seed, read from ``sources``).

    Raises:
        ComparisonError: results without per-problem records, on different problems, or no baseline.
    """
    groups = grid.groups_of(results, sources)
    n = min(int(run.n.min()) for runs in groups.values() for run in runs)
    frontier = ("pass@1", f"pass@{min(32, n)}")
    wanted = list(METRICS)
    if frontier[1] not in wanted:  # fewer than 32 samples: the picture's pass@n is a column too
        wanted.insert(wanted.index("distinct_correct_classes"), frontier[1])
    columns, _ = compare.available_metrics(groups, wanted)
    found = grid.intervals(results, sources, baseline, columns, resamples, wanted)
    if isinstance(found, str):
        raise ComparisonError(found)
    y = frontier[1]
    trained = sorted((name for name in groups if name != "base"), key=lambda m: (-found.bands[m][y].mean, m))
    rows = (*trained, *(["base"] if "base" in groups else []))
    minutes: dict[str, float | None] = {}
    for name in rows:
        spent = [t.get("train_s", 0.0) + t.get("eval_s", 0.0) for t in (timing or {}).get(name, [])]
        minutes[name] = sum(spent) / len(spent) / 60 if spent and sum(spent) > 0 else None
    problems = groups[baseline][0].num_problems
    seeds = {name: len(groups[name]) for name in rows}
    return Board(split, problems, found, tuple(columns), frontier, rows, seeds, minutes, note)


def _interval(e: Estimate) -> str:
    return f"{compare.format_number(e.mean)} [{compare.format_number(e.low)}, {compare.format_number(e.high)}]"


def _difference(d: Difference) -> str:
    verdict = compare.verdict(d)
    cell = f"{compare.format_number(d.mean, True)} [{compare.format_number(d.low, True)}, "
    cell += f"{compare.format_number(d.high, True)}]"
    return f"{cell} {verdict}" if verdict == "within noise" else f"**{cell} {verdict}**"


def _name(name: str, board: Board) -> str:
    if name == "base":
        return "base (no RL)"
    return f"{label(name)} (baseline)" if name == board.found.baseline else label(name)


def board_markdown(board: Board, picture: str | None = None) -> list[str]:
    """One split's section of the leaderboard: the table with intervals, the differences to the baseline, the
    notes and the picture (``picture``: its path relative to the leaderboard)."""
    found, columns = board.found, board.columns
    base = label(found.baseline)
    heads = ["rank", "method", "seeds", *(METRIC_NAMES.get(m, m) for m in columns), "min / seed"]
    lines = [
        f"## {split_title(board.split)}: {board.problems} problems",
        "",
        *([f"Problems: {board.note}.", ""] if board.note else []),
        "| " + " | ".join(heads) + " |",
        "|---:|---|---:|" + "---|" * len(columns) + "---:|",
    ]
    for rank, name in enumerate(board.rows, start=1):
        minutes = board.minutes.get(name)
        cells = [
            str(rank) if name != "base" else "–",
            _name(name, board),
            str(board.seeds[name]),
            *(_interval(found.bands[name][m]) for m in columns),
            f"{minutes:.1f}" if minutes is not None else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Mean over seeds and problems, with its {_confidence(found):.0%} bootstrap interval (seeds, then problems; "
        f"{found.resamples} resamples). Sorted by {board.frontier[1]}; the base is the policy every method starts "
        "from. A rank means nothing where the difference below is within noise. min / seed: training and "
        "evaluation minutes per seed (`timing.json` of each run).",
        "",
        f"### Difference to {base}",
        "",
        "| method | " + " | ".join(METRIC_NAMES.get(m, m) for m in found.metrics) + " |",
        "|---|" + "---|" * len(found.metrics),
    ]
    for name in board.rows:
        if name == found.baseline:
            continue
        diffs = found.comparisons[name]
        lines.append(f"| {_name(name, board)} | " + " | ".join(_difference(diffs[m]) for m in found.metrics) + " |")
    lines += ["", *board_verdict(board)]
    lines += [
        "",
        f"Paired difference (method − {base}) over the same problems with its {_confidence(found):.0%} interval "
        f'(hierarchical bootstrap, {found.resamples} resamples; docs/methods.md, "Comparison statistics"): '
        "*within noise* when the interval contains 0, **bold** when it excludes 0.",
        "",
        *(f"- {note}" for note in found.notes),
        "",
    ]
    if picture is not None:
        x, y = board.frontier
        lines += [f"![{x} against {y}, {board.split} split]({picture})", ""]
    return lines


def board_verdict(board: Board) -> list[str]:
    """The difference table in words: per metric, the methods whose interval against the baseline excludes 0, above
    and below it, then the methods within noise on every metric (the base is left out: it is not a method)."""
    found = board.found
    methods = [name for name in board.rows if name not in (found.baseline, "base")]
    base = label(found.baseline)
    lines = [f"In words: beyond noise against {base} ({_confidence(found):.0%} interval excluding 0):", ""]
    for m in found.metrics:
        parts = []
        for direction in ("higher", "lower"):
            names = [label(n) for n in methods if compare.verdict(found.comparisons[n][m]) == direction]
            parts.append(f"{direction}: {', '.join(names) if names else 'none'}")
        lines.append(f"- {METRIC_NAMES.get(m, m)}: {'; '.join(parts)}")
    quiet = [label(n) for n in methods if all(d.within_noise for d in found.comparisons[n].values())]
    lines.append(f"- within noise on every metric: {', '.join(quiet) if quiet else 'none'}")
    return lines


def _confidence(found: Intervals) -> float:
    diffs = next(iter(found.comparisons.values()), {})
    return next(iter(diffs.values())).confidence if diffs else 0.95


def picture_name(leaderboard: Path, split: str) -> str:
    """The frontier picture of ``split`` beside ``leaderboard``: ``<stem>.png`` for test, ``<stem>-<split>.png``."""
    return f"{leaderboard.stem}.png" if split == "test" else f"{leaderboard.stem}-{split}.png"


def plot_frontier(path: Path, board: Board) -> None:
    """pass@1 against pass@32 per model, each with its 95% interval as bars on both axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = board.frontier
    fig, ax = plt.subplots(figsize=(6, 4.5))
    trained = [name for name in board.rows if name != "base"]
    palette = plt.get_cmap("tab10" if len(trained) <= 10 else "tab20")
    for name in board.rows:
        ex, ey = board.found.bands[name][x], board.found.bands[name][y]
        style: dict[str, Any] = (
            {"marker": "s", "color": "0.5"}
            if name == "base"
            else {"marker": "o^Dv"[trained.index(name) // 10 % 4], "color": palette(trained.index(name) % 20)}
        )
        ax.errorbar(
            [ex.mean],
            [ey.mean],
            xerr=[[ex.mean - ex.low], [ex.high - ex.mean]],
            yerr=[[ey.mean - ey.low], [ey.high - ey.mean]],
            capsize=3,
            linestyle="none",
            label=_name(name, board),
            **style,
        )
        ax.annotate(label(name), (ex.mean, ey.mean), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"{x} (quality)")
    ax.set_ylabel(f"{y} (coverage)")
    ax.set_title(
        f"diversity-quality frontier, {split_title(board.split)}\nbars: each model's 95% bootstrap interval",
        fontsize=8,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def git_commit() -> str:
    """divrl's commit (12 hex digits, ``+ uncommitted changes`` when tracked files differ), or why unknown."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    commit = head.stdout.strip()
    return commit + (" + uncommitted changes" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, str]:
    """Versions, machine and date for the leaderboard's header."""
    import torch
    import transformers

    import divrl

    machine = f"{platform.system()} {platform.machine()}, {_cpu_model()}, {os.cpu_count()} CPU cores"
    machine += f" (torch threads {torch.get_num_threads()})"
    if torch.cuda.is_available():
        machine += f", GPU {torch.cuda.get_device_name(0)}"
    return {
        "divrl": divrl.__version__,
        "commit": git_commit(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "machine": machine,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def leaderboard_markdown(
    boards: Sequence[Board],
    *,
    command: str,
    env: Mapping[str, str],
    wall_s: float,
    setup: str,
    out: Path | None,
    pictures: Mapping[str, str] | None = None,
    resumed: bool = False,
) -> str:
    """The whole leaderboard file: the header, then one section per split (:func:`board_markdown`)."""
    runs = sum(boards[0].seeds[name] for name in boards[0].rows if name != "base") if boards else 0
    spent = [m * boards[0].seeds[n] for n, m in boards[0].minutes.items() if m is not None] if boards else []
    lines = [
        "# Leaderboard: diversity methods on Countdown",
        "",
        "Written by `divrl bench` (the command below; run it again to reproduce this file, `--resume` reuses its "
        "finished runs). Read every difference through its interval: only a **bold** one is beyond noise.",
        "",
        f"- Command: `{command}`" + (" (this time continued with `--resume`)" if resumed else ""),
        f"- Versions: divrl {env.get('divrl')} (commit {env.get('commit')}), torch {env.get('torch')}, "
        f"transformers {env.get('transformers')}, Python {env.get('python')}",
        f"- Machine: {env.get('machine')}",
        f"- Date: {env.get('date')}",
        f"- Wall time: {wall_s / 60:.1f} min for this invocation"
        + (
            f"; {sum(spent):.1f} min of training and evaluation recorded by the runs ({runs} method-seed runs "
            "and the base evaluations; a resumed bench counts runs made before it)"
            if spent
            else ""
        ),
        f"- Setup: {setup}",
    ]
    if out is not None:
        how = ", ".join(
            f"`divrl compare {out}" + (f" --split {b.split}`" if b.split != "test" else "`") + f" on {b.split}"
            for b in boards
        )
        lines.append(f"- Runs: `{out}` (recompute the differences with {how})")
    lines.append("")
    for board in boards:
        lines += board_markdown(board, (pictures or {}).get(board.split))
    return "\n".join(lines).rstrip() + "\n"


def board_record(board: Board) -> dict[str, Any]:
    """``summary.json``'s ``splits.<split>``: the leaderboard's numbers."""
    return {
        "problems": board.problems,
        "columns": list(board.columns),
        "frontier": list(board.frontier),
        "rows": {
            name: {
                "seeds": board.seeds[name],
                "minutes_per_seed": board.minutes.get(name),
                **{m: [e.mean, e.low, e.high] for m, e in board.found.bands[name].items()},
            }
            for name in board.rows
        },
        "comparison": comparison_record(board.found),
    }


def print_board(board: Board) -> None:
    """One split on the console: the leaderboard's means (the file has their intervals), then the differences with
    their intervals (``divrl compare``'s table)."""
    console.rule(f"[bold]{split_title(board.split)}[/bold]: {board.problems} problems")
    table = Table(header_style="bold", title=f"leaderboard, {board.split} split (means; intervals in the file)")
    table.add_column("method")
    table.add_column("seeds", justify="right")
    for m in board.columns:
        table.add_column("classes" if m == "distinct_correct_classes" else m, justify="right")
    for name in board.rows:
        means = (compare.format_number(board.found.bands[name][m].mean) for m in board.columns)
        table.add_row(_name(name, board), str(board.seeds[name]), *means)
    console.print(table)
    console.print(compare.console_table(board.found.comparisons, board.found.baseline, grid.LABELS, board.split))
    for line in board_verdict(board):
        if line:
            console.print(line, soft_wrap=True, markup=False)
    for note in board.found.notes:
        console.print(f"note: {note}", soft_wrap=True)


class BenchProgress(grid.Progress):
    """One line per model on the console: what runs, what it cost, the time so far and an estimate of what is
    left (the mean cost of the methods trained from step 0 and evaluated now, times the models still to come, shared
    among ``workers``; a resumed run that only finishes its training or evaluation says nothing about a whole one).
    With several workers a model's line says when it starts and when it ends; ``index`` is its place in the grid."""

    def __init__(self, workers: int = 1) -> None:
        self.begin = time.perf_counter()
        self.workers = workers
        self.finished = 0  # models done, kept or failed (the serial grid's `index`)
        self.costs: list[float] = []  # seconds of each method trained from step 0 and evaluated now
        self.todo: dict[tuple[int, str], str] = {}  # what each started model runs

    def start(self, index: int, total: int, seed: int, name: str, todo: str) -> None:
        self.todo[seed, name] = todo
        if todo:
            console.rule(f"[bold]bench {index}/{total}[/bold]: {label(name)}, seed {seed}: {todo}")

    def done(self, index: int, total: int, seed: int, name: str, seconds: float | None) -> None:
        self.finished += 1
        elapsed = (time.perf_counter() - self.begin) / 60
        if seconds is None:
            console.print(f"[dim]bench {index}/{total}: {label(name)}, seed {seed}: finished before, kept[/dim]")
            return
        todo = self.todo.get((seed, name), "train + eval")
        if name != "base" and todo.startswith("train ") and " more " not in todo:
            self.costs.append(seconds)
        count = f" ({self.finished} of {total} finished)" if self.workers > 1 else ""
        console.print(
            f"[bold]bench {index}/{total}[/bold]: {label(name)}, seed {seed} done in {seconds / 60:.1f} min "
            f"(elapsed {elapsed:.1f} min){count}"
        )
        if self.finished < total and self.costs:
            left = (total - self.finished) * sum(self.costs) / len(self.costs) / 60 / self.workers
            console.print(f"[dim]about {left:.0f} min left (models to go: {total - self.finished})[/dim]")

    def failed(self, index: int, total: int, seed: int, name: str, error: str, detail: str) -> None:
        self.finished += 1
        grid.failure_lines(console, f"bench {index}/{total}", seed, name, error, detail)


def run_bench(
    out: Path = Path("runs/bench"),
    leaderboard: Path = Path("docs/leaderboard.md"),
    methods: Sequence[str] | None = None,
    seeds: int = 3,
    steps: int | None = None,
    overrides: Sequence[str] = (),
    problems: int = 700,
    samples: int = 32,
    splits: Sequence[str] = SPLITS,
    baseline: str = "grpo",
    threads: int = 0,
    workers: int = 1,
    device: str = "cpu",
    resume: bool = False,
    overwrite: bool = False,
    command: str = "divrl bench",
    resamples: int = RESAMPLES,
) -> dict[str, Any]:
    """Train and evaluate the grid in ``out``, write the leaderboard and its pictures (module docstring); returns
    what ``summary.json`` holds.

    Args:
        methods: recipe names; ``None``: every ``configs/countdown/*.yaml`` now.
        steps: RL steps of every run; ``None``: each recipe's own.
        overrides: ``--set`` values applied to every recipe.
        problems: problems per split (the first ``problems``; 0: the whole split). The default, 700, makes the
            evaluation-noise interval of a pass@32 difference about ±0.03 (issue 12's width; measured ±0.039 at
            400 problems, docs/results.md).
        samples: samples per problem.
        threads: torch threads (of each worker with ``workers`` > 1; 0: :func:`divrl.eval.grid.worker_threads`).
        workers: models trained and evaluated at once, each in a process of its own (1: all in this process);
            the same run folders and metrics files as one at a time (:mod:`divrl.eval.grid`).
        device: ``cpu`` or ``cuda`` (every model, every worker, on the one GPU).
        command: the command line the leaderboard names.

    Raises:
        RunFolderError: ``out`` holds a bench and neither ``resume`` nor ``overwrite``, or ``resume`` with other
            settings than those of its ``bench.json``.
        ConfigError: a bad option, recipe or override (before anything is written).
    """
    import torch

    for option, value, low in (("--threads", threads, 0), ("--problems", problems, 0), ("--samples", samples, 1)):
        if value < low:
            raise ConfigError(f"{option} must be >= {low}, got {value}")
    if resamples < 1:
        raise ConfigError(f"resamples must be >= 1, got {resamples}")
    grid.check_execution(workers, threads, device)
    methods = list(methods) if methods else grid.known_recipes()
    if baseline not in methods:
        raise ConfigError(
            f"--baseline {baseline!r} is not among the methods {methods}; add it to --methods or name another"
        )
    methods = [baseline, *(m for m in methods if m != baseline)]
    leaderboard = Path(leaderboard)
    if leaderboard.is_dir():
        raise ConfigError(f"--leaderboard {leaderboard}: is a folder; give the path of the markdown file to write")
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    old = check_run_folder(out, BENCH_RUN, resume=resume, overwrite=overwrite)
    settings = {
        "steps": steps,
        "problems": problems,
        "samples": samples,
        "splits": list(splits),
        "overrides": list(overrides),
    }
    if resume:
        grid.check_manifest(out / MANIFEST, settings, "bench")
    start = time.perf_counter()
    plan = grid.plan_grid(methods, seeds, splits, {s: problems or None for s in splits}, samples, steps, overrides)
    remove_run(old)  # --overwrite: the old bench goes just before the first write
    out.mkdir(parents=True, exist_ok=True)
    manifest = {**settings, "methods": methods, "seeds": seeds}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    length = f"{steps} RL steps" if steps is not None else "each recipe's RL steps"
    sizes = " and ".join(f"{len(plan.problems[s])} {s}" for s in plan.splits)
    each = grid.worker_threads(threads, workers)
    each_threads = f"{each} torch thread{'s' if each != 1 else ''} each"
    parallel = f"; {workers} workers, {each_threads}" if workers > 1 else ""
    console.print(
        f"[bold]divrl bench[/bold]: {len(methods)} methods ({', '.join(methods)}) × {seeds} seed(s), {length}; "
        f"eval on {sizes} problems × {samples} samples; runs in {out} on {device}{parallel}"
    )
    found = grid.run_grid(plan, out, BenchProgress(workers), workers=workers, threads=threads, device=device)
    try:
        boards = [
            make_board(
                split,
                found.results[split],
                found.sources[split],
                baseline,
                found.timing,
                split_note(split, plan.task),
                resamples,
            )
            for split in plan.splits
        ]
    except ComparisonError as exc:
        raise ConfigError(str(exc)) from None
    elapsed = time.perf_counter() - start
    pictures = {board.split: picture_name(leaderboard, board.split) for board in boards}
    leaderboard.parent.mkdir(parents=True, exist_ok=True)
    for board in boards:
        plot_frontier(leaderboard.parent / pictures[board.split], board)
    steps_note = f"{steps} RL steps per run (--steps)" if steps is not None else "each recipe's own length"
    setup = (
        f"{len(methods)} recipes of configs/countdown ({', '.join(methods)}), {seeds} seed(s) each, {steps_note}, "
        f"from base `{plan.base_path}`"
        + (f", with {' '.join(f'`--set {o}`' for o in overrides)}" if overrides else "")
        + f"; every model evaluated on {sizes} problems × {samples} samples at T = 1.0, sampling seed "
        f"{grid.EVAL_SEED} + training seed; this invocation ran its models on {device}"
        + (f", {workers} at a time ({each_threads})" if workers > 1 else "")
    )
    env = environment()
    text = leaderboard_markdown(
        boards, command=command, env=env, wall_s=elapsed, setup=setup, out=out, pictures=pictures, resumed=resume
    )
    tmp = leaderboard.with_name(leaderboard.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(leaderboard)
    for board in boards:
        print_board(board)
    record: dict[str, Any] = {
        "command": command,
        "environment": env,
        "settings": manifest,
        "elapsed_s": elapsed,
        "leaderboard": str(leaderboard),
        "splits": {board.split: board_record(board) for board in boards},
    }
    (out / "summary.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {leaderboard} and {', '.join(pictures.values())} beside it")
    console.print(f"[bold]wall time {elapsed / 60:.1f} min[/bold]")
    return record


__all__ = [
    "BENCH_RUN",
    "SPLITS",
    "Board",
    "board_markdown",
    "environment",
    "leaderboard_markdown",
    "make_board",
    "picture_name",
    "plot_frontier",
    "run_bench",
]
