"""DRA-GRPO: diversity-aware reward adjustment (Chen et al., arXiv 2505.09655), registered as ``dra``.

Each reward is divided by one plus the rollout's summed similarity to the other members of its group (the paper's
graph-cut submodular mutual information between the rollout and the rest of the group), then a base estimator
(GRPO: DRA-GRPO; ``dr_grpo``: DRA-DR.GRPO) runs on the adjusted rewards. The similarity kernel is the one ``setpo``
uses (:func:`divrl.core.advantages._setpo_kernel`): cosine of ``GroupBatch.embeddings`` or n-gram Jaccard of
``GroupBatch.texts``.

Dimension letters: P prompts, G rollouts per prompt, D embedding width (see :mod:`divrl.core.batch`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from divrl.core.advantages import _call, _setpo_kernel, kernel_needs, register_advantage, with_base_needs
from divrl.core.batch import GroupBatch
from divrl.core.needs import Needs

__all__ = ["dra", "dra_needs", "dra_weights"]


def dra_needs(options: Mapping[str, Any]) -> Needs:
    """What ``dra`` reads with ``options``: the kernel's field (``embeddings`` for ``kernel="cosine"``, ``texts`` for
    ``"ngram"``, the default) plus its base estimator's needs."""
    return with_base_needs(Needs.of(kernel_needs(options.get("kernel", "ngram"))), "dra", options)


def dra_weights(
    batch: GroupBatch,
    *,
    kernel: Literal["cosine", "ngram"] = "ngram",
    clamp: bool = False,
    eps: float = 1e-6,
    ngram: int = 3,
    ngram_unit: Literal["char", "token"] = "char",
) -> Tensor:
    """(P, G) DRA reward weights ``w_i = 1 / (sum_{j in group} k_ij + eps)``, the sum including ``k_ii = 1``.

    That is ``1 / (1 + SMI({o_i}, C \\ {o_i}) + eps)`` with the graph-cut SMI ``sum_{j != i} k_ij`` (the paper;
    the official code sums the full similarity row, diagonal included, and adds ``eps = 1e-6``). Only the
    scored rollouts of a group are in ``C`` (an unscorable rollout's row and column are never read; its weight is
    1, and its NaN reward stays NaN).

    Args:
        kernel: ``"cosine"`` (official: cosine of L2-normalised sentence embeddings) or ``"ngram"`` (character or
            token n-gram Jaccard of the texts: ours, weight-free; the default, so an embedder alone changes nothing).
        clamp: clamp the cosine to [0, 1] (``setpo``'s kernel). Default ``False``: the official raw cosine, which
            can be negative, so ``1 + SMI`` can approach 0 (the n-gram kernel is in [0, 1] either way).
        eps: added to the denominator (official: 1e-6).
        ngram, ngram_unit: the n-gram kernel's settings (see :func:`divrl.core.diversity.ngram_kernel`).
    """
    if not eps >= 0:
        raise ValueError(f"dra: eps must be >= 0, got {eps!r}")
    k = _setpo_kernel(batch, kernel, ngram, ngram_unit, who="dra", clamp=clamp)  # (P, G, G)
    scored = batch.scored.to(k.device)  # (P, G)
    rowsum = (k * scored[:, None, :].to(k.dtype)).sum(-1)  # (P, G)  sum over scored j, j = i included
    weights = 1.0 / (rowsum + eps)  # (P, G)
    weights = torch.where(scored, weights, torch.ones_like(weights))  # (P, G)
    return weights.to(dtype=batch.rewards.dtype, device=batch.rewards.device)  # (P, G)


@register_advantage("dra", handles_unscored=True, needs=dra_needs)
def dra(
    batch: GroupBatch,
    *,
    base: str = "grpo",
    base_options: dict[str, Any] | None = None,
    kernel: Literal["cosine", "ngram"] = "ngram",
    clamp: bool = False,
    eps: float = 1e-6,
    ngram: int = 3,
    ngram_unit: Literal["char", "token"] = "char",
) -> Tensor:
    """DRA-GRPO: diversity-aware reward adjustment, then a base estimator (Chen et al., arXiv 2505.09655).

    Evidence: [code]; the paper's equation (below) only as quoted by a summary (2nd-hand), which agrees::

        R~(q, o_i) = R(q, o_i) / (1 + SMI({o_i}, C \\ {o_i})),   SMI = sum_{j != i} s(o_i, o_j)   (graph cut)

    with ``s`` the cosine similarity of sentence embeddings; then GRPO (or Dr. GRPO) on ``R~``. The official code
    (``xiwenc1/DRA-GRPO``, ``src/open_r1/trl/trainer/grpo_trainer.py`` and ``drgrpo_trainer.py``) computes the
    same thing as ``rewards * 1 / (sim.sum(dim=1) + 1e-6)`` with the diagonal ``s_ii = 1`` inside the row sum and
    the raw (unclamped) cosine; this is :func:`dra_weights`. A third-party port (``grpo-composer``) documents
    ``R * (1 - SMI)`` in its module docstring and computes ``R / (1 + SMI)``: we follow the official code, and the
    two forms of the official one agree.

    One deviation from the official code, where it disagrees with the paper: it computes the similarity over each
    process's slice of the generation batch, not over a prompt's group (its recipe: 6 generations per prompt,
    4 completions per device, so a slice mixes two prompts' rollouts). We take the paper's group. The official
    GRPO base divides by ``std + 1e-4`` (TRL 0.14's constant); ``grpo``'s default is verl's ``1e-6``: the recipe
    sets ``base_options: {eps: 1.0e-4}``.

    Unscorable rollouts: the similarity sum runs over the scored rollouts of the group only, and the base
    estimator takes its statistics over them (as it does on its own), so a group of G with c scored gets what
    the group of those c alone gets.

    Args:
        base: any registered estimator but ``dra``, called through the registry on the adjusted rewards with
            ``base_options`` (``grpo``: DRA-GRPO; ``dr_grpo``: DRA-DR.GRPO).
        kernel, clamp, eps, ngram, ngram_unit: the weights, see :func:`dra_weights`.

    Note:
        Rewards are multiplied, not shifted: as in the official code a negative reward times a weight below 1
        moves towards 0, i.e. a redundant wrong answer is penalised less. With orthogonal embeddings (``k = I``)
        and ``eps = 0`` every weight is 1 and this is the base estimator; with any group-constant row sum the
        weights are a group constant, which GRPO's std division cancels up to its ``eps``.
    """
    if base == "dra":
        raise ValueError("dra: base must be another estimator, not 'dra' itself")
    weights = dra_weights(batch, kernel=kernel, clamp=clamp, eps=eps, ngram=ngram, ngram_unit=ngram_unit)  # (P, G)
    adjusted = batch.replace(rewards=batch.rewards * weights)  # (P, G)  NaN stays NaN
    return _call(base, adjusted, dict(base_options or {}))  # (P, G)
