"""DSDR (arXiv 2602.19895), reconstructed: the ``dsdr`` estimator (clipped diversity bonus on correct rollouts, then
GRPO) and the ``dsdr_entropy`` loss (length-invariant entropy on correct rollouts, weighted by |C| softmax(d / tau)).

The official code (SUSTechBruce/DSDR) could not be fetched, so there is no agreement test with it: these tests pin
the reconstruction documented in docs/methods.md.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from divrl.core.advantages import compute_advantages
from divrl.core.batch import GroupBatch
from divrl.core.dsdr import dsdr_diversity, dsdr_weights
from divrl.core.losses import compute_loss

NAN = math.nan


def emb_batch() -> GroupBatch:
    """Two groups of 4 with unit embeddings (cosine kernel): group 0 mixed, group 1 all correct."""
    e0 = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]  # 0 and 1 identical, 2 orthogonal; 3 is incorrect
    e1 = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
    return GroupBatch(
        rewards=torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]]),
        correct=torch.tensor([[True, True, True, False], [True, True, True, True]]),
        embeddings=torch.tensor([e0, e1]),
    )


def _grpo(r: list[float]) -> Tensor:
    x = torch.tensor(r, dtype=torch.float64)
    return ((x - x.mean()) / (x.std() + 1e-6)).float()


def test_hand_computed_diversity_and_advantages() -> None:
    b = emb_batch()
    d = dsdr_diversity(b, kernel="cosine")
    # group 0: d_0 = d_1 = mean(1 - 1, 1 - 0) = 1/2, d_2 = mean(1, 1) = 1; the incorrect one gets 0
    # group 1: k_03 = k_13 = 0.6, k_23 = 0.8 -> d = (1.4/3, 1.4/3, 2.2/3, 1/3)
    assert torch.allclose(d, torch.tensor([[0.5, 0.5, 1.0, 0.0], [1.4 / 3, 1.4 / 3, 2.2 / 3, 1 / 3]]), atol=1e-6)
    a = compute_advantages("dsdr", b, kernel="cosine", lam=1.0, bonus_max=0.8)
    # group 0: r' = (1.5, 1.5, 1.8, 0) (d_2 = 1 clipped to 0.8); group 1: r' = 1 + d, a signal GRPO would not give
    assert torch.allclose(a[0], _grpo([1.5, 1.5, 1.8, 0.0]), atol=1e-5)
    assert torch.allclose(a[1], _grpo([1 + 1.4 / 3, 1 + 1.4 / 3, 1 + 2.2 / 3, 1 + 1 / 3]), atol=1e-5)
    assert float(compute_advantages("grpo", b)[1].abs().max()) == 0.0
    # the default bound 0.5 clips every correct rollout of group 0 to the same bonus: GRPO's values up to eps
    assert torch.allclose(
        compute_advantages("dsdr", b, kernel="cosine")[0], compute_advantages("grpo", b)[0], atol=1e-5
    )


def test_bonus_keeps_correct_above_incorrect() -> None:
    """With bonus_max below the reward gap, every correct rollout still outranks every incorrect one."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        r = torch.randint(0, 2, (3, 6), generator=gen).float()
        b = GroupBatch(rewards=r, correct=r > 0.5, embeddings=torch.randn(3, 6, 4, generator=gen))
        a = compute_advantages("dsdr", b, lam=5.0, bonus_max=0.9, kernel="cosine")
        for p in range(3):
            if bool(b.correct[p].any()) and not bool(b.correct[p].all()):  # type: ignore[index]
                assert float(a[p][b.correct[p]].min()) > float(a[p][~b.correct[p]].max())  # type: ignore[index]


def test_reduces_to_the_base_when_the_signal_is_zero_or_constant() -> None:
    b = emb_batch()
    for base, options in (("grpo", {}), ("rloo", {}), ("dr_grpo", {})):
        dsdr = compute_advantages("dsdr", b, lam=0.0, base=base, kernel="cosine")
        assert torch.equal(dsdr, compute_advantages(base, b, **options))
    same = GroupBatch(rewards=b.rewards, correct=b.correct, texts=[["1+2"] * 4, ["3*4"] * 4])  # d = 0 everywhere
    assert torch.equal(dsdr_diversity(same), torch.zeros(2, 4))
    assert torch.equal(compute_advantages("dsdr", same, lam=3.0), compute_advantages("grpo", same))


