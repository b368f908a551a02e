"""DSDR: dual-scale diversity regularization (Wan et al., arXiv 2602.19895) -- **reconstructed**.

Two registered parts that a recipe composes:

- the advantage estimator ``dsdr`` (global scale): a clipped diversity bonus added to the reward of each *correct*
  rollout, then a base estimator (GRPO);
- the loss term ``dsdr_entropy`` (local scale, with the global-to-local coupling): a length-invariant token-entropy
  bonus on correct rollouts only, each weighted by a softmax of its diversity among its group's correct rollouts.

Evidence: **reconstructed**. The abstract (read) states the three parts: diversity among correct trajectories
(global), a length-invariant token-level entropy regularization restricted to correct trajectories (local), and a
global-to-local allocation that gives more local regularization to more distinctive correct trajectories, with the
bonus bounded so that optimal correctness is preserved. Secondary summaries (neighbours-and-frameworks.md §2:
"clipped diversity bonus on correct trajectories + correct-only, length-invariant token entropy weighted by
softmax(diversity)"; two public digests: embedding and formula diversity) agree. The official code
(``SUSTechBruce/DSDR``) could not be fetched here and the paper's method section was not readable, so the equations,
the diversity measure and every default are ours, each a named option. Agreement with the official arithmetic is
**not** tested.

Dimension letters: P prompts, G rollouts per prompt, T tokens (see :mod:`divrl.core.batch`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from divrl.core.advantages import _call, _setpo_kernel, kernel_needs, register_advantage, with_base_needs
from divrl.core.batch import GroupBatch
from divrl.core.losses import LossOutput, _mask, _require, _where, aggregate, register_loss
from divrl.core.needs import Needs

__all__ = ["dsdr", "dsdr_diversity", "dsdr_entropy_loss", "dsdr_entropy_needs", "dsdr_needs", "dsdr_weights"]

Kernel = Literal["cosine", "ngram"]


def _correct(batch: GroupBatch, who: str) -> Tensor:
    """(P, G) bool: correct and scored (an unscorable rollout is never correct)."""
    if batch.correct is None:
        raise ValueError(f"{who} needs GroupBatch.correct (P, G) bool: its diversity is among correct rollouts")
    return batch.correct & batch.scored


def dsdr_diversity(
    batch: GroupBatch, *, kernel: Kernel = "ngram", ngram: int = 3, ngram_unit: Literal["char", "token"] = "char"
) -> Tensor:
    """(P, G) diversity of each correct rollout among its group's correct rollouts (reconstructed; ours)::

        d_i = mean_{j in C, j != i} (1 - k_ij)     for i in C (the correct scored rollouts of the group), |C| >= 2

    and 0 for every other rollout (incorrect, unscorable, or the only correct one of its group). ``k`` is the kernel
    ``setpo`` uses (:func:`divrl.core.advantages._setpo_kernel`): cosine of ``GroupBatch.embeddings`` clamped to
    [0, 1] (the paper's semantic diversity) or character n-gram Jaccard of ``GroupBatch.texts`` (``"ngram"``, ours,
    weight-free; the default). So ``d`` is in [0, 1]. Only the rows and columns of correct rollouts are read
    (declared: :attr:`~divrl.core.needs.Needs.embed_rows` ``"correct"``, so a trainer embeds only those).
    """
    correct = _correct(batch, "dsdr")  # (P, G)
    k = _setpo_kernel(batch, kernel, ngram, ngram_unit, who="dsdr")  # (P, G, G)
    c = correct.to(device=k.device, dtype=k.dtype)  # (P, G)
    g = k.shape[-1]
    off = 1.0 - torch.eye(g, dtype=k.dtype, device=k.device)  # (G, G)  j != i
    dist = (1.0 - k) * off * c[:, None, :]  # (P, G, G)  to the other correct rollouts only
    others = c.sum(-1, keepdim=True) - 1.0  # (P, 1)
    d = dist.sum(-1) / others.clamp(min=1.0)  # (P, G)
    d = torch.where(correct.to(k.device) & (others >= 1.0), d, torch.zeros_like(d))  # (P, G)
    return d.to(dtype=batch.rewards.dtype, device=batch.rewards.device)  # (P, G)


def _kernel_reads(options: Mapping[str, Any]) -> set[str]:
    return kernel_needs(options.get("kernel", "ngram")) | {"correct"}


def dsdr_needs(options: Mapping[str, Any]) -> Needs:
    """``dsdr`` reads ``correct``, the kernel's field (``texts``, the default; ``embeddings`` with
    ``kernel="cosine"``) of correct rollouts only, and its base estimator's needs."""
    return with_base_needs(Needs.of(_kernel_reads(options), (), "correct"), "dsdr", options)


