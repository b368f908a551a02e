"""The pure decisions of LATR, lookahead tree-based rollouts (Xing, Wang, Yang, Dai & Ren, arXiv 2510.24302).

LATR grows each prompt's group as a tree: the tree's rows decode their most likely token, and at a token where the
policy is *uncertain* (the second most likely token is likely too) a row forks into a new branch that takes the
second token. Each new branch is followed for a few tokens (the lookahead windows); a branch whose continuation is
a near-duplicate of its parent's over the window (normalised edit distance below a threshold) is pruned with its
descendants. Once every tree holds its share of the group, the rows are finished by ordinary sampling.

Evidence: **code**. Every rule here follows the official implementation, starreeze/latr @ 2adb0ed
(``model/sample_filter.py``: ``ProbFilter``, ``RolloutFilter``; ``model/generation.py``:
``_sample_new_sequence_with_rollout`` (capacity), ``generate`` (stop rule); ``model/utils.py``: defaults of
``BranchDynamicParam`` and ``KeyTokenGenConfigMixin``, ``BranchParamScheduler.set_step``). The paper's body was not
read; the names of the thresholds (``tau_abs``, ``tau_rel``, ``tau_ed``, ``r``, ``eta``) are the README's.
The decode loop that applies them is :mod:`divrl.rollout.latr`.

Everything here is torch / stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

MATH_SYMBOLS = "+-*/\\<>=()[]{}_^&%$0123456789"
"""The official ``math_core_symbols`` (``model/sample_filter.py``): a fork whose parent token is one of these is
never pruned when ``keep_math_symbols`` is on."""


def branch_mask(top_probs: Tensor, abs_threshold: float | None = 0.25, rel_threshold: float | None = 0.15) -> Tensor:
    """Which of a row's top-m candidate tokens it follows: the first always, candidate ``j >= 1`` when
    ``p_j > abs_threshold`` and ``p_0 - p_j < rel_threshold`` (official ``ProbFilter``: the relative test is a
    *difference* of probabilities, not a ratio; ``None`` switches a test off).

    Args:
        top_probs: (B, m) the m largest next-token probabilities of each row, in descending order.

    Returns:
        (B, m) bool; column 0 is all True.
    """
    b, m = top_probs.shape
    extra = torch.ones(b, m - 1, dtype=torch.bool, device=top_probs.device)  # (B, m-1)
    if abs_threshold is not None:
        extra &= top_probs[:, 1:] > abs_threshold
    if rel_threshold is not None:
        extra &= (top_probs[:, :1] - top_probs[:, 1:]) < rel_threshold
    first = torch.ones(b, 1, dtype=torch.bool, device=top_probs.device)  # (B, 1)
    return torch.cat([first, extra], dim=1)  # (B, m)


def apply_capacity(keep: Tensor, capacity: int) -> Tensor:
    """Keep at most ``capacity`` of one tree's (row, candidate) pairs: column-major order, i.e. every row's first
    candidate (its own continuation) before any fork, and forks of earlier rows first (official capacity step:
    ``argsort(col * rows + row)``, the first ``num_return_sequences`` kept, the rest suppressed).

    Args:
        keep: (R, m) bool, the tree's rows in order (:func:`branch_mask`, finished rows with only column 0).
        capacity: the tree's share of the group (rows it may hold).

    Returns:
        (R, m) bool, ``keep`` with the pairs past the capacity switched off.
    """
    r, m = keep.shape
    order = keep.t().reshape(-1)  # (m*R,) column-major
    rank = torch.cumsum(order.long(), 0)  # (m*R,) 1-based position among the kept pairs
    allowed = order & (rank <= capacity)
    return allowed.view(m, r).t().contiguous()  # (R, m)


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance of two token sequences (insertions, deletions, substitutions cost 1), as
    ``torchaudio.functional.edit_distance`` used by the official pruning."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def near_duplicate(branch: Sequence[int], parent: Sequence[int], threshold: float = 0.4) -> bool:
    """Whether a branch's window is a near-duplicate of its parent's: ``edit_distance / window < threshold``
    (official ``RolloutFilter``: ``edit_distance(a, b) / length < edit_dist_thres``, ``length`` = the window, both
    windows that long, starting at the fork token)."""
    if len(branch) != len(parent) or not branch:
        raise ValueError(f"windows must be non-empty and of equal length, got {len(branch)} and {len(parent)}")
    return edit_distance(branch, parent) / len(branch) < threshold


def exempt_fork(parent_token_text: str, symbols: str | None = MATH_SYMBOLS) -> bool:
    """Whether a fork is never pruned because the parent's token at the fork is a math symbol (official
    ``keep_math_symbols=True``: ``decode(b[0]).strip() not in math_core_symbols`` selects what is compared, a
    *substring* test, so a token that strips to ``""`` is exempt too). ``symbols=None`` exempts nothing.

    The official code drops the exempt comparisons from its list of windows but not from its lists of branch ids
    and lengths, which it then zips together (a misalignment); divrl applies the exemption to the intended branch.
    """
    return symbols is not None and parent_token_text.strip() in symbols


def descendants(parents: Sequence[int | None], roots: Sequence[int]) -> set[int]:
    """``roots`` and every row that descends from one of them, given each row's parent row (``None``: a tree's
    root); what pruning removes (official ``BranchInfo._get_recursive_remove_indices``)."""
    children: dict[int, list[int]] = {}
    for row, parent in enumerate(parents):
        if parent is not None:
            children.setdefault(parent, []).append(row)
    out, todo = set(roots), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def mix_ratio_at(schedule: Mapping[int, float], step: int) -> float:
    """The share ``eta`` of each group sampled as a tree at training step ``step``: the value of the largest
    schedule key ``<= step`` (official ``BranchParamScheduler.set_step``; keys in increasing order, the first
    key's value before it)."""
    if not schedule:
        raise ValueError("mix_ratio_schedule must not be empty")
    items = sorted((int(k), float(v)) for k, v in schedule.items())
    value = items[0][1]
    for key, v in items:
        if key <= step:
            value = v
    return value


def tree_rows(group_size: int, mix_ratio: float) -> int:
    """How many of a group's G rows come from its tree: ``round(G * eta)`` (official ``kt_n_gen``, Python's
    round-half-to-even); the other ``G - round(G * eta)`` are sampled independently from the start."""
    if not 0.0 <= mix_ratio <= 1.0:
        raise ValueError(f"mix ratio must be in [0, 1], got {mix_ratio!r}")
    return round(group_size * mix_ratio)


def trees_full(
    rows_per_tree: Sequence[int],
    finished_per_tree: Sequence[bool],
    capacity: int,
    step: int,
    max_new_tokens: int,
    youngest_birth: int,
    longest_window: int,
    full_init: float = 0.98,
    full_decay: float = 0.0,
) -> bool:
    """The official early return of the tree phase (``return_on_full``): at decode step ``step`` (0-based), the trees
    count as full when ``Σ_tree eff >= round(capacity * trees * thres)``, ``eff`` = ``capacity`` for a tree whose
    rows have all finished, else its row count, ``thres = full_init - full_decay * step / max_new_tokens``, **and** no
    row is still inside its last pruning window (``birth + longest_window >= step`` for none; a root's birth is 0,
    so the trees never count as full before step ``longest_window + 1``).

    Args:
        rows_per_tree: rows of each tree now.
        finished_per_tree: whether every row of each tree has finished.
        capacity: rows a tree may hold (its share of the group).
        youngest_birth: the latest birth step of any row (a root's is 0, a fork's the step it was made).
    """
    eff = [capacity if done else n for n, done in zip(rows_per_tree, finished_per_tree, strict=True)]
    thres = full_init - full_decay * step / max_new_tokens
    if sum(eff) < round(capacity * len(rows_per_tree) * thres):
        return False
    return youngest_birth + longest_window < step


__all__ = [
    "MATH_SYMBOLS",
    "apply_capacity",
    "branch_mask",
    "descendants",
    "edit_distance",
    "exempt_fork",
    "mix_ratio_at",
    "near_duplicate",
    "tree_rows",
    "trees_full",
]
