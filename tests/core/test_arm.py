"""ProGRPO's ARM (``arm``): hand-computed confidences and advantages, invariants, unscored rollouts, errors.

No official code was found (docs/methods.md), so there is no reference-agreement test; the formula is 2nd-hand.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from divrl.core.advantages import advantage_needs, compute_advantages
from divrl.core.arm import answer_confidence
from divrl.core.batch import GroupBatch

NAN = math.nan
LN = math.log


def adv(batch: GroupBatch, **options: Any) -> Tensor:
    return compute_advantages("arm", batch, **options)


def grpo(batch: GroupBatch) -> Tensor:
    return compute_advantages("grpo", batch)


def token_batch(rewards: list[list[float]], lps: list[list[list[float]]], lengths: list[list[int]]) -> GroupBatch:
    lp = torch.tensor(lps)  # (P, G, T)
    mask = torch.arange(lp.shape[-1])[None, None, :] < torch.tensor(lengths)[..., None]  # (P, G, T)
    return GroupBatch(rewards=torch.tensor(rewards), old_logprobs=lp, mask=mask)


# one group of 3, T = 5; the lowest log-prob of each rollout is log 0.5, log 0.25, log 0.1
LPS = [
    [
        [-0.1, LN(0.5), -0.2, -0.3, -0.05],
        [LN(0.25), -0.1, -0.1, -0.1, -0.1],
        [-0.2, -0.2, -0.2, -0.2, LN(0.1)],
    ]
]
S = 1 / math.sqrt(3)  # GRPO on (1, 0, 1): (S, -2S, S) / (1 + 1e-6 / sqrt(1/3))


def test_answer_confidence_hand_computed() -> None:
    b = token_batch([[1.0, 0.0, 1.0]], LPS, [[5, 5, 5]])
    # 20% of 5 tokens = 1 token: exp(min lp)
    assert torch.allclose(answer_confidence(b.old_logprobs, b.mask), torch.tensor([[0.5, 0.25, 0.1]]))
    # 40% = 2 tokens: exp(mean of the two lowest)
    two = torch.tensor(
        [[math.sqrt(0.5 * math.exp(-0.3)), math.sqrt(0.25 * math.exp(-0.1)), math.sqrt(0.1 * math.exp(-0.2))]]
    )
    assert torch.allclose(answer_confidence(b.old_logprobs, b.mask, 0.4), two)
    # padding is never read: rollout 2 has 3 real tokens (ceil(0.6) = 1 token, lp -0.2); rollout 1 none (confidence 1)
    short = token_batch([[1.0, 0.0, 1.0]], LPS, [[5, 0, 3]])
    assert torch.allclose(
        answer_confidence(short.old_logprobs, short.mask), torch.tensor([[0.5, 1.0, math.exp(-0.2)]])
    )
    # 11 tokens at 20%: ceil(2.2) = 3 lowest
    lp = torch.tensor([[[-float(i) for i in range(11)]]])
    assert torch.allclose(answer_confidence(lp, torch.ones(1, 1, 11)), torch.tensor([[math.exp(-9.0)]]))


def test_arm_hand_computed() -> None:
    b = token_batch([[1.0, 0.0, 1.0]], LPS, [[5, 5, 5]])
    a = grpo(b)
    assert torch.allclose(a, torch.tensor([[S, -2 * S, S]]), atol=1e-5)
    # prompt none: A + alpha (0 - c), c = (0.5, 0.25, 0.1)
    assert torch.allclose(adv(b, prompt="none"), a - torch.tensor([[0.5, 0.25, 0.1]]), atol=1e-6)
    assert torch.allclose(adv(b, prompt="none", alpha=2.0), a - 2 * torch.tensor([[0.5, 0.25, 0.1]]), atol=1e-6)
    # group_mean (the default): c(q) := mean c = 0.85/3
    m = 0.85 / 3
    assert torch.allclose(adv(b), a + torch.tensor([[m - 0.5, m - 0.25, m - 0.1]]), atol=1e-6)
    assert torch.allclose(adv(b, alpha=2.0), a + 2 * torch.tensor([[m - 0.5, m - 0.25, m - 0.1]]), atol=1e-6)
    # gate correct: only rollouts 0 and 2 get the term; group_mean over them = 0.3
    assert torch.allclose(
        adv(b, gate="correct", prompt="group_mean"), a + torch.tensor([[0.3 - 0.5, 0.0, 0.3 - 0.1]]), atol=1e-6
    )


def test_which_groups_get_the_term() -> None:
    lps = LPS * 3
    b = token_batch([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 1.0]], lps, [[5, 5, 5]] * 3)
    c = torch.tensor([0.5, 0.25, 0.1])
    a = adv(b, prompt="none")
    assert torch.equal(a[0], torch.zeros(3))  # no correct rollout: A unchanged (GRPO gives 0)
    assert torch.allclose(a[1], -c)  # all correct: GRPO 0, the term remains ("nonzero_sum", the formula)
    assert torch.allclose(a[2], grpo(b)[2] - c, atol=1e-6)
    assert torch.allclose(adv(b)[1], c.mean() - c)  # group_mean: centred in the all-correct group
    mixed = adv(b, apply="mixed", prompt="none")
    assert torch.equal(mixed[1], torch.zeros(3))  # "mixed": all-correct groups are left alone too
    assert torch.allclose(mixed[2], a[2])


# ---------------------------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------------------------


def random_batch(p: int = 4, g: int = 6, t: int = 7, seed: int = 0) -> GroupBatch:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (p, g), generator=gen)
    r = torch.randint(0, 2, (p, g), generator=gen).float()
    return GroupBatch(
        rewards=r,
        correct=r == 1,
        old_logprobs=-3 * torch.rand(p, g, t, generator=gen),
        mask=torch.arange(t)[None, None, :] < lengths[..., None],
    )


def test_alpha0_and_constant_confidence_reduce_to_grpo() -> None:
    for seed in range(5):
        b = random_batch(seed=seed)
        assert torch.equal(adv(b, alpha=0.0), grpo(b))
        same = b.replace(old_logprobs=torch.full_like(b.old_logprobs, -0.7))  # every confidence exp(-0.7)
        for options in ({}, {"gate": "correct"}, {"apply": "mixed"}):
            assert torch.equal(adv(same, **options), grpo(same))  # prompt group_mean, the default
        # prompt "none" (the formula without its c(q)): a constant shift -alpha c in the groups with a correct one
        has_correct = (b.rewards.sum(-1, keepdim=True) > 0).float()
        assert torch.allclose(adv(same, prompt="none"), grpo(same) - math.exp(-0.7) * has_correct, atol=1e-6)


def test_permutation_within_a_group() -> None:
    b = random_batch(seed=7)
    gen = torch.Generator().manual_seed(8)
    perm = torch.stack([torch.randperm(6, generator=gen) for _ in range(4)])  # (P, G)
    idx = perm[..., None].expand(-1, -1, 7)
    pb = GroupBatch(
        rewards=b.rewards.gather(1, perm),
        correct=b.correct.gather(1, perm),
        old_logprobs=b.old_logprobs.gather(1, idx),
        mask=b.mask.gather(1, idx),
    )
    for options in ({}, {"prompt": "none", "gate": "correct"}, {"apply": "mixed", "low_frac": 0.5}):
        assert torch.allclose(adv(pb, **options), adv(b, **options).gather(1, perm), atol=1e-6)


def test_less_confident_correct_rollouts_get_more() -> None:
    """The method's point: among correct rollouts, a lower answer confidence gives a larger advantage."""
    b = token_batch([[1.0, 0.0, 1.0]], LPS, [[5, 5, 5]])
    a = adv(b)[0]
    assert float(a[2]) > float(a[0])  # rollout 2 (confidence 0.1) over rollout 0 (0.5), same reward


