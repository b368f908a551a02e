"""Noise-aware comparisons of evaluated models: bootstrap confidence intervals over per-problem results.

Pure statistics (numpy and :mod:`divrl.core.metrics`; no model, no files). The input is the ``per_problem`` section
of ``metrics.json`` (:func:`divrl.eval.evaluate.score_samples`): per problem, ``n`` samples, how many were
``correct`` and the distinct correct solution ``classes``. One :class:`Run` is one evaluation of one trained model
(one method, one training seed); a method is a list of runs, one per seed, all on the same problems.

**The statistic** (per metric): the mean over seeds of the mean over problems of a per-problem value; the per-problem
value of ``pass@k`` is the unbiased estimator ``1 - C(n-c, k) / C(n, k)`` (Chen et al. 2021, arXiv 2107.03374, Eq. 1)
and that of ``distinct_correct_classes`` is the number of distinct classes among the correct samples. A comparison of
method B against baseline A is the paired difference ``mean(B) - mean(A)`` over the same problems.

**The interval** (ours, a standard construction; Efron & Tibshirani 1993, ch. 13, percentile interval): each of
``resamples`` bootstrap replicates

1. resamples the seeds with replacement: independently per method (B's S_B runs, A's S_A runs: two methods' seeds
   are separate trainings), or, when the seeds are *matched* (``matched_seeds``: both methods have runs with the same
   seed labels, and seed i of each shares its prompt order and evaluation sampling seed, as in ``divrl demo`` and
   ``divrl bench``), one draw of seed labels shared by both methods, so that seed i of B is always compared with
   seed i of A (a paired design over seeds; the interval is then narrower whenever seed i's two runs are correlated);
2. then resamples the problems with replacement, one draw of P problems shared by both methods and every chosen seed
   (the design is crossed: every seed is evaluated on the same problems, so the shared draw keeps the pairing);
3. computes the difference of the two means over the chosen seeds (with their multiplicity) and problems.

The interval is the (1 - confidence)/2 and (1 + confidence)/2 quantiles of the replicates (``np.quantile``, linear
interpolation); the point estimate is the difference on the original data. A difference whose interval contains 0 is
*within noise*. Resampling problems covers evaluation noise: which problems were drawn and, because each problem's
value is itself an estimate from n samples, which samples were drawn. Resampling seeds (step 1, a hierarchical
bootstrap) adds training noise, the seed-to-seed spread of a method; with one seed per method step 1 does nothing and
the interval covers evaluation noise only (:func:`noise_note` says so in words). Resampling both crossed factors is
slightly conservative (the seed × problem interaction is counted in both). Which seed a run belongs to is its
``seed`` label (:func:`seed_label`: the ``seed<i>`` folder above its metrics file). A single method's interval
(:func:`bootstrap_means`, the pass@k plot's bands) is the same construction with one method.

Deterministic given ``seed`` (``numpy.random.default_rng``); vectorised: a replicate's sum over chosen seeds and
problems is two matrix products of resampling counts with the (seed, problem) values.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from divrl.core.metrics import pass_at_k_array

__all__ = [
    "METRICS",
    "ComparisonError",
    "Difference",
    "Estimate",
    "Run",
    "align",
    "bootstrap_means",
    "matched",
    "noise_note",
    "paired_difference",
    "seed_label",
]

METRICS = ("pass@1", "pass@8", "pass@32", "distinct_correct_classes")
"""What ``divrl compare`` and ``divrl demo`` compare by default."""

_PASS = re.compile(r"pass@([1-9][0-9]*)")
SEED_FOLDER = re.compile(r"seed[_-]?(\d+)")
"""A seed folder's name (``seed3``, ``seed_3``, ``seed-3``); its number is the seed label (:func:`seed_label`)."""


class ComparisonError(ValueError):
    """Results that cannot be compared (missing per-problem section, different problems, unknown metric, ...)."""


def check_metric(metric: str) -> None:
    """Raise :class:`ComparisonError` unless ``metric`` is ``pass@<k>`` (k >= 1) or ``distinct_correct_classes``."""
    if metric != "distinct_correct_classes" and not _PASS.fullmatch(metric):
        raise ComparisonError(f"unknown metric {metric!r}; known: pass@<k> (k >= 1), distinct_correct_classes")


