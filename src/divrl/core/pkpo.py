"""PKPO: Pass-at-k Policy Optimization (Walder & Karkhanis, Google DeepMind, arXiv 2505.15201).

Registered as the advantage estimator ``pkpo`` (:func:`pkpo`). The reward transformations are the paper's
Eq. 19 (``s``), Eq. 29 (``s^(loo)``) and Eq. 33 (``s^(loo-1)``), which its Appendix B, Listing 1 implements
(``s``, ``sloo``, ``sloo_minus_one``); ``tests/core/test_pkpo.py`` checks agreement with those listing
lines on random binary and continuous rewards.

Dimension letters: P prompts, G rollouts per prompt (see :mod:`divrl.core.batch`).
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from typing import Literal

import torch
from torch import Tensor

from divrl.core.advantages import _uniform, register_advantage, rloo
from divrl.core.batch import GroupBatch

__all__ = ["pkpo", "pkpo_weights"]

Baseline = Literal["loo_minus_one", "loo", "mean", "none"]
_BASELINES = ("loo_minus_one", "loo", "mean", "none")


@register_advantage("pkpo", handles_unscored=True)
def pkpo(batch: GroupBatch, *, k: int = 4, baseline: Baseline = "loo_minus_one") -> Tensor:
    """PKPO reward transformation: unbiased credit for the max@k (pass@k for 0/1 rewards) of the group.

    Evidence: [paper + code]. The code is the paper's own Listing 1 (Appendix B; no separate repository was
    found); the tests vendor its lines. For a group of n rollouts with rewards sorted ascending
    (``g_1 <= ... <= g_n``; ties are harmless, every formula is a sum over subsets)::

        s_i          = (1/C(n,k)) Σ_{|I|=k, i∈I} max_{j∈I} g_j                     # Eq. 19 / 27
        s_i^(loo)    = s_i - 1/(n-1) Σ_{j≠i} S(j, k, [n]∖i)                          # Eq. 29
        s_i^(loo-1)  = (1/C(n,k)) Σ_{|I|=k, i∈I} (max_{j∈I} g_j - max_{b∈I∖i} g_b)   # Eq. 33

    ``S(j, k, A)`` is ``s_j`` computed on the set A (normalised by ``C(|A|, k)``). For 0/1 rewards ``s_i`` is
    the paper's Eq. 8 (``k/n`` for a correct rollout, ``k/n · ρ(n-1, c, k-1)`` for an incorrect one). The
    advantage is the transformed reward; no std division (the paper feeds it to its policy-gradient learner as
    a reward).

    Args:
        k: the k of pass@k to optimise (``k_opt``), ``1 <= k <= G``. The paper trains with n = 16 and k_opt in
            {1, 2, 4, 8}; the default 4 is ours (the same as ``passk``).
        baseline: which centring (the ambiguity the issue names):
            ``"loo_minus_one"`` (default; Eq. 33, the estimator the paper's LLM experiments use, §5.2, "which
            we favour due to Figure 4"; never negative for a group, exact zeros for equal rewards). With
            ``k = 1`` there is no (k-1)-subset: as in the paper's k_opt = 1 runs, plain LOO mean centring
            (Eq. 26), i.e. ``rloo``.
            ``"loo"``: Eq. 29. As the paper defines it, its baseline is normalised over subsets of the n-1 other
            rollouts, so a group of equal rewards g gets the constant ``g·k/n - g·k/(n-1)``, not 0 (unbiased:
            a constant per group does not bias the gradient); with ``k = n`` there is no k-subset of the others
            and the baseline is 0 (Listing 1 computes exactly this).
            ``"mean"``: ``s - mean_g(s)``, the form of the rllm port (rllm-org/rllm PR #743; n = 4, c = 2,
            k = 2 gives ±1/12). Not an unbiased estimator of the gradient (each ``s_j`` depends on every
            sample), which is why the paper derives Eq. 29 and 33.
            ``"none"``: ``s`` itself (Eq. 19, unbiased, high variance).

    Unscorable rollouts: n is the group's number c of scored rollouts, the subsets are drawn among them; a
    group with c < k has no k-subset and gets 0 (as ``passk``), a group with one scored rollout gets 0.
    """
    r = batch.rewards  # (P, G)
    g = r.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= g:
        raise ValueError(f"pkpo: k must be an integer with 1 <= k <= G = {g}, got k={k!r}")
    if baseline not in _BASELINES:
        raise ValueError(f"pkpo: baseline must be one of {list(_BASELINES)}, got {baseline!r}")
    if k == 1 and baseline == "loo_minus_one":
        return rloo(batch)  # (P, G)  the paper's k_opt = 1 baseline: Eq. 26
    scored = batch.scored  # (P, G)
    counts = scored.sum(-1)  # (P,)
    # scored rewards first, ascending; the unscored (NaN -> +inf) last, so a group's first c columns are its scored
    order = torch.where(scored, r, torch.full_like(r, math.inf)).argsort(dim=-1, stable=True)  # (P, G)
    out = torch.zeros_like(r)  # (P, G)
    for n in sorted(set(counts.tolist())):
        if n < max(k, 2):
            continue  # no k-subset (or no baseline): 0
        rows = (counts == n).nonzero().squeeze(-1)  # (P_n,)
        cols = order[rows, :n]  # (P_n, n)  positions of the scored rollouts, rewards ascending
        sorted_r = r[rows[:, None], cols].to(torch.float64)  # (P_n, n)
        w = torch.tensor(pkpo_weights(n, k, baseline), dtype=torch.float64, device=r.device)  # (n, n)
        values = sorted_r @ w.T  # (P_n, n)  values[p, i] = Σ_j w[i, j] g_j
        out[rows[:, None], cols] = values.to(r.dtype)
    if baseline in ("loo_minus_one", "mean"):  # exact zeros for a group of equal rewards (float sums can miss)
        out = out.masked_fill(_uniform(r, None if bool(scored.all()) else scored), 0.0)
    return torch.where(scored, out, torch.zeros_like(out))  # (P, G)


@lru_cache(maxsize=128)
def pkpo_weights(n: int, k: int, baseline: str) -> tuple[tuple[float, ...], ...]:
    """The n×n matrix W with ``transformed_sorted = W @ g_sorted`` for rewards sorted ascending (exact rationals,
    then float). Positions are 0-based: the largest element of a subset is the one with the highest index.

    ``s``: ``W[i, i] = C(i, k-1) / C(n, k)`` (subsets whose max is i), ``W[i, j] = C(j-1, k-2) / C(n, k)``
    for ``j > i`` (subsets containing i whose max is j); the paper's ``m_ij`` of Eq. 20-21.
    ``T^(m)_i = Σ_{|B|=m, B ⊆ [n]∖i} max_B g = Σ_{j≠i} C(j - [j > i], m-1) g_j``; then
    Eq. 33's baseline is ``T^(k-1)_i / C(n, k)`` and Eq. 29's is ``k · T^(k)_i / (C(n-1, k) (n-1))``."""

    def comb(a: int, b: int) -> int:
        return math.comb(a, b) if 0 <= b <= a else 0

    total = comb(n, k)
    s = [[Fraction(0)] * n for _ in range(n)]
    for i in range(n):
        s[i][i] = Fraction(comb(i, k - 1), total)
        if k >= 2:
            for j in range(i + 1, n):
                s[i][j] = Fraction(comb(j - 1, k - 2), total)

    def others_max_sum(m: int) -> list[list[int]]:
        return [[0 if j == i else comb(j - (j > i), m - 1) for j in range(n)] for i in range(n)]

    w = s
    if baseline == "loo_minus_one":
        t = others_max_sum(k - 1)
        w = [[s[i][j] - Fraction(t[i][j], total) for j in range(n)] for i in range(n)]
    elif baseline == "loo":
        t, norm = others_max_sum(k), comb(n - 1, k) * (n - 1)
        w = [[s[i][j] - (Fraction(k * t[i][j], norm) if norm else 0) for j in range(n)] for i in range(n)]
    elif baseline == "mean":
        col = [sum((s[i][j] for i in range(n)), Fraction(0)) / n for j in range(n)]
        w = [[s[i][j] - col[j] for j in range(n)] for i in range(n)]
    return tuple(tuple(float(x) for x in row) for row in w)
