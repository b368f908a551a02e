"""``divrl demo``: the four seed recipes from one tiny Countdown base, same seed, budget and
hyperparameters; every model (the base included) evaluated on each evaluation split, by default the held-out
``test`` split and the out-of-distribution ``ood`` split (Countdown numbers above the training range,
:mod:`divrl.tasks.countdown`), with the same samples per problem and sampling seeds on both; per split one table,
a section of ``report.md`` and a pass@k plot.

On each split every model is also compared with GRPO (or the first method when GRPO is not run) by a paired
bootstrap over the per-problem results (:mod:`divrl.eval.bootstrap`; with ``--seeds`` > 1 hierarchical over seeds,
resampled as matched pairs, since seed i of every method shares its prompt order and evaluation samples):
the difference of pass@1, pass@8, pass@32 and distinct correct classes with its 95% interval, flagged "within
noise" when the interval contains 0; the pass@k plot shows each model's bootstrap interval as a band.

Files: ``seed<i>/<model>/metrics.json`` (test) and ``metrics-<split>.json`` (another split, e.g.
``metrics-ood.json``; :func:`divrl.eval.compare.metrics_filename`), ``report.md``, ``summary.json`` (the first
split's ``results`` and ``comparison`` at the top level, as before the ood split; every split under ``splits``),
``passk.png`` (test) and ``passk-<split>.png``, ``training.png``. ``divrl compare <out>`` recomputes the test
comparison from the same files, ``divrl compare --split ood <out>`` the ood one.

An output folder that holds a demo is refused unless ``resume`` or ``overwrite`` (remove the old demo first) is
given. With ``resume``, finished pieces are reused: a run folder whose final checkpoint exists is not trained again
(a run cut short resumes from its latest complete checkpoint), and a split whose metrics file exists is not
evaluated again, so an interrupted demo continues where it stopped (and a demo folder from before the ood split gains
only the ood evaluations). ``demo.json`` records the budget and the ``--set`` overrides; a resume with different ones
is refused, so one report never mixes two settings.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from divrl.config import ConfigError
from divrl.eval import compare, grid
from divrl.eval.bootstrap import Estimate
from divrl.eval.evaluate import ks_for
from divrl.eval.grid import LABELS, RECIPES, Intervals
from divrl.trainer.common import RunLayout, check_run_folder, remove_run
from divrl.trainer.config import RLConfig

TABLE_KEYS = [
    "pass@1",
    "pass@4",
    "pass@16",
    "pass@32",
    "potential@16",
    "distinct_correct_classes",
    "div_equ",
    "self_bleu",
    "entropy",
]
console = Console()


SPLITS = ("test", "ood")
"""The demo's evaluation splits by default; the first is the one at the top level of ``summary.json``."""
SPLIT_TITLES = {"test": "in distribution", "ood": "out of distribution"}
"""A few words per split for headings (console rules, report.md sections, plot titles)."""


def split_note(split: str, task: Any) -> str:
    """What the problems of ``split`` are, for report.md (numbers from the Countdown task's config; "" when unknown)."""
    cfg = getattr(task, "config", None)
    low, high, ood_high = (getattr(cfg, name, None) for name in ("low", "high", "ood_high"))
    if low is None or high is None or ood_high is None:
        return ""
    if split == "test":
        return f"held-out problems drawn like the training ones (numbers {low}..{high})"
    if split == "ood":
        return (
            f"every problem holds a number in {high + 1}..{ood_high}, above the training range {low}..{high}, "
            "never seen in SFT or RL"
        )
    return ""


@dataclass(frozen=True)
class Budget:
    """What one demo spends: RL steps per method and the evaluation size.

    Attributes:
        steps: RL steps per method.
        eval_problems: problems of the ``test`` split (and of any split other than ``ood``).
        eval_n: samples per problem, on every split.
        ood_problems: problems of the ``ood`` split; ``None``: as many as ``eval_problems``.
    """

    steps: int
    eval_problems: int
    eval_n: int
    ood_problems: int | None = None

    def problems(self, split: str) -> int:
        """How many problems of ``split`` every model is evaluated on."""
        if split == "ood" and self.ood_problems is not None:
            return self.ood_problems
        return self.eval_problems


# Testbed v2 (4 numbers, 72 new tokens) on 2 idle cores: 1.4-2.4 s per 16 x 16 RL step (this box varies) and, since
# 2026-11-29, about 25 s to evaluate one model on 200 test + 100 ood problems x 32 samples (about 60 s before). 80 steps
# took 17.5 minutes in all with the slower evaluation, over the 15-minute target of issue 12, so the demo runs 56 (7.5
# to 12.5 minutes; quick: 20 steps took 5.7 minutes against 4, so 10). Measured totals in docs/results.md. The
# recipes' own length (120 steps) is `divrl bench`'s.
FULL = Budget(steps=56, eval_problems=200, eval_n=32, ood_problems=100)
QUICK = Budget(steps=10, eval_problems=80, eval_n=16, ood_problems=40)
MANIFEST = "demo.json"
DEMO_RUN = RunLayout(
    "a demo", (MANIFEST, "summary.json", "report.md", "passk.png", "passk-ood.png", "training.png"), ("seed[0-9]*",)
)