@dataclass(frozen=True)
class Run:
    """Per-problem results of one evaluation (one model, one training seed).

    Attributes:
        ids: problem ids (``divrl.eval.evaluate.problem_id``), in evaluation order.
        n: samples per problem, shape ``(P,)``.
        correct: correct samples per problem, shape ``(P,)``.
        classes: distinct correct solution classes per problem, shape ``(P,)``.
        source: where the results came from (a file), for messages.
        seed: the training seed's label (``"3"`` for a run under ``seed3/``; :func:`seed_label`), or ``None`` when
            unknown; runs of two methods with the same label are a matched pair (module docstring).
    """

    ids: tuple[str, ...]
    n: npt.NDArray[np.int64]
    correct: npt.NDArray[np.int64]
    classes: npt.NDArray[np.int64]
    source: str = ""
    seed: str | None = None

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any], source: str = "", seed: str | None = None) -> Run:
        """From a ``metrics.json`` dict; a missing or malformed ``per_problem`` section raises one
        :class:`ComparisonError` naming ``source`` and the record."""
        where = source or "metrics"
        records = metrics.get("per_problem") if isinstance(metrics, Mapping) else None
        if records is None:
            raise ComparisonError(f"{where}: no per_problem section (written before divrl kept per-problem results)")
        if not isinstance(records, list) or not records:
            raise ComparisonError(f"{where}: per_problem must be a non-empty list of problem records")
        ids, n, correct, classes = [], [], [], []
        for i, r in enumerate(records):
            try:
                ri, rn, rc, rk = r["id"], r["n"], r["correct"], r["classes"]
            except (KeyError, TypeError) as exc:
                raise ComparisonError(f"{where}: per_problem[{i}] lacks field {exc}") from None
            if not (isinstance(rn, int) and isinstance(rc, int) and 0 <= rc <= rn and rn >= 1):
                raise ComparisonError(f"{where}: per_problem[{i}] needs integers 0 <= correct <= n, n >= 1")
            if not isinstance(rk, list) or len(rk) > rc:
                raise ComparisonError(f"{where}: per_problem[{i}].classes must list at most `correct` class keys")
            ids.append(str(ri))
            n.append(rn)
            correct.append(rc)
            classes.append(len(rk))
        return cls(tuple(ids), np.array(n), np.array(correct), np.array(classes), source, seed)

    @property
    def num_problems(self) -> int:
        return len(self.ids)

    def unavailable(self, metric: str) -> str | None:
        """Why ``metric`` cannot be computed from this run (``pass@k`` needs ``k <= n``), or ``None``."""
        check_metric(metric)
        m = _PASS.fullmatch(metric)
        if m and int(m.group(1)) > int(self.n.min()):
            return f"{metric} needs >= {m.group(1)} samples per problem; {self.source or 'a run'} has {self.n.min()}"
        return None

    def values(self, metric: str) -> npt.NDArray[np.float64]:
        """The per-problem value of ``metric``, shape ``(P,)``."""
        why = self.unavailable(metric)
        if why:
            raise ComparisonError(why)
        m = _PASS.fullmatch(metric)
        if m:
            return pass_at_k_array(self.n, self.correct, int(m.group(1)))  # (P,)
        return self.classes.astype(np.float64)  # (P,)

    def reindexed(self, order: npt.NDArray[np.int64]) -> Run:
        ids = tuple(self.ids[i] for i in order)
        return Run(ids, self.n[order], self.correct[order], self.classes[order], self.source, self.seed)


def seed_label(path: str | Path) -> str | None:
    """The training seed a metrics file belongs to: the number of the nearest ``seed<i>`` (``seed_<i>``,
    ``seed-<i>``) folder above it, as a string without leading zeros (``runs/demo/seed03/grpo/metrics.json`` ->
    ``"3"``), or ``None`` when no folder above it names a seed."""
    for folder in Path(path).parents:
        m = SEED_FOLDER.fullmatch(folder.name)
        if m:
            return str(int(m.group(1)))
    return None


def matched(method: Sequence[Run], baseline: Sequence[Run]) -> str | None:
    """Why the seeds of ``method`` and ``baseline`` cannot be paired, or ``None`` when they can: every run has a
    seed label, no label repeats within a method, and both have the same labels."""
    for side, runs in (("method", method), ("baseline", baseline)):
        labels = [r.seed for r in runs]
        if any(label is None for label in labels):
            unknown = next(r for r in runs if r.seed is None)
            return f"{unknown.source or 'a ' + side + ' run'} has no seed label (no seed<i> folder above it)"
        if len(set(labels)) != len(labels):
            return f"the {side}'s runs repeat a seed label ({sorted(labels, key=_label_key)})"
    mine, theirs = {r.seed for r in method}, {r.seed for r in baseline}
    if mine != theirs:
        return f"different seeds (method {sorted(mine, key=_label_key)}, baseline {sorted(theirs, key=_label_key)})"
    return None


def _label_key(label: str | None) -> tuple[int, str]:
    return (int(label), "") if label is not None and label.isdigit() else (-1, str(label))