def permute_group(b: GroupBatch, p: int, perm: list[int]) -> GroupBatch:
    def t(x: Tensor | None) -> Tensor | None:
        if x is None:
            return None
        y = x.clone()
        y[p] = x[p, perm]
        return y

    texts = None if b.texts is None else [list(row) for row in b.texts]
    if texts is not None:
        texts[p] = [b.texts[p][g] for g in perm]  # type: ignore[index]
    return GroupBatch(
        rewards=t(b.rewards),  # type: ignore[arg-type]
        correct=t(b.correct),
        texts=texts,
        embeddings=t(b.embeddings),
        mask=t(b.mask),
        entropies=t(b.entropies),
    )


def text_batch() -> GroupBatch:
    gen = torch.Generator().manual_seed(4)
    texts = [["1+2*3", "3*2+1", "(1+2)*3", "9-0", "4*4-7"], ["7-3", "7-3", "2*2", "8/2", "1+3"]]
    lengths = torch.tensor([[3, 1, 4, 2, 4], [2, 2, 4, 1, 3]])
    return GroupBatch(
        rewards=torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0, 1.0]]),
        correct=torch.tensor([[True, True, False, True, True], [True, True, True, False, True]]),
        texts=texts,
        mask=torch.arange(4)[None, None, :] < lengths[..., None],
        entropies=torch.rand(2, 5, 4, generator=gen),
    )


def test_permutation_within_a_group() -> None:
    b = text_batch()
    perm = [3, 0, 4, 1, 2]
    pb = permute_group(b, 0, perm)
    a = compute_advantages("dsdr", b, lam=0.5)
    assert torch.allclose(compute_advantages("dsdr", pb, lam=0.5)[0], a[0, perm], atol=1e-6)
    w = dsdr_weights(b)
    assert torch.allclose(dsdr_weights(pb)[0], w[0, perm], atol=1e-6)
    loss = compute_loss("dsdr_entropy", b, torch.zeros(2, 5)).loss
    assert float(compute_loss("dsdr_entropy", pb, torch.zeros(2, 5)).loss) == pytest.approx(float(loss), abs=1e-7)


def test_entropy_term_hand_computed() -> None:
    b = emb_batch()
    lengths = torch.tensor([[2, 1, 3, 2], [1, 1, 1, 1]])
    mask = torch.arange(3)[None, None, :] < lengths[..., None]  # (2, 4, 3)
    ent = torch.tensor(
        [
            [[0.4, 0.2, 9.0], [0.5, 9.0, 9.0], [0.1, 0.2, 0.3], [1.0, 1.0, 9.0]],
            [[0.1, 9.0, 9.0], [0.2, 9.0, 9.0], [0.3, 9.0, 9.0], [0.4, 9.0, 9.0]],
        ],
        requires_grad=True,
    )  # 9.0 = padding, never read
    batch = b.replace(mask=mask, entropies=ent)
    out = compute_loss("dsdr_entropy", batch, torch.zeros(2, 4), eta=0.1, kernel="cosine")
    # weights: |C| softmax(d) over the correct ones of each group
    d0 = [0.5, 0.5, 1.0]
    z0 = sum(math.exp(x) for x in d0)
    w0 = [3 * math.exp(x) / z0 for x in d0] + [0.0]
    d1 = [1.4 / 3, 1.4 / 3, 2.2 / 3, 1 / 3]
    z1 = sum(math.exp(x) for x in d1)
    w1 = [4 * math.exp(x) / z1 for x in d1]
    hbar0 = [0.3, 0.5, 0.2, 1.0]  # per-sequence mean entropies (length-invariant)
    hbar1 = [0.1, 0.2, 0.3, 0.4]
    j = (
        sum(w * h for w, h in zip(w0, hbar0, strict=True)) + sum(w * h for w, h in zip(w1, hbar1, strict=True))
    ) / 8  # N = 8 sequences
    assert out.metrics["div_term"] == pytest.approx(j, abs=1e-6)
    assert float(out.loss.detach()) == pytest.approx(-0.1 * j, abs=1e-7)
    assert out.metrics["weight_max"] == pytest.approx(max(w0 + w1), abs=1e-6)
    out.loss.backward()
    # d loss / d H_it = -eta w_i / (N T_i) at valid tokens, 0 at padding
    want = torch.tensor([w0, w1]) / lengths / 8 * -0.1  # (2, 4)
    assert torch.allclose(ent.grad, want[..., None].expand(2, 4, 3) * mask, atol=1e-7)  # type: ignore[arg-type]


