"""``divrl compare``: per-problem results from ``metrics.json`` files or run folders, grouped by method, each method
compared with a baseline by :func:`divrl.eval.bootstrap.paired_difference`; a console table and markdown.

One evaluation split at a time: the results of split ``test`` live in ``metrics.json``, those of any other split
``<split>`` (e.g. Countdown's out-of-distribution ``ood``) in ``metrics-<split>.json`` beside it
(:func:`metrics_filename`; ``divrl eval --split`` and ``divrl demo`` write these names). Grouping convention (each
command-line argument is one of), for the split's file name ``F``:

- ``name=path[,path...]``: the runs of method ``name``, one path per training seed;
- a file: one run of the method named by its folder (taken as given, whatever its name);
- a folder holding ``F``: that file;
- any other folder: every ``F`` below it (not looking below a folder that holds one), e.g. a ``divrl demo`` folder
  (``seed<i>/<method>/F``) or a method folder with one subfolder per seed.

A file that records the split it was evaluated on (``"split"``, written by ``divrl eval`` and ``divrl demo``) must
record the split asked for, so test and ood results are never mixed; a file without it (an older one) is taken as
the split asked for.

A run's method name is the name of the nearest folder above its ``metrics.json`` that is not a seed folder
(``seed<i>``, ``seed_<i>``, ``seed-<i>``) or a checkpoint folder (``checkpoint-<step>``): ``runs/demo/seed1/grpo`` and
``runs/grpo/seed1`` are both ``grpo``. Runs of the same method are its seeds, and the seed folder's number is the
run's seed label (:func:`divrl.eval.bootstrap.seed_label`).

Seed pairing (``seed_pairing``, ``divrl compare --seed-pairing``): ``auto`` (the default) resamples a method's seeds
together with the baseline's as matched pairs when both have runs under the same seed labels (``divrl demo`` and
``divrl bench`` folders: seed i of every method shares its prompt order and evaluation sampling seed), and
independently otherwise; ``matched`` requires the pairing (an error says why it is not possible); ``independent``
never pairs.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich import box
from rich.table import Table

from divrl.eval.bootstrap import (
    METRICS,
    SEED_FOLDER,
    ComparisonError,
    Difference,
    Run,
    align,
    matched,
    noise_note,
    paired_difference,
    seed_label,
)

__all__ = [
    "SEED_PAIRINGS",
    "ComparisonError",
    "available_metrics",
    "compare_groups",
    "console_table",
    "format_number",
    "is_split_name",
    "load_groups",
    "markdown_table",
    "method_name",
    "metrics_filename",
    "metrics_files",
    "noise_notes",
    "verdict",
]

_SKIP = re.compile(rf"{SEED_FOLDER.pattern}|checkpoint-\d+")
SEED_PAIRINGS = ("auto", "matched", "independent")
"""How ``compare_groups`` resamples two methods' seeds (module docstring)."""
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_]+")


def is_split_name(split: str) -> bool:
    """A split given by name (``test``, ``ood``, ...), not the path of a problem file."""
    return bool(_SPLIT_NAME.fullmatch(split))


def metrics_filename(split: str = "test") -> str:
    """Where the results of ``split`` live in a run folder: ``metrics.json`` for ``test``, else
    ``metrics-<split>.json``. Raises :class:`ComparisonError` for a split that is not a name (letters, digits, _)."""
    if not is_split_name(split):
        raise ComparisonError(f"a split must be a name (letters, digits, _), e.g. test or ood; got {split!r}")
    return "metrics.json" if split == "test" else f"metrics-{split}.json"


def metrics_files(path: Path, split: str = "test") -> list[Path]:
    """The metrics files of ``split`` a path stands for (module docstring), sorted."""
    name = metrics_filename(split)
    if not path.exists():
        raise ComparisonError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    if (path / name).is_file():
        return [path / name]
    found = []
    for root, dirs, files in os.walk(path):
        if name in files:
            found.append(Path(root) / name)
            dirs[:] = []  # a run folder's checkpoints are not more runs
        else:
            dirs.sort()
    if not found:
        raise ComparisonError(f"{path}: no {name} in this folder or below (split {split})")
    return sorted(found)


