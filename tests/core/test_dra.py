"""DRA-GRPO (``dra``): hand-computed weights, agreement with the official code, invariants, unscored rollouts."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from divrl.core.advantages import advantage_needs, compute_advantages
from divrl.core.batch import GroupBatch
from divrl.core.dra import dra_weights
from divrl.core.needs import Needs

NAN = math.nan


def adv(batch: GroupBatch, **options: Any) -> Tensor:
    """``dra`` on ``batch``, with the cosine kernel (the official one) when the batch has embeddings and no
    ``kernel=`` is given (``dra``'s own default is ``ngram``: an embedding alone changes nothing)."""
    if batch.embeddings is not None:
        options.setdefault("kernel", "cosine")
    return compute_advantages("dra", batch, **options)


# ---------------------------------------------------------------------------------------------
# Reference: xiwenc1/DRA-GRPO @ 088266167eb844482be2f0b98b5a60f7951b7050
# src/open_r1/trl/trainer/grpo_trainer.py, lines 686-708 (drgrpo_trainer.py: the same lines, with the std
# division commented out in line 708). Vendored verbatim except `self.num_generations` -> `num_generations`,
# the embedder call (we pass the embeddings) and the multi-process gather (one process).
# ---------------------------------------------------------------------------------------------


def official_dra_grpo(rewards: Tensor, embeddings: Tensor, num_generations: int, dr: bool = False) -> Tensor:
    embeddings = F.normalize(embeddings, p=2, dim=1)
    similarity_matrix = embeddings @ embeddings.T
    similarity_sums = similarity_matrix.sum(dim=1)
    diversity_weights = 1.0 / (similarity_sums + 1e-6)
    rewards = rewards * diversity_weights
    mean_grouped_rewards = rewards.view(-1, num_generations).mean(dim=1)
    std_grouped_rewards = rewards.view(-1, num_generations).std(dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    std_grouped_rewards = std_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if dr:  # drgrpo_trainer.py line 708
        return rewards - mean_grouped_rewards  # / (std_grouped_rewards + 1e-4)
    return (rewards - mean_grouped_rewards) / (std_grouped_rewards + 1e-4)


@pytest.mark.parametrize("g", [4, 6, 8])
@pytest.mark.parametrize("dr", [False, True])
def test_agrees_with_the_official_code_on_random_groups(g: int, dr: bool) -> None:
    """One process whose local batch is one prompt's group (the official similarity set; see dra's docstring)."""
    gen = torch.Generator().manual_seed(g + 10 * dr)
    for trial in range(20):
        p, d = 5, 16
        emb = torch.randn(p, g, d, generator=gen) + 0.5  # mostly positive cosines, as sentence embeddings give
        binary = trial % 2 == 0
        r = torch.randint(0, 2, (p, g), generator=gen).float() if binary else torch.rand(p, g, generator=gen) * 3
        ref = torch.stack([official_dra_grpo(r[i], emb[i], g, dr) for i in range(p)])  # (P, G)
        options: dict[str, Any] = {"kernel": "cosine"}
        options.update({"base": "dr_grpo"} if dr else {"base_options": {"eps": 1e-4}})
        ours = adv(GroupBatch(rewards=r, embeddings=emb), **options)
        assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-4), (trial, ours, ref)


def test_negative_cosines_follow_the_official_raw_kernel() -> None:
    gen = torch.Generator().manual_seed(3)
    emb = torch.randn(4, 6, 3, generator=gen)  # low dimension: many negative cosines
    r = torch.rand(4, 6, generator=gen)
    ref = torch.stack([official_dra_grpo(r[i], emb[i], 6, dr=True) for i in range(4)])
    b = GroupBatch(rewards=r, embeddings=emb)
    assert torch.allclose(adv(b, base="dr_grpo"), ref, atol=1e-4, rtol=1e-4)  # cosine: the raw official kernel
    assert not torch.allclose(adv(b, base="dr_grpo", clamp=True), ref, atol=1e-3)  # setpo's clamp is different


# ---------------------------------------------------------------------------------------------
# Hand-computed
# ---------------------------------------------------------------------------------------------

# e0 = e1 (duplicates), e2 orthogonal: K = [[1, 1, 0], [1, 1, 0], [0, 0, 1]], row sums 2, 2, 1
EMB = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]])


