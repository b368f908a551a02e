"""RepExp (``repexp``): agreement with the official recipe's arithmetic, a hand-computed group, invariants, gates,
normalisation, projection, unscored rollouts."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from divrl.core.advantages import advantage_needs, compute_advantages
from divrl.core.batch import GroupBatch
from divrl.core.repexp import repexp_bonus, sparse_projection

NAN = math.nan


def adv(batch: GroupBatch, **options: Any) -> Tensor:
    return compute_advantages("repexp", batch, **options)


# ---------------------------------------------------------------------------------------------
# Reference: verl-project/verl-recipe @ 48ea0a797fa29867ea0ad92aff7d284eec7d4be3 (rep_exp/ last changed in 51d361c)
#   rep_exp/workers/elliptical_reward_model_worker.py: compute_rm_score (the per-uid loop, persist_covariance=False),
#     _compute_bonuses, _normalize_bonuses
#   rep_exp/reward_manager/elliptical_reward_manager.py: __call__ (alpha * extrinsic + beta * intrinsic) and
#     _maybe_turn_off_elliptical
# Vendored with `self.` -> arguments, one group per call (one uid), the sequence-level values instead of the
# last-token placement in (B, T) tensors, the sparse projection applied by the caller (the official code draws
# it with sklearn; the test passes the same matrix to both sides), and `.float()` on the bonuses -> `.double()`:
# in a group whose rewards are all equal GRPO divides by the std of beta * bonus alone, which amplifies that cast's
# rounding to ~1e-4 in the advantages (divrl keeps float64 up to the reward dtype). Then verl's GRPO outcome advantage
# (verl/trainer/ppo/core_algos.py compute_grpo_outcome_advantage: (s - mean) / (std + 1e-6), torch.std).
# ---------------------------------------------------------------------------------------------


def official_bonuses(
    mean_hidden_states: Tensor, lamb: float, reward_type: str, normalization: str
) -> tuple[Tensor, Tensor]:
    mean_hidden_states = mean_hidden_states.to(torch.float64)
    filtered_mean_hidden_states = mean_hidden_states
    centered_mean_hidden_states = filtered_mean_hidden_states - filtered_mean_hidden_states.mean(dim=0)
    final_mean_hidden_states = centered_mean_hidden_states
    d = final_mean_hidden_states.shape[-1]
    cov_inv = torch.eye(d, dtype=torch.float64) * lamb**-1
    for hidden_state in final_mean_hidden_states:
        chosen_samp = hidden_state.unsqueeze(1)
        middle_part = torch.inverse(1 + chosen_samp.t() @ cov_inv @ chosen_samp)
        cov_inv = cov_inv - cov_inv @ chosen_samp @ middle_part @ chosen_samp.t() @ cov_inv
    hidden_states = final_mean_hidden_states
    if reward_type == "leave_one_out":
        bonuses = []
        for hidden_state in hidden_states:
            chosen_samp = hidden_state.unsqueeze(1)
            middle_part = torch.inverse(1 - chosen_samp.t() @ cov_inv @ chosen_samp)
            leave_one_out_cov_inv = cov_inv + cov_inv @ chosen_samp @ middle_part @ chosen_samp.t() @ cov_inv
            bonus = (chosen_samp.t() @ leave_one_out_cov_inv @ chosen_samp).flatten().double()
            bonuses.append(bonus)
        bonuses = torch.concat(bonuses)
    else:  # leverage
        batch_cov_inv = cov_inv.unsqueeze(0).expand(hidden_states.shape[0], -1, -1)
        bonuses = (hidden_states.unsqueeze(1) @ batch_cov_inv @ hidden_states.unsqueeze(2)).flatten().double()
    raw = bonuses
    if normalization == "rnd":
        std = torch.std(bonuses)
        if std > 0:
            bonuses = bonuses / std
    elif normalization == "z_score":
        mean = torch.mean(bonuses)
        std = torch.std(bonuses)
        if std > 0:  # noqa: SIM108  (vendored as written)
            bonuses = (bonuses - mean) / std
        else:
            bonuses = bonuses - mean
    return raw, bonuses


def official_reward(extrinsic: Tensor, intrinsic: Tensor, alpha: float, beta: float, gates: dict[str, bool]) -> Tensor:
    intrinsic = intrinsic.clone()
    if gates["rollout_incorrect"]:
        intrinsic[extrinsic == 0] = 0.0
    n = extrinsic.numel()
    if gates["none_correct"] and extrinsic.sum() == 0:
        intrinsic[:] = 0.0
    if gates["some_correct"] and extrinsic.sum() > 0 and extrinsic.sum() < n:
        intrinsic[:] = 0.0
    if gates["all_correct"] and extrinsic.sum() == n:
        intrinsic[:] = 0.0
    return alpha * extrinsic + beta * intrinsic


def verl_grpo(scores: Tensor, epsilon: float = 1e-6) -> Tensor:
    return (scores - scores.mean()) / (scores.std() + epsilon)


GATES = ("none_correct", "some_correct", "all_correct", "rollout_incorrect")


@pytest.mark.parametrize("bonus", ["leverage", "leave_one_out"])
@pytest.mark.parametrize("normalization", ["none", "rnd", "z_score"])
def test_agrees_with_the_official_code_on_random_groups(bonus: str, normalization: str) -> None:
    gen = torch.Generator().manual_seed(len(bonus) + 7 * len(normalization))
    for trial in range(12):
        p, g, h, k = 3, [4, 8, 6][trial % 3], 24, [8, 16][trial % 2]
        hidden = torch.randn(p, g, h, generator=gen) * (1 + trial)  # (P, G, H)
        rewards = torch.randint(0, 2, (p, g), generator=gen).float()  # (P, G)
        rewards[0] = 0.0 if trial % 2 else 1.0  # an all-wrong or all-right group in every batch
        gates = {name: bool(torch.rand((), generator=gen) < 0.4) for name in GATES}
        lam, beta, alpha = [0.01, 1.0, 0.3][trial % 3], [0.01, 1.0, 5.0][trial % 3], [1.0, 0.5][trial % 2]
        seed = 100 + trial
        proj = sparse_projection(h, k, generator=torch.Generator().manual_seed(seed))  # (H, k)
        ref = []
        for i in range(p):
            _, intrinsic = official_bonuses(hidden[i].double() @ proj, lam, bonus, normalization)
            ref.append(verl_grpo(official_reward(rewards[i].double(), intrinsic.double(), alpha, beta, gates)))
        options = {f"off_if_{n}": v for n, v in gates.items()}
        ours = adv(
            GroupBatch(rewards=rewards.double(), hidden=hidden),
            beta=beta,
            alpha=alpha,
            lam=lam,
            bonus=bonus,
            normalization=normalization,
            sparse_dim=k,
            projection_seed=seed,
            **options,
        )
        assert torch.allclose(ours, torch.stack(ref), atol=1e-5), (trial, ours, torch.stack(ref))


def test_raw_bonus_agrees_with_the_official_sherman_morrison_loop() -> None:
    """The raw leverage scores (no gates, no normalisation), before GRPO, to float64 precision."""
    gen = torch.Generator().manual_seed(3)
    for lam in (0.01, 0.1, 1.0):
        hidden = torch.randn(2, 8, 12, generator=gen, dtype=torch.float64)
        batch = GroupBatch(rewards=torch.ones(2, 8, dtype=torch.float64), hidden=hidden)
        for kind in ("leverage", "leave_one_out"):
            ours = repexp_bonus(batch, lam=lam, bonus=kind, sparse_dim=None)  # type: ignore[arg-type]
            ref = torch.stack([official_bonuses(hidden[i], lam, kind, "none")[0].double() for i in range(2)])
            assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_projection_matches_sklearns_entries() -> None:
    """The entries and density of sklearn's SparseRandomProjection(k, density='auto') (``components_.T``)."""
    h, k = 400, 32
    mat = sparse_projection(h, k, generator=torch.Generator().manual_seed(0))  # (H, k)
    scale = math.sqrt(math.sqrt(h)) / math.sqrt(k)  # sqrt(1/density) / sqrt(k), density = 1/sqrt(H)
    values = set(torch.unique(mat).tolist())
    assert values == {-scale, 0.0, scale}
    density = float((mat != 0).double().mean())
    assert abs(density - 1 / math.sqrt(h)) < 0.01  # 12800 entries, expected 0.05
    assert abs(float((mat > 0).double().mean()) - density / 2) < 0.01
    sklearn = pytest.importorskip("sklearn.random_projection")
    proj = sklearn.SparseRandomProjection(k, density="auto", random_state=0).fit(
        torch.zeros(1, h, dtype=torch.float64).numpy()
    )  # the official fits a float32 randn: float32 entries
    official = set(float(v) for v in proj.components_.toarray().ravel())
    assert {round(v, 12) for v in official} == {round(v, 12) for v in values}


