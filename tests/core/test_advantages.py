"""Tests for divrl.core.advantages: hand-computed values, invariants, registry and NaN handling."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from divrl.core.advantages import (
    ADVANTAGES,
    advantage_names,
    advantage_needs_logprobs,
    compute_advantages,
    get_advantage,
    grpo,
    register_advantage,
    setpo_bonus,
)
from divrl.core.batch import GroupBatch
from divrl.core.registry import UnknownNameError

S3 = 1 / math.sqrt(3)  # GRPO value scale for a 3-rollout binary group with one odd one out


def adv(name: str, batch: GroupBatch, **options: Any) -> Tensor:
    return compute_advantages(name, batch, **options)


def full_batch(p: int = 3, g: int = 6, t: int = 5, seed: int = 0) -> GroupBatch:
    """A batch with every field any estimator reads (continuous old log-probs: no rank ties)."""
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 2, (p, g), generator=gen).to(torch.float32)  # (P, G) binary
    lengths = torch.randint(1, t + 1, (p, g), generator=gen)  # (P, G)
    mask = torch.arange(t)[None, None, :] < lengths[..., None]  # (P, G, T)
    words = ["alpha", "beta", "gamma", "delta"]
    texts = [
        [" ".join(words[int(i)] for i in torch.randint(0, 4, (3,), generator=gen)) for _ in range(g)] for _ in range(p)
    ]
    return GroupBatch(
        rewards=rewards,
        correct=rewards == 1,
        texts=texts,
        old_logprobs=-torch.rand(p, g, t, generator=gen),
        mask=mask,
        embeddings=torch.randn(p, g, 4, generator=gen),
        partition=torch.randint(0, 3, (p, g), generator=gen),
    )


# Every estimator configuration exercised by the invariant tests.
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("grpo", {}),
    ("grpo", {"scale": "batch"}),
    ("grpo", {"scale": "none", "unbiased": False}),
    ("dr_grpo", {}),
    ("rloo", {}),
    ("passk", {"k": 1}),
    ("passk", {"k": 3}),
    ("unlikeliness", {}),
    ("unlikeliness", {"drop_uniform": False}),
    ("darling", {}),
    ("darling", {"scale": "group"}),
    ("darling", {"shift": True, "floor": 0.0}),
    ("setpo", {}),
    ("setpo", {"kernel": "ngram", "ngram_unit": "token", "ngram": 2}),
    ("setpo", {"base": "rloo", "gate": "correct", "center": True, "lam": 0.3}),
    ("setpo", {"base": "darling", "base_options": {"scale": "group"}}),
    ("setpo", {"members": "correct", "lam": 2.0}),
    ("dra", {}),
    ("dra", {"kernel": "ngram", "base": "dr_grpo"}),
    ("dra", {"kernel": "cosine", "clamp": True, "base": "rloo"}),
    ("arm", {}),
    ("arm", {"prompt": "none", "gate": "correct", "apply": "mixed", "low_frac": 0.5}),
]
CONFIG_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, o in CONFIGS]
REWARD_ONLY = [
    (n, o) for n, o in CONFIGS if n not in ("darling", "setpo", "dra", "arm") and o.get("drop_uniform", True)
]


def rewards_batch(rows: list[list[float]], **fields: Any) -> GroupBatch:
    return GroupBatch(rewards=torch.tensor(rows, dtype=torch.float32), **fields)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_all_estimators_registered() -> None:
    assert {"grpo", "dr_grpo", "rloo", "darling", "setpo", "unlikeliness", "passk"} <= set(advantage_names())
    # only unlikeliness and arm read token log-probs: a trainer runs a log-prob pass before them
    assert [n for n in advantage_names() if advantage_needs_logprobs(n)] == ["arm", "unlikeliness"]
    assert get_advantage("grpo") is grpo


def test_registry_duplicate_name_raises_and_same_function_is_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ADVANTAGES, "_entries", dict(ADVANTAGES._entries))  # restore the registry afterwards
    register_advantage("grpo")(grpo)  # same object again: harmless
    with pytest.raises(ValueError, match="already registered"):

        @register_advantage("grpo")
        def other(batch: GroupBatch) -> Tensor:
            return torch.zeros_like(batch.rewards)


def test_registry_unknown_name_lists_known() -> None:
    with pytest.raises(UnknownNameError) as info:
        adv("nope", rewards_batch([[1.0, 0.0]]))
    assert "nope" in str(info.value)
    assert "grpo" in str(info.value)
    assert "darling" in str(info.value)


def test_unknown_option_is_named() -> None:
    batch = rewards_batch([[1.0, 0.0]])
    with pytest.raises(ValueError, match="temperature"):
        adv("grpo", batch, temperature=1.0)
    with pytest.raises(ValueError, match="bogus"):
        adv("setpo", batch.replace(texts=[["a", "b"]]), base_options={"bogus": 1})
    with pytest.raises(UnknownNameError, match="nope"):
        adv("setpo", batch.replace(texts=[["a", "b"]]), base="nope")


def test_compute_advantages_checks_estimator_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ADVANTAGES, "_entries", dict(ADVANTAGES._entries))

    @register_advantage("_test_wrong_shape")
    def wrong_shape(batch: GroupBatch) -> Tensor:
        return batch.rewards[:, :1]

    @register_advantage("_test_inf")
    def infinite(batch: GroupBatch) -> Tensor:
        return torch.full_like(batch.rewards, math.inf)

    batch = rewards_batch([[1.0, 0.0]])
    with pytest.raises(ValueError, match="shape"):
        adv("_test_wrong_shape", batch)
    with pytest.raises(ValueError, match="non-finite"):
        adv("_test_inf", batch)


# ---------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------

R23 = [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]


def test_grpo_hand_computed() -> None:
    b = rewards_batch(R23)
    # group std (unbiased) = 1/sqrt(3): centred (2/3, -1/3, -1/3) / (1/sqrt3)
    expected = torch.tensor([[2 * S3, -S3, -S3], [S3, S3, -2 * S3]])
    assert torch.allclose(adv("grpo", b), expected, atol=1e-5)
    # population std = sqrt(2)/3
    pop = torch.tensor([[2.0, -1.0, -1.0], [1.0, 1.0, -2.0]]) / math.sqrt(2)
    assert torch.allclose(adv("grpo", b, unbiased=False), pop, atol=1e-5)
    # batch std over all 6 rewards (mean 1/2) = sqrt(6 * 1/4 / 5) = sqrt(0.3)
    centred = torch.tensor([[2.0, -1.0, -1.0], [1.0, 1.0, -2.0]]) / 3
    assert torch.allclose(adv("grpo", b, scale="batch"), centred / math.sqrt(0.3), atol=1e-5)
    assert torch.allclose(adv("grpo", b, scale="none"), centred)
    # 1x4: centred (.5, -.5, 0, 0), std = sqrt(0.5/3)
    b14 = rewards_batch([[1.0, 0.0, 0.5, 0.5]])
    assert torch.allclose(
        adv("grpo", b14), torch.tensor([[1.0, -1.0, 0.0, 0.0]]) * 0.5 / math.sqrt(0.5 / 3), atol=1e-5
    )
    with pytest.raises(ValueError, match="scale"):
        adv("grpo", b, scale="prompt")


def test_dr_grpo_and_rloo_hand_computed() -> None:
    b = rewards_batch(R23)
    centred = torch.tensor([[2.0, -1.0, -1.0], [1.0, 1.0, -2.0]]) / 3
    assert torch.allclose(adv("dr_grpo", b), centred)
    # RLOO: r_i - mean of the other two
    assert torch.allclose(adv("rloo", b), torch.tensor([[1.0, -0.5, -0.5], [0.5, 0.5, -1.0]]))
    b14 = rewards_batch([[1.0, 0.0, 0.5, 0.25]])
    assert torch.allclose(adv("dr_grpo", b14), torch.tensor([[0.5625, -0.4375, 0.0625, -0.1875]]))
    # 1 - (0 + .5 + .25)/3 = .75 ; 0 - 1.75/3 ; .5 - 1.25/3 ; .25 - 1.5/3
    assert torch.allclose(adv("rloo", b14), torch.tensor([[0.75, -1.75 / 3, 0.5 - 1.25 / 3, -0.25]]))


def test_darling_hand_computed() -> None:
    # group 1: classes {0,1},{2}: div (.5, .5, 1) -> r' (.5, .5, 0) -> mean 1/3
    # group 2: one class: div floored at 0.1 for all -> r' constant -> 0
    b = rewards_batch([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], partition=torch.tensor([[0, 0, 1], [4, 4, 4]]))
    assert torch.allclose(adv("darling", b), torch.tensor([[1 / 6, 1 / 6, -1 / 3], [0.0, 0.0, 0.0]]))
    # scale="group": std of (.5, .5, 0) = sqrt(1/12)
    assert torch.allclose(
        adv("darling", b, scale="group"), torch.tensor([[S3, S3, -2 * S3], [0.0, 0.0, 0.0]]), atol=1e-5
    )
    # 1x4: classes {0,1},{2},{3}: div (2/3, 2/3, 1, 1); r' = (2/3, 2/3, 1, 0); mean 7/12
    b14 = rewards_batch([[1.0, 1.0, 1.0, 0.0]], partition=torch.tensor([[0, 0, 1, 2]]))
    assert torch.allclose(adv("darling", b14), torch.tensor([[1 / 12, 1 / 12, 5 / 12, -7 / 12]]))
    # floor matters: all 4 in one class and rewards (1,1,1,0): r' = (.25, .25, .25, 0) with floor .25
    b_one = rewards_batch([[1.0, 1.0, 1.0, 0.0]], partition=torch.zeros(1, 4, dtype=torch.long))
    assert torch.allclose(adv("darling", b_one, floor=0.25), torch.tensor([[1.0, 1.0, 1.0, -3.0]]) * 0.25 / 4)


def test_darling_shift_and_errors() -> None:
    b = rewards_batch([[-1.0, 0.0, 1.0]], partition=torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match=">= 0"):
        adv("darling", b)
    # shift: (0, 1, 2), all distinct -> div 1 -> centred (-1, 0, 1)
    assert torch.allclose(adv("darling", b, shift=True), torch.tensor([[-1.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"partition.*labels_tensor"):
        adv("darling", rewards_batch([[1.0, 0.0]]))


def test_passk_hand_computed() -> None:
    # n=3, k=2. c=1: Rbar = 1 - C(2,2)/C(3,2) = 2/3, sigma = sqrt(2)/3;
    #   A_pos = (1/3)/sigma = 1/sqrt2; A_neg = (1/3 - C(1,1)/C(2,1))/sigma = -1/(2 sqrt2)
    # c=2: n_neg = 1 < k -> Rbar = 1 -> zeros
    b = rewards_batch(R23)
    h = 1 / math.sqrt(2)
    assert torch.allclose(adv("passk", b, k=2), torch.tensor([[h, -h / 2, -h / 2], [0.0, 0.0, 0.0]]), atol=1e-5)
    # related-methods.md §7 examples, n=8, k=4: c=1 -> (1.0, -0.143); c=4 -> +-1/sqrt(69) = +-0.120
    b8 = rewards_batch([[1.0] + [0.0] * 7, [1.0] * 4 + [0.0] * 4])
    a = adv("passk", b8, k=4)
    assert a[0, 0].item() == pytest.approx(1.0, abs=1e-5)
    assert a[0, 1:].tolist() == pytest.approx([(0.5 - 20 / 35) / 0.5] * 7, abs=1e-5)
    assert a[1].tolist() == pytest.approx([1 / math.sqrt(69)] * 4 + [-1 / math.sqrt(69)] * 4, abs=1e-5)
    # zero-sum property c*A_pos + n_neg*A_neg = 0
    assert torch.allclose(a.sum(-1), torch.zeros(2), atol=1e-5)


def test_passk_uses_batch_correct_and_checks_k() -> None:
    b = rewards_batch([[0.7, 0.2, 0.0]], correct=torch.tensor([[True, False, False]]))
    h = 1 / math.sqrt(2)
    assert torch.allclose(adv("passk", b, k=2), torch.tensor([[h, -h / 2, -h / 2]]), atol=1e-5)
    # without `correct`, only reward == 1 counts as correct (official code): 0.7 is incorrect -> all wrong -> 0
    assert torch.equal(adv("passk", b.replace(correct=None), k=2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="k must"):
        adv("passk", b, k=4)
    with pytest.raises(ValueError, match="k must"):
        adv("passk", b, k=0)


def test_passk_k1_is_grpo_with_population_std() -> None:
    b = full_batch(p=6, g=8, seed=3)
    assert torch.allclose(adv("passk", b, k=1), adv("grpo", b, unbiased=False), atol=1e-5)


def _unlikeliness_batch(rewards: list[float]) -> GroupBatch:
    # mean old log-prob over real tokens: (-0.1, -2.0, -1.0, -0.5); padding holds garbage (-inf/NaN)
    lp = torch.tensor([[[-0.1, -0.1, -math.inf], [-2.0, math.nan, math.nan], [-0.5, -1.5, -1.0], [-0.5, -0.5, 0.0]]])
    mask = torch.tensor([[[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]]], dtype=torch.bool)
    return rewards_batch([rewards], old_logprobs=lp, mask=mask)


def test_unlikeliness_hand_computed() -> None:
    # ranks (0 = least likely): (3, 0, 1, 2) -> multipliers 1 - .25 * rank / 4 = (.8125, 1, .9375, .875)
    # rewards (1, 1, 1, 0) -> r' = (.8125, 1, .9375, 0), then GRPO normalisation (unbiased std)
    a = adv("unlikeliness", _unlikeliness_batch([1.0, 1.0, 1.0, 0.0]))
    assert a[0].tolist() == pytest.approx([0.268866, 0.672165, 0.537732, -1.478762], abs=1e-5)
    # most likely correct sample is pushed down relative to the least likely one
    assert a[0, 0] < a[0, 2] < a[0, 1]


def test_unlikeliness_uniform_groups() -> None:
    b = _unlikeliness_batch([1.0, 1.0, 1.0, 1.0])
    assert torch.equal(adv("unlikeliness", b), torch.zeros(1, 4))  # official recipe drops such groups
    # without dropping: r' = multipliers (.8125, 1, .9375, .875), mean .90625
    a = adv("unlikeliness", b, drop_uniform=False)
    centred = torch.tensor([0.8125, 1.0, 0.9375, 0.875]) - 0.90625
    assert torch.allclose(a[0], centred / (centred.std() + 1e-6), atol=1e-5)


def test_unlikeliness_ties_are_ranked_by_position() -> None:
    # G = 20 (where torch's default unstable sort orders ties differently on CPU): every rollout has the same mean
    # log-prob, so the stable ranks are the positions 0..19 and the multipliers 1 - 0.25 * i / 20
    g = 20
    b = rewards_batch([[1.0] * (g - 1) + [0.0]], old_logprobs=torch.full((1, g, 2), -0.5), mask=torch.ones(1, g, 2))
    shaped = torch.tensor([1 - 0.25 * i / g for i in range(g - 1)] + [0.0])
    expected = (shaped - shaped.mean()) / (shaped.std() + 1e-6)
    assert torch.allclose(adv("unlikeliness", b)[0], expected, atol=1e-5)


def test_unlikeliness_needs_logprobs() -> None:
    with pytest.raises(ValueError, match=r"old_logprobs.*mask"):
        adv("unlikeliness", rewards_batch([[1.0, 0.0]]))


def test_setpo_hand_computed_ngram() -> None:
    # texts (aaa, aaa, bbb), char 3-grams: kernel [[1,1,0],[1,1,0],[0,0,1]]
    # D(Ω) = -(2 log(5/3) + log(4/3))/3;  s = (-0.030979, -0.030979, 0.256703)
    s = torch.tensor([[-0.030979, -0.030979, 0.256703]])
    b = rewards_batch([[1.0, 0.0, 0.0]], texts=[["aaa", "aaa", "bbb"]])
    base = torch.tensor([[2 * S3, -S3, -S3]])
    assert torch.allclose(adv("setpo", b), base + s, atol=1e-5)
    assert torch.allclose(
        adv("setpo", b, lam=0.5, base="dr_grpo"), torch.tensor([[2 / 3, -1 / 3, -1 / 3]]) + s / 2, atol=1e-5
    )


def test_setpo_hand_computed_2x3_gate_and_center() -> None:
    # group 2 texts are distinct short strings: kernel I -> s = log((1 + 1/2) / (1 + 1/3)) = log(9/8) each
    b = rewards_batch(R23, texts=[["aaa", "aaa", "bbb"], ["x", "y", "z"]], correct=torch.tensor(R23) == 1)
    ln98 = math.log(9 / 8)
    gated = torch.tensor([[-0.030979, 0.0, 0.0], [ln98, ln98, 0.0]])
    assert torch.allclose(setpo_bonus(b, gate="correct"), gated, atol=1e-5)
    centred = gated - gated.mean(-1, keepdim=True)
    assert torch.allclose(setpo_bonus(b, gate="correct", center=True), centred, atol=1e-5)
    assert torch.allclose(setpo_bonus(b, gate="correct", center=True).sum(-1), torch.zeros(2), atol=1e-6)
    rloo = torch.tensor([[1.0, -0.5, -0.5], [0.5, 0.5, -1.0]])
    assert torch.allclose(adv("setpo", b, base="rloo", gate="correct", center=True), rloo + centred, atol=1e-5)


def test_setpo_members_correct_hand_computed() -> None:
    # members="correct": Ω = the correct rollouts. Group 1 has one (s = 0: a set of one); group 2's Ω = {x, y}
    # with kernel I is the G = 2 case, s = log(4 / 3) each; incorrect rollouts get 0 and their texts are not read
    b = rewards_batch(R23, texts=[["aaa", "aaa", "bbb"], ["x", "y", "??"]], correct=torch.tensor(R23) == 1)
    expected = torch.tensor([[0.0, 0.0, 0.0], [math.log(4 / 3), math.log(4 / 3), 0.0]])
    assert torch.allclose(setpo_bonus(b, members="correct"), expected, atol=1e-6)
    # an incorrect rollout's embedding is never read: NaN there changes nothing
    emb = torch.eye(3).repeat(2, 1, 1)  # (2, 3, 3)
    emb[1, 2] = float("nan")
    got = setpo_bonus(b.replace(embeddings=emb), members="correct", kernel="cosine")
    assert torch.allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match="members"):
        setpo_bonus(b, members="some")
    with pytest.raises(ValueError, match="correct"):
        setpo_bonus(b.replace(correct=None), members="correct")


def test_setpo_kernel_selection_and_errors() -> None:
    # orthogonal embeddings -> kernel I -> s = log(9/8); texts would give something else
    b = rewards_batch([[1.0, 0.0, 0.0]], embeddings=torch.eye(3)[None], texts=[["aaa", "aaa", "bbb"]])
    ln98 = math.log(9 / 8)
    assert torch.allclose(setpo_bonus(b, kernel="cosine"), torch.full((1, 3), ln98))
    assert torch.allclose(setpo_bonus(b, kernel="ngram")[0, 2], torch.tensor(0.256703), atol=1e-5)
    assert torch.equal(setpo_bonus(b), setpo_bonus(b, kernel="ngram"))  # the default: embeddings alone change nothing
    with pytest.raises(ValueError, match="embeddings"):
        setpo_bonus(b.replace(embeddings=None), kernel="cosine")
    with pytest.raises(ValueError, match=r"^setpo: kernel='ngram' needs GroupBatch.texts"):
        adv("setpo", rewards_batch([[1.0, 0.0]]), kernel="ngram")
    with pytest.raises(ValueError, match=r"got 'auto' \('auto' was removed: the default is 'ngram'"):
        adv("setpo", b, kernel="auto")
    with pytest.raises(ValueError, match="correct"):
        adv("setpo", b, gate="correct")
    with pytest.raises(ValueError, match="gate"):
        adv("setpo", b, gate="some")
    with pytest.raises(ValueError, match="kernel"):
        adv("setpo", b, kernel="rbf")
    with pytest.raises(ValueError, match="base"):
        adv("setpo", b, base="setpo")


# ---------------------------------------------------------------------------------------------
# Reductions
# ---------------------------------------------------------------------------------------------


def test_darling_all_distinct_classes_equals_dr_grpo() -> None:
    b = full_batch(p=4, g=7, seed=1)
    gen = torch.Generator().manual_seed(1)
    b = b.replace(rewards=torch.rand(4, 7, generator=gen), partition=torch.arange(7).repeat(4, 1))
    assert torch.allclose(adv("darling", b), adv("dr_grpo", b))
    assert torch.allclose(adv("darling", b, scale="group"), adv("grpo", b))


@pytest.mark.parametrize("base", ["grpo", "rloo", "darling", "passk"])
def test_setpo_lam0_equals_base(base: str) -> None:
    b = full_batch(seed=2)
    assert torch.equal(adv("setpo", b, base=base, lam=0.0), adv(base, b))


def test_setpo_constant_s_with_center_is_base() -> None:
    # orthogonal embeddings: kernel I, s = log((1 + 1/(G-1)) / (1 + 1/G)) for every rollout
    g = 5
    b = full_batch(p=3, g=g, seed=4).replace(embeddings=torch.eye(g).repeat(3, 1, 1))
    base = adv("grpo", b)
    assert torch.allclose(adv("setpo", b, center=True, kernel="cosine"), base, atol=1e-6)
    s = math.log((1 + 1 / (g - 1)) / (1 + 1 / g))
    assert torch.allclose(adv("setpo", b, lam=2.0, kernel="cosine"), base + 2 * s, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Invariants over every estimator
# ---------------------------------------------------------------------------------------------


def _permute(batch: GroupBatch, perms: Tensor) -> GroupBatch:
    """Permute each group's rollouts by its own permutation (perms: (P, G))."""

    def take(x: Tensor | None) -> Tensor | None:
        if x is None:
            return None
        index = perms.view(*perms.shape, *([1] * (x.dim() - 2))).expand_as(x)
        return x.gather(1, index)

    def take_lists(rows: list[list[str]] | None) -> list[list[str]] | None:
        return (
            None if rows is None else [[row[j] for j in perm.tolist()] for row, perm in zip(rows, perms, strict=True)]
        )

    return GroupBatch(
        rewards=take(batch.rewards),  # type: ignore[arg-type]
        correct=take(batch.correct),
        texts=take_lists(batch.texts),
        old_logprobs=take(batch.old_logprobs),
        mask=take(batch.mask),
        embeddings=take(batch.embeddings),
        partition=take(batch.partition),
    )


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=CONFIG_IDS)
def test_permuting_a_group_permutes_advantages(name: str, options: dict[str, Any]) -> None:
    for seed in range(5):
        b = full_batch(p=3, g=6, seed=seed)
        gen = torch.Generator().manual_seed(100 + seed)
        perms = torch.stack([torch.randperm(6, generator=gen) for _ in range(3)])  # (P, G)
        a = adv(name, b, **options)
        a_perm = adv(name, _permute(b, perms), **options)
        assert torch.allclose(a_perm, a.gather(1, perms), atol=1e-5)


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=CONFIG_IDS)
def test_finite_and_group_of_one_is_zero(name: str, options: dict[str, Any]) -> None:
    for seed in range(3):
        a = adv(name, full_batch(seed=seed), **options)
        assert a.shape == (3, 6)
        assert bool(torch.isfinite(a).all())
    opts = {**options, "k": 1} if name == "passk" else options
    assert torch.equal(adv(name, full_batch(p=4, g=1), **opts), torch.zeros(4, 1))


