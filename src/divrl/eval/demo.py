"""``divrl demo``: the four seed recipes from one tiny Countdown base, same seed, budget and
hyperparameters; every model (the base included) evaluated on each evaluation split, by default the held-out
``test`` split and the out-of-distribution ``ood`` split (Countdown numbers above the training range,
:mod:`divrl.tasks.countdown`), with the same samples per problem and sampling seeds on both; per split one table,
a section of ``report.md`` and a pass@k plot.

On each split every model is also compared with GRPO (or the first method when GRPO is not run) by a paired
bootstrap over the per-problem results (:mod:`divrl.eval.bootstrap`; hierarchical over seeds with ``--seeds`` > 1):
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

from divrl.config import ConfigError, apply_overrides, from_dict, load_yaml
from divrl.eval import compare
from divrl.eval.bootstrap import ComparisonError, Difference, Estimate, Run, bootstrap_means
from divrl.eval.evaluate import evaluate, ks_for, write_metrics
from divrl.trainer.common import (
    RunFolderError,
    RunLayout,
    check_run_folder,
    latest_checkpoint,
    read_metrics,
    remove_run,
)
from divrl.trainer.config import RLConfig

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
LABELS = {"grpo": "GRPO", "r1_zero_div": "R1-zero-Div", "darling": "DARLING", "setpo": "SetPO"}
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
    if None in (low, high, ood_high):
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


# The whole test split (218) and the whole ood split (300): about 20 s and 28 s per model with 32 samples.
FULL = Budget(steps=80, eval_problems=218, eval_n=32, ood_problems=300)
QUICK = Budget(steps=20, eval_problems=100, eval_n=16, ood_problems=100)
MANIFEST = "demo.json"
DEMO_RUN = RunLayout(
    "a demo", (MANIFEST, "summary.json", "report.md", "passk.png", "passk-ood.png", "training.png"), ("seed[0-9]*",)
)


def _check_manifest(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume a demo made with another budget or other overrides (a demo from before ``demo.json``
    existed is taken as it is)."""
    path = out / MANIFEST
    if not path.exists():
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: unreadable ({exc}); --overwrite starts the demo over") from None
    changed = [k for k in settings if before.get(k) != settings[k]]
    if changed:
        diff = "; ".join(f"{k}: {before.get(k)!r} there, {settings[k]!r} now" for k in changed)
        raise RunFolderError(
            f"--resume {out}: the demo there was made with other settings ({diff}); use the same ones, "
            "another --out, or --overwrite"
        )


@dataclass(frozen=True)
class Intervals:
    """The demo's noise-aware comparison: every model vs ``baseline`` and each model's pass@k bands."""

    baseline: str
    comparisons: dict[str, dict[str, Difference]]
    notes: list[str]
    bands: dict[str, dict[str, Estimate]]
    resamples: int


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