# ---------------------------------------------------------------------------------------------
# Unscored rollouts, needs, errors
# ---------------------------------------------------------------------------------------------


def test_unscored_rollouts_are_left_out() -> None:
    """G = 5 with 3 scored equals the group of those 3; unscored rollouts get 0 and their tokens are never read."""
    lp = torch.tensor(LPS)  # (1, 3, 5)
    junk = torch.full((1, 1, 5), -9.0)
    full_lp = torch.cat([lp[:, :1], junk, lp[:, 1:2], junk, lp[:, 2:]], dim=1)  # (1, 5, 5)
    b = GroupBatch(rewards=torch.tensor([[1.0, NAN, 0.0, NAN, 1.0]]), old_logprobs=full_lp, mask=torch.ones(1, 5, 5))
    alone = token_batch([[1.0, 0.0, 1.0]], LPS, [[5, 5, 5]])
    for options in ({}, {"prompt": "none"}, {"apply": "mixed", "gate": "correct"}):
        a = adv(b, **options)
        assert torch.equal(a[0, [1, 3]], torch.zeros(2))
        assert torch.allclose(a[0, [0, 2, 4]], adv(alone, **options)[0], atol=1e-6)
    one = b.replace(rewards=torch.tensor([[1.0, NAN, NAN, NAN, NAN]]))
    assert torch.equal(adv(one), torch.zeros(1, 5))  # one scored rollout: no baseline, 0


def test_needs_and_errors() -> None:
    needs = advantage_needs("arm")
    assert needs.reads == {"old_logprobs", "mask"} and needs.uses("correct")
    b = token_batch([[1.0, 0.0, 1.0]], LPS, [[5, 5, 5]])
    with pytest.raises(ValueError, match="arm needs GroupBatch.old_logprobs"):
        adv(GroupBatch(rewards=b.rewards))
    for option, value in (("apply", "all"), ("gate", "wrong"), ("prompt", "ppl"), ("low_frac", 0.0), ("alpha", NAN)):
        with pytest.raises(ValueError, match=f"arm: {option}"):
            adv(b, **{option: value})