def _finite_nonneg(value: Any, option: str, who: str) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{who}: option {option} must be a finite number >= 0, got {value!r}")
    return float(value)


@register_advantage("dsdr", handles_unscored=True, needs=dsdr_needs)
def dsdr(
    batch: GroupBatch,
    *,
    base: str = "grpo",
    base_options: dict[str, Any] | None = None,
    lam: float = 1.0,
    bonus_max: float = 0.5,
    kernel: Kernel = "ngram",
    ngram: int = 3,
    ngram_unit: Literal["char", "token"] = "char",
) -> Tensor:
    """DSDR's global scale: a clipped diversity bonus on correct rollouts, then ``base`` (arXiv 2602.19895) --
    **reconstructed** (see the module docstring)::

        r'_i = r_i + 1[i correct] * clip(lam * d_i, 0, bonus_max)      # d_i: dsdr_diversity, in [0, 1]
        A    = base(r')                                                  # grpo

    The bound keeps every correct rollout's shaped reward below ``r_correct + bonus_max``, so with
    ``bonus_max`` under the reward gap between a correct and an incorrect rollout (1 on Countdown) no incorrect
    rollout overtakes a correct one (the paper's "optimal correctness under bounded regularization"); and a group
    whose rollouts are all correct, which GRPO gives zero advantages, gets a signal from their diversity (the
    paper's "informative learning signals"). ``lam = 1``, ``bonus_max = 0.5`` and the kernel are ours.

    Unscorable rollouts are never correct and get no bonus; their NaN reward stays NaN, and the base estimator
    takes its statistics over the scored ones (as it does on its own); ``d`` is over the correct scored ones.

    Note:
        With ``lam = 0`` this is ``base``. When every correct rollout of a group has the same ``d`` (e.g. identical
        texts, ``d = 0``), the bonus is a constant added to the correct rollouts' rewards; with 0/1 rewards that
        is an affine map of the group's rewards, which ``grpo`` cancels up to its ``eps``.
    """
    who = "dsdr"
    if base == "dsdr":
        raise ValueError("dsdr: base must be another estimator, not 'dsdr' itself")
    lam = _finite_nonneg(lam, "lam", who)
    bonus_max = _finite_nonneg(bonus_max, "bonus_max", who)
    d = dsdr_diversity(batch, kernel=kernel, ngram=ngram, ngram_unit=ngram_unit)  # (P, G)
    correct = _correct(batch, who).to(d.dtype)  # (P, G)
    bonus = (lam * d).clamp(0.0, bonus_max) * correct  # (P, G)
    shaped = batch.replace(rewards=batch.rewards + bonus)  # (P, G)  NaN stays NaN
    return _call(base, shaped, dict(base_options or {}))  # (P, G)


# ---------------------------------------------------------------------------------------------
# Local scale: the loss term


COUPLINGS = ("softmax", "uniform")


def dsdr_entropy_needs(options: Mapping[str, Any]) -> Needs:
    """``dsdr_entropy`` reads the mask, the full-vocabulary entropies (with grad) and ``correct``; with
    ``coupling="softmax"`` also the kernel's field of correct rollouts (``texts``, or ``embeddings``)."""
    if options.get("coupling", "softmax") == "softmax":
        return Needs.of(_kernel_reads(options) | {"mask", "entropies"}, (), "correct")
    return Needs.of({"mask", "entropies", "correct"})