# ---------------------------------------------------------------------------------------------
# Hand-computed
# ---------------------------------------------------------------------------------------------


def test_hand_computed_group() -> None:
    """H = 1, h = (0, 1, 2): c = (-1, 0, 1), Sigma = 1 + 2 = 3, leverage (1/3, 0, 1/3), leave-one-out
    l/(1-l) = (1/2, 0, 1/2). Rewards (1, 1, 0), beta 1: r~ = (4/3, 1, 1/3), mean 8/9, deviations (4, 1, -5)/9,
    unbiased std sqrt(21)/9, so A = (4, 1, -5)/sqrt(21)."""
    batch = GroupBatch(rewards=torch.tensor([[1.0, 1.0, 0.0]]), hidden=torch.tensor([[[0.0], [1.0], [2.0]]]))
    lev = repexp_bonus(batch, lam=1.0, sparse_dim=None)
    assert torch.allclose(lev, torch.tensor([[1 / 3, 0.0, 1 / 3]]))
    loo = repexp_bonus(batch, lam=1.0, sparse_dim=None, bonus="leave_one_out")
    assert torch.allclose(loo, torch.tensor([[0.5, 0.0, 0.5]]))
    a = adv(batch, beta=1.0, lam=1.0, sparse_dim=None)
    assert torch.allclose(a, torch.tensor([[4.0, 1.0, -5.0]]) / math.sqrt(21), atol=1e-5)
    # z_score: (1/3, 0, 1/3) has mean 2/9, deviations (1, -2, 1)/9, unbiased std sqrt(6/81/2) = 1/(3 sqrt 3)
    z = repexp_bonus(batch, lam=1.0, sparse_dim=None, normalization="z_score")
    assert torch.allclose(z, torch.tensor([[1.0, -2.0, 1.0]]) / math.sqrt(3), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------------------------


def _batch(p: int = 3, g: int = 6, h: int = 10, seed: int = 0) -> GroupBatch:
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 2, (p, g), generator=gen).float()
    rewards[:, 0] = 1.0  # every group has a reward, so the default gate leaves the bonus on
    return GroupBatch(rewards=rewards, hidden=torch.randn(p, g, h, generator=gen))