def test_hand_computed_weights_and_advantages() -> None:
    b = GroupBatch(rewards=torch.tensor([[1.0, 1.0, 1.0]]), embeddings=EMB)
    assert torch.allclose(dra_weights(b, eps=0.0, kernel="cosine"), torch.tensor([[0.5, 0.5, 1.0]]))
    expected_weights = torch.tensor([[1 / (2 + 1e-6), 1 / (2 + 1e-6), 1 / (1 + 1e-6)]])
    assert torch.allclose(dra_weights(b, kernel="cosine"), expected_weights)
    # r' = (1/2, 1/2, 1), mean 2/3: Dr. GRPO (-1/6, -1/6, 1/3); unbiased std sqrt(1/12)
    assert torch.allclose(adv(b, base="dr_grpo", eps=0.0), torch.tensor([[-1 / 6, -1 / 6, 1 / 3]]))
    s = math.sqrt(1 / 12)
    expected = torch.tensor([[-1 / 6, -1 / 6, 1 / 3]]) / (s + 1e-6)
    assert torch.allclose(adv(b, eps=0.0), expected, atol=1e-6)
    # the n-gram kernel on texts with the same structure gives the same numbers
    t = GroupBatch(rewards=b.rewards, texts=[["abc", "abc", "xyz"]])
    assert torch.allclose(adv(t, eps=0.0), expected, atol=1e-6)
    # a wrong duplicate: r = (1, 0, 1) -> r' = (1/2, 0, 1), Dr. GRPO: r' - 1/2
    w = b.replace(rewards=torch.tensor([[1.0, 0.0, 1.0]]))
    assert torch.allclose(adv(w, base="dr_grpo", eps=0.0), torch.tensor([[0.0, -0.5, 0.5]]))


def test_negative_cosine_hand_computed_and_clamp() -> None:
    # e2 at 135 degrees from e0 = e1: cos = -1/sqrt(2); row sums 2 - c, 2 - c, 1 - 2c with c = 1/sqrt(2)
    c = 1 / math.sqrt(2)
    emb = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [-1.0, 1.0]]])
    b = GroupBatch(rewards=torch.ones(1, 3), embeddings=emb)
    raw = torch.tensor([[1 / (2 - c), 1 / (2 - c), 1 / (1 - 2 * c)]])  # the last is negative: 1 - 2c < 0
    assert torch.allclose(dra_weights(b, eps=0.0, kernel="cosine"), raw, atol=1e-6)
    clamped = torch.tensor([[0.5, 0.5, 1.0]])
    assert torch.allclose(dra_weights(b, eps=0.0, clamp=True, kernel="cosine"), clamped)


# ---------------------------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["grpo", "dr_grpo", "rloo"])
def test_orthogonal_embeddings_with_eps0_are_the_base(base: str) -> None:
    """Signal constant (every rollout dissimilar to all others): weights 1, the base estimator exactly."""
    gen = torch.Generator().manual_seed(0)
    r = torch.rand(3, 5, generator=gen)
    b = GroupBatch(rewards=r, embeddings=torch.eye(5).repeat(3, 1, 1) * 2.0)
    assert torch.equal(adv(b, base=base, eps=0.0), compute_advantages(base, b))


def test_identical_texts_give_grpo_up_to_eps() -> None:
    """A group-constant row sum (all texts identical: every weight 1/G) is cancelled by GRPO's std division."""
    gen = torch.Generator().manual_seed(1)
    r = torch.randint(0, 2, (4, 6), generator=gen).float()
    b = GroupBatch(rewards=r, texts=[["same"] * 6] * 4)
    assert torch.allclose(dra_weights(b, eps=0.0), torch.full((4, 6), 1 / 6))
    assert torch.allclose(adv(b), compute_advantages("grpo", b), atol=1e-4)
    assert torch.allclose(adv(b, base="dr_grpo", eps=0.0), compute_advantages("dr_grpo", b) / 6, atol=1e-7)


