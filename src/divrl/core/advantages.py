"""Advantage estimators: one registry, one signature.

Every estimator is ``fn(batch: GroupBatch, *, <keyword-only options with defaults>) -> Tensor  # (P, G)``
and is looked up by name::

    adv = compute_advantages("darling", batch, floor=0.1)  # (P, G)

:func:`compute_advantages` is the entry point. It rejects unknown options (naming them) and
handles *unscorable* rollouts generically: ``batch.rewards`` may hold NaN where a reward function
returned ``None``. Before the estimator runs, each NaN is replaced by the mean reward of the
scored rollouts of its group (0 when none is scored), so group statistics are taken over the
scored rollouts only in effect; after it runs, the advantage of every NaN rollout is set to 0.
Estimators themselves refuse NaN rewards with a pointer to :func:`compute_advantages`.

Every estimator returns finite values. For the estimators that only look at rewards (``grpo``,
``dr_grpo``, ``rloo``, ``passk``, and ``unlikeliness`` with its default ``drop_uniform=True``) a
group whose rewards are all equal gets exact zeros. ``darling`` and ``setpo`` are diversity
estimators: a group of equal rewards still gets a non-zero advantage when its rollouts differ in
diversity (that is their purpose), and zeros when the diversity is uniform too.

Dimension letters: P prompts, G rollouts per prompt, T tokens (see :mod:`divrl.core.batch`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from functools import lru_cache
from typing import Any, Literal

import torch
from torch import Tensor

from divrl.core.batch import GroupBatch
from divrl.core.diversity import (
    cosine_kernel,
    darling_diversity,
    ngram_kernel,
    setpo_marginal_contributions,
)
from divrl.core.registry import Registry

__all__ = [
    "ADVANTAGES",
    "AdvantageFn",
    "advantage_names",
    "advantage_needs_logprobs",
    "compute_advantages",
    "darling",
    "dr_grpo",
    "fill_unscored",
    "get_advantage",
    "grpo",
    "passk",
    "register_advantage",
    "rloo",
    "setpo",
    "setpo_bonus",
    "unlikeliness",
]

AdvantageFn = Callable[..., Tensor]
"""``fn(batch: GroupBatch, *, **options) -> Tensor  # (P, G)``."""

ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")

Scale = Literal["group", "batch", "none"]


_NEEDS_LOGPROBS: set[str] = set()


def register_advantage(name: str, *, needs_logprobs: bool = False) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator registering an estimator under ``name`` (a different function under a taken name raises).

    ``needs_logprobs``: the estimator reads ``GroupBatch.old_logprobs`` and ``mask`` (P, G, T), so a trainer must
    run a log-prob pass over the rollouts before the advantage (see :func:`advantage_needs_logprobs`)."""
    if needs_logprobs:
        _NEEDS_LOGPROBS.add(name)
    return ADVANTAGES.register(name)


def advantage_needs_logprobs(name: str) -> bool:
    """Whether estimator ``name`` was registered with ``needs_logprobs=True`` (e.g. ``unlikeliness``)."""
    return name in _NEEDS_LOGPROBS


def get_advantage(name: str) -> AdvantageFn:
    """The estimator registered under ``name``; an unknown name raises listing the known ones."""
    return ADVANTAGES.get(name)


def advantage_names() -> list[str]:
    """Sorted names of the registered estimators."""
    return ADVANTAGES.names()


def compute_advantages(name: str, batch: GroupBatch, **options: Any) -> Tensor:
    """Advantages (P, G) from estimator ``name``, with unscorable (NaN-reward) rollouts handled.

    NaN rewards are replaced by their group's mean over scored rollouts (0 if none is scored)
    before the estimator runs (:func:`fill_unscored`), and the advantages at those positions are
    set to 0 afterwards. Unknown ``options`` raise ``ValueError`` naming them.
    """
    rewards = batch.rewards  # (P, G)
    if bool(torch.isinf(rewards).any()):
        raise ValueError("GroupBatch.rewards holds +-inf; rewards must be finite (or NaN for an unscorable rollout)")
    scored = batch.scored  # (P, G)
    if not bool(scored.all()):
        batch = batch.replace(rewards=fill_unscored(rewards))
    adv = ADVANTAGES.call(name, batch, **options)
    if not isinstance(adv, Tensor) or tuple(adv.shape) != tuple(rewards.shape):
        got = tuple(adv.shape) if isinstance(adv, Tensor) else type(adv).__name__
        raise ValueError(
            f"advantage estimator {name!r} returned {got}, expected a tensor of shape (P, G) = {tuple(rewards.shape)}"
        )
    if not bool(torch.isfinite(adv).all()):
        raise ValueError(f"advantage estimator {name!r} returned non-finite advantages")
    return adv.masked_fill(~scored, 0.0)  # (P, G)


def fill_unscored(rewards: Tensor) -> Tensor:
    """Replace each NaN reward by the mean of its group's scored rewards (0 if the group has none)."""
    scored = ~torch.isnan(rewards)  # (P, G)
    total = torch.where(scored, rewards, torch.zeros_like(rewards)).sum(-1, keepdim=True)  # (P, 1)
    count = scored.sum(-1, keepdim=True).clamp(min=1)  # (P, 1)
    return torch.where(scored, rewards, total / count)  # (P, G)


