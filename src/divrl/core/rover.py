"""ROVER: Random Policy Valuation (He et al., "Random Policy Valuation is Enough for LLM Reasoning with Verifiable
Rewards", arXiv 2509.24981), a policy loss that replaces the policy-gradient loss.

In a deterministic, tree-structured MDP with a binary terminal reward, acting greedily (softly) on the Q-function of
the *uniform* random policy is optimal; ROVER learns that Q-function with the LLM itself as its parameterisation and
samples from it by ordinary decoding. Evidence: **code** (the official repository, ``tinnerhrhe/ROVER`` at
``b0fa5878``: ``Math/verl/workers/actor/dp_actor.py::DataParallelROVERActor.update_policy``,
``Math/verl/trainer/ppo/core_algos.py::compute_rover_loss``, ``Math/verl/utils/torch_functional.py::sum_log_softmax``;
the Countdown copy in ``Countdown/`` is the same arithmetic with ``rho = 1``); the paper body was not read, so no
equation number is given. The vendored arithmetic and an agreement test are in ``tests/core/test_rover.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from divrl.core.batch import GroupBatch
from divrl.core.losses import (
    LossOutput,
    _broadcast_advantages,
    _choice,
    _mask,
    _policy_tokens,
    _require,
    _scalar,
    _where,
    masked_mean,
    register_loss,
)
from divrl.core.needs import Needs

__all__ = ["ROVER_LEVELS", "rover_loss", "rover_next_value"]

ROVER_LEVELS = ("token", "response")


def _rover_needs(options: Mapping[str, Any]) -> Needs:
    """Log-probs and mask (old log-probs when set); the current and old full-vocabulary means when the next-state
    value is used (``next_q_scale != 0``, the official default); correctness is never read."""
    own = _policy_tokens(options)
    try:
        uses_next = float(options.get("next_q_scale", 1.0)) != 0.0 and options.get("level", "token") == "token"
    except (TypeError, ValueError):
        uses_next = True  # the loss itself rejects the value, naming the option
    if uses_next:
        own = own | Needs.of({"vocab_mean_logprobs", "old_vocab_mean_logprobs"})
    return own


def rover_next_value(vocab_mean: Tensor, old_vocab_mean: Tensor, mask: Tensor, rho: float = 1.0) -> Tensor:
    """ROVER's next-state value of the uniform policy, ``(P, G, T)`` or ``(N, T)``, no grad.

    With ``m_t = mean_v log pi(v | s_t)`` (``vocab_mean``, the current policy) and ``m~_t`` the same under the old
    policy, the uniform-policy expectation of ``Q(s, v) = rho (log pi(v | s) - log pi_old(v | s))`` at the state
    after response token t is ``V_{t+1} = rho (m_{t+1} - m~_{t+1})``; it is 0 after the last response token (terminal)
    and at padding. Position t of ``vocab_mean`` is the distribution that predicts response token t, so the value
    after token t sits at column t + 1 (the official ``torch.cat([(current_q[:, 1:] - old_logits[:, 1:]) *
    response_mask[:, 1:], 0])``).
    """
    diff = (vocab_mean.detach() - old_vocab_mean.detach()) * mask.to(vocab_mean.dtype)  # (..., T)
    nxt = torch.zeros_like(diff)  # (..., T)
    nxt[..., :-1] = rho * diff[..., 1:]
    return nxt


@register_loss("rover", needs=_rover_needs)
def rover_loss(
    batch: GroupBatch,
    advantages: Tensor,
    *,
    rho: float = 1.0,
    next_q_scale: float = 1.0,
    clip_eps: float | None = None,
    level: str = "token",
) -> LossOutput:
    """ROVER's Q-regression loss (official code, see the module docstring). Per response token t of rollout i::

        Q_it      = rho * (logp_it - old_logp_it)                          # Q from the policy's own log-ratio
        V_i,t+1   = rho * (m_i,t+1 - m~_i,t+1),  m = mean_v log pi(v|s)    # uniform-policy value, 0 at the end
        target_it = A_i + next_q_scale * V_i,t+1                           # no grad
        loss      = sum_it s_i (Q_it - target_it)^2 / sum_it 1[valid]      # token mean over every valid token

    ``A`` are the ``advantages`` (the group-centred reward: ROVER's Countdown code uses ``r - mean``, i.e. divrl's
    ``dr_grpo``; its Math script the GRPO z-score, ``grpo``). ``m`` comes from the current policy's logits
    (``GroupBatch.vocab_mean_logprobs``, computed from the training forward), ``m~`` from the old policy's
    (``old_vocab_mean_logprobs``, the trainer's old-log-prob pass). With one optimiser step per rollout batch the
    old policy is the current one: ``Q = 0`` with gradient ``rho``, ``V = 0``, and the gradient is exactly
    ``2 rho`` times that of the on-policy PG loss ``-A * ratio`` with ``token-mean`` aggregation (tested); ROVER
    differs from a policy gradient only off-policy (the official runs take 4 mini-batch steps per batch; set
    ``num_iterations`` > 1).

    Options (defaults follow the official Math code):
        rho: ROVER's temperature ``rover_t`` (official default 1).
        next_q_scale: the weight of the next-state value ``next_q_scale_factor`` (official default 1); 0 regresses
            ``Q`` on ``A`` alone (the official ``target_adv_only``) and then needs no vocabulary statistics.
        clip_eps: ``None`` (official default, ``use_rover_clip`` off) or the official one-sided clip: ``Q`` is held
            at ``log(1 + eps)`` when it is above that and still below the target, at ``log(1 - eps)`` when below
            that and above the target (no gradient there).
        level: ``token`` (official default) or ``response``: the official ``response_level_rover_loss``,
            ``mean_i (mean_t Q_it - A_i)^2`` over all rollouts (with token-level advantages, ``A_i`` is the first
            token's, as in the official code).

    Unscorable rollouts (NaN reward; ours, the official code has none): their terms are 0 (a target built on an
    unknown reward is not regressed on), but their tokens still count in the denominator, as for ``ppo``.

    Metrics: ``rover_loss``, ``q_mean`` (masked mean of ``Q``), ``next_value_mean``, ``target_mean``,
    ``clip_frac`` (only with ``clip_eps``).
    """
    name = "rover"
    for option, value in (("rho", rho), ("next_q_scale", next_q_scale)):
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ValueError(f"policy loss {name!r}: option {option} must be a finite number, got {value!r}")
    if not rho > 0:
        raise ValueError(f"policy loss {name!r}: option rho must be > 0, got {rho}")
    if clip_eps is not None and not (isinstance(clip_eps, (int, float)) and 0 < clip_eps < 1):
        raise ValueError(f"policy loss {name!r}: option clip_eps must be None or in (0, 1), got {clip_eps!r}")
    _choice(level, ROVER_LEVELS, "level", name)
    mask = _mask(batch, name)  # (P, G, T)
    lp = _require(batch, "logprobs", name, "current-policy log-probs of the sampled tokens")
    lp = _where(mask, lp)  # (P, G, T)
    old = lp.detach() if batch.old_logprobs is None else _where(mask, batch.old_logprobs.detach())  # (P, G, T)
    adv = _broadcast_advantages(advantages, mask, name)  # (P, G, T)
    scored = batch.scored.to(lp.dtype)  # (P, G)
    fmask = mask.to(lp.dtype)  # (P, G, T)

    log_ratio = rho * (lp - old)  # (P, G, T)
    metrics: dict[str, float] = {}
    if level == "response":
        lengths = fmask.sum(-1).clamp_min(1)  # (P, G)
        seq_q = (log_ratio * fmask).sum(-1) / lengths  # (P, G)
        residual = (seq_q - adv[..., 0]) ** 2 * scored  # (P, G)
        loss = residual.mean()
        metrics["q_mean"] = _scalar(masked_mean(log_ratio.detach(), mask))
        metrics["rover_loss"] = _scalar(loss)
        return LossOutput(loss=loss, metrics=metrics)

    if next_q_scale != 0:
        cur = _require(batch, "vocab_mean_logprobs", name, "mean_v log pi(v|s) of the current policy's logits")
        prev = _require(batch, "old_vocab_mean_logprobs", name, "mean_v log pi_old(v|s) of the old policy's logits")
        next_value = rover_next_value(_where(mask, cur), _where(mask, prev), mask, rho)  # (P, G, T)
    else:
        next_value = torch.zeros_like(lp.detach())  # (P, G, T)
    target = (adv + next_q_scale * next_value).detach()  # (P, G, T)
    q = log_ratio  # (P, G, T)
    if clip_eps is not None:
        high, low = math.log(1.0 + clip_eps), math.log(1.0 - clip_eps)
        above = (target > log_ratio) & (log_ratio > high)  # (P, G, T)
        below = (target < log_ratio) & (log_ratio < low)  # (P, G, T)
        q = torch.where(above, torch.full_like(q, high), torch.where(below, torch.full_like(q, low), q))  # (P, G, T)
        metrics["clip_frac"] = _scalar(masked_mean((above | below).to(lp.dtype), mask))
    q = q * fmask  # (P, G, T)
    squared = (q - target) ** 2 * scored.unsqueeze(-1)  # (P, G, T)
    loss = masked_mean(squared, mask)
    metrics.update(
        {
            "rover_loss": _scalar(loss),
            "q_mean": _scalar(masked_mean(q.detach(), mask)),
            "next_value_mean": _scalar(masked_mean(next_value, mask)),
            "target_mean": _scalar(masked_mean(target, mask)),
        }
    )
    return LossOutput(loss=loss, metrics=metrics)
