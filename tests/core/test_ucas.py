"""UCAS (arXiv 2510.10649): token-level advantages from GRPO x self-certainty modulation - lam * min-max(logit).

Checked against the official code: ``compute_ucas_advantage`` and ``_normalize_kl_certainty`` are vendored below from
xvolcano02/UCAS @ b122ff20b4277e2fe72ebff54b9cd8c4cbd1f83f, ``verl/trainer/ppo/core_algos.py`` (lines 66-185; the
docstrings shortened, the arithmetic unchanged), and compared on random batches.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch
from torch import Tensor

from divrl.core.advantages import advantage_is_token_level, advantage_needs, compute_advantages
from divrl.core.batch import GroupBatch
from divrl.core.losses import compute_loss

NAN = math.nan

# ---- vendored from xvolcano02/UCAS @ b122ff2, verl/trainer/ppo/core_algos.py -----------------------------------


def _normalize_kl_certainty(certainty, mask, epsilon=1e-6):
    masked_certainty = certainty.clone()
    masked_certainty[~mask.bool()] = float("inf")
    batch_min = masked_certainty.min()
    masked_certainty[~mask.bool()] = float("-inf")
    batch_max = masked_certainty.max()
    if torch.isclose(batch_max, batch_min):
        return torch.full_like(certainty, 0.5) * mask.float()
    normalized = (certainty - batch_min) / (batch_max - batch_min + epsilon)
    return normalized * mask.float()


def compute_ucas_advantage(
    token_level_rewards,
    token_level_certaintys,
    token_level_logits,
    response_mask,
    index,
    epsilon=1e-6,
    norm_adv_by_std_in_grpo=True,
):
    scores = token_level_rewards.sum(dim=-1)
    certaintys = token_level_certaintys.sum(dim=-1)
    id2score = defaultdict(list)
    id2mean = {}
    id2std = {}
    id2certainty = defaultdict(list)
    id2mean_certainty = {}
    id2std_certainty = {}
    with torch.no_grad():
        normalized_logits = _normalize_kl_certainty(token_level_logits, response_mask)
        bsz = scores.shape[0]
        for i in range(bsz):
            id2score[index[i]].append(scores[i])
            id2certainty[index[i]].append(certaintys[i])
        for idx in id2score:
            if len(id2score[idx]) == 1:
                id2mean[idx] = torch.tensor(0.0)
                id2std[idx] = torch.tensor(1.0)
            elif len(id2score[idx]) > 1:
                id2mean[idx] = torch.mean(torch.tensor(id2score[idx]))
                id2std[idx] = torch.std(torch.tensor([id2score[idx]]))
            else:
                raise ValueError(f"no score in prompt index: {idx}")
        for idx in id2certainty:
            if len(id2certainty[idx]) == 1:
                id2mean_certainty[idx] = torch.tensor(0.0)
                id2std_certainty[idx] = torch.tensor(1.0)
            elif len(id2certainty[idx]) > 1:
                id2mean_certainty[idx] = torch.mean(torch.tensor(id2certainty[idx]))
                id2std_certainty[idx] = torch.std(torch.tensor([id2certainty[idx]]))
            else:
                raise ValueError(f"no score in prompt index: {idx}")
        for i in range(bsz):
            if norm_adv_by_std_in_grpo:
                scores[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + epsilon)
                certaintys[i] = (certaintys[i] - id2mean_certainty[index[i]]) / (id2std_certainty[index[i]] + epsilon)
            else:
                scores[i] = scores[i] - id2mean[index[i]]
                certaintys[i] = certaintys[i] - id2mean_certainty[index[i]]
        scores = scores.unsqueeze(-1) * response_mask
        certaintys = certaintys.unsqueeze(-1) * response_mask
        beta_positive = 0.25
        beta_negative = 0.35
        positive_modifier = torch.exp(-beta_positive * certaintys)
        negative_modifier = torch.exp(beta_negative * certaintys)
        is_positive_advantage = scores > 0
        certainty_modifier = torch.where(is_positive_advantage, positive_modifier, negative_modifier)
        raw = scores * certainty_modifier - 0.05 * normalized_logits
        mask = (scores * certainty_modifier) > 0
        final_scores = torch.where(mask, torch.maximum(raw, torch.tensor(0.0)), raw)
    return final_scores, final_scores


# ---- end of vendored code ------------------------------------------------------------------------------------------


def random_batch(p: int, g: int, t: int, seed: int, binary: bool = True) -> GroupBatch:
    """Right-padded responses (1..t tokens), 0 at padding in the token statistics (the official remove-padding path)."""
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 2, (p, g), generator=gen).float() if binary else torch.rand(p, g, generator=gen)
    lengths = torch.randint(1, t + 1, (p, g), generator=gen)  # (P, G)
    mask = torch.arange(t)[None, None, :] < lengths[..., None]  # (P, G, T)
    certainty = torch.where(mask, 4.0 + 3.0 * torch.rand(p, g, t, generator=gen), 0.0)  # (P, G, T)
    logits = torch.where(mask, 10.0 * torch.randn(p, g, t, generator=gen), 0.0)  # (P, G, T)
    return GroupBatch(rewards=rewards, mask=mask, self_certainty=certainty, token_logits=logits)


def official(batch: GroupBatch, norm: bool = True) -> Tensor:
    """The vendored function on the flat (P*G, T) layout verl uses; the reward sits on the last valid token."""
    p, g, t = batch.mask.shape  # type: ignore[union-attr]
    mask = batch.mask.reshape(p * g, t).float()  # type: ignore[union-attr]
    last = mask.cumsum(-1) == mask.sum(-1, keepdim=True)  # (P*G, T) at and after the last valid token
    first_last = last & (last.cumsum(-1) == 1)
    token_rewards = batch.rewards.reshape(p * g, 1) * first_last.float()
    index = np.repeat(np.array([f"uid{i}" for i in range(p)], dtype=object), g)
    out, _ = compute_ucas_advantage(
        token_rewards,
        batch.self_certainty.reshape(p * g, t),  # type: ignore[union-attr]
        batch.token_logits.reshape(p * g, t),  # type: ignore[union-attr]
        mask,
        index,
        norm_adv_by_std_in_grpo=norm,
    )
    return out.reshape(p, g, t)


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_the_official_code_on_random_batches(seed: int) -> None:
    b = random_batch(p=2 + seed % 4, g=2 + seed % 7, t=1 + seed % 6, seed=seed, binary=seed % 3 != 0)
    torch.testing.assert_close(compute_advantages("ucas", b), official(b), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compute_advantages("ucas", b, scale="none"), official(b, False), atol=1e-5, rtol=1e-5)


def test_agrees_with_the_official_code_when_the_logits_are_degenerate() -> None:
    b = random_batch(3, 4, 5, seed=7)
    b = b.replace(token_logits=torch.where(b.mask, 2.5, 0.0))  # type: ignore[arg-type]  every valid logit equal
    a = compute_advantages("ucas", b)
    torch.testing.assert_close(a, official(b), atol=1e-5, rtol=1e-5)
    shaped = compute_advantages("ucas", b, lam=0.0)
    assert torch.allclose(a[b.mask], torch.where(shaped > 0, (shaped - 0.025).clamp(min=0), shaped - 0.025)[b.mask])


def hand_batch() -> GroupBatch:
    # one group of two 2-token responses: rewards (1, 0); self-certainty sums S = (2, 1); raw logits (1, 3), (2, 5)
    return GroupBatch(
        rewards=torch.tensor([[1.0, 0.0]]),
        mask=torch.ones(1, 2, 2, dtype=torch.bool),
        self_certainty=torch.tensor([[[1.0, 1.0], [0.5, 0.5]]]),
        token_logits=torch.tensor([[[1.0, 3.0], [2.0, 5.0]]]),
    )


def test_hand_computed_group() -> None:
    eps = 1e-6
    a = 0.5 / (math.sqrt(0.5) + eps)  # GRPO: mean 1/2, unbiased std sqrt(1/2)
    s = 0.5 / (math.sqrt(0.5) + eps)  # S = (2, 1): the same z-score
    m_pos, m_neg = math.exp(-0.25 * s), math.exp(0.35 * -s)  # the positive rollout is the more confident one
    lhat = [[0.0, 2.0 / (4.0 + eps)], [1.0 / (4.0 + eps), 4.0 / (4.0 + eps)]]  # batch min 1, max 5
    out = compute_advantages("ucas", hand_batch())
    expected = [[a * m_pos - 0.05 * lhat[0][0], a * m_pos - 0.05 * lhat[0][1]]]
    expected.append([-a * m_neg - 0.05 * lhat[1][0], -a * m_neg - 0.05 * lhat[1][1]])
    assert torch.allclose(out[0], torch.tensor(expected), atol=1e-6)
    # numerically: A m = (0.592531, -0.552080); the confident token of the correct answer is held back by 0.025
    assert torch.allclose(out[0], torch.tensor([[0.592531, 0.567531], [-0.564580, -0.602080]]), atol=1e-5)
    # lam = 2: the positive rollout's second token would go to 0.59254 - 1 < 0 and is clamped at 0 (never flips)
    big = compute_advantages("ucas", hand_batch(), lam=2.0)
    assert big[0, 0].tolist() == pytest.approx([a * m_pos, 0.0], abs=1e-6)
    assert big[0, 1].tolist() == pytest.approx([-a * m_neg - 0.5, -a * m_neg - 2.0], abs=1e-5)


def test_reduces_to_grpo_without_penalty_and_with_equal_confidence() -> None:
    b = random_batch(4, 6, 5, seed=3)
    equal = b.replace(self_certainty=b.mask.float() / b.mask.float().sum(-1, keepdim=True))  # type: ignore[union-attr]
    for options, base in (({}, "grpo"), ({"scale": "none"}, "dr_grpo")):
        want = compute_advantages(base, b)[..., None] * b.mask  # type: ignore[operator]
        got = compute_advantages("ucas", equal, lam=0.0, **options)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
        # no modulation at all (beta = 0) is GRPO whatever the confidences
        flat = compute_advantages("ucas", b, lam=0.0, beta_pos=0.0, beta_neg=0.0, **options)
        torch.testing.assert_close(flat, want, atol=1e-6, rtol=1e-6)
    # with its modulation on, the same batch differs from GRPO
    assert not torch.allclose(
        compute_advantages("ucas", b, lam=0.0), compute_advantages("grpo", b)[..., None] * b.mask
    )


def test_permutation_within_a_group_permutes_the_advantages() -> None:
    b = random_batch(3, 6, 5, seed=11)
    perm = torch.tensor([4, 0, 5, 2, 1, 3])

    def permute(x: Tensor) -> Tensor:
        y = x.clone()
        y[1] = x[1, perm]
        return y

    shuffled = GroupBatch(
        rewards=permute(b.rewards),
        mask=permute(b.mask),  # type: ignore[arg-type]
        self_certainty=permute(b.self_certainty),  # type: ignore[arg-type]
        token_logits=permute(b.token_logits),  # type: ignore[arg-type]
    )
    for scope in ("batch", "group"):
        a = compute_advantages("ucas", b, logit_scope=scope)
        assert torch.allclose(compute_advantages("ucas", shuffled, logit_scope=scope), permute(a), atol=1e-6)


def one_group(b: GroupBatch, p: int, cols: list[int]) -> GroupBatch:
    def pick(x: Tensor) -> Tensor:
        return x[p, cols][None]

    return GroupBatch(
        rewards=pick(b.rewards),
        mask=pick(b.mask),  # type: ignore[arg-type]
        self_certainty=pick(b.self_certainty),  # type: ignore[arg-type]
        token_logits=pick(b.token_logits),  # type: ignore[arg-type]
    )


def test_unscorable_rollouts_get_zero_and_leave_every_statistic() -> None:
    b = random_batch(3, 6, 5, seed=5, binary=False)
    unscored = torch.tensor([[0, 1, 0, 0, 1, 0], [0] * 6, [1, 1, 1, 1, 1, 0]]).bool()
    nb = b.replace(rewards=b.rewards.masked_fill(unscored, NAN))
    a = compute_advantages("ucas", nb, logit_scope="group")
    assert torch.equal(a[unscored], torch.zeros_like(a[unscored]))
    assert torch.equal(a[2], torch.zeros_like(a[2]))  # one scored rollout: no baseline, 0 on every token
    # per-group statistics: the identity "G with c scored = the group of those c alone" holds exactly
    for p in (0, 1):
        cols = [g for g in range(6) if not unscored[p, g]]
        torch.testing.assert_close(
            a[p, cols], compute_advantages("ucas", one_group(b, p, cols), logit_scope="group")[0]
        )
    # batch-level min-max: an unscorable rollout's logits are in no one's min or max
    wild = nb.replace(token_logits=nb.token_logits.masked_fill(unscored[..., None] & nb.mask, 1e4))  # type: ignore[union-attr]
    assert torch.equal(compute_advantages("ucas", wild), compute_advantages("ucas", nb))
    # nor is a padding token's
    pad = nb.replace(token_logits=nb.token_logits.masked_fill(~nb.mask, -1e4))  # type: ignore[union-attr, operator]
    assert torch.equal(compute_advantages("ucas", pad), compute_advantages("ucas", nb))
    assert torch.equal(compute_advantages("ucas", nb)[~nb.mask], torch.zeros(int((~nb.mask).sum())))  # type: ignore[operator]


def test_declarations_and_errors() -> None:
    assert advantage_is_token_level("ucas") and not advantage_is_token_level("grpo")
    assert advantage_needs("ucas").reads == {"mask", "self_certainty", "token_logits"}
    b = hand_batch()
    for field in ("self_certainty", "token_logits"):
        with pytest.raises(ValueError, match=f"GroupBatch.{field}"):
            compute_advantages("ucas", b.replace(**{field: None}))
    for option in ("beta_pos", "beta_neg", "lam"):
        with pytest.raises(ValueError, match=option):
            compute_advantages("ucas", b, **{option: -1.0})
    with pytest.raises(ValueError, match="scale"):
        compute_advantages("ucas", b, scale="batch")
    with pytest.raises(ValueError, match="logit_scope"):
        compute_advantages("ucas", b, logit_scope="token")
    with pytest.raises(ValueError, match="token-level advantages"):  # a composite's base gives one per rollout
        compute_advantages("setpo", b.replace(texts=[["a", "b"]]), base="ucas")


def test_every_loss_takes_the_token_level_advantages() -> None:
    b = hand_batch()
    adv = compute_advantages("ucas", b)  # (1, 2, 2)
    lp = torch.full((1, 2, 2), -0.5, requires_grad=True)
    loss_batch = b.replace(logprobs=lp, correct=torch.tensor([[True, False]]))
    out = compute_loss("ppo", loss_batch, adv)
    # on-policy PPO with token-mean: -mean_t A_t over the 4 valid tokens
    assert float(out.loss.detach()) == pytest.approx(-float(adv.mean()), abs=1e-6)
    out.loss.backward()
    assert torch.allclose(lp.grad, -adv / 4)  # type: ignore[arg-type]
