"""LATR's pure decisions (divrl.core.latr): fork test, capacity, edit-distance pruning, exemption, schedule, stop rule.

Hand-computed cases follow the official code (starreeze/latr @ 2adb0ed). The official ``ProbFilter`` and capacity
step are vendored below (a few lines, ``model/sample_filter.py`` ``ProbFilter.__call__`` and ``model/generation.py``
``_sample_new_sequence_with_rollout`` step 4, adapted from its tri-state mask to a bool mask) and compared with divrl's
on random inputs.
"""

from __future__ import annotations

import pytest
import torch

from divrl.core.latr import (
    MATH_SYMBOLS,
    apply_capacity,
    branch_mask,
    descendants,
    edit_distance,
    exempt_fork,
    mix_ratio_at,
    near_duplicate,
    tree_rows,
    trees_full,
)


def _official_prob_filter(probs, abs_thres, rel_thres):  # starreeze/latr model/sample_filter.py ProbFilter.__call__
    bs, n_cand = probs.shape
    mask = torch.ones([bs, n_cand - 1], dtype=torch.bool, device=probs.device)
    if abs_thres is not None:
        mask = mask & (probs[:, 1:] > abs_thres)
    if rel_thres is not None:
        mask = mask & (probs[:, 0:1] - probs[:, 1:] < rel_thres)
    return mask


def _official_capacity(keep, num_return_sequences):  # model/generation.py step 4, one root; 0 = keep, 2 = suppress
    sample_masks = (~keep).to(torch.int8)
    active_rows = torch.arange(keep.shape[0])
    keep_positions = torch.where(sample_masks[active_rows] == 0)
    if int(keep_positions[0].numel()) > num_return_sequences:
        rows_local, cols_local = keep_positions[0], keep_positions[1]
        combined = cols_local * int(active_rows.numel()) + rows_local
        to_suppress = torch.argsort(combined)[num_return_sequences:]
        sample_masks[active_rows[rows_local[to_suppress]], cols_local[to_suppress]] = 2
    return sample_masks == 0


def test_branch_mask_hand_computed():
    top = torch.tensor([[0.40, 0.30], [0.50, 0.30], [0.30, 0.20], [0.26, 0.255]])  # (4, 2)
    # row 0: 0.30 > 0.25 and 0.10 < 0.15 -> fork; row 1: gap 0.20; row 2: 0.20 <= 0.25; row 3: both pass
    assert branch_mask(top).tolist() == [[True, True], [True, False], [True, False], [True, True]]
    assert branch_mask(top, abs_threshold=None).tolist() == [[True, True], [True, False], [True, True], [True, True]]
    assert branch_mask(top, rel_threshold=None)[:, 1].tolist() == [True, True, False, True]
    assert branch_mask(top, 1.0, None)[:, 1].tolist() == [False] * 4  # a probability never exceeds 1: no forks


def test_branch_mask_agrees_with_the_official_prob_filter():
    gen = torch.Generator().manual_seed(0)
    for m in (2, 3, 4):
        probs = torch.rand(64, 10, generator=gen).softmax(-1).sort(-1, descending=True).values[:, :m] * 3
        probs = probs.clamp(max=1)
        for a, r in ((0.25, 0.15), (None, 0.15), (0.1, None), (0.05, 0.5)):
            assert torch.equal(branch_mask(probs, a, r)[:, 1:], _official_prob_filter(probs, a, r))


def test_capacity_keeps_own_continuations_first_then_earlier_forks():
    keep = torch.tensor([[True, True], [True, False], [True, True]])  # 3 rows, 2 want to fork: 5 pairs
    assert apply_capacity(keep, 5).tolist() == keep.tolist()
    assert apply_capacity(keep, 4).tolist() == [[True, True], [True, False], [True, False]]  # row 2's fork dropped
    assert apply_capacity(keep, 3).tolist() == [[True, False], [True, False], [True, False]]


def test_capacity_agrees_with_the_official_step():
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        r, m = int(torch.randint(1, 6, (1,), generator=gen)), int(torch.randint(2, 4, (1,), generator=gen))
        keep = torch.rand(r, m, generator=gen) < 0.5
        keep[:, 0] = True
        cap = int(torch.randint(r, r * m + 2, (1,), generator=gen))
        assert torch.equal(apply_capacity(keep, cap), _official_capacity(keep, cap))


def test_edit_distance_and_near_duplicate():
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([1, 2, 3], [1, 3]) == 1
    assert edit_distance([1, 2, 3, 4, 5], [2, 3, 4, 5, 6]) == 2  # kitten-style shift
    assert edit_distance([], [1, 2]) == 2
    # window 5: distance 1 -> 0.2 < 0.4 (pruned); distance 2 -> 0.4, not < 0.4 (kept)
    assert near_duplicate([7, 1, 2, 3, 4], [8, 1, 2, 3, 4])
    assert not near_duplicate([7, 1, 2, 3, 4], [8, 9, 2, 3, 4])
    with pytest.raises(ValueError, match="equal length"):
        near_duplicate([1], [1, 2])


def test_exempt_fork_is_the_officials_substring_test():
    assert exempt_fork("+") and exempt_fork(" 7 ") and exempt_fork("12")  # "12" is a substring of the digits
    assert not exempt_fork("13") and not exempt_fork("the")
    assert exempt_fork(" ")  # strips to "", a substring of everything (as in the official code)
    assert not exempt_fork("+", None)
    assert "0123456789" in MATH_SYMBOLS


def test_descendants_removes_a_branch_with_its_subtree():
    parents = [None, 0, 0, 1, 3, None, 5]  # two trees: 0 -> {1 -> 3 -> 4, 2}; 5 -> 6
    assert descendants(parents, [1]) == {1, 3, 4}
    assert descendants(parents, [2, 6]) == {2, 6}
    assert descendants(parents, []) == set()


def test_mix_ratio_schedule_and_tree_rows():
    script = {0: 1.0, 10: 0.75, 20: 0.5, 80: 0.25, 200: 0.0}  # the official Countdown script
    assert [mix_ratio_at(script, s) for s in (0, 9, 10, 79, 80, 500)] == [1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert mix_ratio_at({5: 0.5}, 0) == 0.5  # before the first key: its value
    assert [tree_rows(8, r) for r in (1.0, 0.75, 0.5, 0.25, 0.0)] == [8, 6, 4, 2, 0]
    assert tree_rows(6, 0.25) == 2  # round(1.5) = 2 (half to even), as the official round()
    assert tree_rows(10, 0.25) == 2  # round(2.5) = 2
    with pytest.raises(ValueError):
        tree_rows(8, 1.5)


def test_trees_full_rule():
    # 2 trees of capacity 4, thres 0.98 -> need round(8 * 0.98) = 8 effective rows, and every row past its window
    assert trees_full([4, 4], [False, False], 4, step=60, max_new_tokens=100, youngest_birth=9, longest_window=50)
    assert not trees_full([4, 4], [False, False], 4, step=59, max_new_tokens=100, youngest_birth=9, longest_window=50)
    assert not trees_full([4, 3], [False, False], 4, step=99, max_new_tokens=100, youngest_birth=0, longest_window=50)
    assert trees_full([4, 1], [False, True], 4, step=99, max_new_tokens=100, youngest_birth=0, longest_window=50)
    # decay 0.5: thres 0.98 - 0.5 * 50 / 100 = 0.73 -> round(5.84) = 6 effective rows suffice
    assert trees_full([4, 2], [False, False], 4, 50, 100, 0, 20, full_decay=0.5)
    assert not trees_full([4, 1], [False, False], 4, 50, 100, 0, 20, full_decay=0.5)
