"""Diversity signals on a group of G rollouts: partitions, similarity kernels, DARLING's
per-rollout diversity and SetPO's leave-one-out marginal contributions.

Dimension letters (see :mod:`divrl.core.batch`): P prompts, G rollouts per prompt, D embedding width.
Every tensor function accepts one group (leading shape ``(G, ...)``) or a batch (``(P, G, ...)``).

Evidence levels follow /work/shared/research/seed-methods.md: DARLING's partition and diversity
were read in the paper *and* the official code; the SetPO formula is **reconstructed** (the paper
body was not available), see :func:`setpo_marginal_contributions`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Literal, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

__all__ = [
    "cosine_kernel",
    "darling_diversity",
    "labels_tensor",
    "ngram_kernel",
    "partition",
    "partition_by_key",
    "setpo_marginal_contributions",
]


# ---------------------------------------------------------------------------------------------
# Partitions (semantic-equivalence classes)
# ---------------------------------------------------------------------------------------------


def partition(items: Sequence[T], equivalent: Callable[[T, T], bool]) -> list[int]:
    """Class labels of the transitive closure of a pairwise equivalence (DARLING's partition).

    DARLING (arXiv 2509.02534, §3 and official code ``partition_reward_vllm_serve.py``) asks a
    learned classifier about every unordered pair ``i < j`` and takes connected components with
    union-find, so ``a ~ b`` and ``b ~ c`` put ``a, b, c`` in one class even when ``a !~ c``. (This
    differs from NoveltyBench's *greedy* evaluation partition, which compares against class
    representatives only.)

    ``equivalent(items[i], items[j])`` is called only with ``i < j`` and is skipped for a pair that
    is already connected: the closure is the same, and the skipped calls are usually the expensive
    ones (a classifier forward pass each).

    Args:
        items: the G rollouts of one group (texts, answers, anything ``equivalent`` accepts).
        equivalent: symmetric predicate; only one ordering of each pair is queried.

    Returns:
        G canonical labels: classes are numbered 0, 1, 2, ... in order of first appearance.
    """
    n = len(items)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            ri, rj = find(i), find(j)
            if ri != rj and equivalent(items[i], items[j]):
                parent[max(ri, rj)] = min(ri, rj)
    return _canonical([find(i) for i in range(n)])


def partition_by_key(keys: Sequence[Hashable | None]) -> list[int]:
    """Class labels from an exact canonical form: equal keys share a class.

    The fast path when a task can compute a canonical key per solution (e.g. a normalised
    expression), replacing the O(G²) pairwise calls of :func:`partition`. A ``None`` key (no
    canonical form could be computed) is its own singleton class: it is never merged with another
    ``None``.

    Returns:
        G canonical labels, numbered in order of first appearance.
    """
    label_of: dict[Hashable, int] = {}
    labels: list[int] = []
    next_label = 0
    for key in keys:
        if key is None:
            labels.append(next_label)
            next_label += 1
        elif key in label_of:
            labels.append(label_of[key])
        else:
            label_of[key] = next_label
            labels.append(next_label)
            next_label += 1
    return labels


def labels_tensor(label_lists: Sequence[Sequence[int]]) -> Tensor:
    """Stack P lists of G labels into a ``(P, G)`` long tensor (``GroupBatch.partition``)."""
    if len(label_lists) == 0:
        raise ValueError("labels_tensor needs at least one group of labels, got an empty list")
    sizes = {len(row) for row in label_lists}
    if len(sizes) != 1:
        raise ValueError(f"labels_tensor: every group must have the same size G, got sizes {sorted(sizes)}")
    return torch.tensor([list(row) for row in label_lists], dtype=torch.long)  # (P, G)


def _canonical(roots: Sequence[int]) -> list[int]:
    first_seen: dict[int, int] = {}
    return [first_seen.setdefault(root, len(first_seen)) for root in roots]


# ---------------------------------------------------------------------------------------------
# DARLING
# ---------------------------------------------------------------------------------------------


def darling_diversity(labels: Tensor, floor: float = 0.1, members: Tensor | None = None) -> Tensor:
    """DARLING's per-rollout diversity ``div_i = max((G - |C(i)|) / (G - 1), floor)``.

    DARLING (arXiv 2509.02534) Eq. 4-5: the share of the *other* G - 1 rollouts that lie outside
    rollout i's equivalence class ``C(i)`` ("Norm" = division by G - 1). The ``floor`` (0.1) is
    **code-only** (``partition_reward_vllm_serve.py``); the paper does not mention it. Without it
    an all-equivalent correct group would get reward 0 and no learning signal.

    ``members`` restricts each group to a subset (ours; divrl passes the *scored* rollouts): the
    formula on that subset alone, i.e. ``G`` is the number of members and ``|C(i)|`` counts the
    members of i's class. Non-members get 0 and do not count in anyone's class.

    Args:
        labels: (G,) or (P, G) integer class labels (equal label = same class).
        floor: lower bound on the diversity, in [0, 1].
        members: optional (G,) or (P, G) bool mask of the rollouts taking part; ``None`` = all.

    Returns:
        (G,) or (P, G) float32 diversity in [floor, 1] (0 for a non-member). A group (or member set)
        of size 1 gets 1 (the official code would divide by zero).
    """
    if labels.dim() not in (1, 2):
        raise ValueError(f"darling_diversity: labels must have shape (G,) or (P, G), got {tuple(labels.shape)}")
    if torch.is_floating_point(labels) or labels.dtype is torch.bool:
        raise ValueError(f"darling_diversity: labels must be integers, got dtype {labels.dtype}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"darling_diversity: floor must be in [0, 1], got {floor}")
    same = labels[..., :, None] == labels[..., None, :]  # (..., G, G)
    if members is None:
        g = labels.shape[-1]
        if g == 1:
            return torch.ones(labels.shape, dtype=torch.float32, device=labels.device)
        class_size = same.sum(-1).to(torch.float32)  # (..., G)  |C(i)|, includes i itself
        return ((g - class_size) / (g - 1)).clamp(min=floor)  # (..., G)
    if members.dtype != torch.bool or members.shape != labels.shape:
        raise ValueError(
            f"darling_diversity: members must be a bool mask of shape {tuple(labels.shape)}, "
            f"got {members.dtype} {tuple(members.shape)}"
        )
    members = members.to(labels.device)
    class_size = (same & members[..., None, :]).sum(-1).to(torch.float32)  # (..., G)  members of C(i)
    n = members.sum(-1, keepdim=True).to(torch.float32)  # (..., 1)  members per group
    div = ((n - class_size) / (n - 1).clamp(min=1)).clamp(min=floor)  # (..., G)
    div = torch.where(n > 1, div, torch.ones_like(div))  # (..., G)  a set of one: 1
    return torch.where(members, div, torch.zeros_like(div))  # (..., G)


# ---------------------------------------------------------------------------------------------
# SetPO
# ---------------------------------------------------------------------------------------------


def setpo_marginal_contributions(kernel: Tensor, members: Tensor | None = None) -> Tensor:
    """Leave-one-out marginal contribution of each rollout to a set-level diversity (SetPO-style).

    **Reconstructed**, not read in the paper: SetPO (arXiv 2602.01062) was available only as an
    abstract ("kernelised similarity", "diminishing returns", "leave-one-out marginal
    contribution", "rarer trajectories get higher contributions"); the form below comes from a
    third-party port and notes (seed-methods.md §3.2). For a kernel with ``k_ii = 1``::

        m_i(S) = (1/|S|) Σ_{j∈S} k_ij                  # mean similarity of i to the set S
        D(S)   = (1/|S|) Σ_{i∈S} -log(1 + m_i(S))      # concave, decreasing shaping g(x) = -log(1+x)
        s_i    = D(Ω) - D(Ω \\ {i})                      # Ω = the whole group

    Closed form, with no loop over i: in ``Ω \\ {i}`` the mean similarity of ``j`` is
    ``(rowsum_j - k_ji) / (|Ω| - 1)``, so ``D(Ω \\ {i})`` is a masked mean over a (G, G) matrix.
    Only ``k_ii = 1`` on the diagonal is assumed by the formula; the kernel need not be symmetric
    (``m_j`` uses row j). Cost O(G²) per group.

    The paper's monotonicity ("rarer trajectories get higher contributions") holds for this form
    in the following precise senses (tests/core/test_diversity.py):

    * *Dominance* (proved, symmetric kernel): if ``k_il <= k_jl`` for every ``l ∉ {i, j}`` then
      ``s_i >= s_j``. Every term of ``D(Ω \\ {i})`` is at most the matching term of
      ``D(Ω \\ {j})`` because ``g`` is decreasing. A duplicated rollout vs a unique one is a case.
    * *Exact-duplicate classes* with one similarity ``c < 1`` between classes: a member of a
      smaller class gets a strictly larger ``s`` (checked numerically, ~2e6 pairs, G <= 64; not proved).
    * A lower row sum of similarities alone does **not** imply a larger ``s``: a 4×4 kernel with
      nearly equal row sums is a counterexample (about 0.5% of ordered pairs in random kernels).

    ``members`` restricts Ω to a subset of each group (our variant, not SetPO's: e.g. the correct
    rollouts, so that only they need embedding): the same formula on the sub-kernel of the members,
    0 for every other rollout, whose kernel rows and columns are never read. All members: the
    formula above.

    Args:
        kernel: (G, G) or (P, G, G) similarities, ``k_ii = 1`` (e.g. :func:`cosine_kernel`,
            :func:`ngram_kernel`).
        members: optional (G,) or (P, G) bool mask of Ω; ``None`` = the whole group.

    Returns:
        (G,) or (P, G) contributions ``s``. By our definition a set of size 1 gets 0 (removing
        the only rollout leaves an empty set, whose diversity the formula does not define).
    """
    if kernel.dim() not in (2, 3) or kernel.shape[-1] != kernel.shape[-2]:
        raise ValueError(
            f"setpo_marginal_contributions: kernel must have shape (G, G) or (P, G, G), got {tuple(kernel.shape)}"
        )
    if not torch.is_floating_point(kernel):
        raise ValueError(f"setpo_marginal_contributions: kernel must be a float tensor, got dtype {kernel.dtype}")
    if members is None:
        members = torch.ones(kernel.shape[:-1], dtype=torch.bool, device=kernel.device)  # (..., G)  Ω = the group
    elif members.dtype != torch.bool or members.shape != kernel.shape[:-1]:
        raise ValueError(
            f"setpo_marginal_contributions: members must be a bool mask of shape {tuple(kernel.shape[:-1])}, "
            f"got {members.dtype} {tuple(members.shape)}"
        )
    m = members.to(kernel.dtype)  # (..., G)  1 = in Ω
    # a non-member's row and column are zeroed (never NaN-propagating: its entries are not read)
    k = torch.where(members[..., :, None] & members[..., None, :], kernel, torch.zeros_like(kernel))  # (..., G, G)
    n = m.sum(-1, keepdim=True)  # (..., 1)  |Ω|
    rowsum = k.sum(-1)  # (..., G)  Σ_{l∈Ω} k_jl for members j
    g_full = -torch.log1p(rowsum / n.clamp(min=1)) * m  # (..., G)
    d_full = g_full.sum(-1, keepdim=True) / n.clamp(min=1)  # (..., 1)  D(Ω)
    # m_loo[..., i, j] = mean similarity of j to Ω \ {i} = (rowsum_j - k_ji) / (|Ω| - 1)
    m_loo = (rowsum[..., None, :] - k.transpose(-1, -2)) / (n[..., None] - 1).clamp(min=1)  # (..., G, G)
    eye = torch.eye(kernel.shape[-1], dtype=torch.bool, device=kernel.device)  # (G, G)
    keep = members[..., None, :] & ~eye  # (..., G, G)  j ∈ Ω, j ≠ i
    g_loo = torch.where(keep, -torch.log1p(m_loo), torch.zeros_like(m_loo))  # (..., G, G)
    d_loo = g_loo.sum(-1) / (n - 1).clamp(min=1)  # (..., G)  D(Ω \ {i})
    # a set of one (or none) gives 0, as does every non-member
    return torch.where(members & (n > 1), d_full - d_loo, torch.zeros_like(d_loo))  # (..., G)


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


def ngram_kernel(texts: Sequence[str], n: int = 3, unit: Literal["char", "token"] = "char") -> Tensor:
    """Jaccard similarity of the n-gram *sets* of G texts: ``|A ∩ B| / |A ∪ B|``.

    A weight-free kernel for SetPO-style contributions (our choice; the reconstructed SetPO uses
    embedding cosine, see :func:`cosine_kernel`). ``unit="char"`` uses character n-grams,
    ``"token"`` whitespace-token n-grams. A text with fewer than n units contributes its whole
    unit sequence as its single gram, so every text has at least one gram and ``k_ii = 1`` exactly
    (two empty strings are identical: similarity 1).

    Computed as one incidence-matrix product (no loop over pairs).

    Returns:
        (G, G) float32 kernel in [0, 1], symmetric, diagonal 1.
    """
    if n < 1:
        raise ValueError(f"ngram_kernel: n must be >= 1, got {n}")
    if unit not in ("char", "token"):
        raise ValueError(f"ngram_kernel: unit must be 'char' or 'token', got {unit!r}")
    gram_sets = [_ngrams(text, n, unit) for text in texts]
    vocab: dict[Hashable, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for i, grams in enumerate(gram_sets):
        for gram in grams:
            rows.append(i)
            cols.append(vocab.setdefault(gram, len(vocab)))
    incidence = torch.zeros(len(texts), max(len(vocab), 1), dtype=torch.float32)  # (G, V)
    incidence[rows, cols] = 1.0
    inter = incidence @ incidence.T  # (G, G)  |A ∩ B|
    size = incidence.sum(-1)  # (G,)
    union = size[:, None] + size[None, :] - inter  # (G, G)  |A ∪ B| >= 1
    return inter / union  # (G, G)


def _ngrams(text: str, n: int, unit: Literal["char", "token"]) -> set[Hashable]:
    if not isinstance(text, str):
        raise ValueError(f"ngram_kernel: texts must be str, got {type(text).__name__}")
    seq: str | tuple[str, ...] = text if unit == "char" else tuple(text.split())
    if len(seq) < n:
        return {seq}
    return {seq[k : k + n] for k in range(len(seq) - n + 1)}


def cosine_kernel(embeddings: Tensor, clamp: bool = True) -> Tensor:
    """Cosine similarity of rollout embeddings, clamped to [0, 1], with an exact unit diagonal.

    The reconstructed SetPO kernel (seed-methods.md §3.2: ``k_ij = cos(e_i, e_j)``; the clamp to
    [0, 1] is the third-party port's choice, kept here so that ``m_i`` stays in [0, 1]). A zero
    embedding has similarity 0 to everything else (no NaN) and 1 to itself.

    Args:
        embeddings: (G, D) or (P, G, D) float embeddings.
        clamp: clamp to [0, 1] (SetPO's port); ``False`` keeps the raw cosine in [-1, 1] (DRA-GRPO's official
            code, ``xiwenc1/DRA-GRPO``).

    Returns:
        (G, G) or (P, G, G) kernel.
    """
    if embeddings.dim() not in (2, 3):
        raise ValueError(
            f"cosine_kernel: embeddings must have shape (G, D) or (P, G, D), got {tuple(embeddings.shape)}"
        )
    if not torch.is_floating_point(embeddings):
        raise ValueError(f"cosine_kernel: embeddings must be a float tensor, got dtype {embeddings.dtype}")
    unit = torch.nn.functional.normalize(embeddings, dim=-1)  # (..., G, D)  zero rows stay zero
    cos = unit @ unit.transpose(-1, -2)  # (..., G, G)
    if clamp:
        cos = cos.clamp(0.0, 1.0)  # (..., G, G)
    eye = torch.eye(cos.shape[-1], dtype=torch.bool, device=cos.device)  # (G, G)
    return cos.masked_fill(eye, 1.0)  # (..., G, G)