def recipe(method: str, budget: Budget, seed: int, overrides: list[str] = ()) -> RLConfig:  # type: ignore[assignment]
    path = RECIPES / "countdown" / f"{method}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (RECIPES / "countdown").glob("*.yaml"))
        raise ValueError(f"unknown demo method {method!r}; known: {known}")
    data = apply_overrides(load_yaml(path), [f"steps={budget.steps}", f"seed={seed}", *overrides])
    data.setdefault("name", method)
    return from_dict(RLConfig, data)


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
) -> dict[str, Any]:
    """Train every method for ``seeds`` seeds, evaluate the base and every trained model on each of ``splits``,
    print and write the comparison (module docstring); with ``resume``, continue the demo in ``out``. Returns what
    ``summary.json`` holds.

    Raises:
        RunFolderError: ``out`` holds a demo and neither ``resume`` nor ``overwrite`` is set, or ``resume`` with
            another budget or other overrides than the demo there.
        ConfigError: a bad recipe, override or option (before anything is written).
    """
    import torch

    from divrl.models import load_policy
    from divrl.trainer.common import input_errors
    from divrl.trainer.rl import check_methods, train

    methods = methods or ["grpo", "r1_zero_div", "darling", "setpo"]
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods names a method twice: {methods}")
    budget = QUICK if quick else FULL
    splits = list(splits)
    if not splits or len(set(splits)) != len(splits):
        raise ValueError(f"splits must name each evaluation split once, got {splits}")
    files = {split: compare.metrics_filename(split) for split in splits}
    out = Path(out)
    old_demo = check_run_folder(out, DEMO_RUN, resume=resume, overwrite=overwrite)
    settings = {"budget": budget.__dict__, "overrides": list(overrides)}
    if resume:
        _check_manifest(out, settings)
    start = time.perf_counter()
    configs = {m: recipe(m, budget, 0, list(overrides)) for m in methods}
    for cfg in configs.values():
        check_methods(cfg)  # fail fast on a bad recipe or override, before the first method trains
    base_path = configs[methods[0]].model.path
    task_cfg = configs[methods[0]].task
    from divrl.tasks import get_task

    with input_errors(f"task {task_cfg.name!r}"):
        task = get_task(task_cfg.name, **task_cfg.options)
    problems = {}
    for split in splits:
        try:
            problems[split] = task.problems(split, n=budget.problems(split))
        except ValueError as exc:  # e.g. task options that leave no ood split: say so before anything trains
            raise ConfigError(f"task.options: evaluation split {split!r}: {exc}") from None
    remove_run(old_demo)  # --overwrite: the old demo goes just before the first write
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    max_new = configs[methods[0]].rollout.max_new_tokens
    console.print(
        f"[bold]divrl demo[/bold]: {len(methods)} methods × {seeds} seed(s), {budget.steps} RL steps each, "
        f"eval on " + " and ".join(f"{len(problems[s])} {s}" for s in splits) + f" problems × {budget.eval_n} samples"
    )

    def evaluate_missing(run_dir: Path, model_path: str | None, seed: int) -> None:
        """Evaluate the model once on every split whose metrics file is missing (same samples and seed per split)."""
        todo = [split for split in splits if not (run_dir / files[split]).exists()]
        if not todo:
            return
        if model_path is None:
            final = latest_checkpoint(run_dir)
            assert final is not None
            model_path = str(final)
        with input_errors(f"model.path {model_path!r}"):
            model, tok = load_policy(model_path)
        for split in todo:
            m = evaluate(model, tok, task, problems[split], budget.eval_n, max_new_tokens=max_new, seed=1000 + seed)
            m["split"] = split
            write_metrics(m, run_dir / files[split])

    results: dict[str, dict[str, list[dict[str, Any]]]] = {split: {} for split in splits}
    sources: dict[str, dict[str, list[Path]]] = {split: {} for split in splits}
    curves: dict[str, list[list[dict[str, Any]]]] = {}

    def collect(name: str, run_dir: Path) -> None:
        for split in splits:
            path = run_dir / files[split]
            results[split].setdefault(name, []).append(json.loads(path.read_text()))
            sources[split].setdefault(name, []).append(path)

    for seed in range(seeds):
        base_dir = out / f"seed{seed}" / "base"
        evaluate_missing(base_dir, base_path, seed)
        collect("base", base_dir)
        for method in methods:
            cfg = recipe(method, budget, seed, list(overrides))
            run_dir = out / f"seed{seed}" / method
            have = [files[split] for split in splits if (run_dir / files[split]).exists()]
            if len(have) < len(splits):
                ckpt = latest_checkpoint(run_dir)
                final = f"checkpoint-{budget.steps:06d}"
                done = ckpt is not None and ckpt.name == final
                if not done and have:  # training on would evaluate another model than the one in `have`
                    raise ConfigError(
                        f"{run_dir}: holds {', '.join(have)} but not {final} to evaluate on the other splits with "
                        f"the same model; delete {run_dir} to train and evaluate it again"
                    )
                if not done:  # continue from the latest complete checkpoint, or start over a run cut before one
                    train(cfg, run_dir, resume=ckpt is not None, overwrite=ckpt is None)
                evaluate_missing(run_dir, None, seed)
            collect(method, run_dir)
            curves.setdefault(method, []).append(read_metrics(run_dir))

    baseline = "grpo" if "grpo" in methods else methods[0]
    reports = {
        split: SplitResult(
            split,
            len(problems[split]),
            {name: aggregate(runs) for name, runs in results[split].items()},
            intervals(results[split], sources[split], baseline, budget.eval_n),
            files[split],
            split_note(split, task),
        )
        for split in splits
    }
    elapsed = time.perf_counter() - start
    for r in reports.values():
        print_split(r, seeds, budget.eval_n)
    write_report(out, reports, curves, budget, seeds, elapsed)
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
    """Paired bootstrap differences vs ``baseline`` and pass@k bands from the per-problem results, or why they cannot
    be computed (e.g. a reused ``metrics.json`` written before divrl kept per-problem results)."""
    try:
        groups = {
            name: [Run.from_metrics(m, str(path)) for m, path in zip(runs, sources[name], strict=True)]
            for name, runs in results.items()
        }
        metrics, left_out = compare.available_metrics(groups)
        comparisons = compare.compare_groups(groups, baseline, metrics, resamples=resamples)
        ks = [f"pass@{k}" for k in ks_for(n)]
        bands = {name: bootstrap_means(runs, ks, resamples=resamples) for name, runs in groups.items()}
    except ComparisonError as exc:
        return f"{exc} (delete it and run the demo again to evaluate it again)"
    notes = [*compare.noise_notes(comparisons, baseline, LABELS), *left_out]
    return Intervals(baseline, comparisons, notes, bands, resamples)


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
                }
                for metric, d in diffs.items()
            }
            for name, diffs in found.comparisons.items()
        },
        "bands": {name: {k: [e.low, e.high] for k, e in band.items()} for name, band in found.bands.items()},
    }


def aggregate(runs: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """mean and (sample) std over seeds of every numeric metric."""
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


__all__ = ["FULL", "QUICK", "SPLITS", "Budget", "Intervals", "SplitResult", "intervals", "recipe", "run_demo"]