@pytest.mark.parametrize(("name", "options"), REWARD_ONLY, ids=[f"{n}-{o}" for n, o in REWARD_ONLY])
def test_equal_rewards_give_exact_zeros(name: str, options: dict[str, Any]) -> None:
    # 0.1 and 0.3 are not exact in binary: a float group mean can miss them by an ulp
    # (correct=None: passk would otherwise read correctness from `correct`, not from the rewards)
    r = torch.tensor([0.0, 1.0, 0.1, 0.3])[:, None].repeat(1, 7)  # (4, 7)
    b = full_batch(p=4, g=7).replace(rewards=r, correct=None)
    assert torch.equal(adv(name, b, **options), torch.zeros(4, 7))


def test_equal_rewards_diversity_estimators() -> None:
    """darling/setpo reward diversity among equal rewards; they give zeros only if diversity is uniform too."""
    r = torch.tensor([0.0, 1.0, 0.3])[:, None].repeat(1, 4)  # (3, 4)
    one_class = GroupBatch(rewards=r, partition=torch.zeros(3, 4, dtype=torch.long))
    distinct = one_class.replace(partition=torch.arange(4).repeat(3, 1))
    for b in (one_class, distinct):
        assert torch.equal(adv("darling", b), torch.zeros(3, 4))
        assert torch.equal(adv("darling", b, scale="group"), torch.zeros(3, 4))
    mixed = one_class.replace(partition=torch.tensor([0, 0, 1, 2]).repeat(3, 1))
    a = adv("darling", mixed)  # r * (2/3, 2/3, 1, 1) - mean
    assert torch.equal(a[0], torch.zeros(4))
    assert torch.allclose(a[1], torch.tensor([-1 / 6, -1 / 6, 1 / 6, 1 / 6]))
    same_texts = GroupBatch(rewards=r, texts=[["same answer"] * 4] * 3)
    assert torch.allclose(adv("setpo", same_texts), torch.zeros(3, 4), atol=1e-7)
    varied = same_texts.replace(texts=[["aaa", "aaa", "bbb", "ccc"]] * 3)
    assert torch.allclose(adv("setpo", varied), setpo_bonus(varied))  # base is 0: only the bonus remains
    assert not torch.allclose(adv("setpo", varied), torch.zeros(3, 4))


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=CONFIG_IDS)
def test_nan_rewards_get_zero_advantage(name: str, options: dict[str, Any]) -> None:
    b = full_batch(p=3, g=6, seed=5)
    rewards = b.rewards.clone()
    rewards[0, 1] = math.nan
    rewards[1, :] = math.nan  # a group with nothing scored
    rewards[2, 0] = rewards[2, 5] = math.nan
    a = adv(name, b.replace(rewards=rewards), **options)
    nan = torch.isnan(rewards)
    assert torch.equal(a[nan], torch.zeros(int(nan.sum())))
    assert bool(torch.isfinite(a).all())
    # the statistics over the scored rollouts themselves: tests/core/test_unscorable.py