def _occurrences(ids: Sequence[str]) -> list[tuple[str, int]]:
    """(id, j) for the j-th occurrence of id, so that repeated problems pair up in order."""
    seen: Counter[str] = Counter()
    out = []
    for i in ids:
        out.append((i, seen[i]))
        seen[i] += 1
    return out


def align(groups: Mapping[str, Sequence[Run]]) -> dict[str, list[Run]]:
    """Every run reordered to one canonical problem order (sorted by id), so that results do not depend on the order
    in which problems were evaluated; the first run of the first group is the reference for the problem set.

    Raises :class:`ComparisonError` when a group is empty or two runs do not evaluate the same problems (naming both
    sources, the counts and an example of each side's extra problems)."""
    for name, runs in groups.items():
        if not runs:
            raise ComparisonError(f"method {name!r} has no runs")
    ref = next(iter(groups.values()))[0]
    ref_keys = sorted(_occurrences(ref.ids))
    ref_set = set(ref_keys)
    out: dict[str, list[Run]] = {}
    for name, runs in groups.items():
        out[name] = []
        for run in runs:
            keys = _occurrences(run.ids)
            if set(keys) != ref_set:
                only_run = sorted(set(keys) - ref_set)
                only_ref = sorted(ref_set - set(keys))
                raise ComparisonError(
                    f"{run.source or name} and {ref.source or 'the first run'} evaluate different problems "
                    f"({run.num_problems} vs {ref.num_problems}; {len(only_run)} only in the first"
                    + (f", e.g. {only_run[0][0]}" if only_run else "")
                    + f"; {len(only_ref)} only in the second"
                    + (f", e.g. {only_ref[0][0]}" if only_ref else "")
                    + ")"
                )
            index = {k: i for i, k in enumerate(keys)}
            out[name].append(run.reindexed(np.array([index[k] for k in ref_keys], dtype=np.int64)))
    return out


def _values(runs: Sequence[Run], metrics: Sequence[str]) -> npt.NDArray[np.float64]:
    """Per-seed, per-problem values, shape ``(S, P, M)``."""
    return np.stack([np.stack([r.values(m) for m in metrics], axis=-1) for r in runs])  # (S, P, M)


def _seed_counts(rng: np.random.Generator, seeds: int, resamples: int) -> npt.NDArray[np.float64]:
    """How often each seed is drawn in each replicate, shape ``(R, S)`` (rows sum to S)."""
    return rng.multinomial(seeds, np.full(seeds, 1.0 / seeds), size=resamples).astype(np.float64)  # (R, S)