# ---------------------------------------------------------------------------------------------
# Shared group arithmetic
# ---------------------------------------------------------------------------------------------


def _rewards(batch: GroupBatch, who: str) -> Tensor:
    r = batch.rewards  # (P, G)
    if bool(torch.isnan(r).any()):
        raise ValueError(
            f"{who}: GroupBatch.rewards holds NaN (unscorable rollouts); call it through "
            "compute_advantages(), which fills them and gives them a zero advantage"
        )
    return r


def _uniform(x: Tensor) -> Tensor:
    """(P, 1) bool: groups whose values are all equal."""
    return x.amax(-1, keepdim=True) == x.amin(-1, keepdim=True)  # (P, 1)


def _centre(x: Tensor) -> Tensor:
    """``x - mean_g(x)``, exactly 0 for a group of equal values (a float mean can miss by an ulp)."""
    centred = x - x.mean(-1, keepdim=True)  # (P, G)
    return centred.masked_fill(_uniform(x), 0.0)  # (P, G)


def _normalise(x: Tensor, scale: str, unbiased: bool, eps: float) -> Tensor:
    """GRPO's ``(x - mean_g) / (std + eps)``; ``scale`` picks the std (group, batch) or none."""
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    if x.shape[-1] == 1:
        return torch.zeros_like(x)  # a group of one has no baseline to compare against
    centred = _centre(x)  # (P, G)
    correction = 1 if unbiased else 0
    if scale == "none":
        return centred
    std = (
        x.std(-1, keepdim=True, correction=correction)  # (P, 1)
        if scale == "group"
        else x.std(correction=correction)  # ()  over all P*G values
    )
    return centred / (std + eps)  # (P, G)


# ---------------------------------------------------------------------------------------------
# Reward-only estimators
# ---------------------------------------------------------------------------------------------


@register_advantage("grpo")
def grpo(batch: GroupBatch, *, scale: Scale = "group", unbiased: bool = True, eps: float = 1e-6) -> Tensor:
    """Group-relative advantage (GRPO; DeepSeekMath, arXiv 2402.03300, §4.1.2).

    ``A_i = (r_i - mean_g(r)) / (std + eps)`` with ``eps = 1e-6`` and the unbiased std (divides
    by G - 1), as in verl's ``compute_grpo_outcome_advantage``; ``unbiased=False`` gives the
    population std that many papers write.

    Args:
        scale: ``"group"`` (per-group std, GRPO), ``"batch"`` (std over all P*G rewards, as in
            REINFORCE++-style batch whitening), ``"none"`` (no division: Dr. GRPO's advantage).
        unbiased: std with Bessel's correction.
        eps: added to the std.

    Note:
        A group of size 1 gets advantage 0; a group of equal rewards gets exact zeros.
    """
    return _normalise(_rewards(batch, "grpo"), scale, unbiased, eps)  # (P, G)


@register_advantage("dr_grpo")
def dr_grpo(batch: GroupBatch) -> Tensor:
    """Dr. GRPO advantage ``A_i = r_i - mean_g(r)`` (Liu et al., arXiv 2503.20783).

    Drops GRPO's std division ("difficulty bias"). Dr. GRPO's other change, a constant loss
    normaliser, lives in the policy loss. Same as ``grpo`` with ``scale="none"``.
    """
    return _centre(_rewards(batch, "dr_grpo"))  # (P, G)


@register_advantage("rloo")
def rloo(batch: GroupBatch) -> Tensor:
    """REINFORCE leave-one-out baseline (Ahmadian et al., arXiv 2402.14740; Kool et al. 2019).

    ``A_i = r_i - (1/(G-1)) Σ_{j≠i} r_j = G/(G-1) · (r_i - mean_g(r))`` (the second form is
    verl's ``compute_rloo_outcome_advantage``). A group of size 1 gets 0 here (verl returns ``r``).
    """
    r = _rewards(batch, "rloo")  # (P, G)
    g = r.shape[-1]
    if g == 1:
        return torch.zeros_like(r)
    return _centre(r) * (g / (g - 1))  # (P, G)


