"""FlowRL: trajectory balance with a learned normaliser ``log Z`` (Zhu et al., "FlowRL: Matching Reward
Distributions for LLM Reasoning", arXiv 2509.15207; the GFlowNet trajectory-balance objective of FoR, Yu et al.,
arXiv 2406.05673), a policy loss that replaces the policy-gradient loss.

The policy is fitted to ``pi(y|x) ∝ exp(beta r(x, y)) pi_ref(y|x)`` by regressing, per trajectory,
``log Z(x) + log pi(y|x) - beta r(x, y) - log pi_ref(y|x)`` to 0, with ``log Z`` a small learned head on the
prompt's representation. Evidence: **code** (the maintained recipe ``verl-project/verl-recipe`` at ``48ea0a79``,
``flowrl/flowrl_actor.py::FlowRLActor.compute_flowrl`` and ``ProjZModule``; and the paper's own repository
``Xuekai-Zhu/FlowRL`` at ``decbc57b``, ``verl@FlowRL/verl/workers/actor/dp_actor.py::compute_flowrl_objective``);
the loss's shape ``w (log Z + (1/|y|) log pi - beta r^ - (1/|y|) log pi_ref)^2`` is the recipe README's; the
paper body was not read (its clipped importance weight is **2nd-hand**). The vendored arithmetic and an agreement
test are in ``tests/core/test_flowrl.py``; the learned head lives with the trainer (``divrl.models.log_z``), which
optimises it with the policy and saves it in every checkpoint.
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
    _require,
    _scalar,
    _where,
    register_loss,
)
from divrl.core.needs import Needs

__all__ = ["FLOWRL_WEIGHTS", "flowrl_head_options", "flowrl_loss"]

FLOWRL_WEIGHTS = ("cap", "raw", "clip", "none")


def _flowrl_needs(options: Mapping[str, Any]) -> Needs:
    """Log-probs, mask and the learned ``log_z``; reference log-probs unless ``reference: false``; old log-probs when
    set (the importance weight; None = on-policy)."""
    reads = {"logprobs", "mask", "log_z"}
    if options.get("reference", True) is not False:
        reads.add("ref_logprobs")
    return Needs.of(reads, {"old_logprobs"})


def flowrl_head_options(options: Mapping[str, Any]) -> tuple[int, float]:
    """``(z_layers, z_dropout)`` of a ``flowrl`` term's options (defaults 3 and 0.1, the recipe's ``ProjZModule``),
    checked; the trainer builds the log Z head from them."""
    layers = options.get("z_layers", 3)
    dropout = options.get("z_dropout", 0.1)
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"policy loss 'flowrl': option z_layers must be an integer >= 1, got {layers!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"policy loss 'flowrl': option z_dropout must be a number in [0, 1), got {dropout!r}")
    return layers, float(dropout)


@register_loss("flowrl", needs=_flowrl_needs)
def flowrl_loss(
    batch: GroupBatch,
    advantages: Tensor,
    *,
    beta: float = 15.0,
    length_norm: bool = True,
    weight: str = "cap",
    weight_cap: float = 10.0,
    clip_eps: float = 0.2,
    reference: bool = True,
    z_layers: int = 3,
    z_dropout: float = 0.1,
) -> LossOutput:
    """FlowRL's importance-weighted trajectory-balance loss. Per rollout i, with ``T_i`` its response tokens::

        L_i   = sum_t logp_it            (/ T_i with length_norm)       # log pi(y|x), length-normalised
        R_i   = sum_t ref_logp_it        (/ T_i with length_norm)       # log pi_ref(y|x); 0 with reference=False
        d_i   = log_z_i + L_i - beta * A_i - R_i                        # the trajectory-balance residual
        w_i   = stopgrad(exp(sum_t (logp_it - old_logp_it)))           # sequence importance weight, then `weight`
        loss  = (1/N) sum_i s_i w_i d_i^2                               # N = all P*G rollouts (official torch.mean)

    ``A`` are the ``advantages``: both official codes feed verl's GRPO advantage as the log-reward ``r^``
    ("we set R = exp(advantage)"); with token-level advantages, ``A_i`` is their mean over the response. ``log_z``
    (``GroupBatch.log_z``) carries grad into the learned head and, through the prompt's hidden states, into the
    policy (the official code does not detach them). The gradient with respect to ``log_z_i`` is ``2 w_i d_i / N``.

    Options (defaults follow ``verl-project/verl-recipe`` ``flowrl/``):
        beta: the reward scale (both official codes hard-code 15).
        length_norm: ``True`` (both official codes: token means of ``log pi`` and ``log pi_ref``) or ``False``: sums,
            the plain trajectory balance of FoR / GFlowNets.
        weight: the importance weight ``w``: ``cap`` (verl-recipe: ``min(w, weight_cap)``), ``raw`` (the paper's
            repository ``Xuekai-Zhu/FlowRL``: unclipped; its clipped weight is computed and unused), ``clip``
            (``clip(w, 1 - clip_eps, 1 + clip_eps)``: the paper's description as secondary sources report it, not
            read in the paper) or ``none`` (``w = 1``). On-policy (one optimiser step per batch) ``w = 1`` in all.
            ``log w`` is clamped to at most 20 before ``exp`` (ours: an overflow guard; ``cap`` is unaffected).
        weight_cap: the cap of ``weight: cap`` (verl-recipe: 10).
        clip_eps: the range of ``weight: clip`` (the recipe's ``clip_ratio``, 0.2).
        reference: ``True`` (official) reads ``GroupBatch.ref_logprobs`` (the trainer loads the frozen reference
            policy); ``False`` drops ``log pi_ref`` (a uniform prior; ours, to save the reference forward).
        z_layers, z_dropout: the learned log Z head (``divrl.models.log_z.LogZHead``: the recipe's ``ProjZModule``,
            ``z_layers - 1`` blocks Linear-GELU-LayerNorm-Dropout then Linear to 1; defaults 3 and 0.1). Read by the
            trainer when it builds the head; not used in this arithmetic.

    Unscorable rollouts (NaN reward; ours, the official code has none): ``s_i = 0`` (no residual without a reward),
    still counted in ``N``, as ``ppo`` counts their tokens.

    Metrics: ``tb_loss`` (the value), ``log_z`` (mean), ``residual`` (mean ``d``), ``importance_weight`` (mean ``w``).
    """
    name = "flowrl"
    for option, value in (("beta", beta), ("weight_cap", weight_cap), ("clip_eps", clip_eps)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"policy loss {name!r}: option {option} must be a finite number, got {value!r}")
    if not weight_cap > 0:
        raise ValueError(f"policy loss {name!r}: option weight_cap must be > 0, got {weight_cap}")
    if not 0 < clip_eps < 1:
        raise ValueError(f"policy loss {name!r}: option clip_eps must be in (0, 1), got {clip_eps}")
    for option, flag in (("length_norm", length_norm), ("reference", reference)):
        if not isinstance(flag, bool):
            raise ValueError(f"policy loss {name!r}: option {option} must be true or false, got {flag!r}")
    _choice(weight, FLOWRL_WEIGHTS, "weight", name)
    flowrl_head_options({"z_layers": z_layers, "z_dropout": z_dropout})
    mask = _mask(batch, name)  # (P, G, T)
    lp = _where(mask, _require(batch, "logprobs", name, "current-policy log-probs of the sampled tokens"))  # (P, G, T)
    fmask = mask.to(lp.dtype)  # (P, G, T)
    old = lp.detach() if batch.old_logprobs is None else _where(mask, batch.old_logprobs.detach())  # (P, G, T)
    log_z = _require(batch, "log_z", name, "the learned log Z(x) (normaliser) of each prompt")  # (P, G)
    adv = _broadcast_advantages(advantages, mask, name)  # (P, G, T)
    lengths = fmask.sum(-1)  # (P, G)
    denom = lengths.clamp_min(1) if length_norm else torch.ones_like(lengths)  # (P, G)

    seq_lp = lp.sum(-1) / denom  # (P, G)
    if reference:
        ref = _where(mask, _require(batch, "ref_logprobs", name, "log pi_ref of the trajectory").detach())  # (P, G, T)
        seq_ref = ref.sum(-1) / denom  # (P, G)
    else:
        seq_ref = torch.zeros_like(seq_lp.detach())  # (P, G)
    # (P, G): A itself (exact also for a rollout without tokens), or the token mean of token-level advantages
    seq_reward = advantages.detach().to(seq_lp.dtype) if advantages.dim() == 2 else adv.sum(-1) / lengths.clamp_min(1)
    seq_reward = torch.where(batch.scored, seq_reward, torch.zeros_like(seq_reward))  # (P, G)
    delta = log_z + seq_lp - beta * seq_reward - seq_ref  # (P, G)

    with torch.no_grad():
        log_w = ((lp - old) * fmask).sum(-1).clamp(max=20.0)  # (P, G)
        w = torch.exp(log_w)  # (P, G)
        if weight == "cap":
            w = w.clamp(max=weight_cap)
        elif weight == "clip":
            w = w.clamp(1.0 - clip_eps, 1.0 + clip_eps)
        elif weight == "none":
            w = torch.ones_like(w)
        w = w * batch.scored.to(w.dtype)  # (P, G)
    loss = (w * delta**2).mean()
    metrics = {
        "tb_loss": _scalar(loss),
        "log_z": _scalar(log_z.mean()),
        "residual": _scalar(delta.mean()),
        "importance_weight": _scalar(w.mean()),
    }
    return LossOutput(loss=loss, metrics=metrics)
