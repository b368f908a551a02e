"""``divrl demo``: the four seed recipes from one tiny Countdown base, same seed, budget and
hyperparameters; every model evaluated on held-out problems; one table, ``report.md`` and PNG plots.

Every model is also compared with GRPO (or the first method when GRPO is not run) by a paired bootstrap over the
per-problem results (:mod:`divrl.eval.bootstrap`; hierarchical over seeds with ``--seeds`` > 1): the difference of
pass@1, pass@8, pass@32 and distinct correct classes with its 95% interval, flagged "within noise" when the interval
contains 0; the pass@k plot shows each model's bootstrap interval as a band. ``divrl compare <out>`` recomputes the
comparison from the same files.

An output folder that holds a demo is refused unless ``resume`` (continue it: a run whose final checkpoint and
``metrics.json`` exist is not trained again, a run cut short resumes from its latest complete checkpoint) or
``overwrite`` (remove the old demo first) is given. ``demo.json`` records the budget and the ``--set`` overrides;
a resume with different ones is refused, so one report never mixes two settings.
"""

from __future__ import annotations

import json
import math
import time
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


@dataclass(frozen=True)
class Budget:
    """What one demo spends: RL steps per method and the evaluation size."""

    steps: int
    eval_problems: int
    eval_n: int


FULL = Budget(steps=80, eval_problems=218, eval_n=32)
QUICK = Budget(steps=20, eval_problems=100, eval_n=16)
MANIFEST = "demo.json"
DEMO_RUN = RunLayout("a demo", (MANIFEST, "summary.json", "report.md", "passk.png", "training.png"), ("seed[0-9]*",))


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


