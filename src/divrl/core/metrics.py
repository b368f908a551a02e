"""Evaluation metrics: pass@k, Potential@k, and solution-diversity metrics.

All functions are pure. ``self_bleu`` imports sacrebleu lazily, so ``divrl.core`` keeps to torch,
numpy and the standard library at import time. Ratios are returned on the 0-1 scale (papers often
report x100), except self-BLEU, which keeps sacrebleu's 0-100 scale.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

__all__ = [
    "answer_entropy",
    "correct_classes",
    "distinct_correct_classes",
    "distinct_n",
    "div_equ",
    "mean_pairwise_cosine_distance",
    "mean_pass_at_k",
    "num_classes",
    "pass_at_k",
    "pass_at_k_array",
    "potential_at_k",
    "self_bleu",
]


def _int(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got bool {value}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None


def _check_counts(n: int, c: int, k: int) -> None:
    if n < 0 or c < 0:
        raise ValueError(f"pass@k needs n >= 0 and c >= 0, got n={n}, c={c}")
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={k}")
    if c > n:
        raise ValueError(f"pass@k needs c <= n (correct among n samples), got c={c} > n={n}")
    if k > n:
        raise ValueError(f"pass@k needs k <= n (at least k samples), got k={k} > n={n}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``c`` correct out of ``n`` samples (Chen et al. 2021, arXiv 2107.03374, Eq. 1).

    ``1 - C(n-c, k) / C(n, k)``, computed in the numerically stable product form of the Codex code
    (``human_eval.evaluation.estimate_pass_at_k``)::

        1.0                                       if n - c < k
        1 - prod_{m = n-c+1}^{n} (1 - k / m)      otherwise

    Stable for n in the thousands (no factorials). Raises ``ValueError`` for negative counts, ``k < 1``,
    ``c > n`` or ``k > n``.
    """
    n, c, k = _int(n, "n"), _int(c, "c"), _int(k, "k")
    _check_counts(n, c, k)
    if n - c < k:
        return 1.0
    m = np.arange(n - c + 1, n + 1, dtype=np.float64)  # (c,)
    return float(1.0 - np.prod(1.0 - k / m))


def _int_array(values: npt.ArrayLike, name: str) -> npt.NDArray[np.int64]:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu" and arr.size > 0:  # an empty list comes out as float64
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def pass_at_k_array(n: npt.ArrayLike, c: npt.ArrayLike, k: int) -> npt.NDArray[np.float64]:
    """:func:`pass_at_k` for many problems at once; ``n`` and ``c`` broadcast (``n`` may differ per problem).

    Vectorised through a cumulative sum of logs: with ``L(m) = sum_{j=k+1}^{m} log(1 - k/j)``,
    ``prod_{m=n-c+1}^{n} (1 - k/m) = exp(L(n) - L(n-c))`` whenever ``n - c >= k`` (every factor is
    then positive), and ``1 - exp(x)`` is taken as ``-expm1(x)``. Returns a float64 array of the
    broadcast shape. Same errors as :func:`pass_at_k`, checked element-wise.
    """
    k = _int(k, "k")
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={k}")
    n_arr, c_arr = np.broadcast_arrays(_int_array(n, "n"), _int_array(c, "c"))
    if n_arr.size == 0:
        return np.zeros(n_arr.shape, dtype=np.float64)
    for name, bad in (
        ("n >= 0 and c >= 0", (n_arr < 0) | (c_arr < 0)),
        ("c <= n", c_arr > n_arr),
        ("k <= n", k > n_arr),
    ):
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(-1))[0])
            raise ValueError(
                f"pass@k needs {name}; problem {i} has n={n_arr.reshape(-1)[i]}, c={c_arr.reshape(-1)[i]}, k={k}"
            )
    top = int(n_arr.max())
    j = np.arange(k + 1, top + 1, dtype=np.float64)  # (top - k,)
    cum = np.concatenate([[0.0], np.cumsum(np.log1p(-k / j))])  # (top - k + 1,)  cum[m - k] = L(m)
    solvable = n_arr - c_arr >= k  # (...)
    lo = np.where(solvable, n_arr - c_arr - k, 0)  # (...)
    log_prod = cum[n_arr - k] - cum[lo]  # (...)
    return np.where(solvable, -np.expm1(log_prod), 1.0)


