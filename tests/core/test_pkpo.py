"""PKPO (arXiv 2505.15201): hand-computed values, agreement with the paper's Listing 1 and a brute-force subset sum,
invariants, and unscorable rollouts."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from divrl.core.advantages import compute_advantages
from divrl.core.batch import GroupBatch

# ---------------------------------------------------------------------------------------------
# Vendored reference: Walder & Karkhanis, "Pass@K Policy Optimization", arXiv 2505.15201, Appendix B, Listing 1
# ("Python reward batch transformations"), transcribed line by line (the paper is the official code; no separate
# repository was found). Only `_m_normed` .. `sloo_minus_one`, unchanged except the `float` dtype in
# `_sorted_apply` (np.zeros_like of an int array would truncate) and type hints dropped.
# ---------------------------------------------------------------------------------------------


def _m_normed(N, K, i, j):
    if i == j and i >= K - 1:
        return K / (N - K + 1) * np.prod(np.arange(i - K + 2, i + 1) / np.arange(N - K + 2, N + 1))
    elif j > i and j >= K - 1 and K >= 2:
        return K / (N - K + 1) * (K - 1) / N * np.prod(np.arange(j - K + 2, j) / np.arange(N - K + 2, N))
    return 0


def _m_diagonal(N, K):
    return np.array([_m_normed(N, K, i, i) for i in range(N)])


def rho(g, K):
    return (np.sort(g) * _m_diagonal(len(g), K)).sum()


def _delta(N, K, i):
    return _m_normed(N, K, i, i + 1) - _m_normed(N, K, i + 1, i + 1)


def _deltas(N, K):
    return np.array([_delta(N - 1, K, i) for i in range(N - 2)])


def _sorted_apply(func: Callable) -> Callable:
    def inner(x, *args, **kwargs):
        i_sort = np.argsort(x)
        func_x = np.zeros_like(x, dtype=float)
        func_x[i_sort] = func(x[i_sort], *args, **kwargs)
        return func_x

    return inner


@_sorted_apply
def s(g, K):
    N = len(g)
    c = g * _m_diagonal(N, K)
    c[: (N - 1)] += g[1:] * _deltas(N + 1, K)
    return np.cumsum(c[::-1])[::-1]


@_sorted_apply
def _b(g, K):
    N = len(g)
    w = (_m_diagonal(N - 1, K) * np.arange(1, N)).astype(float)
    w[1:] += _deltas(N, K) * np.arange(1, N - 1)
    c1 = np.array([(w * g[1:]).sum()])
    c2 = (g[:-1] - g[1:]) * w
    return np.cumsum(np.concatenate((c1, c2)))


def sloo(g, K):
    return s(g, K) - _b(g, K) / (len(g) - 1)


def sloo_minus_one(g, K):
    return s(g, K) - _b(g, K - 1) * K / (K - 1) / len(g)


# ---------------------------------------------------------------------------------------------

LISTING = {"none": s, "loo": sloo, "loo_minus_one": sloo_minus_one}


def pk(rows: list[list[float]] | torch.Tensor, **options) -> torch.Tensor:
    r = rows if isinstance(rows, torch.Tensor) else torch.tensor(rows, dtype=torch.float64)
    return compute_advantages("pkpo", GroupBatch(rewards=r), **options)


def brute_s(g: list[float], k: int) -> list[float]:
    """Eq. 27 by enumeration: s_i = (1/C(n,k)) Σ_{|I|=k, i∈I} max_I g."""
    n = len(g)
    subsets = list(itertools.combinations(range(n), k))
    return [sum(max(g[j] for j in sub) for sub in subsets if i in sub) / len(subsets) for i in range(n)]


def test_hand_computed_n4_c2_k2() -> None:
    """n = 4, c = 2, k = 2. s: correct 3/6 (every 2-subset with it has max 1), incorrect 2/6 (two of its three
    2-subsets hold a correct one). Centred by the mean (5/12): ±1/12, the issue's check (the rllm port's form).
    Eq. 33: a correct rollout is the strict max in 2 of the 6 subsets: 2/6; an incorrect one never: 0."""
    r = [[0.0, 1.0, 0.0, 1.0]]
    assert torch.allclose(pk(r, k=2, baseline="none"), torch.tensor([[2, 3, 2, 3]], dtype=torch.float64) / 6)
    assert torch.allclose(pk(r, k=2, baseline="mean"), torch.tensor([[-1, 1, -1, 1]], dtype=torch.float64) / 12)
    assert torch.allclose(pk(r, k=2), torch.tensor([[0, 1, 0, 1]], dtype=torch.float64) / 3)
    # Eq. 29: s_i minus the mean over j≠i of s_j on the 3 others (normalised by C(3,2)):
    # incorrect i: others {1, 0, 1}, every 2-subset has max 1: mean s_j = 2/3 -> 1/3 - 2/3 = -1/3
    # correct i: others {0, 0, 1}: s_j = 1/3, 1/3, 2/3 -> mean 4/9 -> 1/2 - 4/9 = 1/18
    assert torch.allclose(pk(r, k=2, baseline="loo"), torch.tensor([[-6, 1, -6, 1]], dtype=torch.float64) / 18)


def test_binary_s_is_the_papers_eq8() -> None:
    """For 0/1 rewards s is Eq. 8: k/n for a correct sample, k/n · ρ(n-1, c, k-1) for an incorrect one."""
    n, k = 8, 3
    r = [[1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]]
    c = 3
    rho_ = 1 - math.comb(n - 1 - c, k - 1) / math.comb(n - 1, k - 1)
    expected = [k / n if x == 1 else k / n * rho_ for x in r[0]]
    assert torch.allclose(pk(r, k=k, baseline="none"), torch.tensor([expected], dtype=torch.float64))


@pytest.mark.parametrize("baseline", ["none", "loo", "loo_minus_one"])
def test_agrees_with_listing_1_on_random_rewards(baseline: str) -> None:
    """Binary, continuous and tied rewards, n = 2..12, every valid k (>= 2 for Eq. 33: its k = 1 is rloo)."""
    rng = np.random.default_rng(0)
    checked = 0
    for n in range(2, 13):
        for k in range(2 if baseline == "loo_minus_one" else 1, n + 1):
            for kind in ("binary", "continuous", "ties"):
                if kind == "binary":
                    g = rng.integers(0, 2, n).astype(float)
                elif kind == "continuous":
                    g = rng.normal(size=n)
                else:
                    g = rng.integers(0, 3, n) / 2.0
                ours = pk(torch.tensor(g)[None], k=k, baseline=baseline)[0].numpy()
                ref = LISTING[baseline](g.copy(), k)
                if baseline in ("loo_minus_one",) and np.all(g == g[0]):
                    ref = np.zeros(n)  # ours pins exact zeros; the listing is within float error of them
                np.testing.assert_allclose(ours, ref, atol=1e-9, err_msg=f"n={n} k={k} {kind}")
                checked += 1
    assert checked > 150


def test_s_agrees_with_brute_force_and_mean_is_centred() -> None:
    rng = np.random.default_rng(1)
    for n in range(2, 9):
        for k in range(1, n + 1):
            g = rng.normal(size=n).tolist()
            want = np.array(brute_s(g, k))
            np.testing.assert_allclose(pk([g], k=k, baseline="none")[0].numpy(), want, atol=1e-12)
            np.testing.assert_allclose(pk([g], k=k, baseline="mean")[0].numpy(), want - want.mean(), atol=1e-12)
            if k >= 2:  # Eq. 33 by enumeration
                subsets = list(itertools.combinations(range(n), k))
                eq33 = [
                    sum(max(g[j] for j in sub) - max(g[j] for j in sub if j != i) for sub in subsets if i in sub)
                    / len(subsets)
                    for i in range(n)
                ]
                np.testing.assert_allclose(pk([g], k=k)[0].numpy(), eq33, atol=1e-12)


def test_rho_is_the_mean_of_s_times_n_over_k() -> None:
    """Σ_i s_i = k · ρ^(g) (every k-subset is counted once per member): ties s to the listing's rho."""
    rng = np.random.default_rng(2)
    for n, k in [(4, 2), (7, 3), (10, 10), (9, 1)]:
        g = rng.normal(size=n)
        assert float(pk(torch.tensor(g)[None], k=k, baseline="none").sum()) == pytest.approx(k * rho(g, k))


