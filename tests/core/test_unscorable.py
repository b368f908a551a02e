"""Unscorable rollouts (NaN rewards): every estimator's statistics are over the scored rollouts only.

The central identity: a group of G rollouts with c scored gets, on those c, the advantages of the same estimator on
the group made of the c scored rollouts alone (G = c), and exactly 0 on the unscorable ones. Where it does not hold
as stated: ``scale="batch"`` (a batch std: it holds when every group has the same c), and ``passk`` with c < k (no
k-subset; such a group gets 0).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from divrl.core.advantages import (
    ADVANTAGES,
    advantage_handles_unscored,
    advantage_names,
    compute_advantages,
    grpo,
    on_scored_rollouts,
    register_advantage,
    setpo_bonus,
)
from divrl.core.batch import GroupBatch
from divrl.core.diversity import darling_diversity
from divrl.core.losses import compute_loss

NAN = math.nan

# Every configuration whose statistics are per group (the identity holds group by group).
PER_GROUP: list[tuple[str, dict[str, Any]]] = [
    ("grpo", {}),
    ("grpo", {"unbiased": False}),
    ("grpo", {"scale": "none"}),
    ("dr_grpo", {}),
    ("rloo", {}),
    ("passk", {"k": 1}),
    ("passk", {"k": 2}),
    ("passk", {"k": 3}),
    ("unlikeliness", {}),
    ("unlikeliness", {"drop_uniform": False, "beta_rank": 0.5}),
    ("darling", {}),
    ("darling", {"scale": "group", "floor": 0.0}),
    ("darling", {"shift": True}),
    ("setpo", {}),
    ("setpo", {"kernel": "ngram", "ngram": 2}),
    ("setpo", {"base": "rloo", "gate": "correct", "center": True, "lam": 0.3}),
    ("setpo", {"base": "passk", "base_options": {"k": 2}, "members": "correct"}),
    ("setpo", {"base": "darling", "base_options": {"scale": "group"}, "center": True}),
    ("dra", {}),
    ("dra", {"base": "dr_grpo", "kernel": "cosine", "clamp": True}),
    ("dra", {"kernel": "ngram", "base": "rloo"}),
    ("arm", {}),
    ("arm", {"prompt": "none", "gate": "correct", "apply": "mixed"}),
    ("repexp", {"projection_seed": 0, "sparse_dim": 2}),
    ("repexp", {"sparse_dim": None, "beta": 1.0, "bonus": "leave_one_out", "normalization": "z_score"}),
    ("repexp", {"sparse_dim": None, "normalization": "rnd", "off_if_none_correct": False, "base": "rloo"}),
    ("dsdr", {}),
    ("dsdr", {"kernel": "ngram", "lam": 0.7, "bonus_max": 0.3, "base": "rloo"}),
]
BATCH_SCALE: list[tuple[str, dict[str, Any]]] = [
    ("grpo", {"scale": "batch"}),
    ("darling", {"scale": "batch"}),
    ("setpo", {"base_options": {"scale": "batch"}}),
    ("dra", {"base_options": {"scale": "batch"}, "kernel": "ngram"}),
]
IDS = [f"{n}-{o}" for n, o in PER_GROUP]


def adv(name: str, batch: GroupBatch, **options: Any) -> Tensor:
    return compute_advantages(name, batch, **options)


def full_batch(p: int, g: int, seed: int, binary: bool = True, t: int = 4) -> GroupBatch:
    """Every field any estimator reads; old log-probs on a coarse grid, so likelihood ties occur."""
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 2, (p, g), generator=gen).float() if binary else torch.rand(p, g, generator=gen)
    lengths = torch.randint(1, t + 1, (p, g), generator=gen)  # (P, G)
    words = ["ab", "cd", "ef"]
    return GroupBatch(
        rewards=rewards,
        correct=rewards > 0.5,
        texts=[
            [" ".join(words[int(i)] for i in torch.randint(0, 3, (3,), generator=gen)) for _ in range(g)]
            for _ in range(p)
        ],
        old_logprobs=-torch.randint(0, 3, (p, g, t), generator=gen).float() / 2,
        mask=torch.arange(t)[None, None, :] < lengths[..., None],
        embeddings=torch.randn(p, g, 3, generator=gen),
        partition=torch.randint(0, 3, (p, g), generator=gen),
        hidden=torch.randn(p, g, 3, generator=gen),
    )


def with_unscored(batch: GroupBatch, unscored: Tensor) -> GroupBatch:
    return batch.replace(rewards=batch.rewards.masked_fill(unscored, NAN))


def one_group(batch: GroupBatch, p: int, cols: list[int]) -> GroupBatch:
    """Group ``p`` reduced to the rollouts ``cols``, as a (1, len(cols)) batch with every field (the test oracle)."""

    def pick(x: Tensor | None) -> Tensor | None:
        return None if x is None else x[p, cols][None]

    def pick_list(rows: list[list[str]] | None) -> list[list[str]] | None:
        return None if rows is None else [[rows[p][g] for g in cols]]

    return GroupBatch(
        rewards=batch.rewards[p, cols][None],
        correct=pick(batch.correct),
        texts=pick_list(batch.texts),
        old_logprobs=pick(batch.old_logprobs),
        mask=pick(batch.mask),
        embeddings=pick(batch.embeddings),
        partition=pick(batch.partition),
        hidden=pick(batch.hidden),
    )


def expected_per_group(name: str, options: dict[str, Any], batch: GroupBatch) -> Tensor:
    """The identity's right-hand side, group by group: the estimator on each group's c scored rollouts alone."""
    out = torch.zeros_like(batch.rewards)
    for p in range(batch.num_prompts):
        cols = [g for g in range(batch.group_size) if not math.isnan(float(batch.rewards[p, g]))]
        k = options.get("k", (options.get("base_options") or {}).get("k", 1))
        if not cols or ((name == "passk" or options.get("base") == "passk") and len(cols) < k):
            continue  # nothing scored, or passk without a k-subset: 0
        out[p, cols] = adv(name, one_group(batch, p, cols), **options)[0]
    return out


# ---------------------------------------------------------------------------------------------
# Closed forms, G = 8 with 4 scored
# ---------------------------------------------------------------------------------------------

# scored rewards (1, 0, 1, 1) at positions 0, 2, 4, 6: mean 3/4, unbiased std 1/2
R8 = [[1.0, NAN, 0.0, NAN, 1.0, NAN, 1.0, NAN]]
SCORED = [0, 2, 4, 6]


def test_grpo_g8_with_4_scored_is_g4_not_inflated() -> None:
    a = adv("grpo", GroupBatch(rewards=torch.tensor(R8)))
    expected = torch.tensor([0.5, 0.0, -1.5, 0.0, 0.5, 0.0, 0.5, 0.0])  # (r - 3/4) / (1/2)
    assert torch.allclose(a[0], expected, atol=1e-5)
    assert torch.equal(a[0, 1::2], torch.zeros(4))
    assert torch.allclose(a[:, SCORED], adv("grpo", GroupBatch(rewards=torch.tensor([[1.0, 0.0, 1.0, 1.0]]))))
    # the former mean-filling took the std over all 8 (filled values count as zero deviations): sqrt(7/3) larger
    filled = torch.tensor([1.0, 0.75, 0.0, 0.75, 1.0, 0.75, 1.0, 0.75])
    old = (filled - filled.mean()) / (filled.std() + 1e-6)
    assert float(old[0] / a[0, 0]) == pytest.approx(math.sqrt(7 / 3), rel=1e-4)  # the x1.53 of issue 13
    # population std: sqrt(3/16) over the 4 scored
    pop = adv("grpo", GroupBatch(rewards=torch.tensor(R8)), unbiased=False)
    assert torch.allclose(pop[0, SCORED], torch.tensor([1.0, -3.0, 1.0, 1.0]) / 4 / math.sqrt(3 / 16), atol=1e-5)


def test_rloo_and_dr_grpo_g8_with_4_scored() -> None:
    b = GroupBatch(rewards=torch.tensor(R8))
    # leave-one-out over the other 3 scored: 1 - 2/3, 0 - 1, ...  (TRL rloo_trainer: (nansum - r) / (count - 1))
    assert torch.allclose(adv("rloo", b)[0], torch.tensor([1 / 3, 0, -1, 0, 1 / 3, 0, 1 / 3, 0]), atol=1e-6)
    # the former mean-filling gave 8/7 (r - mean) = 2/7 instead of 1/3: x6/7
    assert torch.allclose(adv("dr_grpo", b)[0], torch.tensor([0.25, 0, -0.75, 0, 0.25, 0, 0.25, 0]))


def test_passk_counts_scored_rollouts_only() -> None:
    # 4 scored, 2 correct, k = 2: Rbar = 1 - C(2,2)/C(4,2) = 5/6, sigma = sqrt(5)/6, A = +-1/sqrt(5)
    rewards = torch.tensor([[1.0, NAN, 0.0, NAN, 1.0, NAN, 0.0, NAN]])
    correct = torch.tensor([[True, True, False, True, True, False, False, False]])  # unscorable "correct": ignored
    a = adv("passk", GroupBatch(rewards=rewards, correct=correct), k=2)
    h = 1 / math.sqrt(5)
    assert torch.allclose(a[0], torch.tensor([h, 0, -h, 0, h, 0, -h, 0]), atol=1e-5)
    # k = 5 > 4 scored: no 5-subset of scored rollouts, so 0 (the G = 8 table would give non-zero values)
    assert torch.equal(adv("passk", GroupBatch(rewards=rewards, correct=correct), k=5), torch.zeros(1, 8))
    with pytest.raises(ValueError, match="k must"):
        adv("passk", GroupBatch(rewards=rewards), k=9)  # k is checked against G


def test_unlikeliness_ranks_among_scored_rollouts() -> None:
    # the 4-rollout case of test_advantages.py, with 4 unscorable rollouts interleaved whose log-probs (most and
    # least likely of all) would shift every rank and the divisor G if they counted
    lp4 = torch.tensor([[-0.1, -0.1, -0.1], [-2.0, -2.0, -2.0], [-0.5, -1.5, -1.0], [-0.5, -0.5, -0.5]])
    lp8 = torch.stack([lp4[0], torch.zeros(3), lp4[1], torch.full((3,), -9.0), lp4[2], lp4[3], torch.zeros(3), lp4[0]])
    rewards = torch.tensor([[1.0, NAN, 1.0, NAN, 1.0, 0.0, NAN, NAN]])
    b = GroupBatch(rewards=rewards, old_logprobs=lp8[None], mask=torch.ones(1, 8, 3, dtype=torch.bool))
    a = adv("unlikeliness", b)
    assert a[0, [0, 2, 4, 5]].tolist() == pytest.approx([0.268866, 0.672165, 0.537732, -1.478762], abs=1e-5)
    assert torch.equal(a[0, [1, 3, 6, 7]], torch.zeros(4))


def test_darling_partition_restricted_to_scored() -> None:
    # scored (positions 0, 1, 3, 5): rewards (1, 1, 1, 0), classes {0, 1}, {3}, {5} -> the 1x4 case of
    # test_advantages.py: (1/12, 1/12, 5/12, -7/12). The unscorable ones share classes 0 and 1 with scored rollouts.
    b = GroupBatch(
        rewards=torch.tensor([[1.0, 1.0, NAN, 1.0, NAN, 0.0, NAN]]),
        partition=torch.tensor([[0, 0, 0, 1, 1, 2, 3]]),
    )
    a = adv("darling", b)
    assert torch.allclose(a[0], torch.tensor([1 / 12, 1 / 12, 0, 5 / 12, 0, -7 / 12, 0]), atol=1e-6)
    div = darling_diversity(b.partition, 0.1, b.scored)  # type: ignore[arg-type]
    assert torch.allclose(div[0], torch.tensor([2 / 3, 2 / 3, 0, 1, 0, 1, 0]))
    with pytest.raises(ValueError, match="members"):
        darling_diversity(b.partition, 0.1, b.scored.float())  # type: ignore[arg-type]


def test_setpo_kernel_over_scored_rollouts() -> None:
    # scored texts (aaa, aaa, bbb) with rewards (1, 0, 0): the G = 3 case of test_advantages.py; the unscorable
    # copies of "bbb" would make "bbb" common (lower s) if they were in the set
    s3 = torch.tensor([-0.030979, -0.030979, 0.256703])
    s_ = 1 / math.sqrt(3)
    b = GroupBatch(
        rewards=torch.tensor([[1.0, NAN, 0.0, 0.0, NAN]]),
        texts=[["aaa", "bbb", "aaa", "bbb", "bbb"]],
        correct=torch.tensor([[True, True, False, False, True]]),
    )
    a = adv("setpo", b)
    assert torch.allclose(a[0, [0, 2, 3]], torch.tensor([2 * s_, -s_, -s_]) + s3, atol=1e-5)
    assert torch.equal(a[0, [1, 4]], torch.zeros(2))
    # members="correct": only position 0 is correct and scored: a set of one, s = 0
    assert torch.equal(setpo_bonus(b, members="correct"), torch.zeros(1, 5))
    # gate + center: the centring mean is over the 3 scored rollouts
    gated = torch.tensor([s3[0], 0.0, 0.0])
    centred = setpo_bonus(b, gate="correct", center=True)
    assert torch.allclose(centred[0, [0, 2, 3]], gated - gated.mean(), atol=1e-6)
    assert torch.equal(centred[0, [1, 4]], torch.zeros(2))


def test_batch_scale_is_the_std_of_every_scored_reward() -> None:
    # groups with 3 and 2 scored: centred within each group, divided by the std of the 5 scored rewards
    rewards = torch.tensor([[1.0, 0.0, NAN, 0.0], [NAN, 1.0, 1.0 / 2, NAN]])
    scored = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5])
    centred = torch.tensor([[2 / 3, -1 / 3, 0, -1 / 3], [0, 0.25, -0.25, 0]])
    a = adv("grpo", GroupBatch(rewards=rewards), scale="batch")
    assert torch.allclose(a, centred / (scored.std() + 1e-6), atol=1e-6)  # TRL: nanstd(rewards)


@pytest.mark.parametrize(("name", "options"), PER_GROUP + BATCH_SCALE, ids=IDS + [f"{n}-{o}" for n, o in BATCH_SCALE])
def test_groups_with_zero_or_one_scored_get_zeros(name: str, options: dict[str, Any]) -> None:
    b = full_batch(p=3, g=5, seed=1)
    unscored = torch.ones(3, 5, dtype=torch.bool)
    unscored[1, 2] = False  # group 1 has one scored rollout; groups 0 and 2 none
    assert torch.equal(adv(name, with_unscored(b, unscored), **options), torch.zeros(3, 5))


# ---------------------------------------------------------------------------------------------
# Properties over random masks
# ---------------------------------------------------------------------------------------------


@st.composite
def masked_batches(draw: st.DrawFn) -> tuple[GroupBatch, Tensor]:
    p = draw(st.integers(1, 3))
    g = draw(st.integers(2, 9))
    seed = draw(st.integers(0, 10_000))
    binary = draw(st.booleans())
    unscored = torch.tensor(draw(st.lists(st.lists(st.booleans(), min_size=g, max_size=g), min_size=p, max_size=p)))
    return full_batch(p, g, seed, binary), unscored


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(("name", "options"), PER_GROUP, ids=IDS)
@SETTINGS
@given(case=masked_batches())
def test_g_with_c_scored_equals_g_equals_c(
    name: str, options: dict[str, Any], case: tuple[GroupBatch, Tensor]
) -> None:
    full, unscored = case
    k = options.get("k", (options.get("base_options") or {}).get("k", 1))
    if full.group_size < k:
        return
    b = with_unscored(full, unscored)
    a = adv(name, b, **options)
    assert torch.equal(a[unscored], torch.zeros(int(unscored.sum())))
    assert torch.allclose(a, expected_per_group(name, options, b), atol=1e-5)


@pytest.mark.parametrize(("name", "options"), PER_GROUP + BATCH_SCALE, ids=IDS + [f"{n}-{o}" for n, o in BATCH_SCALE])
@SETTINGS
@given(case=masked_batches(), junk_seed=st.integers(0, 1000))
def test_unscorable_data_is_never_read(
    name: str, options: dict[str, Any], case: tuple[GroupBatch, Tensor], junk_seed: int
) -> None:
    """Whatever an unscorable rollout holds (log-probs, text, embedding, class, correctness) changes nothing."""
    full, unscored = case
    if full.group_size < options.get("k", 1):
        return
    b = with_unscored(full, unscored)
    junk = full_batch(full.num_prompts, full.group_size, junk_seed + 1)
    u3 = unscored[..., None]
    other = b.replace(
        correct=torch.where(unscored, junk.correct, b.correct),  # type: ignore[arg-type]
        texts=[
            [j if u else t for t, j, u in zip(*row, strict=True)]
            for row in zip(b.texts, junk.texts, unscored.tolist(), strict=True)
        ],  # type: ignore[arg-type]
        old_logprobs=torch.where(u3, junk.old_logprobs, b.old_logprobs),  # type: ignore[arg-type]
        mask=torch.where(u3, junk.mask, b.mask),  # type: ignore[arg-type]
        embeddings=torch.where(u3, junk.embeddings, b.embeddings),  # type: ignore[arg-type]
        partition=torch.where(unscored, junk.partition, b.partition),  # type: ignore[arg-type]
        hidden=torch.where(u3, junk.hidden, b.hidden),  # type: ignore[arg-type]
    )
    assert torch.allclose(adv(name, b, **options), adv(name, other, **options), atol=1e-6)


@pytest.mark.parametrize(("name", "options"), BATCH_SCALE, ids=[f"{n}-{o}" for n, o in BATCH_SCALE])
def test_batch_scale_identity_when_every_group_has_c_scored(name: str, options: dict[str, Any]) -> None:
    """The batch std covers every scored reward: with the same c in every group the G = c batch is rectangular."""
    for seed in range(5):
        full = full_batch(4, 7, seed, binary=seed % 2 == 0)
        gen = torch.Generator().manual_seed(seed)
        cols = torch.stack([torch.randperm(7, generator=gen)[:4].sort().values for _ in range(4)])  # (4, 4) scored
        unscored = torch.ones(4, 7, dtype=torch.bool).scatter(1, cols, False)
        a = adv(name, with_unscored(full, unscored), **options)
        compact = [one_group(full, p, cols[p].tolist()) for p in range(4)]
        c_batch = GroupBatch(
            rewards=torch.cat([c.rewards for c in compact]),
            texts=[c.texts[0] for c in compact],  # type: ignore[index]
            embeddings=torch.cat([c.embeddings for c in compact]),  # type: ignore[misc]
            partition=torch.cat([c.partition for c in compact]),  # type: ignore[misc]
        )
        assert torch.allclose(a.gather(1, cols), adv(name, c_batch, **options), atol=1e-5)
        assert torch.equal(a[unscored], torch.zeros(int(unscored.sum())))


# ---------------------------------------------------------------------------------------------
# All scored: unchanged; third-party estimators; losses
# ---------------------------------------------------------------------------------------------


def _plain_grpo(r: Tensor, scale: str = "group") -> Tensor:
    """The pre-change arithmetic (no mask) of grpo, verbatim."""
    centred = (r - r.mean(-1, keepdim=True)).masked_fill(r.amax(-1, keepdim=True) == r.amin(-1, keepdim=True), 0.0)
    std = r.std(-1, keepdim=True) if scale == "group" else r.std()
    return centred / (std + 1e-6)


def test_all_scored_is_bit_identical_to_the_plain_arithmetic() -> None:
    for seed in range(20):
        b = full_batch(3, 2 + seed % 15, seed, binary=seed % 2 == 0)
        r, g = b.rewards, b.group_size
        assert torch.equal(adv("grpo", b), _plain_grpo(r))
        assert torch.equal(adv("grpo", b, scale="batch"), _plain_grpo(r, "batch"))
        centred = (r - r.mean(-1, keepdim=True)).masked_fill(r.amax(-1, keepdim=True) == r.amin(-1, keepdim=True), 0)
        assert torch.equal(adv("dr_grpo", b), centred)
        assert torch.equal(adv("rloo", b), centred * (g / (g - 1)))
        lp = torch.where(b.mask, b.old_logprobs, 0).sum(-1) / b.mask.sum(-1)  # type: ignore[arg-type]
        rank = lp.argsort(dim=-1, stable=True).argsort(dim=-1, stable=True).float()
        shaped = r * (1 - 0.25 * rank / g)
        expected = _plain_grpo(shaped).masked_fill(r.amax(-1, keepdim=True) == r.amin(-1, keepdim=True), 0.0)
        assert torch.equal(adv("unlikeliness", b), expected)


def test_user_estimator_sees_only_scored_rollouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ADVANTAGES, "_entries", dict(ADVANTAGES._entries))
    seen: list[GroupBatch] = []

    @register_advantage("_plain_grpo")
    def plain(batch: GroupBatch) -> Tensor:
        assert not bool(torch.isnan(batch.rewards).any())
        seen.append(batch)
        if batch.group_size == 1:
            return torch.zeros_like(batch.rewards)
        return _plain_grpo(batch.rewards)

    assert not advantage_handles_unscored("_plain_grpo")
    assert all(advantage_handles_unscored(n) for n in advantage_names() if not n.startswith("_"))
    full = full_batch(5, 6, seed=3)
    unscored = torch.tensor([[0, 1, 0, 1, 0, 0], [1] * 6, [0] * 6, [1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 1, 0]]).bool()
    b = with_unscored(full, unscored)
    assert torch.allclose(adv("_plain_grpo", b), adv("grpo", b), atol=1e-6)
    # groups bucketed by scored count (rows 0 and 4: 4; row 2: 6; row 3: 5), each compacted with every field, in
    # order; the empty group is skipped
    assert sorted((x.num_prompts, x.group_size) for x in seen) == [(1, 5), (1, 6), (2, 4)]
    four = next(x for x in seen if x.group_size == 4)
    rows_cols = [(0, [0, 2, 4, 5]), (4, [0, 1, 3, 5])]
    assert four.texts == [[full.texts[p][g] for g in c] for p, c in rows_cols]  # type: ignore[index]
    lp = torch.stack([full.old_logprobs[p, c] for p, c in rows_cols])  # type: ignore[index]
    assert torch.equal(four.old_logprobs, lp)  # type: ignore[arg-type]
    # setpo composes with it the same way
    assert torch.allclose(adv("setpo", b, base="_plain_grpo"), adv("setpo", b), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        on_scored_rollouts(lambda sub: sub.rewards[:, :1], b)  # checked by compute_advantages' own path too


def test_builtin_called_directly_handles_nan() -> None:
    b = GroupBatch(rewards=torch.tensor(R8))
    assert torch.equal(grpo(b), adv("grpo", b))
    with pytest.raises(ValueError, match="inf"):
        adv("grpo", GroupBatch(rewards=torch.tensor([[1.0, math.inf]])))


def test_positive_entropy_never_gates_an_unscorable_rollout_as_correct() -> None:
    lp = torch.full((1, 3, 2), -0.5, requires_grad=True)
    batch = GroupBatch(
        rewards=torch.tensor([[1.0, NAN, 0.0]]),
        correct=torch.tensor([[True, True, False]]),  # the unscorable one claims to be correct
        logprobs=lp,
        mask=torch.ones(1, 3, 2),
    )
    out = compute_loss("positive_entropy", batch, torch.zeros(1, 3))
    assert out.metrics["div_gate_frac"] == pytest.approx(1 / 3)
    assert out.metrics["div_term"] == pytest.approx(0.5 / 3)
