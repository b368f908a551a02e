"""UCAS: uncertainty-aware advantage shaping (Xie et al., arXiv 2510.10649), registered as ``ucas``.

A **token-level** estimator (``register_advantage(..., token_level=True)``): it returns one advantage per response
token, ``(P, G, T)``, which every policy loss takes in place of the per-rollout ``(P, G)`` one (docs/architecture.md,
"Token-level advantages"). It reads two per-token statistics of the behaviour policy that only a forward pass over
the full vocabulary gives, ``GroupBatch.self_certainty`` and ``GroupBatch.token_logits``; ``divrl train`` computes
them in its one old-log-prob forward (the same pass gives PPO's old log-probs), only because ``ucas`` declares them.

Evidence: **code** (``xvolcano02/UCAS`` @ b122ff2, ``verl/trainer/ppo/core_algos.py::compute_ucas_advantage`` and
``_normalize_kl_certainty``, ``verl/utils/torch_functional.py::self_certainty_from_logits``,
``verl/workers/actor/dp_actor.py``; research notes related-methods.md §8.1); the paper's body was not read.
``tests/core/test_ucas.py`` vendors the official function and checks agreement on random batches.

Dimension letters: P prompts, G rollouts per prompt, T response tokens (see :mod:`divrl.core.batch`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, cast

import torch
from torch import Tensor

from divrl.core.advantages import _normalise, _scored, register_advantage
from divrl.core.batch import GroupBatch
from divrl.core.needs import Needs

__all__ = ["ucas", "ucas_logit_penalty", "ucas_needs"]


def ucas_needs(options: Mapping[str, Any]) -> Needs:
    """``ucas`` reads the response mask, the per-token self-certainty and the sampled tokens' raw logits."""
    return Needs.of({"mask", "self_certainty", "token_logits"})


def _require(batch: GroupBatch, field: str) -> Tensor:
    value = getattr(batch, field)
    if value is None:
        raise ValueError(f"ucas needs GroupBatch.{field} (P, G, T), but it is None")
    return cast(Tensor, value)


def ucas_logit_penalty(
    logits: Tensor, valid: Tensor, scope: Literal["batch", "group"] = "batch", eps: float = 1e-6
) -> Tensor:
    """(P, G, T) min-max normalised raw token logits ``lhat`` in [0, 1], 0 outside ``valid``.

    ``lhat = (l - min) / (max - min + eps)`` with min and max over the ``valid`` tokens of the whole batch
    (``scope="batch"``: the official ``_normalize_kl_certainty``, whose statistics depend on the batch composition,
    related-methods.md §10) or of each group (``scope="group"``: ours, independent of the other prompts); where
    ``max`` and ``min`` are ``torch.isclose`` (a degenerate batch or group) every valid token gets 0.5, as in the
    official code.
    """
    if scope not in ("batch", "group"):
        raise ValueError(f"ucas: logit_scope must be 'batch' or 'group', got {scope!r}")
    dims = (-1, -2, -3) if scope == "batch" else (-1, -2)
    inf = torch.full_like(logits, math.inf)
    lo = torch.where(valid, logits, inf).amin(dim=dims, keepdim=True)  # (1, 1, 1) or (P, 1, 1)
    hi = torch.where(valid, logits, -inf).amax(dim=dims, keepdim=True)  # (1, 1, 1) or (P, 1, 1)
    degenerate = torch.isclose(hi, lo) | ~torch.isfinite(hi - lo)  # (.., 1, 1); no valid token: inf - inf
    scaled = (logits - lo) / (hi - lo + eps)  # (P, G, T)
    lhat = torch.where(degenerate, torch.full_like(logits, 0.5), scaled)  # (P, G, T)
    return torch.where(valid, lhat, torch.zeros_like(lhat))  # (P, G, T)