def mean_pass_at_k(correct: npt.ArrayLike | Tensor, k: int) -> float:
    """Mean unbiased pass@k over problems from a ``(P, n)`` boolean correctness matrix.

    ``n`` is the number of samples per problem (same for all rows here; use :func:`pass_at_k_array`
    for ragged counts).
    """
    arr = np.asarray(correct.detach().cpu() if isinstance(correct, Tensor) else correct)
    if arr.ndim != 2:
        raise ValueError(f"correct must have shape (P, n), got shape {arr.shape}")
    if arr.dtype != np.bool_ and (arr.dtype.kind not in "iu" or not np.isin(arr, (0, 1)).all()):
        raise ValueError(f"correct must be a boolean (or 0/1) array, got dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise ValueError("correct has no problems (P = 0)")
    n = np.full(arr.shape[0], arr.shape[1], dtype=np.int64)
    return float(pass_at_k_array(n, arr.astype(np.int64).sum(1), k).mean())


def potential_at_k(pass1: npt.ArrayLike, passk: npt.ArrayLike) -> float:
    """Potential@k (R1-zero-Div, Yao et al. arXiv 2505.23433, Eq. 6): the fraction of greedy failures that sampling solves.

    ::

        Potential@k = sum_i passk_i * (1 - pass1_i) / sum_i (1 - pass1_i)

    In the paper ``pass1_i`` in {0, 1} is the correctness of the *greedy* answer to problem i and
    ``passk_i`` in {0, 1} is "at least one of k samples (T = 0.9, k = 16) is correct" -- the empirical
    any-correct, not the unbiased estimator. Values in [0, 1] (e.g. estimated probabilities) are
    accepted and used as given.

    When every greedy answer is correct (or there are no problems) the denominator is 0 and this
    returns ``nan``: there is no greedy failure to recover, so the quantity is undefined. 1.0 would
    claim perfect recovery and 0.0 no recovery, both of failures that never happened, and either
    would bias an average over checkpoints; ``nan`` is skipped by ``np.nanmean`` and visible in a table.
    """
    p1 = np.asarray(pass1, dtype=np.float64).reshape(-1)
    pk = np.asarray(passk, dtype=np.float64).reshape(-1)
    if p1.shape != pk.shape:
        raise ValueError(f"pass1 and passk must have the same length, got {p1.size} and {pk.size}")
    for name, arr in (("pass1", p1), ("passk", pk)):
        if not ((arr >= 0) & (arr <= 1)).all():
            raise ValueError(f"{name} values must lie in [0, 1]")
    failures = 1.0 - p1  # (N,)
    denominator = float(failures.sum())
    if denominator == 0.0:
        return float("nan")
    return float((pk * failures).sum() / denominator)


def div_equ(
    solutions_per_problem: Sequence[Sequence[Hashable]],
    key: Callable[[Any], Hashable] | None = None,
) -> float:
    """Div-Equ (Wu, Li & Liu 2024, arXiv 2407.05013; R1-zero-Div Eq. 5): mean over problems of ``|unique| / |all|``.

    ``solutions_per_problem[i]`` holds the solutions (e.g. extracted equations) of problem i;
    uniqueness is by ``key(solution)`` (identity when ``None``). How solutions are extracted and
    normalised is the caller's choice -- the papers do not specify it. Problems with no solutions are
    skipped (the ratio is 0/0 and a problem without solutions says nothing about diversity). Returns
    ``nan`` when no problem has a solution. 0-1 scale (the paper reports x100).
    """
    ratios: list[float] = []
    for i, solutions in enumerate(solutions_per_problem):
        if isinstance(solutions, str):
            raise ValueError(f"solutions_per_problem[{i}] must be a sequence of solutions, got a str")
        keys = [key(s) for s in solutions] if key is not None else list(solutions)
        if keys:
            ratios.append(len(set(keys)) / len(keys))
    return float(np.mean(ratios)) if ratios else float("nan")


def distinct_n(texts: Sequence[str], n: int, unit: str = "token") -> float:
    """distinct-n (Li et al. 2016, arXiv 1510.03055): ``#unique n-grams / #n-grams``, pooled over ``texts``.

    n-grams are taken within each text (never across two texts) over whitespace tokens
    (``unit="token"``, ``str.split()``) or characters (``unit="char"``). Returns ``nan`` when the
    texts hold no n-gram at all. For R1-zero-Div's per-response Div-N-gram, average
    ``distinct_n([t], n)`` over responses instead.
    """
    n = _int(n, "n")
    if n < 1:
        raise ValueError(f"distinct_n needs n >= 1, got {n}")
    if unit not in ("token", "char"):
        raise ValueError(f"distinct_n unit must be 'token' or 'char', got {unit!r}")
    if isinstance(texts, str):
        raise ValueError("distinct_n needs a sequence of texts, got a single str")
    grams: list[tuple[str, ...]] = []
    for text in texts:
        units = text.split() if unit == "token" else list(text)
        grams.extend(tuple(units[i : i + n]) for i in range(len(units) - n + 1))
    return len(set(grams)) / len(grams) if grams else float("nan")


def self_bleu(texts: Sequence[str], tokenize: str = "13a", max_ngram_order: int = 4) -> float:
    """Self-BLEU (Zhu et al. 2018, Texygen, arXiv 1802.01886): mean over i of BLEU(texts[i], refs = the others).

    Sentence BLEU as sacrebleu computes it (``BLEU(effective_order=True, tokenize=..., max_ngram_order=...)
    .sentence_score(texts[i], others)``, default ``exp`` smoothing), on sacrebleu's 0-100 scale; higher = less diverse
    (R1-zero-Div's Div-Self-BLEU is ``100 - self_bleu``). ``tokenize="13a"`` is sacrebleu's default word tokenizer;
    use ``"char"`` for math strings without spaces (``"12+7=19"``). Fewer than 2 texts -> ``nan``.

    Each text is tokenised and its n-grams counted once (sacrebleu's tokenizer and ``extract_all_word_ngrams``), not
    once per hypothesis it is a reference of: for n texts that is n instead of n^2 tokenisations (the loop of
    ``sentence_score`` calls took half of a Countdown evaluation's time). The reference count of an n-gram, its most
    frequent occurrence among the *other* texts, comes from each n-gram's largest and second-largest count; the
    brevity penalty uses the closest other length (ties: the shorter), and ``BLEU.compute_bleu`` does the rest.
    tests/core/test_metrics.py checks the result equals the ``sentence_score`` loop.
    """
    if isinstance(texts, str):
        raise ValueError("self_bleu needs a sequence of texts, got a single str")
    items = list(texts)
    if len(items) < 2:
        return float("nan")
    from sacrebleu.metrics.bleu import BLEU  # lazy: keeps divrl.core importable without sacrebleu
    from sacrebleu.metrics.helpers import extract_all_word_ngrams

    bleu = BLEU(effective_order=True, tokenize=tokenize, max_ngram_order=max_ngram_order)
    counted = [extract_all_word_ngrams(bleu.tokenizer(t.rstrip()), 1, max_ngram_order) for t in items]
    top: dict[tuple[str, ...], tuple[int, int, int]] = {}  # n-gram -> (largest count, texts holding it, second)
    for grams, _ in counted:
        for gram, k in grams.items():
            first, holders, second = top.get(gram, (0, 0, 0))
            if k > first:
                top[gram] = (k, 1, first)
            elif k == first:
                top[gram] = (first, holders + 1, second)
            elif k > second:
                top[gram] = (first, holders, k)
    lengths = [length for _, length in counted]
    scores = []
    for i, (grams, length) in enumerate(counted):
        correct, total = [0] * max_ngram_order, [0] * max_ngram_order
        for gram, k in grams.items():
            first, holders, second = top[gram]
            ref = second if (k == first and holders == 1) else first  # the largest count among the other texts
            total[len(gram) - 1] += k
            correct[len(gram) - 1] += min(k, ref)
        ref_len = min((abs(length - r), r) for j, r in enumerate(lengths) if j != i)[1]
        score = BLEU.compute_bleu(
            correct,
            total,
            length,
            ref_len,
            smooth_method=bleu.smooth_method,
            smooth_value=bleu.smooth_value,
            effective_order=True,
            max_ngram_order=max_ngram_order,
        )
        scores.append(score.score)
    return float(np.mean(scores))


def _labels(labels: Iterable[Hashable] | Tensor | npt.NDArray[Any]) -> list[Hashable]:
    # Tensors hash by identity, so go through .tolist() to compare values.
    if isinstance(labels, (Tensor, np.ndarray)):
        return list(labels.reshape(-1).tolist())
    return list(labels)


def correct_classes(keys: Sequence[Hashable | None], correct: Sequence[bool] | Tensor | npt.NDArray[Any]) -> set[Any]:
    """The distinct solution classes among one group's correct samples: the set of their equivalence keys.

    The one definition used everywhere (trainer metrics, evaluation, adapters; ours): **correct samples only**,
    and a correct sample whose key is ``None`` (no canonical form could be computed) is **left out** -- a class
    that cannot be named is not counted, so the number is a lower bound, and it is the same number that the
    evaluation's per-problem ``classes`` lists recompute. On Countdown and maths a correct sample always has a key.
    """
    flags = [bool(c) for c in (correct.tolist() if isinstance(correct, (Tensor, np.ndarray)) else correct)]
    if len(flags) != len(keys):
        raise ValueError(f"correct_classes: {len(keys)} keys but {len(flags)} correctness flags")
    return {k for k, c in zip(keys, flags, strict=True) if c and k is not None}


def distinct_correct_classes(
    keys: Sequence[Sequence[Hashable | None]], correct: Sequence[Sequence[bool]] | Tensor | npt.NDArray[Any]
) -> float:
    """Mean over groups of ``len(correct_classes(keys[p], correct[p]))`` (see :func:`correct_classes`); 0.0 for
    no groups. ``correct`` is (P, G) bool."""
    rows = correct.tolist() if isinstance(correct, (Tensor, np.ndarray)) else correct
    if len(rows) != len(keys):
        raise ValueError(f"distinct_correct_classes: {len(keys)} groups of keys but {len(rows)} of correctness")
    counts = [len(correct_classes(group, row)) for group, row in zip(keys, rows, strict=True)]
    return sum(counts) / max(1, len(counts))


def num_classes(labels: Iterable[Hashable] | Tensor | npt.NDArray[Any]) -> int:
    """Number of distinct labels (e.g. answer classes or semantic clusters; NoveltyBench's ``distinct``)."""
    return len(set(_labels(labels)))


def answer_entropy(labels: Iterable[Hashable] | Tensor | npt.NDArray[Any]) -> float:
    """Frequency entropy over classes, in nats: ``-sum_k (n_k/n) log(n_k/n)``.

    The frequency form of semantic entropy (SEED-GRPO, arXiv 2505.12346, uses the probability-weighted
    form). 0 for a single class, ``log n`` when all ``n`` labels differ; ``nan`` for no labels.
    ``None`` is a class like any other value: drop missing answers first if they should not count.
    """
    items = _labels(labels)
    if not items:
        return float("nan")
    counts = np.fromiter(Counter(items).values(), dtype=np.float64)  # (K,)
    p = counts / counts.sum()  # (K,)
    return float(-(p * np.log(p)).sum())


def mean_pairwise_cosine_distance(embeddings: Tensor) -> float:
    """Mean over pairs i < j of ``1 - cos(e_i, e_j)`` for ``(G, D)`` embeddings (in [0, 2]).

    ``nan`` for fewer than 2 rows. A zero-norm row has no direction and raises ``ValueError``.
    Computed in float64.
    """
    if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
        shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
        raise ValueError(f"embeddings must be a (G, D) tensor, got {shape}")
    g = embeddings.shape[0]
    if g < 2:
        return float("nan")
    e = embeddings.detach().to(torch.float64)  # (G, D)
    norms = e.norm(dim=-1)  # (G,)
    if bool((norms == 0).any()):
        rows = (norms == 0).nonzero().squeeze(-1).tolist()
        raise ValueError(f"embeddings rows {rows} have zero norm; cosine distance is undefined")
    unit = e / norms.unsqueeze(-1)  # (G, D)
    cos = unit @ unit.T  # (G, G)
    iu = torch.triu_indices(g, g, offset=1)  # (2, G(G-1)/2)
    return float((1.0 - cos[iu[0], iu[1]]).mean())