@pytest.mark.parametrize(
    "options",
    [{}, {"bonus": "leave_one_out", "normalization": "z_score"}, {"sparse_dim": None, "beta": 1.0}],
    ids=str,
)
def test_permutation_within_a_group(options: dict[str, Any]) -> None:
    b = _batch()
    options = {"projection_seed": 5, **options}
    a = adv(b, **options)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    pb = GroupBatch(rewards=b.rewards[:, perm], hidden=b.hidden[:, perm])  # type: ignore[index]
    assert torch.allclose(adv(pb, **options), a[:, perm], atol=1e-6)


def test_constant_bonus_reduces_to_the_base() -> None:
    """Identical hidden states (bonus 0) or beta = 0: exactly the base estimator; G = 2 (both rollouts have the same
    leverage, a group constant): the base up to float rounding."""

    def close(got: torch.Tensor, want: torch.Tensor) -> None:  # the shaped rewards go through the base in float64
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)

    b = _batch()
    same = b.replace(hidden=b.hidden[:, :1].expand_as(b.hidden).clone())  # type: ignore[index]
    close(adv(same, beta=1.0, projection_seed=0), compute_advantages("grpo", b))
    close(adv(b, beta=0.0), compute_advantages("grpo", b))
    for base in ("rloo", "dr_grpo"):
        close(adv(same, beta=1.0, base=base), compute_advantages(base, b))
    two = _batch(p=4, g=2, seed=1)
    two = two.replace(rewards=torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]]))
    lev = repexp_bonus(two, sparse_dim=None)
    assert torch.allclose(lev[:, 0], lev[:, 1]) and torch.allclose(
        lev[:, 0], torch.full((4,), 0.5), atol=1e-2
    )  # (G-1)/G
    assert torch.allclose(adv(two, beta=5.0, sparse_dim=None), compute_advantages("grpo", two), atol=1e-5)
    for norm in ("rnd", "z_score"):  # equal up to rounding: no spread to normalise (the official std > 0 would be)
        z = repexp_bonus(two, sparse_dim=None, lam=1e-6, normalization=norm)  # type: ignore[arg-type]
        assert torch.equal(z, lev * 0 if norm == "z_score" else repexp_bonus(two, sparse_dim=None, lam=1e-6))