def test_permutation_within_a_group() -> None:
    gen = torch.Generator().manual_seed(2)
    r = torch.rand(3, 7, generator=gen)
    emb = torch.randn(3, 7, 8, generator=gen) + 0.3
    b = GroupBatch(rewards=r, embeddings=emb)
    perm = torch.stack([torch.randperm(7, generator=gen) for _ in range(3)])  # (P, G)
    pb = GroupBatch(rewards=r.gather(1, perm), embeddings=emb.gather(1, perm[..., None].expand(-1, -1, 8)))
    for options in ({}, {"base": "dr_grpo"}, {"clamp": True}):
        assert torch.allclose(adv(pb, **options), adv(b, **options).gather(1, perm), atol=1e-5)


def test_redundant_rollouts_get_less() -> None:
    """Among equal rewards, a member of a larger duplicate cluster gets a lower advantage (the method's point)."""
    b = GroupBatch(rewards=torch.ones(1, 5), texts=[["12+3", "12+3", "12+3", "7*2+1", "20-5"]])
    a = adv(b)[0]
    assert bool((a[:3] < 0).all()) and bool((a[3:] > 0).all())


# ---------------------------------------------------------------------------------------------
# Unscored rollouts, needs, errors
# ---------------------------------------------------------------------------------------------


def test_unscored_rollouts_are_outside_the_group() -> None:
    """G = 5 with 3 scored equals the group of those 3 alone; the unscored ones get 0 and are never read."""
    emb = torch.tensor([[[1.0, 0.0], [5.0, 5.0], [1.0, 0.0], [-3.0, 1.0], [0.0, 1.0]]])
    r = torch.tensor([[1.0, NAN, 1.0, NAN, 1.0]])
    a = adv(GroupBatch(rewards=r, embeddings=emb), eps=0.0)
    alone = adv(GroupBatch(rewards=torch.ones(1, 3), embeddings=EMB), eps=0.0)
    assert torch.equal(a[0, [1, 3]], torch.zeros(2))
    assert torch.allclose(a[0, [0, 2, 4]], alone[0], atol=1e-6)


def test_needs_and_errors() -> None:
    assert advantage_needs("dra") == advantage_needs("dra", {"kernel": "ngram"}) == Needs.of({"texts"})
    assert advantage_needs("dra", {"kernel": "cosine"}).reads == {"embeddings"}
    assert advantage_needs("dra", {"kernel": "ngram", "base": "darling"}).reads == {"texts", "partition"}
    r = GroupBatch(rewards=torch.ones(1, 3))
    with pytest.raises(ValueError, match="dra: kernel='cosine' needs GroupBatch.embeddings"):
        adv(r, kernel="cosine")
    with pytest.raises(ValueError, match=r"^dra: kernel='ngram' needs GroupBatch.texts"):
        adv(r)  # the default kernel
    with pytest.raises(ValueError, match=r"^dra: kernel must be 'cosine' or 'ngram', got 'auto' \('auto' was"):
        adv(r, kernel="auto")
    with pytest.raises(ValueError, match="dra: kernel must be"):
        adv(r, kernel="rbf")
    with pytest.raises(ValueError, match="dra: base must be another estimator"):
        adv(r.replace(texts=[["a", "b", "c"]]), base="dra")
    with pytest.raises(ValueError, match="dra: eps must be >= 0"):
        adv(r.replace(texts=[["a", "b", "c"]]), eps=-1.0)
    with pytest.raises(ValueError, match="unknown option"):
        adv(r.replace(texts=[["a", "b", "c"]]), base_options={"lam": 1.0})
