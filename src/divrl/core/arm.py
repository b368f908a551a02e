"""ProGRPO's Advantage Re-weighting Mechanism (Li, Goncharova, Kuznetsov, Oseledets, arXiv 2602.05281), as ``arm``.

GRPO advantages plus ``alpha * (c(q) - c(o_i | q))``: a prompt confidence minus the rollout's answer confidence,
the latter from its lowest-probability tokens, so over-confident rollouts get less advantage and under-explored
ones more. No official code was found; the formula is from two third-party summaries of the paper (evidence
**2nd-hand**), see :func:`arm`.

**What is missing.** The prompt confidence ``c(q)`` needs the policy's log-probs of the *prompt* tokens, which
:class:`~divrl.core.batch.GroupBatch` does not carry (it has per-rollout response log-probs only) and no trainer
computes. ``c(q)`` is one number per group, so it only shifts every advantage of a group by ``alpha * c(q)``;
``prompt="group_mean"`` (default, ours) puts the group's mean answer confidence in its place, ``prompt="none"``
drops it (``c(q) = 0``: then every rollout of an all-correct group gets ``-alpha c(o_i|q) < 0``, a systematic push
down that the paper's ``c(q)``, a confidence of the same scale, would offset). A faithful ``c(q)`` would need a
``prompt_logprobs`` field (and its mask) in ``core.needs.FIELDS``, ``GroupBatch``, ``signals.group_batch`` and a
prompt log-prob pass in the trainer (and the TRL and verl adapters); its exact definition (perplexity of all prompt
tokens, or of the low-probability ones as for the answer) is not confirmed either.

Dimension letters: P prompts, G rollouts per prompt, T response tokens (see :mod:`divrl.core.batch`).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from divrl.core.advantages import _normalise, _scored, register_advantage
from divrl.core.batch import GroupBatch
from divrl.core.needs import Needs

__all__ = ["answer_confidence", "arm"]


def answer_confidence(old_logprobs: Tensor, mask: Tensor, low_frac: float = 0.2) -> Tensor:
    """(P, G) answer confidence ``c(o_i | q) = exp(mean_{t in T_low} lp_{i,t})``, ProGRPO's low-probability token
    length normalisation: ``T_low`` holds the ``ceil(low_frac * T_i)`` response tokens of rollout i with the
    lowest log-probability (at least one; ties are immaterial, equal values average the same).

    Evidence: 2nd-hand (summaries: "the ~20% token positions with the lowest probability"); the ``ceil`` and the
    minimum of one token are ours. A rollout without response tokens has confidence 1 (ours: nothing uncertain).

    Args:
        old_logprobs: (P, G, T) log-probs of the sampled tokens under the rollout policy.
        mask: (P, G, T) bool/0-1 response-token mask.
        low_frac: the share of tokens in ``T_low``, in (0, 1].
    """
    if not 0 < low_frac <= 1:
        raise ValueError(f"arm: low_frac must be in (0, 1], got {low_frac!r}")
    m = mask.bool()  # (P, G, T)
    n = m.sum(-1)  # (P, G)  response tokens per rollout
    k = (n.double() * low_frac - 1e-9).ceil().clamp(min=1).to(n.dtype)  # (P, G)  |T_low|
    k = torch.minimum(k, n.clamp(min=1))  # (P, G)
    lp = torch.where(m, old_logprobs, torch.full_like(old_logprobs, math.inf))  # (P, G, T)  padding sorts last
    lowest = lp.sort(dim=-1).values  # (P, G, T)  ascending: least likely first
    take = torch.arange(lp.shape[-1], device=lp.device) < k[..., None]  # (P, G, T)
    mean_low = torch.where(take, lowest, torch.zeros_like(lowest)).sum(-1) / k.to(lp.dtype)  # (P, G)
    return torch.where(n > 0, mean_low.exp(), torch.ones_like(mean_low))  # (P, G)


def _centred_on(x: Tensor, members: Tensor) -> Tensor:
    """``x - mean(x over members)`` per group, exactly 0 where the members' values are all equal. (P, G)"""
    count = members.sum(-1, keepdim=True)  # (P, 1)
    mean = torch.where(members, x, torch.zeros_like(x)).sum(-1, keepdim=True) / count.clamp(min=1)  # (P, 1)
    hi = torch.where(members, x, torch.full_like(x, -math.inf)).amax(-1, keepdim=True)  # (P, 1)
    lo = torch.where(members, x, torch.full_like(x, math.inf)).amin(-1, keepdim=True)  # (P, 1)
    return (x - mean).masked_fill(hi <= lo, 0.0)  # (P, G)