def _replicate_means(
    x: npt.NDArray[np.float64], seed_counts: npt.NDArray[np.float64], problem_counts: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Each replicate's mean over its chosen seeds and problems, shape ``(R, M)``.

    ``x``: ``(S, P, M)``; ``seed_counts``: ``(R, S)``; ``problem_counts``: ``(R, P)``."""
    s, p, m = x.shape
    per_seed = (problem_counts @ x.transpose(1, 0, 2).reshape(p, s * m)).reshape(-1, s, m)  # (R, S, M)
    summed = np.einsum("rs,rsm->rm", seed_counts, per_seed)  # (R, M)
    return np.asarray(summed / (s * p), dtype=np.float64)


def _check(runs: Sequence[Run], metrics: Sequence[str], resamples: int, confidence: float) -> None:
    if not metrics:
        raise ComparisonError("no metrics to compare")
    if resamples < 1:
        raise ComparisonError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ComparisonError(f"confidence must lie in (0, 1), got {confidence}")
    for metric in metrics:
        for run in runs:
            why = run.unavailable(metric)
            if why:
                raise ComparisonError(why)


def _quantiles(reps: npt.NDArray[np.float64], confidence: float) -> tuple[npt.NDArray[np.float64], ...]:
    lo, hi = np.quantile(reps, [(1 - confidence) / 2, (1 + confidence) / 2], axis=0)  # (M,) each
    return lo, hi


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap interval."""

    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Difference:
    """``method - baseline`` for one metric, with its bootstrap interval.

    ``method_mean`` / ``baseline_mean`` are the two means it is the difference of; ``seeds`` the number of runs
    (training seeds) of (method, baseline); ``matched_seeds`` whether the seeds were resampled as matched pairs."""

    metric: str
    mean: float
    low: float
    high: float
    method_mean: float
    baseline_mean: float
    seeds: tuple[int, int]
    confidence: float
    matched_seeds: bool = False

    @property
    def within_noise(self) -> bool:
        """The interval contains 0: the data do not tell the two apart."""
        return self.low <= 0.0 <= self.high


def noise_note(method: str, seeds_method: int, baseline: str, seeds_baseline: int, matched_seeds: bool = False) -> str:
    """In words, which noise an interval of ``method`` vs ``baseline`` covers."""
    evaluation = "evaluation noise (which problems, which samples)"
    if seeds_method == 1 and seeds_baseline == 1:
        return (
            f"{method} vs {baseline}: one seed each, so the interval covers {evaluation} only, "
            "not training noise (which seed), which is often the larger"
        )
    if matched_seeds and seeds_method > 1:
        return (
            f"{method} vs {baseline}: seed-paired hierarchical bootstrap over {seeds_method} matched seeds (seed i of "
            f"each shares its prompt order and evaluation samples; resampled together), then problems: the interval "
            f"covers training noise (which seed) and {evaluation}"
        )
    if seeds_method > 1 and seeds_baseline > 1:
        return (
            f"{method} vs {baseline}: hierarchical bootstrap over seeds ({seeds_method} and {seeds_baseline}), "
            f"then problems: the interval covers training noise (which seed) and {evaluation}"
        )
    single = method if seeds_method == 1 else baseline
    many, count = (baseline, seeds_baseline) if seeds_method == 1 else (method, seeds_method)
    return (
        f"{method} vs {baseline}: {single} has one seed, so the interval covers {evaluation} and the spread over "
        f"{many}'s {count} seeds, not {single}'s training noise"
    )


def paired_difference(
    method: Sequence[Run],
    baseline: Sequence[Run],
    metrics: Sequence[str] = METRICS,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    matched_seeds: bool = False,
) -> dict[str, Difference]:
    """The paired difference ``method - baseline`` of each metric with its hierarchical bootstrap interval (module
    docstring). ``method`` and ``baseline`` hold one run per training seed, all on the same problems (reordered by
    id; different problems raise :class:`ComparisonError`). With ``matched_seeds`` the seeds are resampled as pairs
    (run ``i`` of each side by seed label; :func:`matched` says why two sides cannot be paired, and that raises
    :class:`ComparisonError`); otherwise independently per side."""
    if matched_seeds:
        why = matched(method, baseline)
        if why:
            raise ComparisonError(f"cannot pair the seeds: {why}")
        method = sorted(method, key=lambda r: _label_key(r.seed))
        baseline = sorted(baseline, key=lambda r: _label_key(r.seed))
    groups = align({"baseline": list(baseline), "method": list(method)})
    b_runs, a_runs = groups["method"], groups["baseline"]
    _check([*b_runs, *a_runs], metrics, resamples, confidence)
    xb, xa = _values(b_runs, metrics), _values(a_runs, metrics)  # (S_B, P, M), (S_A, P, M)
    p = xb.shape[1]
    rng = np.random.default_rng(seed)
    cb = _seed_counts(rng, len(b_runs), resamples)  # (R, S_B)
    ca = cb if matched_seeds else _seed_counts(rng, len(a_runs), resamples)  # (R, S_A); S_A = S_B when matched
    cp = rng.multinomial(p, np.full(p, 1.0 / p), size=resamples).astype(np.float64)  # (R, P)
    reps = _replicate_means(xb, cb, cp) - _replicate_means(xa, ca, cp)  # (R, M)
    lo, hi = _quantiles(reps, confidence)
    mb, ma = xb.mean(axis=(0, 1)), xa.mean(axis=(0, 1))  # (M,)
    return {
        metric: Difference(
            metric,
            float(mb[j] - ma[j]),
            float(lo[j]),
            float(hi[j]),
            float(mb[j]),
            float(ma[j]),
            (len(b_runs), len(a_runs)),
            confidence,
            matched_seeds and len(b_runs) > 1,
        )
        for j, metric in enumerate(metrics)
    }


def bootstrap_means(
    runs: Sequence[Run],
    metrics: Sequence[str],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Estimate]:
    """One method's mean of each metric with its bootstrap interval (seeds, then problems; module docstring)."""
    aligned = align({"runs": list(runs)})["runs"]
    _check(aligned, metrics, resamples, confidence)
    x = _values(aligned, metrics)  # (S, P, M)
    p = x.shape[1]
    rng = np.random.default_rng(seed)
    cs = _seed_counts(rng, len(aligned), resamples)  # (R, S)
    cp = rng.multinomial(p, np.full(p, 1.0 / p), size=resamples).astype(np.float64)  # (R, P)
    lo, hi = _quantiles(_replicate_means(x, cs, cp), confidence)
    mean = x.mean(axis=(0, 1))  # (M,)
    return {m: Estimate(float(mean[j]), float(lo[j]), float(hi[j])) for j, m in enumerate(metrics)}