def test_k1_is_rloo_and_k_is_checked() -> None:
    r = torch.tensor([[0.2, 1.0, 0.0, 0.7, 0.7]], dtype=torch.float64)
    b = GroupBatch(rewards=r)
    assert torch.allclose(pk(r, k=1), compute_advantages("rloo", b))
    for bad in (0, 6, 2.0, True):
        with pytest.raises(ValueError, match="pkpo: k must"):
            pk(r, k=bad)
    with pytest.raises(ValueError, match="pkpo: baseline must"):
        pk(r, k=2, baseline="leave_one_out")


@pytest.mark.parametrize("baseline", ["loo_minus_one", "mean"])
def test_equal_rewards_give_exact_zeros(baseline: str) -> None:
    r = torch.tensor([0.0, 1.0, 0.1, 0.3])[:, None].repeat(1, 7)  # (4, 7)
    for k in (1, 2, 4, 7):
        assert torch.equal(
            compute_advantages("pkpo", GroupBatch(rewards=r), k=k, baseline=baseline), torch.zeros(4, 7)
        )


def test_loo_on_equal_rewards_is_the_papers_constant() -> None:
    """Eq. 29 as defined: g·k/n - g·k/(n-1) for a group of equal rewards g (a constant: no gradient bias)."""
    n, k, g = 6, 2, 1.0
    a = pk([[g] * n], k=k, baseline="loo")
    assert torch.allclose(a, torch.full((1, n), g * k / n - g * k / (n - 1), dtype=torch.float64))


@pytest.mark.parametrize("baseline", ["loo_minus_one", "loo", "mean", "none"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_permutation_invariance(baseline: str, k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    for binary in (True, False):
        r = torch.randint(0, 2, (3, 6), generator=gen).float() if binary else torch.rand(3, 6, generator=gen)
        perms = torch.stack([torch.randperm(6, generator=gen) for _ in range(3)])  # (P, G)
        a = pk(r, k=k, baseline=baseline)
        assert torch.allclose(pk(r.gather(1, perms), k=k, baseline=baseline), a.gather(1, perms), atol=1e-6)


@pytest.mark.parametrize("baseline", ["loo_minus_one", "loo", "mean", "none"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_unscored_rollouts(baseline: str, k: int) -> None:
    """G with c scored = the group of those c alone; 0 for the unscorable ones and for groups with c < max(k, 2)."""
    gen = torch.Generator().manual_seed(10 + k)
    for _ in range(10):
        r = torch.rand(4, 7, generator=gen)
        unscored = torch.rand(4, 7, generator=gen) < 0.4
        r = r.masked_fill(unscored, math.nan)
        a = pk(r, k=k, baseline=baseline)
        for p in range(4):
            cols = [g for g in range(7) if not unscored[p, g]]
            assert torch.equal(a[p, unscored[p]], torch.zeros(int(unscored[p].sum())))
            if len(cols) < max(k, 2):
                assert torch.equal(a[p], torch.zeros(7))
            else:
                assert torch.allclose(a[p, cols], pk(r[p, cols][None], k=k, baseline=baseline)[0], atol=1e-6)