@register_advantage("passk")
def passk(batch: GroupBatch, *, k: int = 4) -> Tensor:
    """Analytic Pass@k-training advantage (Chen et al., arXiv 2508.10751; official ``code/passk_adv.py``).

    Evidence: [code]. For a group of n = G rollouts with c correct and ``n_neg = n - c``::

        R̄     = 1 - C(n_neg, k) / C(n, k)          # expected pass@k of a random k-subset
        σ     = sqrt(R̄ (1 - R̄))
        A_pos = (1 - R̄) / (σ + 1e-6)                               # every correct rollout
        A_neg = (1 - R̄ - C(n_neg-1, k-1) / C(n-1, k-1)) / (σ + 1e-6)  # every incorrect rollout

    with ``C(a, b) = 0`` for ``b > a`` or ``a < 0``. All-correct, all-wrong and ``n_neg < k``
    groups get exact zeros (binomials are evaluated exactly with :class:`fractions.Fraction`).

    Correctness is ``batch.correct`` when given, else ``reward == 1`` as in the official code
    (any other reward counts as incorrect; an unscorable rollout filled with its group's mean
    reward therefore counts as incorrect unless every scored rollout is correct).

    Args:
        k: the target k, ``1 <= k <= G``. The default 4 is our choice; the paper's headline k
            was not confirmed.
    """
    r = _rewards(batch, "passk")  # (P, G)
    g = r.shape[-1]
    if not 1 <= k <= g:
        raise ValueError(f"passk: k must satisfy 1 <= k <= G = {g}, got k={k}")
    correct = batch.correct if batch.correct is not None else r == 1  # (P, G) bool
    a_pos, a_neg = _passk_table(g, k)
    count = correct.sum(-1)  # (P,)  c per group
    pos = torch.tensor(a_pos, dtype=r.dtype, device=r.device)[count]  # (P,)
    neg = torch.tensor(a_neg, dtype=r.dtype, device=r.device)[count]  # (P,)
    return torch.where(correct, pos[:, None], neg[:, None])  # (P, G)


@lru_cache(maxsize=64)
def _passk_table(n: int, k: int) -> tuple[list[float], list[float]]:
    """A_pos and A_neg for c = 0..n correct rollouts (exact binomials, then float)."""

    def comb(a: int, b: int) -> int:
        return math.comb(a, b) if 0 <= b <= a else 0

    a_pos: list[float] = []
    a_neg: list[float] = []
    for c in range(n + 1):
        n_neg = n - c
        rbar = 1 - Fraction(comb(n_neg, k), comb(n, k))
        sigma = math.sqrt(float(rbar * (1 - rbar)))
        a_pos.append(float(1 - rbar) / (sigma + 1e-6))
        a_neg.append(float(1 - rbar - Fraction(comb(n_neg - 1, k - 1), comb(n - 1, k - 1))) / (sigma + 1e-6))
    return a_pos, a_neg