def _check_manifest(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume a demo made with another budget or other overrides (a demo from before ``demo.json``
    existed is taken as it is)."""
    grid.check_manifest(out / MANIFEST, settings, "demo")


@dataclass(frozen=True)
class SplitResult:
    """One evaluation split of the demo: its problem count, every model's mean (± std over seeds) metrics, the
    comparison with the baseline (or why there is none) and where the per-model metrics files are."""

    split: str
    problems: int
    summary: dict[str, dict[str, tuple[float, float]]]
    found: Intervals | str
    metrics_file: str
    note: str = ""


def recipe(method: str, budget: Budget, seed: int, overrides: Sequence[str] = ()) -> RLConfig:
    """The demo's config of ``method``: the recipe with the budget's steps, ``seed`` and ``overrides``."""
    return grid.recipe(method, seed, budget.steps, overrides)


def run_demo(
    out: Path,
    quick: bool = False,
    seeds: int = 1,
    methods: list[str] | None = None,
    threads: int = 0,
    overrides: list[str] = (),  # type: ignore[assignment]
    splits: Sequence[str] = SPLITS,
    resume: bool = False,
    overwrite: bool = False,
    workers: int = 1,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train every method for ``seeds`` seeds, evaluate the base and every trained model on each of ``splits``,
    print and write the comparison (module docstring); with ``resume``, continue the demo in ``out``. Returns what
    ``summary.json`` holds. Training and evaluation are :mod:`divrl.eval.grid`'s (shared with ``divrl bench``):
    ``workers`` > 1 runs that many models at once in processes of their own (``threads`` torch threads each; one
    line per finished model instead of the training bars), ``device`` is ``cpu`` or ``cuda``.

    Raises:
        RunFolderError: ``out`` holds a demo and neither ``resume`` nor ``overwrite`` is set, or ``resume`` with
            another budget or other overrides than the demo there.
        ConfigError: a bad recipe, override or option (before anything is written).
    """
    import torch

    methods = methods or ["grpo", "r1_zero_div", "darling", "setpo"]
    if threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {threads}")
    grid.check_execution(workers, threads, device)
    if threads:
        torch.set_num_threads(threads)
    budget = QUICK if quick else FULL
    splits = list(splits)
    out = Path(out)
    old_demo = check_run_folder(out, DEMO_RUN, resume=resume, overwrite=overwrite)
    settings = {"budget": budget.__dict__, "overrides": list(overrides)}
    if resume:
        _check_manifest(out, settings)
    start = time.perf_counter()
    plan = grid.plan_grid(
        methods,
        seeds,
        splits,
        {split: budget.problems(split) for split in splits},
        budget.eval_n,
        steps=budget.steps,
        overrides=list(overrides),
    )
    remove_run(old_demo)  # --overwrite: the old demo goes just before the first write
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    console.print(
        f"[bold]divrl demo[/bold]: {len(methods)} methods × {seeds} seed(s), {budget.steps} RL steps each, "
        f"eval on "
        + " and ".join(f"{len(plan.problems[s])} {s}" for s in splits)
        + f" problems × {budget.eval_n} samples"
    )
    progress = grid.RunLines("demo") if workers > 1 else None  # the workers show no training bars
    found = grid.run_grid(plan, out, progress, workers=workers, threads=threads, device=device)

    baseline = "grpo" if "grpo" in methods else methods[0]
    reports = {
        split: SplitResult(
            split,
            len(plan.problems[split]),
            {name: mean_std_over_seeds(runs) for name, runs in found.results[split].items()},
            intervals(found.results[split], found.sources[split], baseline, budget.eval_n),
            compare.metrics_filename(split),
            split_note(split, plan.task),
        )
        for split in splits
    }
    elapsed = time.perf_counter() - start
    for r in reports.values():
        print_split(r, seeds, budget.eval_n)
    write_report(out, reports, found.curves, budget, seeds, elapsed)
    first = reports[splits[0]]
    record: dict[str, Any] = {"budget": budget.__dict__, "seeds": seeds, "elapsed_s": elapsed}
    record["results"] = first.summary  # the first split (test) at the top level, as before the ood split
    record["comparison"] = comparison_record(first.found)
    record["splits"] = {split: split_record(r) for split, r in reports.items()}
    (out / "summary.json").write_text(json.dumps(record, indent=2))
    console.print(f"wrote {out / 'report.md'} ({elapsed / 60:.1f} min)")
    return record


def split_title(split: str) -> str:
    """``test split (in distribution)`` and the like."""
    what = SPLIT_TITLES.get(split)
    return f"{split} split" + (f" ({what})" if what else "")


def print_split(r: SplitResult, seeds: int, n: int) -> None:
    """One split on the console: a rule naming it, the metrics table, the comparison with the baseline."""
    console.rule(f"[bold]{split_title(r.split)}[/bold]: {r.problems} problems × {n} samples")
    print_table(r.summary, seeds, title=f"{r.split} split")
    if isinstance(r.found, Intervals):
        console.print(compare.console_table(r.found.comparisons, r.found.baseline, LABELS, split=r.split))
        for note in r.found.notes:
            console.print(f"note: {note}", soft_wrap=True)
    else:
        console.print(f"[yellow]no intervals on the {r.split} split:[/yellow] {r.found}", soft_wrap=True)


def split_record(r: SplitResult) -> dict[str, Any]:
    """``summary.json``'s ``splits.<split>``: problems, metrics file name, results and comparison of one split."""
    return {
        "problems": r.problems,
        "metrics_file": r.metrics_file,
        "results": r.summary,
        "comparison": comparison_record(r.found),
    }


def intervals(
    results: dict[str, list[dict[str, Any]]],
    sources: dict[str, list[Path]],
    baseline: str,
    n: int,
    resamples: int = 2000,
) -> Intervals | str:
    """Paired bootstrap differences vs ``baseline`` and pass@k bands (k = 1, 2, 4, ..., n) from the per-problem
    results, or why they cannot be computed (:func:`divrl.eval.grid.intervals`)."""
    return grid.intervals(results, sources, baseline, [f"pass@{k}" for k in ks_for(n)], resamples)


def comparison_record(found: Intervals | str) -> dict[str, Any]:
    """``summary.json``'s ``comparison``: every difference with its interval and flag, the notes, the pass@k bands."""
    if isinstance(found, str):
        return {"error": found}
    return {
        "baseline": found.baseline,
        "resamples": found.resamples,
        "notes": found.notes,
        "differences": {
            name: {
                metric: {
                    "difference": d.mean,
                    "low": d.low,
                    "high": d.high,
                    "confidence": d.confidence,
                    "within_noise": d.within_noise,
                    "seeds": list(d.seeds),
                    "matched_seeds": d.matched_seeds,
                }
                for metric, d in diffs.items()
            }
            for name, diffs in found.comparisons.items()
        },
        "bands": {name: {k: [e.low, e.high] for k, e in band.items()} for name, band in found.bands.items()},
    }


def mean_std_over_seeds(runs: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Mean and (sample) std over seeds of every numeric metric: ``{metric: (mean, std)}`` (std NaN for one seed)."""
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {}
    for k in keys:
        vals = np.array([float(r[k]) for r in runs])
        out[k] = (float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"))
    return out


def _fmt(mean_std: tuple[float, float], seeds: int) -> str:
    mean, std = mean_std
    if seeds > 1 and math.isfinite(std):
        return f"{mean:.3f} ± {std:.3f}"
    return f"{mean:.3f}"


def _keys(summary: dict[str, Any]) -> list[str]:
    first = next(iter(summary.values()))
    return [k for k in TABLE_KEYS if k in first]


CONSOLE_KEYS = {
    "pass@1": "pass@1",
    "pass@16": "pass@16",
    "pass@32": "pass@32",
    "distinct_correct_classes": "classes",
    "self_bleu": "self-BLEU",
}


def print_table(summary: dict[str, dict[str, tuple[float, float]]], seeds: int, title: str | None = None) -> None:
    """A compact console table (report.md has every metric)."""
    first = next(iter(summary.values()))
    keys = [k for k in CONSOLE_KEYS if k in first]
    table = Table(header_style="bold", title=title)
    table.add_column("model")
    for k in keys:
        table.add_column(CONSOLE_KEYS[k], justify="right")
    for name, metrics in summary.items():
        table.add_row(LABELS.get(name, name), *(_fmt(metrics[k], seeds) for k in keys))
    console.print(table)


def markdown_table(summary: dict[str, dict[str, tuple[float, float]]], seeds: int) -> str:
    keys = _keys(summary)
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, metrics in summary.items():
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(_fmt(metrics[k], seeds) for k in keys) + " |")
    return "\n".join(lines)


def passk_filename(split: str) -> str:
    """``passk.png`` for the test split, ``passk-<split>.png`` for another (as the metrics files)."""
    return "passk.png" if split == "test" else f"passk-{split}.png"


def write_report(
    out: Path,
    reports: dict[str, SplitResult],
    curves: dict[str, list[list[dict[str, Any]]]],
    budget: Budget,
    seeds: int,
    elapsed: float,
) -> None:
    """``report.md`` (a section per split: metrics table, comparison, pass@k plot; then training), the plots."""
    for r in reports.values():
        bands = r.found.bands if isinstance(r.found, Intervals) else None
        plot_passk(out / passk_filename(r.split), r.summary, budget.eval_n, bands, split=r.split)
    plot_curves(out / "training.png", curves)
    names = " and ".join(f"`{s}` ({r.problems} problems)" for s, r in reports.items())
    text = [
        "# divrl demo report",
        "",
        f"{seeds} seed(s); {budget.steps} RL steps per method. Every model, the base included, is evaluated on "
        f"{names} with {budget.eval_n} samples per problem at T = 1.0 (greedy decoding for potential@k's pass@1), "
        f"the same sampling seeds on every split. Wall time {elapsed / 60:.1f} min.",
        "",
    ]
    for r in reports.values():
        text += [
            f"## {split_title(r.split)}",
            "",
            f"{r.problems} Countdown problems of the `{r.split}` split × {budget.eval_n} samples"
            + (f": {r.note}" if r.note else "")
            + f" (`seed<i>/<model>/{r.metrics_file}`).",
            "",
            markdown_table(r.summary, seeds),
            "",
            *comparison_section(r.found, r.split),
            f"![pass@k, {r.split} split]({passk_filename(r.split)})",
            "",
        ]
    text += [
        "## Training",
        "",
        "![training](training.png)",
        "",
        "Metrics: pass@k is the unbiased estimator; distinct_correct_classes counts distinct solution classes "
        "(exact canonical form) among correct samples per problem; div_equ is unique/all solutions per problem; "
        "self_bleu is 0-100, lower = more diverse.",
    ]
    (out / "report.md").write_text("\n".join(text) + "\n")


def comparison_section(found: Intervals | str, split: str = "test") -> list[str]:
    """report.md's comparison with the baseline on ``split``: the table, what the intervals cover, how to recompute
    them."""
    if isinstance(found, str):
        return [f"No intervals on the {split} split: {found}.", ""]
    base = LABELS.get(found.baseline, found.baseline)
    command = "`divrl compare`" if split == "test" else f"`divrl compare --split {split}`"
    return [
        f"### {split} split: against {base}",
        "",
        f"Paired differences from {base} over the same {split} problems, with 95% bootstrap intervals "
        f'({found.resamples} resamples; docs/methods.md, "Comparison statistics"); a difference whose interval '
        f"contains 0 is within noise. {command} on this folder recomputes the table.",
        "",
        compare.markdown_table(found.comparisons, found.baseline, LABELS),
        "",
        *(f"- {note}" for note in found.notes),
        "",
    ]


def plot_passk(
    path: Path,
    summary: dict[str, dict[str, tuple[float, float]]],
    n: int,
    bands: dict[str, dict[str, Estimate]] | None = None,
    split: str = "test",
) -> None:
    """Mean pass@k per model on ``split``; the band is each model's 95% bootstrap interval (seeds, then problems)
    when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = ks_for(n)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, metrics in summary.items():
        means = [metrics[f"pass@{k}"][0] for k in ks]
        (line,) = ax.plot(ks, means, marker="o", label=LABELS.get(name, name))
        if bands is not None and name in bands:
            low = [bands[name][f"pass@{k}"].low for k in ks]
            high = [bands[name][f"pass@{k}"].high for k in ks]
            ax.fill_between(ks, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel(f"pass@k ({split} split)")
    title = split_title(split)
    if bands:
        title += "\nbands: each model's 95% bootstrap interval (the paired differences are in report.md)"
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(path: Path, curves: dict[str, list[list[dict[str, Any]]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in curves.items():
        for ax, key in zip(axes, ["reward", "distinct_correct_classes"], strict=True):
            series = [np.array([r[key] for r in run]) for run in runs if run]
            if not series:
                continue
            length = min(len(s) for s in series)
            y = np.mean([s[:length] for s in series], axis=0)
            window = max(1, length // 12)
            smooth = np.convolve(y, np.ones(window) / window, mode="valid")
            ax.plot(np.arange(len(smooth)) + window, smooth, label=LABELS.get(name, name))
    axes[0].set_title("training reward")
    axes[1].set_title("distinct correct classes per group")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = [
    "FULL",
    "LABELS",
    "QUICK",
    "RECIPES",
    "SPLITS",
    "Budget",
    "Intervals",
    "SplitResult",
    "intervals",
    "recipe",
    "run_demo",
]
