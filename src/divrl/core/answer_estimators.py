"""Estimators over the final-answer classes of a group: ``outcome_batch`` and ``seed_grpo``.

Both read, per group, which rollouts share a final answer: ``batch.answers`` (``classes="answers"``: equal strings
share a class) or any partition (``classes="partition"``: ``batch.partition`` labels, e.g. the canonical form of a
Countdown expression or a learned equivalence). Classes are counted among the group's *scored* rollouts only.

Dimension letters: P prompts, G rollouts per prompt, T tokens (see :mod:`divrl.core.batch`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from divrl.core.advantages import Scale, _normalise, _scored, register_advantage
from divrl.core.batch import GroupBatch
from divrl.core.diversity import partition_by_key
from divrl.core.needs import Needs

__all__ = ["answer_class_sizes", "outcome_batch", "seed_grpo", "semantic_entropy"]

Classes = Literal["answers", "partition"]
Missing = Literal["one_class", "own_class"]
_NO_ANSWER = ("divrl:no-answer",)  # the key every missing answer shares with missing="one_class"


def _class_needs(options: Mapping[str, Any]) -> set[str]:
    return {"partition"} if options.get("classes", "answers") == "partition" else {"answers"}


def answer_class_sizes(
    batch: GroupBatch, classes: Classes = "answers", missing: Missing = "one_class", who: str = "estimator"
) -> tuple[Tensor, Tensor]:
    """(P, G) class labels and (P, G) class sizes counted among each group's scored rollouts.

    ``size[p, i]`` is the number of scored rollouts of group p in rollout i's class (i itself included when
    scored); it is 0 where i is unscored. ``classes="answers"``: equal answer strings share a class; a missing
    answer (``None``) joins every other missing answer (``missing="one_class"``: "no answer" is one outcome, ours)
    or is a class of its own (``"own_class"``, as :func:`~divrl.core.diversity.partition_by_key`).
    ``classes="partition"``: ``batch.partition`` as given."""
    if classes == "answers":
        if batch.answers is None:
            raise ValueError(
                f"{who} needs GroupBatch.answers (P lists of G final answers, None where none was found), or the "
                "option classes='partition' with GroupBatch.partition"
            )
        if missing not in ("one_class", "own_class"):
            raise ValueError(f"{who}: missing must be 'one_class' or 'own_class', got {missing!r}")
        keys = [[_NO_ANSWER if a is None and missing == "one_class" else a for a in row] for row in batch.answers]
        labels = torch.tensor([partition_by_key(row) for row in keys], dtype=torch.long)  # (P, G)
    elif classes == "partition":
        if batch.partition is None:
            raise ValueError(
                f"{who} with classes='partition' needs GroupBatch.partition: (P, G) integer class labels per group"
            )
        labels = batch.partition.to(torch.long)  # (P, G)
    else:
        raise ValueError(f"{who}: classes must be 'answers' or 'partition', got {classes!r}")
    scored = batch.scored.to(labels.device)  # (P, G)
    same = labels[:, :, None] == labels[:, None, :]  # (P, G, G)
    size = (same & scored[:, None, :]).sum(-1) * scored  # (P, G)  scored members of i's class; 0 if i unscored
    return labels, size


# ---------------------------------------------------------------------------------------------
# Outcome-based exploration, batch variant
# ---------------------------------------------------------------------------------------------


def _outcome_batch_needs(options: Mapping[str, Any]) -> Needs:
    reads = _class_needs(options)
    if options.get("gate", "all") != "all":
        reads.add("correct")
    return Needs.of(reads)


@register_advantage("outcome_batch", handles_unscored=True, needs=_outcome_batch_needs)
def outcome_batch(
    batch: GroupBatch,
    *,
    coef: float = 0.5,
    scale: Scale = "group",
    classes: Classes = "answers",
    missing: Missing = "one_class",
    gate: Literal["all", "correct", "incorrect"] = "all",
    unbiased: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """Outcome-based exploration, batch variant (Song, Kempe & Munos, arXiv 2509.06941, §"batch exploration").

    Evidence: **reconstructed**. The abstract confirms a penalty on final answers repeated within the batch
    (the rollouts of one question); the formula below is the reconstruction in the project's research notes
    (related-methods.md §6), not read in the paper body, and no official code was found::

        dup_i = (1/(G-1)) Σ_{j≠i} 1[a_j = a_i]       # share of the other rollouts with i's final answer
        r'_i  = r_i - coef · 1[gate_i] · dup_i
        A_i   = (r'_i - mean_g r') / (std_g r' + eps)  # GRPO normalisation (scale="group")

    A group whose answers are all distinct (dup = 0) or all the same (dup = 1, a constant) gets the ``grpo``
    advantage. Call it "Outcome-batch (reconstructed)" in results.

    Args:
        coef: the penalty weight ``c_b`` (>= 0). The paper's value was not confirmed; 0.5 is ours (a repeated
            wrong answer then ranks below a unique wrong one, a repeated correct one stays above every wrong).
        scale: ``"group"`` (GRPO, default, as the notes reconstruct), ``"batch"`` or ``"none"`` (Dr. GRPO).
        classes: ``"answers"`` (default: ``batch.answers``, equal strings share a class) or ``"partition"``
            (``batch.partition``, e.g. canonical forms or a learned equivalence; the way to run it where a setting
            provides a partition but no answers, as the TRL and verl adapters).
        missing: a missing answer (``None``) is one shared outcome (``"one_class"``, default, ours: otherwise
            failing to answer would dodge the penalty) or a class of its own (``"own_class"``).
        gate: which rollouts the penalty applies to: ``"all"`` (default, as the notes reconstruct), ``"correct"``
            or ``"incorrect"`` (ours; repeats are still counted over every scored rollout). With ``scale="group"``
            and ``gate="all"`` a group whose rewards are all equal (all wrong) gets advantages set by the penalty
            alone, at unit size and independent of ``coef`` (the std division cancels it); ``"correct"`` leaves
            such a group at GRPO's 0 (docs/results.md: on Countdown the ungated form costs pass@1 there).
        unbiased, eps: as in ``grpo``.

    Unscorable rollouts: ``G`` is the group's number c of scored rollouts and the repeats are counted among them
    (an unscorable rollout repeats nobody's answer); mean and std over them.
    """
    if not (isinstance(coef, (int, float)) and math.isfinite(coef) and coef >= 0):
        raise ValueError(f"outcome_batch: coef must be a finite number >= 0, got {coef!r}")
    if gate not in ("all", "correct", "incorrect"):
        raise ValueError(f"outcome_batch: gate must be 'all', 'correct' or 'incorrect', got {gate!r}")
    if gate != "all" and batch.correct is None:
        raise ValueError(f"outcome_batch: gate={gate!r} needs GroupBatch.correct (P, G) bool")
    r = batch.rewards  # (P, G)
    _, size = answer_class_sizes(batch, classes, missing, "outcome_batch")  # (P, G)
    c = batch.scored.sum(-1, keepdim=True).to(r.dtype)  # (P, 1)
    dup = (size.to(r.dtype) - 1).clamp(min=0) / (c - 1).clamp(min=1)  # (P, G)  in [0, 1]
    if gate != "all":
        correct = batch.correct.to(device=dup.device, dtype=torch.bool)  # type: ignore[union-attr]  # (P, G)
        dup = dup * (correct if gate == "correct" else ~correct).to(dup.dtype)  # (P, G)
    return _normalise(r - coef * dup.to(r.device), _scored(batch), scale, unbiased, eps)  # (P, G)


# ---------------------------------------------------------------------------------------------
# SEED-GRPO
# ---------------------------------------------------------------------------------------------


def _seed_grpo_needs(options: Mapping[str, Any]) -> Needs:
    reads = _class_needs(options)
    if options.get("entropy", "counts") == "logprob":
        reads |= {"old_logprobs", "mask"}
    return Needs.of(reads)


def semantic_entropy(
    batch: GroupBatch,
    entropy: Literal["counts", "logprob"] = "counts",
    classes: Classes = "answers",
    missing: Missing = "one_class",
) -> tuple[Tensor, Tensor]:
    """(P,) semantic entropy of each group's answer classes over its scored rollouts, and (P,) its maximum log c.

    ``"counts"``: ``SE = -Σ_k p_k log p_k`` with ``p_k = |C_k| / c`` (the frequency estimator).
    ``"logprob"``: SEED-GRPO's Monte-Carlo form ``SE = -(1/K) Σ_k log p(C_k)`` with
    ``p(C_k) = Σ_{i∈C_k} exp(ℓ_i) / Σ_j exp(ℓ_j)``, ``ℓ_i`` the mean old token log-prob of rollout i (length
    normalised, normalised over the group's scored rollouts)."""
    if entropy not in ("counts", "logprob"):
        raise ValueError(f"seed_grpo: entropy must be 'counts' or 'logprob', got {entropy!r}")
    labels, size = answer_class_sizes(batch, classes, missing, "seed_grpo")  # (P, G) each
    scored = batch.scored  # (P, G)
    c = scored.sum(-1).to(torch.float64)  # (P,)
    sz = size.to(torch.float64).clamp(min=1)  # (P, G)
    if entropy == "counts":
        terms = torch.where(scored, torch.log(sz / c.clamp(min=1)[:, None]), torch.zeros_like(sz))  # (P, G)
        se = -terms.sum(-1) / c.clamp(min=1)  # (P,)  -(1/c) Σ_i log p_{k(i)} = -Σ_k p_k log p_k
    else:
        if batch.old_logprobs is None or batch.mask is None:
            raise ValueError("seed_grpo with entropy='logprob' needs GroupBatch.old_logprobs and GroupBatch.mask")
        mask = batch.mask.bool()  # (P, G, T)
        lp = torch.where(mask, batch.old_logprobs, torch.zeros_like(batch.old_logprobs)).to(torch.float64)
        ell = lp.sum(-1) / mask.sum(-1).clamp(min=1)  # (P, G)  length-normalised sequence log-prob
        w = torch.where(scored, ell, torch.full_like(ell, -math.inf)).softmax(-1)  # (P, G)  0 where unscored
        w = torch.nan_to_num(w, nan=0.0)  # a group with nothing scored
        same = (labels[:, :, None] == labels[:, None, :]) & scored[:, None, :]  # (P, G, G)
        mass = (same.to(torch.float64) * w[:, None, :]).sum(-1)  # (P, G)  p(C(i))
        # Σ_k log p(C_k) = Σ_{i scored} log p(C(i)) / |C(i)|;  K = Σ_{i scored} 1 / |C(i)|
        log_mass = torch.where(scored, torch.log(mass.clamp(min=1e-300)) / sz, torch.zeros_like(sz))  # (P, G)
        k = torch.where(scored, 1 / sz, torch.zeros_like(sz)).sum(-1)  # (P,)
        se = -log_mass.sum(-1) / k.clamp(min=1)  # (P,)
    se_max = torch.log(c.clamp(min=1))  # (P,)  all c answers distinct
    return se, se_max


@register_advantage("seed_grpo", handles_unscored=True, needs=_seed_grpo_needs)
def seed_grpo(
    batch: GroupBatch,
    *,
    alpha: float = 0.5,
    f: Literal["linear", "exp", "inverse"] = "linear",
    entropy: Literal["counts", "logprob"] = "counts",
    scale: Scale = "none",
    classes: Classes = "answers",
    missing: Missing = "one_class",
    unbiased: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """SEED-GRPO: group advantages scaled down by the semantic entropy of the group's answers
    (Chen, Chen, Wang & Yang, arXiv 2505.12346, §3).

    Evidence: **2nd-hand** (two reviews of the paper agree on the form; the paper body's function shapes and
    defaults were not read, and no official code was found: OpenReview says it "will be publicly released")::

        A_i   = r_i - mean_g(r)                       # the reviews show no std (scale="none")
        SE(q) = semantic entropy of the group's answer classes     (see `entropy`)
        Â_i   = A_i · f(alpha · SE(q) / SE_max(q)),   SE_max = log G (every answer distinct)

    High entropy (many different answers) gives a smaller update; a group with one answer class gets the base
    advantage (``dr_grpo``, or ``grpo`` with ``scale="group"``). ``SE / SE_max`` is clipped to [0, 1] (it can
    exceed 1 only with ``entropy="logprob"``; ours).

    Args:
        alpha: sensitivity to the entropy, >= 0 (``linear``: at most 1, else the sign of an advantage could flip).
            The paper's value was not confirmed; 0.5 is ours (a group of all-distinct answers keeps half its update).
        f: the decreasing function: ``"linear"`` ``1 - u`` (default), ``"exp"`` ``exp(-u)``, ``"inverse"``
            ``1 / (1 + u)`` (the form of a third-party re-implementation). The reviews name "linear, exponential
            or focal" without the formulas; the focal shape is not offered.
        entropy: ``"counts"`` (default, ours: the frequency estimator ``-Σ p_k log p_k`` with ``p_k = |C_k|/G``,
            needs only the classes) or ``"logprob"`` (the paper's Monte-Carlo estimator
            ``-(1/K) Σ_k log p(C_k)`` with ``p(C_k)`` the old policy's probability mass of class k; the mass uses
            length-normalised sequence probabilities normalised over the group, as the third-party
            re-implementation does; needs ``old_logprobs`` and ``mask``).
        scale: the base advantage's std division: ``"none"`` (default, the reviews), ``"group"`` (GRPO) or
            ``"batch"``.
        classes, missing: as in ``outcome_batch``.
        unbiased, eps: as in ``grpo``.

    Unscorable rollouts: the classes, their sizes (and masses) and ``SE_max = log c`` are over the group's c
    scored rollouts; the base advantage too.
    """
    if f not in ("linear", "exp", "inverse"):
        raise ValueError(f"seed_grpo: f must be 'linear', 'exp' or 'inverse', got {f!r}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"seed_grpo: alpha must be a finite number >= 0, got {alpha!r}")
    if f == "linear" and alpha > 1:
        raise ValueError(f"seed_grpo: alpha must be <= 1 with f='linear' (1 - alpha would be negative), got {alpha}")
    r = batch.rewards  # (P, G)
    se, se_max = semantic_entropy(batch, entropy, classes, missing)  # (P,) each
    u = alpha * torch.where(se_max > 0, (se / se_max.clamp(min=1e-12)).clamp(0.0, 1.0), torch.zeros_like(se))  # (P,)
    if f == "linear":
        factor = 1 - u
    elif f == "exp":
        factor = torch.exp(-u)
    else:
        factor = 1 / (1 + u)
    base = _normalise(r, _scored(batch), scale, unbiased, eps)  # (P, G)
    return base * factor.to(dtype=r.dtype, device=r.device)[:, None]  # (P, G)
