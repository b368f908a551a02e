"""Tests for divrl.core.diversity: partitions, DARLING diversity, SetPO contributions, kernels."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divrl.core.diversity import (
    cosine_kernel,
    darling_diversity,
    labels_tensor,
    ngram_kernel,
    partition,
    partition_by_key,
    setpo_marginal_contributions,
)

# ---------------------------------------------------------------------------------------------
# partition / partition_by_key / labels_tensor
# ---------------------------------------------------------------------------------------------


def test_partition_is_transitive_closure() -> None:
    # a~b and b~c, but a!~c: union-find must still put a, b, c in one class; d is alone.
    pairs = {frozenset("ab"), frozenset("bc")}
    labels = partition(["a", "b", "c", "d"], lambda x, y: frozenset((x, y)) in pairs)
    assert labels == [0, 0, 0, 1]


def test_partition_chain_joined_late() -> None:
    # c~a only through e: [a, b, c, d, e] with a~e, c~e, b~d -> {a, c, e}, {b, d}
    pairs = {frozenset("ae"), frozenset("ce"), frozenset("bd")}
    labels = partition(list("abcde"), lambda x, y: frozenset((x, y)) in pairs)
    assert labels == [0, 1, 0, 1, 0]


def test_partition_labels_are_canonical_first_appearance() -> None:
    # classes by parity, starting with an odd number: first item gets 0, the next new class 1.
    labels = partition([3, 8, 5, 2, 7], lambda x, y: x % 2 == y % 2)
    assert labels == [0, 1, 0, 1, 0]


def test_partition_queries_only_i_lt_j_and_skips_connected_pairs() -> None:
    calls: list[tuple[int, int]] = []

    def always(x: int, y: int) -> bool:
        calls.append((x, y))
        return True

    assert partition([0, 1, 2, 3], always) == [0, 0, 0, 0]
    assert all(x < y for x, y in calls)
    assert calls == [(0, 1), (0, 2), (0, 3)]  # every later pair is already connected


def test_partition_all_distinct_and_empty() -> None:
    assert partition(list("abc"), lambda x, y: False) == [0, 1, 2]
    assert partition([], lambda x, y: True) == []


@given(st.lists(st.integers(0, 4), max_size=12))
def test_partition_matches_key_partition_for_an_equivalence(values: list[int]) -> None:
    assert partition(values, lambda x, y: x == y) == partition_by_key(values)


def test_partition_by_key_none_is_singleton() -> None:
    assert partition_by_key(["x", None, "y", "x", None, "y"]) == [0, 1, 2, 0, 3, 2]
    assert partition_by_key([None, None]) == [0, 1]
    assert partition_by_key([(1, 2), (1, 2), "a"]) == [0, 0, 1]


def test_labels_tensor_shape_and_errors() -> None:
    t = labels_tensor([[0, 0, 1], [0, 1, 2]])
    assert t.dtype is torch.long
    assert t.tolist() == [[0, 0, 1], [0, 1, 2]]
    with pytest.raises(ValueError, match="same size G"):
        labels_tensor([[0, 1], [0]])
    with pytest.raises(ValueError, match="at least one group"):
        labels_tensor([])


# ---------------------------------------------------------------------------------------------
# darling_diversity
# ---------------------------------------------------------------------------------------------


def test_darling_diversity_hand_computed() -> None:
    # G=4, classes {0,1}, {2}, {3}: sizes 2,2,1,1 -> (4-2)/3, (4-2)/3, 3/3, 3/3
    div = darling_diversity(torch.tensor([5, 5, 7, 9]))
    assert torch.allclose(div, torch.tensor([2 / 3, 2 / 3, 1.0, 1.0]))
    # all equivalent: (4-4)/3 = 0 -> floor 0.1
    assert torch.allclose(darling_diversity(torch.tensor([1, 1, 1, 1])), torch.full((4,), 0.1))
    assert torch.equal(darling_diversity(torch.tensor([1, 1, 1, 1]), floor=0.0), torch.zeros(4))


def test_darling_diversity_batched_and_g1() -> None:
    labels = torch.tensor([[0, 0, 1], [0, 1, 2]])
    assert torch.allclose(darling_diversity(labels), torch.tensor([[0.5, 0.5, 1.0], [1.0, 1.0, 1.0]]))
    assert torch.equal(darling_diversity(torch.tensor([[3], [4]])), torch.ones(2, 1))


def test_darling_diversity_bad_input() -> None:
    with pytest.raises(ValueError, match="integers"):
        darling_diversity(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="floor"):
        darling_diversity(torch.tensor([0, 1]), floor=1.5)
    with pytest.raises(ValueError, match="shape"):
        darling_diversity(torch.zeros(2, 2, 2, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# setpo_marginal_contributions
# ---------------------------------------------------------------------------------------------


def _brute_force_setpo(k: torch.Tensor) -> torch.Tensor:
    """Recompute D(S) on each subset directly (reference for the vectorised closed form)."""

    def diversity(idx: list[int]) -> float:
        sub = k[idx][:, idx]
        m = sub.mean(-1)
        return float((-torch.log1p(m)).mean())

    g = k.shape[0]
    if g == 1:
        return torch.zeros(1, dtype=k.dtype)
    full = diversity(list(range(g)))
    return torch.tensor([full - diversity([j for j in range(g) if j != i]) for i in range(g)], dtype=k.dtype)


def _random_kernel(g: int, gen: torch.Generator, symmetric: bool = True) -> torch.Tensor:
    a = torch.rand(g, g, generator=gen, dtype=torch.float64)
    k = (a + a.T) / 2 if symmetric else a
    k.fill_diagonal_(1.0)
    return k


@pytest.mark.parametrize("g", [1, 2, 3, 8, 64])
@pytest.mark.parametrize("symmetric", [True, False])
def test_setpo_vectorised_matches_brute_force(g: int, symmetric: bool) -> None:
    gen = torch.Generator().manual_seed(g)
    for _ in range(3):
        k = _random_kernel(g, gen, symmetric)
        assert torch.allclose(setpo_marginal_contributions(k), _brute_force_setpo(k), atol=1e-12)


def test_setpo_batched_matches_per_group() -> None:
    gen = torch.Generator().manual_seed(0)
    ks = torch.stack([_random_kernel(5, gen) for _ in range(3)])  # (3, 5, 5)
    batched = setpo_marginal_contributions(ks)
    assert batched.shape == (3, 5)
    for p in range(3):
        assert torch.allclose(batched[p], setpo_marginal_contributions(ks[p]))


def test_setpo_hand_computed_g2_and_g1() -> None:
    # G=2: D(Ω) = -log(1 + (1+k)/2), D({j}) = -log 2  =>  s = log(4 / (3 + k)) for both
    for kval in (0.0, 0.5, 1.0):
        k = torch.tensor([[1.0, kval], [kval, 1.0]], dtype=torch.float64)
        expected = math.log(4 / (3 + kval))
        assert torch.allclose(setpo_marginal_contributions(k), torch.full((2,), expected, dtype=torch.float64))
    assert torch.equal(setpo_marginal_contributions(torch.ones(1, 1)), torch.zeros(1))
    assert torch.equal(setpo_marginal_contributions(torch.ones(4, 1, 1)), torch.zeros(4, 1))


def test_setpo_identical_rollouts_contribute_nothing() -> None:
    assert torch.allclose(setpo_marginal_contributions(torch.ones(5, 5)), torch.zeros(5), atol=1e-7)


def test_setpo_duplicated_vs_unique() -> None:
    # rollouts 0 and 1 are duplicates, 2 is unique: the unique one contributes more.
    x, y = [1.0, 0.0], [0.6, 0.8]  # cos = 0.6
    s = setpo_marginal_contributions(cosine_kernel(torch.tensor([x, x, y], dtype=torch.float64)))
    assert s[0] == pytest.approx(s[1].item())
    assert s[2] > s[0]
    assert s[0] < 0 < s[2]  # adding a duplicate lowers the set diversity here


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 12), st.integers(0, 2**31 - 1))
def test_setpo_dominance_monotonicity(g: int, seed: int) -> None:
    # Proved for symmetric kernels: if k_il <= k_jl for every l outside {i, j}, then s_i >= s_j.
    gen = torch.Generator().manual_seed(seed)
    k = _random_kernel(g, gen)
    rest = torch.arange(2, g)
    lo = torch.minimum(k[0, rest], k[1, rest])
    hi = torch.maximum(k[0, rest], k[1, rest])
    k[0, rest], k[rest, 0] = lo, lo  # row 0 is the "rarer" one
    k[1, rest], k[rest, 1] = hi, hi
    s = setpo_marginal_contributions(k)
    assert s[0] >= s[1] - 1e-12


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=2, max_size=40), st.floats(0.0, 0.95))
def test_setpo_smaller_duplicate_class_gets_larger_contribution(labels: list[int], c: float) -> None:
    # exact duplicates within a class, one similarity c < 1 between classes (numerically checked, not proved)
    lab = torch.tensor(labels)
    same = lab[:, None] == lab[None, :]
    k = torch.where(same, 1.0, c).to(torch.float64)
    s = setpo_marginal_contributions(k)
    size = same.sum(-1)
    smaller = size[:, None] < size[None, :]
    assert bool((s[:, None] > s[None, :])[smaller].all())
    equal = size[:, None] == size[None, :]
    assert torch.allclose(s[:, None].expand(-1, len(labels))[equal], s[None, :].expand(len(labels), -1)[equal])


def test_setpo_lower_row_sum_alone_does_not_imply_larger_contribution() -> None:
    # Documents the limit of the monotonicity claim for this reconstructed form: rollout 2 has a
    # lower similarity row sum than rollout 0 yet a smaller contribution.
    k = torch.tensor(
        [
            [1.0, 0.2820, 0.2885, 0.7513],
            [0.2820, 1.0, 0.6163, 0.2559],
            [0.2885, 0.6163, 1.0, 0.4143],
            [0.7513, 0.2559, 0.4143, 1.0],
        ],
        dtype=torch.float64,
    )
    rowsum = k.sum(-1)
    s = setpo_marginal_contributions(k)
    assert rowsum[2] < rowsum[0]
    assert s[2] < s[0]


def test_setpo_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        setpo_marginal_contributions(torch.ones(3, 2))
    with pytest.raises(ValueError, match="float"):
        setpo_marginal_contributions(torch.ones(2, 2, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------


def test_ngram_kernel_known_jaccard_char() -> None:
    # "abcd" -> {abc, bcd}; "abce" -> {abc, bce}; "xyz" -> {xyz}
    k = ngram_kernel(["abcd", "abce", "xyz"], n=3)
    expected = torch.tensor([[1, 1 / 3, 0], [1 / 3, 1, 0], [0, 0, 1]], dtype=torch.float32)
    assert torch.allclose(k, expected)


def test_ngram_kernel_known_jaccard_token() -> None:
    # bigrams: {(a,b),(b,c)} vs {(a,b),(b,d)} -> 1/3; repeated grams count once (sets)
    k = ngram_kernel(["a b c", "a b d", "a b a b"], n=2, unit="token")
    assert k[0, 1].item() == pytest.approx(1 / 3)
    # "a b a b" -> {(a,b),(b,a)}; vs "a b c" -> {(a,b),(b,c)}: 1/3
    assert k[0, 2].item() == pytest.approx(1 / 3)
    assert torch.equal(k, k.T)


def test_ngram_kernel_short_and_empty_strings() -> None:
    k = ngram_kernel(["", "", "ab", "ab", "abc"], n=3)
    assert torch.equal(torch.diagonal(k), torch.ones(5))
    assert k[0, 1] == 1.0  # two empty strings
    assert k[2, 3] == 1.0  # same short string -> same single gram
    assert k[0, 2] == 0.0
    assert k[2, 4] == 0.0  # "ab" (whole string) is not the gram "abc"
    assert torch.equal(ngram_kernel(["", " "], n=2, unit="token"), torch.ones(2, 2))  # both: no tokens


def test_ngram_kernel_bad_input() -> None:
    with pytest.raises(ValueError, match="n must be"):
        ngram_kernel(["a"], n=0)
    with pytest.raises(ValueError, match="unit"):
        ngram_kernel(["a"], unit="word")  # type: ignore[arg-type]


def test_cosine_kernel_clamp_diagonal_and_zero_vectors() -> None:
    e = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    k = cosine_kernel(e)
    assert not torch.isnan(k).any()
    assert torch.equal(torch.diagonal(k), torch.ones(4))  # zero vector included
    assert k[0, 1] == 0.0  # cos = -1 clamped
    assert k[0, 2].item() == pytest.approx(1 / math.sqrt(2))
    assert torch.equal(k[3, :3], torch.zeros(3))
    assert torch.equal(k, k.T)


def test_cosine_kernel_batched_and_scale_invariant() -> None:
    e = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))
    k = cosine_kernel(e)
    assert k.shape == (2, 4, 4)
    assert torch.allclose(k, cosine_kernel(e * 7.0), atol=1e-6)
    assert bool(((k >= 0) & (k <= 1)).all())
    with pytest.raises(ValueError, match="shape"):
        cosine_kernel(torch.ones(3))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 10), st.integers(0, 2**31 - 1))
def test_setpo_members_is_the_formula_on_the_sub_kernel(g: int, seed: int) -> None:
    """members: the contributions of the members equal the unrestricted formula on their sub-kernel; the
    others get 0 and their kernel entries (even NaN) are never read; all members = no mask."""
    gen = torch.Generator().manual_seed(seed)
    k = _random_kernel(g, gen, symmetric=bool(seed % 2))
    members = torch.rand(g, generator=gen) < 0.6
    idx = members.nonzero().flatten()
    poisoned = k.clone()
    poisoned[~members] = float("nan")
    poisoned[:, ~members] = float("nan")
    s = setpo_marginal_contributions(poisoned, members)
    expected = torch.zeros(g, dtype=k.dtype)
    if len(idx) > 0:
        expected[idx] = setpo_marginal_contributions(k[idx][:, idx])
    assert torch.allclose(s, expected, atol=1e-12)
    assert torch.allclose(
        setpo_marginal_contributions(k, torch.ones(g, dtype=torch.bool)), setpo_marginal_contributions(k)
    )
    batched = setpo_marginal_contributions(
        torch.stack([k, k]), torch.stack([members, torch.ones(g, dtype=torch.bool)])
    )
    assert torch.allclose(batched[0], expected, atol=1e-12) and torch.allclose(
        batched[1], setpo_marginal_contributions(k)
    )


def test_setpo_members_mask_is_checked() -> None:
    with pytest.raises(ValueError, match="members"):
        setpo_marginal_contributions(torch.ones(3, 3), torch.ones(3))
    with pytest.raises(ValueError, match="members"):
        setpo_marginal_contributions(torch.ones(3, 3), torch.ones(2, dtype=torch.bool))