def recipe(method: str, budget: Budget, seed: int, overrides: list[str] = ()) -> RLConfig:  # type: ignore[assignment]
    path = RECIPES / "countdown" / f"{method}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (RECIPES / "countdown").glob("*.yaml"))
        raise ConfigError(f"--methods: unknown demo method {method!r}; known: {known}")
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
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) the demo in ``out``; returns the summary (mean, std per metric).

    Raises:
        RunFolderError: ``out`` holds a demo and neither ``resume`` nor ``overwrite`` is set, or ``resume`` with
            another budget or other overrides than the demo there.
        ConfigError: a bad recipe or override (before anything is written).
    """
    import torch

    from divrl.models import load_policy
    from divrl.trainer.common import input_errors, load_task
    from divrl.trainer.config import TaskConfig
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
    task, problems = load_task(TaskConfig(task_cfg.name, task_cfg.options, "test"), n=budget.eval_problems)
    remove_run(old_demo)  # --overwrite: the old demo goes just before the first write
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    max_new = configs[methods[0]].rollout.max_new_tokens
    console.print(
        f"[bold]divrl demo[/bold]: {len(methods)} methods × {seeds} seed(s), {budget.steps} RL steps each, "
        f"eval on {len(problems)} test problems × {budget.eval_n} samples"
    )

    results: dict[str, list[dict[str, Any]]] = {"base": []}
    sources: dict[str, list[Path]] = {"base": []}
    curves: dict[str, list[list[dict[str, Any]]]] = {}
    for seed in range(seeds):
        base_metrics_path = out / f"seed{seed}" / "base" / "metrics.json"
        if not base_metrics_path.exists():
            with input_errors(f"model.path {base_path!r}"):
                model, tok = load_policy(base_path)
            m = evaluate(model, tok, task, problems, budget.eval_n, max_new_tokens=max_new, seed=1000 + seed)
            write_metrics(m, base_metrics_path)
        results["base"].append(json.loads(base_metrics_path.read_text()))
        sources["base"].append(base_metrics_path)
        for method in methods:
            cfg = recipe(method, budget, seed, list(overrides))
            run_dir = out / f"seed{seed}" / method
            metrics_path = run_dir / "metrics.json"
            if not metrics_path.exists():
                ckpt = latest_checkpoint(run_dir)
                done = ckpt is not None and ckpt.name == f"checkpoint-{budget.steps:06d}"
                if not done:  # continue from the latest complete checkpoint, or start over a run cut before one
                    train(cfg, run_dir, resume=ckpt is not None, overwrite=ckpt is None)
                final = latest_checkpoint(run_dir)
                assert final is not None
                model, tok = load_policy(str(final))
                m = evaluate(model, tok, task, problems, budget.eval_n, max_new_tokens=max_new, seed=1000 + seed)
                write_metrics(m, metrics_path)
            results.setdefault(method, []).append(json.loads(metrics_path.read_text()))
            sources.setdefault(method, []).append(metrics_path)
            curves.setdefault(method, []).append(read_metrics(run_dir))

    summary = {name: aggregate(runs) for name, runs in results.items()}
    baseline = "grpo" if "grpo" in methods else methods[0]
    found = intervals(results, sources, baseline, budget.eval_n)
    elapsed = time.perf_counter() - start
    print_table(summary, seeds)
    if isinstance(found, Intervals):
        console.print(compare.console_table(found.comparisons, baseline, LABELS))
        for note in found.notes:
            console.print(f"note: {note}", soft_wrap=True)
    else:
        console.print(f"[yellow]no intervals:[/yellow] {found}", soft_wrap=True)
    write_report(out, summary, curves, budget, seeds, elapsed, found)
    record = {"budget": budget.__dict__, "seeds": seeds, "elapsed_s": elapsed, "results": summary}
    record["comparison"] = comparison_record(found)
    (out / "summary.json").write_text(json.dumps(record, indent=2))
    console.print(f"wrote {out / 'report.md'} ({elapsed / 60:.1f} min)")
    return summary


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


def print_table(summary: dict[str, dict[str, tuple[float, float]]], seeds: int) -> None:
    """A compact console table (report.md has every metric)."""
    first = next(iter(summary.values()))
    keys = [k for k in CONSOLE_KEYS if k in first]
    table = Table(header_style="bold")
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


def write_report(
    out: Path,
    summary: dict[str, dict[str, tuple[float, float]]],
    curves: dict[str, list[list[dict[str, Any]]]],
    budget: Budget,
    seeds: int,
    elapsed: float,
    found: Intervals | str = "not computed",
) -> None:
    plot_passk(out / "passk.png", summary, budget.eval_n, found.bands if isinstance(found, Intervals) else None)
    plot_curves(out / "training.png", curves)
    text = [
        "# divrl demo report",
        "",
        f"{seeds} seed(s); {budget.steps} RL steps per method; evaluation on {budget.eval_problems} held-out Countdown "
        f"problems × {budget.eval_n} samples at T = 1.0 (greedy decoding for potential@k's pass@1). "
        f"Wall time {elapsed / 60:.1f} min.",
        "",
        markdown_table(summary, seeds),
        "",
        *comparison_section(found),
        "![pass@k](passk.png)",
        "",
        "![training](training.png)",
        "",
        "Metrics: pass@k is the unbiased estimator; distinct_correct_classes counts distinct solution classes "
        "(exact canonical form) among correct samples per problem; div_equ is unique/all solutions per problem; "
        "self_bleu is 0-100, lower = more diverse.",
    ]
    (out / "report.md").write_text("\n".join(text) + "\n")


def comparison_section(found: Intervals | str) -> list[str]:
    """report.md's comparison with the baseline: the table, what the intervals cover, how to recompute them."""
    if isinstance(found, str):
        return [f"No intervals: {found}.", ""]
    base = LABELS.get(found.baseline, found.baseline)
    return [
        f"## Against {base}",
        "",
        f"Paired differences from {base} over the same problems, with 95% bootstrap intervals ({found.resamples} "
        'resamples; docs/methods.md, "Comparison statistics"); a difference whose interval contains 0 is '
        "within noise. `divrl compare` on this folder recomputes the table.",
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
) -> None:
    """Mean pass@k per model; the band is each model's 95% bootstrap interval (seeds, then problems) when given."""
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
    ax.set_ylabel("pass@k (held-out)")
    if bands:
        ax.set_title(
            "bands: each model's 95% bootstrap interval (the paired differences are in report.md)", fontsize=8
        )
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


__all__ = ["FULL", "QUICK", "Budget", "Intervals", "intervals", "recipe", "run_demo"]