@register_advantage("arm", needs_logprobs=True, handles_unscored=True, needs=lambda o: Needs.of(optional={"correct"}))
def arm(
    batch: GroupBatch,
    *,
    alpha: float = 1.0,
    low_frac: float = 0.2,
    apply: Literal["nonzero_sum", "mixed"] = "nonzero_sum",
    gate: Literal["all", "correct"] = "all",
    prompt: Literal["none", "group_mean"] = "group_mean",
    unbiased: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """ProGRPO's Advantage Re-weighting Mechanism (ARM; arXiv 2602.05281, its re-weighted advantage Ã).

    Evidence: **2nd-hand** (two independent summaries agree; the paper body and code were not reachable)::

        A_i  = (R_i - mean_g R) / (std_g R + delta)               # GRPO
        Ã_i = A_i                                  if sum_g R = 0  (no correct rollout in the group)
             = A_i + alpha * (c(q) - c(o_i | q))   otherwise
        c(o_i | q) = exp(mean_{t in T_low} lp_{i,t})              # answer_confidence, |T_low| ~ 20% of T_i

    ``c(q)`` (prompt confidence, from the prompt's perplexity) cannot be computed here: see the module docstring.
    The log-probs are the rollout policy's (``old_logprobs``), cached once per step.

    Unscorable rollouts: mean and std, the ``apply`` test and ``prompt="group_mean"`` look at the scored rollouts
    only; a group with at most one scored rollout gets 0 (no baseline; ours, as every estimator here).

    Args:
        alpha: weight of the confidence term (not confirmed by any source; 1.0 is ours).
        low_frac: share of lowest-probability tokens in ``T_low`` (2nd-hand: 20%).
        apply: which groups get the term: ``"nonzero_sum"`` (the summarised formula: the scored rewards do not sum
            to 0) or ``"mixed"`` (one summary: only groups whose scored rewards differ, i.e. not all-correct either).
        gate: ``"all"`` (the formula: every rollout of the group) or ``"correct"`` (ours, a reading of "equilibrate
            the confidence across all correct responses": only correct rollouts, ``batch.correct`` when set, else
            ``reward == 1``).
        prompt: what stands in for the missing ``c(q)``: ``"group_mean"`` (default, ours: the mean answer
            confidence of the rollouts that get the term, so the term sums to 0 over them and a group of equal
            confidences gets exactly the GRPO advantage) or ``"none"`` (0: the formula without its missing term).
        unbiased, eps: as in ``grpo`` (``eps`` is the paper's ``delta``; its value is not confirmed, verl's 1e-6).

    Needs ``batch.old_logprobs`` and ``batch.mask`` (P, G, T).
    """
    if apply not in ("nonzero_sum", "mixed"):
        raise ValueError(f"arm: apply must be 'nonzero_sum' or 'mixed', got {apply!r}")
    if gate not in ("all", "correct"):
        raise ValueError(f"arm: gate must be 'all' or 'correct', got {gate!r}")
    if prompt not in ("none", "group_mean"):
        raise ValueError(f"arm: prompt must be 'none' or 'group_mean', got {prompt!r}")
    if not math.isfinite(alpha):
        raise ValueError(f"arm: alpha must be a finite number, got {alpha!r}")
    if batch.old_logprobs is None or batch.mask is None:
        missing = [f for f in ("old_logprobs", "mask") if getattr(batch, f) is None]
        raise ValueError(f"arm needs GroupBatch.old_logprobs and GroupBatch.mask (P, G, T); missing: {missing}")
    r = batch.rewards  # (P, G)
    s = _scored(batch)
    scored = batch.scored  # (P, G)
    a = _normalise(r, s, "group", unbiased, eps)  # (P, G)  GRPO over the scored rollouts
    conf = answer_confidence(batch.old_logprobs, batch.mask, low_frac).to(r.dtype)  # (P, G)
    members = scored  # (P, G)  rollouts that get the term
    if gate == "correct":
        correct = batch.correct if batch.correct is not None else r == 1  # (P, G)
        members = members & correct.to(members.device)
    r0 = torch.where(scored, r, torch.zeros_like(r))  # (P, G)
    if apply == "nonzero_sum":
        on = r0.sum(-1, keepdim=True) != 0  # (P, 1)
    else:
        hi = torch.where(scored, r, torch.full_like(r, -math.inf)).amax(-1, keepdim=True)  # (P, 1)
        lo = torch.where(scored, r, torch.full_like(r, math.inf)).amin(-1, keepdim=True)  # (P, 1)
        on = hi > lo  # (P, 1)
    on = on & (scored.sum(-1, keepdim=True) > 1)  # (P, 1)  a group of one scored rollout has no baseline
    term = -alpha * (_centred_on(conf, members) if prompt == "group_mean" else conf)  # (P, G)
    term = torch.where(members & on, term, torch.zeros_like(term))  # (P, G)
    return a + term  # (P, G)