def method_name(file: Path) -> str:
    """The nearest folder name above ``file`` that is not a seed or checkpoint folder (module docstring)."""
    for folder in file.resolve().parents:
        if folder.name and not _SKIP.fullmatch(folder.name):
            return folder.name
    raise ComparisonError(f"{file}: cannot tell its method from the path; name it: method=path")


def _read(file: Path, split: str) -> Run:
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ComparisonError(f"{file}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ComparisonError(f"{file}: cannot read it ({exc})") from None
    if not isinstance(data, dict):
        raise ComparisonError(f"{file}: not a metrics.json (a JSON object with a per_problem section)")
    recorded = data.get("split")
    if isinstance(recorded, str) and is_split_name(recorded) and recorded != split:
        raise ComparisonError(f"{file}: evaluated on split {recorded!r}, not {split!r} (see --split)")
    return Run.from_metrics(data, str(file), seed_label(file))


def load_groups(arguments: Sequence[str], split: str = "test") -> dict[str, list[Run]]:
    """Runs per method of ``split``, in order of first appearance (module docstring). Raises
    :class:`ComparisonError` for a missing or unreadable file, a file without per-problem results, a file of another
    split, or a file given twice."""
    files: dict[str, list[Path]] = {}
    for arg in arguments:
        name, sep, rest = arg.partition("=")
        if sep and name and "/" not in name and not Path(arg).exists():
            paths = [Path(p) for p in rest.split(",") if p]
            if not paths:
                raise ComparisonError(f"{arg}: no paths after '{name}='")
            for path in paths:
                files.setdefault(name, []).extend(metrics_files(path, split))
        else:
            for file in metrics_files(Path(arg), split):
                files.setdefault(method_name(file), []).append(file)
    seen: dict[Path, str] = {}
    for name, group in files.items():
        for file in group:
            key = file.resolve()
            if key in seen:
                raise ComparisonError(f"{file}: given twice (as {seen[key]} and as {name})")
            seen[key] = name
    return {name: [_read(f, split) for f in group] for name, group in files.items()}


def available_metrics(
    groups: Mapping[str, Sequence[Run]], wanted: Sequence[str] = METRICS
) -> tuple[list[str], list[str]]:
    """The metrics of ``wanted`` that every run supports, and a note for each one left out (``pass@32`` needs 32
    samples per problem)."""
    keep, notes = [], []
    for metric in wanted:
        why = next((w for runs in groups.values() for r in runs if (w := r.unavailable(metric))), None)
        if why:
            notes.append(f"left out: {why}")
        else:
            keep.append(metric)
    return keep, notes


def compare_groups(
    groups: Mapping[str, Sequence[Run]],
    baseline: str,
    metrics: Sequence[str],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    seed_pairing: str = "auto",
) -> dict[str, dict[str, Difference]]:
    """Every method but ``baseline`` against ``baseline``: ``{method: {metric: Difference}}``. Checks first that the
    baseline exists, that there is something to compare and that all runs evaluate the same problems.
    ``seed_pairing``: one of :data:`SEED_PAIRINGS` (module docstring)."""
    if seed_pairing not in SEED_PAIRINGS:
        raise ComparisonError(f"unknown seed pairing {seed_pairing!r}; known: {', '.join(SEED_PAIRINGS)}")
    if baseline not in groups:
        raise ComparisonError(f"no runs of the baseline {baseline!r}; methods found: {list(groups)} (see --baseline)")
    if len(groups) < 2:
        raise ComparisonError(f"only the baseline {baseline!r} was given; nothing to compare with it")
    if not metrics:
        raise ComparisonError("no metric is available for every run")
    aligned = align({baseline: groups[baseline], **{k: v for k, v in groups.items() if k != baseline}})
    out = {}
    for name, runs in aligned.items():
        if name == baseline:
            continue
        why = matched(runs, aligned[baseline])
        if seed_pairing == "matched" and why:
            raise ComparisonError(f"{name} vs {baseline}: --seed-pairing matched, but {why}")
        pair = seed_pairing != "independent" and why is None
        out[name] = paired_difference(
            runs, aligned[baseline], metrics, resamples=resamples, confidence=confidence, seed=seed, matched_seeds=pair
        )
    return out


def noise_notes(
    comparisons: Mapping[str, Mapping[str, Difference]], baseline: str, label: Mapping[str, str] | None = None
) -> list[str]:
    """Which noise the intervals cover, in words: one line for all methods with the same seed counts (one line per
    method where only one side has several seeds)."""
    label = label or {}
    by_seeds: dict[tuple[int, int, bool], list[str]] = {}
    for name, diffs in comparisons.items():
        first = next(iter(diffs.values()))
        by_seeds.setdefault((*first.seeds, first.matched_seeds), []).append(label.get(name, name))
    base = label.get(baseline, baseline)
    notes = []
    for (s_method, s_base, pair), names in by_seeds.items():
        if (s_method == 1) == (s_base == 1):
            notes.append(noise_note(", ".join(names), s_method, base, s_base, pair))
        else:
            notes += [noise_note(name, s_method, base, s_base, pair) for name in names]
    return notes


def format_number(x: float, signed: bool = False) -> str:
    """Three decimals (with a sign when ``signed``); ``-`` for a missing (non-finite) value."""
    if not math.isfinite(x):
        return "-"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def verdict(d: Difference) -> str:
    """``within noise`` when the interval contains 0, else the direction: ``higher`` or ``lower``."""
    if d.within_noise:
        return "within noise"
    return "higher" if d.mean > 0 else "lower"


def _rows(
    comparisons: Mapping[str, Mapping[str, Difference]], label: Mapping[str, str], names: Mapping[str, str]
) -> list[list[str]]:
    """[method, metric, baseline mean, method mean, difference, interval, verdict] per (method, metric)."""
    return [
        [
            label.get(name, name),
            names.get(metric, metric),
            format_number(d.baseline_mean),
            format_number(d.method_mean),
            format_number(d.mean, True),
            f"[{format_number(d.low, True)}, {format_number(d.high, True)}]",
            verdict(d),
        ]
        for name, diffs in comparisons.items()
        for metric, d in diffs.items()
    ]


def _confidence(comparisons: Mapping[str, Mapping[str, Difference]]) -> float:
    return next(iter(next(iter(comparisons.values())).values())).confidence


def console_table(
    comparisons: Mapping[str, Mapping[str, Difference]],
    baseline: str,
    label: Mapping[str, str] | None = None,
    split: str | None = None,
) -> Table:
    """One row per (method, metric): both means, the difference, its interval, and "within noise" or the
    direction (fits 80 columns); the title names ``split`` when given."""
    label = label or {}
    base = label.get(baseline, baseline)
    table = Table(
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        title=(f"{split} split: " if split else "") + f"difference vs {base} (paired bootstrap)",
    )
    table.add_column("method")
    table.add_column("metric")
    table.add_column(base, justify="right", no_wrap=True)
    table.add_column("mean", justify="right", no_wrap=True)
    table.add_column(f"difference [{_confidence(comparisons):.0%} CI]", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    rows = _rows(comparisons, label, {"distinct_correct_classes": "classes"})
    per_method = len(next(iter(comparisons.values())))
    for i, row in enumerate(rows):
        style = "dim" if row[6] == "within noise" else "bold"
        cells = [*row[:4], f"{row[4]} {row[5]}", f"[{style}]{row[6]}[/{style}]"]
        table.add_row(*cells, end_section=(i + 1) % per_method == 0)
    return table


def markdown_table(
    comparisons: Mapping[str, Mapping[str, Difference]], baseline: str, label: Mapping[str, str] | None = None
) -> str:
    """The console table as markdown."""
    label = label or {}
    heads = ["method", "metric", label.get(baseline, baseline), "method mean", "difference"]
    heads += [f"{_confidence(comparisons):.0%} interval", "verdict"]
    lines = ["| " + " | ".join(heads) + " |", "|---|---|---:|---:|---:|---:|---|"]
    names = {"distinct_correct_classes": "distinct correct classes"}
    lines += ["| " + " | ".join(row) + " |" for row in _rows(comparisons, label, names)]
    return "\n".join(lines)