def test_the_bonus_changes_advantages_and_favours_the_outlier() -> None:
    """Three near-identical correct rollouts and one far away: the outlier gets the largest leverage, and so the
    largest advantage among the correct ones (GRPO gives them all the same)."""
    hidden = torch.tensor([[[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [3.0, 3.0], [0.05, 0.05]]])  # (1, 5, 2)
    b = GroupBatch(rewards=torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]]), hidden=hidden)
    lev = repexp_bonus(b, sparse_dim=None)
    assert int(lev.argmax()) == 3
    a = adv(b, beta=1.0, sparse_dim=None)
    g = compute_advantages("grpo", b)
    assert torch.allclose(g[0, :4], g[0, :1].expand(4))
    assert int(a[0, :4].argmax()) == 3 and float(a[0, 3] - a[0, 0]) > 0.1


# ---------------------------------------------------------------------------------------------
# Gates, normalisation, projection
# ---------------------------------------------------------------------------------------------


def test_gates() -> None:
    hidden = torch.randn(4, 4, 6, generator=torch.Generator().manual_seed(2))
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    b = GroupBatch(rewards=rewards, hidden=hidden)
    off = repexp_bonus(b, sparse_dim=None)  # default: off in a group with no reward
    assert torch.equal(off[0], torch.zeros(4)) and bool((off[1:] > 0).all())
    assert torch.equal(adv(b, beta=1.0, sparse_dim=None)[0], torch.zeros(4))  # all-wrong group: no signal
    on = repexp_bonus(b, sparse_dim=None, off_if_none_correct=False)
    assert bool((on > 0).all())
    assert bool((adv(b, beta=1.0, sparse_dim=None, off_if_none_correct=False)[0] != 0).any())
    some = repexp_bonus(b, sparse_dim=None, off_if_none_correct=False, off_if_some_correct=True)
    assert torch.equal(some[1], torch.zeros(4)) and torch.equal(some[3], torch.zeros(4)) and bool((some[0] > 0).all())
    allc = repexp_bonus(b, sparse_dim=None, off_if_all_correct=True)
    assert torch.equal(allc[2], torch.zeros(4)) and bool((allc[1] > 0).all())
    wrong = repexp_bonus(b, sparse_dim=None, off_if_none_correct=False, off_if_rollout_incorrect=True)
    assert torch.equal(wrong == 0, rewards == 0)