@register_advantage("unlikeliness", needs_logprobs=True)
def unlikeliness(
    batch: GroupBatch,
    *,
    beta_rank: float = 0.25,
    drop_uniform: bool = True,
    unbiased: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """Unlikeliness reward ("Rewarding the Unlikely", He, Fried & Welleck, arXiv 2506.02355).

    Evidence: [code], the official ``_compute_advantages`` in ``ray_lean_trainer.py``::

        s_i    = mean_t old_logprob_{i,t}              # length-normalised, over masked tokens
        rank_i = argsort(argsort(s))_i                 # 0 = least likely ... G-1 = most likely (all G)
        r'_i   = r_i * (1 - beta_rank * rank_i / G)
        A_i    = (r'_i - mean_g r') / (std_g r' + eps) # GRPO normalisation after shaping

    Ties in ``s`` are broken by position (stable argsort, as the official double argsort). The
    paper's own form differs by a constant offset ``beta_rank / G`` in the multiplier.

    Args:
        beta_rank: rank penalty (official recipe: 0.25).
        drop_uniform: give 0 to groups whose rewards are all equal. The official recipe sets
            ``advantage_threshold=True``, which drops groups with 0 or G successes; zero advantage
            is our stand-in for dropping (with token-mean aggregation, dropping also removes the
            group's tokens from the denominator). ``False`` shapes such groups too.
        unbiased, eps: as in ``grpo``.

    Needs ``batch.old_logprobs`` and ``batch.mask`` (P, G, T).
    """
    r = _rewards(batch, "unlikeliness")  # (P, G)
    if batch.old_logprobs is None or batch.mask is None:
        missing = [f for f in ("old_logprobs", "mask") if getattr(batch, f) is None]
        raise ValueError(
            f"unlikeliness needs GroupBatch.old_logprobs and GroupBatch.mask (P, G, T); missing: {missing}"
        )
    g = r.shape[-1]
    mask = batch.mask.bool()  # (P, G, T)
    lp = torch.where(mask, batch.old_logprobs, torch.zeros_like(batch.old_logprobs))  # (P, G, T)
    mean_lp = lp.sum(-1) / mask.sum(-1).clamp(min=1)  # (P, G)
    rank = mean_lp.argsort(dim=-1, stable=True).argsort(dim=-1, stable=True)  # (P, G)  0 = least likely
    shaped = r * (1 - beta_rank * rank.to(r.dtype) / g)  # (P, G)
    adv = _normalise(shaped, "group", unbiased, eps)  # (P, G)
    if drop_uniform:
        adv = adv.masked_fill(_uniform(r), 0.0)
    return adv


# ---------------------------------------------------------------------------------------------
# Diversity estimators
# ---------------------------------------------------------------------------------------------


@register_advantage("darling")
def darling(
    batch: GroupBatch,
    *,
    floor: float = 0.1,
    scale: Scale = "none",
    shift: bool = False,
    unbiased: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """DARLING: diversity-weighted reward, then a group baseline (Li et al., arXiv 2509.02534).

    Evidence: [paper + code]. Eq. 5 (multiplicative fusion) and the advantage after Eq. 6::

        div_i = max((G - |C(i)|) / (G - 1), floor)     # darling_diversity; the floor is code-only
        r'_i  = r_i * div_i
        A_i   = r'_i - mean_g(r')                      # no std division (norm_adv_by_std_in_grpo=False)

    The partition comes from ``batch.partition`` (P, G) labels. With every rollout in its own
    class ``div = 1`` and this is ``dr_grpo``.

    Args:
        floor: diversity floor (code: 0.1).
        scale: ``"none"`` (DARLING), ``"group"`` divides by the group std + eps as in ``grpo``
            (``"batch"`` also accepted).
        shift: subtract the group minimum reward first (the official code's ``add_bias``, unused
            in its released scripts). Without it, rewards must be >= 0: multiplying a negative
            reward by a diversity in (0, 1] would reward duplicates.
        unbiased, eps: std settings when ``scale != "none"``.
    """
    r = _rewards(batch, "darling")  # (P, G)
    if batch.partition is None:
        raise ValueError(
            "darling needs GroupBatch.partition: (P, G) integer class labels per group. Build them with "
            "divrl.core.diversity.partition(texts, equivalent) or partition_by_key(keys), stack with "
            "labels_tensor(...), and pass batch.replace(partition=labels)"
        )
    if shift:
        r = r - r.amin(-1, keepdim=True)  # (P, G)  >= 0
    elif bool((r < 0).any()):
        raise ValueError("darling: GroupBatch.rewards must be >= 0 (or pass shift=True to subtract the group minimum)")
    div = darling_diversity(batch.partition, floor).to(dtype=r.dtype, device=r.device)  # (P, G)
    return _normalise(r * div, scale, unbiased, eps)  # (P, G)


def setpo_bonus(
    batch: GroupBatch,
    *,
    lam: float = 1.0,
    gate: Literal["all", "correct"] = "all",
    center: bool = False,
    kernel: Literal["auto", "cosine", "ngram"] = "auto",
    ngram: int = 3,
    ngram_unit: Literal["char", "token"] = "char",
    members: Literal["all", "correct"] = "all",
) -> Tensor:
    """SetPO-style shaping term ``lam * s`` (P, G), gated and optionally centred.

    ``s`` is :func:`~divrl.core.diversity.setpo_marginal_contributions` (a **reconstructed**
    formula, see there) on a per-group kernel: cosine of ``batch.embeddings`` (``kernel="cosine"``,
    the reconstructed SetPO kernel) or character/token n-gram Jaccard of ``batch.texts``
    (``kernel="ngram"``, our weight-free choice); ``"auto"`` takes embeddings when present, else
    texts. ``gate="correct"`` keeps the term only for correct rollouts (``batch.correct``); then
    ``center=True`` subtracts the group mean of the gated term, so the bonus sums to 0 per group.
    ``members="correct"`` (our variant, not SetPO's) measures the set diversity over each group's
    correct rollouts only (``Ω`` = the correct ones; the others get 0, which implies the gate), so
    a trainer needs to embed only the correct rollouts (``embed_rows: correct``).
    Useful on its own for logging ``RMS(lam*s) / RMS(A_base)`` (seed-methods.md §3.3 suggests
    calibrating ``lam`` so that this is about 5-10%).
    """
    if gate not in ("all", "correct"):
        raise ValueError(f"setpo: gate must be 'all' or 'correct', got {gate!r}")
    if members not in ("all", "correct"):
        raise ValueError(f"setpo: members must be 'all' or 'correct', got {members!r}")
    if members == "correct" and batch.correct is None:
        raise ValueError("setpo: members='correct' needs GroupBatch.correct (P, G) bool")
    k = _setpo_kernel(batch, kernel, ngram, ngram_unit)  # (P, G, G)
    mask = batch.correct.to(k.device) if members == "correct" and batch.correct is not None else None  # (P, G)
    s = setpo_marginal_contributions(k, mask).to(batch.rewards.dtype)  # (P, G)
    bonus = lam * s  # (P, G)
    if gate == "correct":
        if batch.correct is None:
            raise ValueError("setpo: gate='correct' needs GroupBatch.correct (P, G) bool")
        bonus = bonus * batch.correct.to(bonus.dtype)  # (P, G)
    return _centre(bonus) if center else bonus  # (P, G)


def _setpo_kernel(batch: GroupBatch, kernel: str, ngram: int, ngram_unit: Literal["char", "token"]) -> Tensor:
    if kernel not in ("auto", "cosine", "ngram"):
        raise ValueError(f"setpo: kernel must be 'auto', 'cosine' or 'ngram', got {kernel!r}")
    use_cosine = kernel == "cosine" or (kernel == "auto" and batch.embeddings is not None)
    if use_cosine:
        if batch.embeddings is None:
            raise ValueError("setpo: kernel='cosine' needs GroupBatch.embeddings (P, G, D)")
        return cosine_kernel(batch.embeddings)  # (P, G, G)
    if batch.texts is None:
        raise ValueError(
            "setpo needs GroupBatch.embeddings (P, G, D) for a cosine kernel or GroupBatch.texts for an "
            f"n-gram kernel; neither is set (kernel={kernel!r})"
        )
    return torch.stack([ngram_kernel(group, n=ngram, unit=ngram_unit) for group in batch.texts])  # (P, G, G)


@register_advantage("setpo")
def setpo(
    batch: GroupBatch,
    *,
    base: str = "grpo",
    base_options: dict[str, Any] | None = None,
    lam: float = 1.0,
    gate: Literal["all", "correct"] = "all",
    center: bool = False,
    kernel: Literal["auto", "cosine", "ngram"] = "auto",
    ngram: int = 3,
    ngram_unit: Literal["char", "token"] = "char",
    members: Literal["all", "correct"] = "all",
) -> Tensor:
    """SetPO-style set-diversity advantage shaping (Li et al., arXiv 2602.01062) -- **reconstructed**.

    ``Â_i = A_base_i + lam * s_i`` with ``s`` the leave-one-out marginal contribution of rollout i
    to a kernel set diversity (:func:`setpo_bonus`). The abstract confirms a plug-in LOO
    advantage-shaping term; the formula, the kernel, ``lam = 1.0`` (a third-party port's choice),
    the absence of centring and of a correctness gate are from a port and notes
    (seed-methods.md §3.2), not the paper. Call it "SetPO-style (reconstructed)" in results.

    Args:
        base: any registered estimator, called through the registry with ``base_options``.
        lam: weight of ``s``.
        gate: ``"all"`` or ``"correct"`` (only correct rollouts get ``s``).
        center: subtract the group mean of the (gated) ``lam * s``.
        kernel, ngram, ngram_unit, members: see :func:`setpo_bonus`.

    Note:
        With ``lam = 0`` (or a constant ``s`` and ``center=True``) this is the base estimator.
    """
    if base == "setpo":
        raise ValueError("setpo: base must be another estimator, not 'setpo' itself")
    a_base: Tensor = ADVANTAGES.call(base, batch, **(base_options or {}))  # (P, G)
    bonus = setpo_bonus(
        batch,
        lam=lam,
        gate=gate,
        center=center,
        kernel=kernel,
        ngram=ngram,
        ngram_unit=ngram_unit,
        members=members,
    )  # (P, G)
    return a_base + bonus  # (P, G)