@register_advantage("ucas", handles_unscored=True, token_level=True, needs=ucas_needs)
def ucas(
    batch: GroupBatch,
    *,
    beta_pos: float = 0.25,
    beta_neg: float = 0.35,
    lam: float = 0.05,
    scale: Literal["group", "none"] = "group",
    eps: float = 1e-6,
    logit_scope: Literal["batch", "group"] = "batch",
) -> Tensor:
    """UCAS token-level advantages (Xie et al., arXiv 2510.10649; two-stage shaping), ``(P, G, T)``.

    As the official ``compute_ucas_advantage`` computes it (evidence: code)::

        A_i     = (r_i - mean_g r) / (std_g r + eps)                       # GRPO; scale="none": r_i - mean_g r
        S_i     = sum_t sc_it,   sc_it = logsumexp(z_it) - mean(z_it)       # self-certainty, z = logits / temperature
        s_i     = (S_i - mean_g S) / (std_g S + eps)                        # scale="none": S_i - mean_g S
        m_i     = exp(-beta_pos * s_i) if A_i > 0 else exp(beta_neg * s_i)  # Stage 1 (response level)
        lhat_it = min-max of the raw sampled-token logit over the batch's valid tokens   # Stage 2 (token level)
        raw_it  = A_i m_i - lam * lhat_it
        A_it    = max(raw_it, 0) if A_i m_i > 0 else raw_it                 # a positive never flips sign

    Confident correct answers are pushed up less, confident wrong ones pushed down more, and confident tokens get a
    small extra penalty. The stds are unbiased (``torch.std``), ``eps = 1e-6``; ``beta_pos = 0.25``,
    ``beta_neg = 0.35``, ``lam = 0.05`` are the official code's hard-coded values. ``sc`` sums over the response's
    valid tokens (the official remove-padding path, its training script's setting, leaves 0 at padding).

    Unscorable rollouts and small groups (ours, the rule of every divrl estimator): the group statistics of ``A``
    and ``s`` are over the c scored rollouts of a group, the min-max over the valid tokens of scored rollouts in
    groups with at least two of them, and a group with fewer than two scored rollouts gets 0 on every token (the
    official code gives a lone rollout ``A = r``, mean 0 and std 1). An unscorable rollout and every padding token
    get exactly 0. A group of equal rewards has ``A = 0`` and still gets the token penalty ``-lam * lhat`` (as in
    the official code).

    Args:
        beta_pos, beta_neg: the confidence modulation of positive and non-positive advantages (>= 0).
        lam: weight of the token logit penalty (>= 0).
        scale: ``"group"`` (the official default, ``norm_adv_by_std_in_grpo=True``) or ``"none"`` (its ``False``:
            both ``A`` and ``s`` only centred).
        eps: added to both stds and to the min-max range.
        logit_scope: ``"batch"`` (official) or ``"group"`` (ours), see :func:`ucas_logit_penalty`.

    Note:
        With ``lam = 0`` and a self-certainty sum that is constant within each group (``s = 0``, ``m = 1``), this is
        ``grpo`` (``scale="none"``: ``dr_grpo``) broadcast over each response's valid tokens.
    """
    for option, value in (("beta_pos", beta_pos), ("beta_neg", beta_neg), ("lam", lam), ("eps", eps)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"ucas: option {option} must be a finite number >= 0, got {value!r}")
    if scale not in ("group", "none"):
        raise ValueError(f"ucas: scale must be 'group' or 'none', got {scale!r}")
    mask = _require(batch, "mask").bool()  # (P, G, T)
    certainty = _require(batch, "self_certainty")  # (P, G, T)
    logits = _require(batch, "token_logits")  # (P, G, T)
    r = batch.rewards  # (P, G)
    s = _scored(batch)  # (P, G) bool or None (all scored)
    scored = batch.scored  # (P, G)
    enough = scored.sum(-1) >= 2  # (P,)  a baseline needs two scored rollouts
    valid = mask & (scored & enough[:, None])[..., None]  # (P, G, T)

    zero = torch.zeros((), dtype=r.dtype)
    adv = _normalise(r, s, scale, True, eps)  # (P, G)  GRPO / Dr. GRPO over the scored
    total = torch.where(valid, certainty.to(r.dtype), zero).sum(-1)  # (P, G)  S_i over valid tokens
    conf = _normalise(total, s, scale, True, eps)  # (P, G)  s_i, z-scored within the group
    modifier = torch.where(adv > 0, torch.exp(-beta_pos * conf), torch.exp(beta_neg * conf))  # (P, G)
    shaped = (adv * modifier)[..., None]  # (P, G, 1)
    lhat = ucas_logit_penalty(logits.to(r.dtype), valid, logit_scope, eps)  # (P, G, T)
    raw = shaped - lam * lhat  # (P, G, T)
    out = torch.where(shaped > 0, raw.clamp(min=0.0), raw)  # (P, G, T)
    return torch.where(valid, out, zero)  # (P, G, T)