@pytest.mark.parametrize("normalization", ["rnd", "z_score"])
def test_normalisation_within_each_group(normalization: str) -> None:
    b = _batch(p=4, g=8, seed=3)
    z = repexp_bonus(b, sparse_dim=None, normalization=normalization)  # type: ignore[arg-type]
    assert torch.allclose(z.std(-1), torch.ones(4), atol=1e-5)
    if normalization == "z_score":
        assert torch.allclose(z.mean(-1), torch.zeros(4), atol=1e-6)
    else:
        raw = repexp_bonus(b, sparse_dim=None)
        assert torch.allclose(z * raw.std(-1, keepdim=True), raw, atol=1e-6)


def test_fresh_projection_comes_from_torchs_generator() -> None:
    b = _batch(h=64)
    torch.manual_seed(11)
    one = repexp_bonus(b, sparse_dim=8)
    torch.manual_seed(11)
    assert torch.equal(repexp_bonus(b, sparse_dim=8), one)
    torch.manual_seed(12)
    assert not torch.allclose(repexp_bonus(b, sparse_dim=8), one)
    fixed = repexp_bonus(b, sparse_dim=8, projection_seed=4)
    torch.manual_seed(99)
    assert torch.equal(repexp_bonus(b, sparse_dim=8, projection_seed=4), fixed)
    mat = sparse_projection(64, 8, generator=torch.Generator().manual_seed(4))
    direct = repexp_bonus(b.replace(hidden=(b.hidden.double() @ mat).float()), sparse_dim=None)  # type: ignore[union-attr]
    assert torch.allclose(fixed, direct, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Unscored rollouts, needs, errors
# ---------------------------------------------------------------------------------------------


def test_unscored_rollouts_are_outside_the_group() -> None:
    b = _batch(p=2, g=6, seed=4)
    r = b.rewards.clone()
    r[0, 2] = r[1, 0] = r[1, 5] = NAN
    junk = b.hidden.clone()  # type: ignore[union-attr]
    junk[0, 2] = 1e6
    junk[1, 0] = NAN
    nb = b.replace(rewards=r, hidden=junk)
    a = adv(nb, beta=1.0, projection_seed=1, normalization="z_score")
    assert a[0, 2] == 0 and a[1, 0] == 0 and a[1, 5] == 0
    for p, cols in ((0, [0, 1, 3, 4, 5]), (1, [1, 2, 3, 4])):
        alone = GroupBatch(rewards=r[p, cols][None], hidden=b.hidden[p, cols][None])  # type: ignore[index]
        ref = adv(alone, beta=1.0, projection_seed=1, normalization="z_score")
        assert torch.allclose(a[p, cols], ref[0], atol=1e-6)
    one = b.replace(
        rewards=torch.full_like(r, NAN).index_put_((torch.tensor([0]), torch.tensor([1])), torch.tensor(1.0))
    )
    assert torch.equal(adv(one, beta=1.0, normalization="rnd"), torch.zeros_like(r))


def test_needs_and_errors() -> None:
    assert advantage_needs("repexp").reads == {"hidden"}
    assert advantage_needs("repexp", {"base": "unlikeliness"}).reads == {"hidden", "old_logprobs", "mask"}
    b = _batch()
    with pytest.raises(ValueError, match="GroupBatch.hidden"):
        adv(GroupBatch(rewards=b.rewards))
    for option, value, match in [
        ("bonus", "sqrt", "bonus must be"),
        ("normalization", "l2", "normalization must be"),
        ("lam", 0.0, "lam must be > 0"),
        ("sparse_dim", 0, "sparse_dim must be"),
        ("projection_seed", 1.5, "projection_seed must be"),
        ("base", "repexp", "base must be"),
        ("base", "outcome_ucb", "base must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            adv(b, **{option: value})
    with pytest.raises(ValueError, match=r"hidden must have shape \(P, G, H\)"):
        GroupBatch(rewards=b.rewards, hidden=torch.zeros(3, 6))