def dsdr_weights(
    batch: GroupBatch,
    *,
    coupling: str = "softmax",
    tau: float = 1.0,
    kernel: Kernel = "ngram",
    ngram: int = 3,
    ngram_unit: Literal["char", "token"] = "char",
) -> Tensor:
    """(P, G) global-to-local weights of the correct rollouts (reconstructed; 0 for the others)::

        w_i = |C| * softmax_{j in C}(d_j / tau)_i       coupling="softmax"
        w_i = 1                                         coupling="uniform" (no coupling: the ablation)

    for the correct scored rollouts C of the group. The factor ``|C|`` (ours) keeps the weights' mean over C at 1,
    so that equal diversities give every correct rollout weight 1 and ``eta`` means what R1-zero-Div's ``lam`` means.
    """
    if coupling not in COUPLINGS:
        raise ValueError(f"dsdr_entropy: coupling must be one of {list(COUPLINGS)}, got {coupling!r}")
    correct = _correct(batch, "dsdr_entropy")  # (P, G)
    if coupling == "uniform":
        return correct.to(batch.rewards.dtype)  # (P, G)
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"dsdr_entropy: option tau must be a finite number > 0, got {tau!r}")
    d = dsdr_diversity(batch, kernel=kernel, ngram=ngram, ngram_unit=ngram_unit)  # (P, G)
    logits = torch.where(correct, d / tau, torch.full_like(d, -math.inf))  # (P, G)
    any_correct = correct.any(-1, keepdim=True)  # (P, 1)
    soft = torch.softmax(torch.where(any_correct, logits, torch.zeros_like(logits)), dim=-1)  # (P, G)
    count = correct.sum(-1, keepdim=True).to(d.dtype)  # (P, 1)
    return torch.where(correct, soft * count, torch.zeros_like(soft))  # (P, G)


@register_loss("dsdr_entropy", needs=dsdr_entropy_needs)
def dsdr_entropy_loss(
    batch: GroupBatch,
    advantages: Tensor,
    *,
    eta: float = 0.01,
    coupling: str = "softmax",
    tau: float = 1.0,
    kernel: Kernel = "ngram",
    ngram: int = 3,
    ngram_unit: Literal["char", "token"] = "char",
) -> LossOutput:
    """DSDR's local scale with its global-to-local coupling (arXiv 2602.19895) -- **reconstructed**::

        Hbar_i = (1/T_i) sum_t H_it                  # length-invariant: the mean full-vocabulary entropy of i
        J      = (1/N) sum_i w_i Hbar_i              # w: dsdr_weights (0 for incorrect), N = sequences with tokens
        loss   = -eta * J

    ``H`` is ``batch.entropies`` (the current policy's full-vocabulary token entropies, with grad; ``divrl train``
    computes them in the training forward, no extra pass). Add it to a ``ppo`` term; ``advantages`` is unused.
    ``eta = 0.01`` (ours: R1-zero-Div's ``lam``), ``tau = 1`` (ours). The diversity options (``kernel``, ...) should
    match those of the ``dsdr`` estimator (the recipe sets both).

    Note:
        With ``coupling="uniform"``, or equal diversities within every group, this is ``positive_entropy`` with
        ``estimator="exact"``, ``gate="correct"`` and ``lam=eta``.

    Metrics: ``div_term`` (``J``), ``weight_max`` (the largest weight), ``correct_frac``.
    """
    name = "dsdr_entropy"
    if not (isinstance(eta, (int, float)) and math.isfinite(eta)):
        raise ValueError(f"policy loss {name!r}: option eta must be finite, got {eta!r}")
    mask = _mask(batch, name)  # (P, G, T)
    entropies = _require(batch, "entropies", name, "full-vocabulary token entropies")
    h = _where(mask, entropies)  # (P, G, T)
    w = dsdr_weights(batch, coupling=coupling, tau=tau, kernel=kernel, ngram=ngram, ngram_unit=ngram_unit)  # (P, G)
    w = w.to(dtype=h.dtype, device=h.device).unsqueeze(-1).expand_as(h)  # (P, G, T)
    j = aggregate(w * h, mask, "seq-mean-token-mean")
    metrics = {
        "div_term": float(j.detach()),
        "weight_max": float(w.max()) if w.numel() else 0.0,
        "correct_frac": float(_correct(batch, name).float().mean()),
    }
    return LossOutput(loss=-eta * j, metrics=metrics)