def test_entropy_term_is_length_invariant_and_reduces_to_r1_zero_div_exact() -> None:
    b = text_batch()
    adv = torch.zeros(2, 5)
    # a response whose every token has entropy h contributes h, whatever its length
    flat = b.replace(entropies=torch.full((2, 5, 4), 0.7))
    assert compute_loss("dsdr_entropy", flat, adv, coupling="uniform").metrics["div_term"] == pytest.approx(
        0.7 * float((b.correct).float().mean()),
        abs=1e-6,  # type: ignore[union-attr]
    )
    # uniform coupling, or equal diversities, is R1-zero-Div's term with full-vocabulary entropies
    pe = compute_loss("positive_entropy", b, adv, lam=0.05, estimator="exact", gate="correct").loss
    uni = compute_loss("dsdr_entropy", b, adv, eta=0.05, coupling="uniform").loss
    assert float(uni) == pytest.approx(float(pe), abs=1e-7)
    same = b.replace(texts=[["x+y"] * 5, ["z"] * 5])
    assert float(compute_loss("dsdr_entropy", same, adv, eta=0.05).loss) == pytest.approx(float(pe), abs=1e-7)
    # a different diversity spread moves it
    assert float(compute_loss("dsdr_entropy", b, adv, eta=0.05, tau=0.1).loss) != pytest.approx(float(pe), abs=1e-5)


def test_unscorable_rollouts_are_never_correct() -> None:
    b = text_batch()
    unscored = torch.tensor([[False, True, False, False, False], [False, False, False, False, True]])
    nb = b.replace(rewards=b.rewards.masked_fill(unscored, NAN))
    as_wrong = b.replace(correct=b.correct & ~unscored)  # type: ignore[operator]
    assert torch.equal(dsdr_diversity(nb), dsdr_diversity(as_wrong))
    assert torch.equal(dsdr_weights(nb), dsdr_weights(as_wrong))
    adv = torch.zeros(2, 5)
    assert float(compute_loss("dsdr_entropy", nb, adv).loss) == float(compute_loss("dsdr_entropy", as_wrong, adv).loss)
    a = compute_advantages("dsdr", nb)
    assert torch.equal(a[unscored], torch.zeros(2))
    # the rest: the estimator on each group's scored rollouts alone (test_unscorable.py checks this on random masks)
    alone = GroupBatch(
        rewards=b.rewards[:1, [0, 2, 3, 4]],
        correct=b.correct[:1, [0, 2, 3, 4]],
        texts=[[b.texts[0][g] for g in (0, 2, 3, 4)]],
    )  # type: ignore[index]
    assert torch.allclose(a[0, [0, 2, 3, 4]], compute_advantages("dsdr", alone)[0], atol=1e-6)


def test_options_and_errors() -> None:
    b = text_batch()
    with pytest.raises(ValueError, match="GroupBatch.correct"):
        compute_advantages("dsdr", b.replace(correct=None))
    with pytest.raises(ValueError, match="texts"):
        compute_advantages("dsdr", b.replace(texts=None))
    with pytest.raises(ValueError, match="embeddings"):
        compute_advantages("dsdr", b, kernel="cosine")
    for option in ("lam", "bonus_max"):
        with pytest.raises(ValueError, match=option):
            compute_advantages("dsdr", b, **{option: -0.1})
    with pytest.raises(ValueError, match="base"):
        compute_advantages("dsdr", b, base="dsdr")
    with pytest.raises(ValueError, match="coupling"):
        compute_loss("dsdr_entropy", b, torch.zeros(2, 5), coupling="hard")
    with pytest.raises(ValueError, match="tau"):
        compute_loss("dsdr_entropy", b, torch.zeros(2, 5), tau=0.0)
    with pytest.raises(ValueError, match="entropies"):
        compute_loss("dsdr_entropy", b.replace(entropies=None), torch.zeros(2, 5))
