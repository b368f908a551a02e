"""outcome_batch (arXiv 2509.06941, reconstructed) and seed_grpo (arXiv 2505.12346, 2nd-hand): hand-computed values,
reduction to the base estimator, permutation invariance, declared needs and unscorable rollouts."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from divrl.core.advantages import advantage_needs, compute_advantages
from divrl.core.batch import GroupBatch

NAN = math.nan


def adv(name: str, batch: GroupBatch, **options: Any) -> torch.Tensor:
    return compute_advantages(name, batch, **options)


def random_batch(p: int, g: int, seed: int, t: int = 3) -> GroupBatch:
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 2, (p, g), generator=gen).float()
    pool = ["1", "2", "3", None]
    answers = [[pool[int(i)] for i in torch.randint(0, 4, (g,), generator=gen)] for _ in range(p)]
    return GroupBatch(
        rewards=rewards,
        correct=rewards.bool(),
        answers=answers,
        partition=torch.randint(0, 3, (p, g), generator=gen),
        old_logprobs=-torch.rand(p, g, t, generator=gen),
        mask=torch.ones(p, g, t),
    )


CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("outcome_batch", {}),
    ("outcome_batch", {"coef": 1.0, "scale": "none", "missing": "own_class"}),
    ("outcome_batch", {"classes": "partition"}),
    ("outcome_batch", {"gate": "correct"}),
    ("seed_grpo", {}),
    ("seed_grpo", {"f": "exp", "alpha": 2.0, "scale": "group"}),
    ("seed_grpo", {"f": "inverse", "entropy": "logprob"}),
    ("seed_grpo", {"classes": "partition", "missing": "own_class"}),
]
IDS = [f"{n}-{o}" for n, o in CONFIGS]


# ---------------------------------------------------------------------------------------------
# outcome_batch
# ---------------------------------------------------------------------------------------------


def test_outcome_batch_hand_computed() -> None:
    """answers (a, b, a, c), rewards (1, 0, 1, 1), coef 0.5: dup = (1/3, 0, 1/3, 0), r' = (5/6, 0, 5/6, 1);
    mean 2/3, centred (1/6, -2/3, 1/6, 1/3), unbiased std sqrt(11/54)."""
    b = GroupBatch(rewards=torch.tensor([[1.0, 0.0, 1.0, 1.0]]), answers=[["a", "b", "a", "c"]])
    centred = torch.tensor([[1 / 6, -2 / 3, 1 / 6, 1 / 3]])
    assert torch.allclose(adv("outcome_batch", b, scale="none"), centred, atol=1e-6)
    assert torch.allclose(adv("outcome_batch", b), centred / (math.sqrt(11 / 54) + 1e-6), atol=1e-6)
    # with equal rewards the penalty alone ranks them: the repeated answer below the unique ones
    eq = b.replace(rewards=torch.zeros(1, 4))
    assert torch.allclose(adv("outcome_batch", eq, scale="none"), torch.tensor([[-1 / 12, 1 / 12, -1 / 12, 1 / 12]]))


def test_outcome_batch_missing_answers() -> None:
    """Two rollouts without an answer: one shared outcome (default) or two singletons."""
    b = GroupBatch(rewards=torch.zeros(1, 3), answers=[[None, None, "7"]])
    shared = adv("outcome_batch", b, scale="none", coef=1.0)  # dup = (1/2, 1/2, 0) -> r' - mean
    assert torch.allclose(shared, torch.tensor([[-1 / 6, -1 / 6, 1 / 3]]))
    assert torch.equal(adv("outcome_batch", b, scale="none", missing="own_class"), torch.zeros(1, 3))


@pytest.mark.parametrize("scale", ["group", "none", "batch"])
def test_outcome_batch_reduces_to_grpo(scale: str) -> None:
    """All answers distinct (no repeats), all the same (a constant penalty), or coef = 0: the grpo advantage."""
    b = random_batch(4, 6, seed=3)
    base = adv("grpo", b, scale=scale)
    distinct = b.replace(answers=[[str(i) for i in range(6)] for _ in range(4)])
    same = b.replace(answers=[["x"] * 6 for _ in range(4)])
    assert torch.allclose(adv("outcome_batch", distinct, scale=scale), base, atol=1e-6)
    assert torch.allclose(adv("outcome_batch", same, scale=scale), base, atol=1e-5)
    assert torch.allclose(adv("outcome_batch", b, scale=scale, coef=0.0), base, atol=1e-6)
    assert not torch.allclose(adv("outcome_batch", b, scale=scale), base, atol=1e-3)  # the penalty acts here


@pytest.mark.parametrize("coef", [0.25, 0.5, 1.0])
def test_outcome_batch_all_wrong_group_ungated_ignores_coef_gated_is_grpo(coef: float) -> None:
    """All-wrong group with answers (a, a, a, b, b, c): dup = (2/5 x3, 1/5 x2, 0), mean 4/15, centred -coef (2/15 x3,
    -1/15 x2, -4/15), unbiased std coef sqrt(2/75): the GRPO-scaled advantage is sqrt(2/3) (-1, -1, -1, 1/2, 1/2, 2)
    whatever coef (the std division cancels it). gate="correct" leaves the group at GRPO's 0."""
    b = GroupBatch(rewards=torch.zeros(1, 6), correct=torch.zeros(1, 6, dtype=torch.bool), answers=[list("aaabbc")])
    expected = math.sqrt(2 / 3) * torch.tensor([[-1.0, -1.0, -1.0, 0.5, 0.5, 2.0]])
    assert torch.allclose(adv("outcome_batch", b, coef=coef), expected, atol=1e-4)
    assert torch.equal(adv("outcome_batch", b, coef=coef, gate="correct"), torch.zeros(1, 6))
    assert torch.allclose(adv("outcome_batch", b, coef=coef, gate="incorrect"), expected, atol=1e-4)


def test_outcome_batch_gate_hand_computed() -> None:
    """answers (a, a, b, b), rewards (1, 1, 0, 0), coef 0.5: dup = 1/3 each. Ungated the penalty is a constant (the
    grpo advantage); gated to correct r' = (5/6, 5/6, 0, 0), centred (5/12, 5/12, -5/12, -5/12) with scale none;
    gated to incorrect r' = (1, 1, -1/6, -1/6), centred (7/12, 7/12, -7/12, -7/12)."""
    r = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    b = GroupBatch(rewards=r, correct=r.bool(), answers=[list("aabb")])
    assert torch.allclose(adv("outcome_batch", b), adv("grpo", b), atol=1e-6)
    gated = adv("outcome_batch", b, scale="none", gate="correct")
    assert torch.allclose(gated, torch.tensor([[5 / 12, 5 / 12, -5 / 12, -5 / 12]]), atol=1e-6)
    wrong = adv("outcome_batch", b, scale="none", gate="incorrect")
    assert torch.allclose(wrong, torch.tensor([[7 / 12, 7 / 12, -7 / 12, -7 / 12]]), atol=1e-6)
    assert advantage_needs("outcome_batch", {"gate": "correct"}).uses("correct")
    assert not advantage_needs("outcome_batch", {}).uses("correct")
    with pytest.raises(ValueError, match="gate must be"):
        adv("outcome_batch", b, gate="wrong")
    with pytest.raises(ValueError, match="needs GroupBatch.correct"):
        adv("outcome_batch", b.replace(correct=None), gate="correct")


def test_outcome_batch_partition_classes_equal_answer_classes() -> None:
    b = random_batch(3, 5, seed=4)
    labels = torch.tensor([[0 if a is None else int(a) for a in row] for row in b.answers])  # None as one class
    assert torch.allclose(
        adv("outcome_batch", b), adv("outcome_batch", b.replace(partition=labels), classes="partition")
    )


def test_outcome_batch_bad_options() -> None:
    b = random_batch(1, 4, seed=0)
    with pytest.raises(ValueError, match="coef"):
        adv("outcome_batch", b, coef=-1.0)
    with pytest.raises(ValueError, match="classes"):
        adv("outcome_batch", b, classes="texts")
    with pytest.raises(ValueError, match="missing"):
        adv("outcome_batch", b, missing="drop")
    with pytest.raises(ValueError, match="GroupBatch.answers"):
        adv("outcome_batch", b.replace(answers=None))
    with pytest.raises(ValueError, match="GroupBatch.partition"):
        adv("outcome_batch", b.replace(partition=None), classes="partition")


# ---------------------------------------------------------------------------------------------
# seed_grpo
# ---------------------------------------------------------------------------------------------


def test_seed_grpo_hand_computed() -> None:
    """answers (a, b, a, c): p = (1/2, 1/4, 1/4), SE = 1.5 log 2, SE_max = log 4 = 2 log 2: SE/SE_max = 3/4.
    alpha 0.5: linear 1 - 3/8 = 5/8, exp e^(-3/8), inverse 1/(1 + 3/8)."""
    b = GroupBatch(rewards=torch.tensor([[1.0, 0.0, 1.0, 1.0]]), answers=[["a", "b", "a", "c"]])
    base = torch.tensor([[0.25, -0.75, 0.25, 0.25]])  # r - mean
    assert torch.allclose(adv("seed_grpo", b), base * 5 / 8, atol=1e-6)
    assert torch.allclose(adv("seed_grpo", b, f="exp"), base * math.exp(-3 / 8), atol=1e-6)
    assert torch.allclose(adv("seed_grpo", b, f="inverse"), base / (1 + 3 / 8), atol=1e-6)
    assert torch.allclose(adv("seed_grpo", b, alpha=1.0), base / 4, atol=1e-6)
    assert torch.allclose(adv("seed_grpo", b, scale="group"), adv("grpo", b) * 5 / 8, atol=1e-6)


def test_seed_grpo_logprob_entropy_hand_computed() -> None:
    """entropy='logprob': length-normalised sequence log-probs (log 1/2, log 1/4, log 1/4, log 1/4 -> weights
    2/5, 1/5, 1/5, 1/5); classes (a, a, b, c): p = (3/5, 1/5, 1/5), SE = -(1/3)(log 3/5 + 2 log 1/5)."""
    lp = torch.log(torch.tensor([0.5, 0.25, 0.25, 0.25]))[None, :, None].repeat(1, 1, 2)  # (1, 4, 2)
    mask = torch.ones(1, 4, 2)
    mask[0, 1, 1] = 0  # a padded token does not change a length-normalised log-prob
    b = GroupBatch(
        rewards=torch.tensor([[1.0, 1.0, 0.0, 0.0]]), answers=[["a", "a", "b", "c"]], old_logprobs=lp, mask=mask
    )
    se = -(math.log(3 / 5) + 2 * math.log(1 / 5)) / 3
    factor = 1 - 0.5 * min(se / math.log(4), 1.0)
    assert torch.allclose(adv("seed_grpo", b, entropy="logprob"), torch.tensor([[0.5, 0.5, -0.5, -0.5]]) * factor)
    # equal log-probs: the counts' class masses, but the Monte-Carlo form -(1/K) Σ log p_k
    flat = b.replace(old_logprobs=torch.zeros(1, 4, 2))
    se_flat = -(math.log(1 / 2) + 2 * math.log(1 / 4)) / 3
    want = torch.tensor([[0.5, 0.5, -0.5, -0.5]]) * (1 - 0.5 * se_flat / math.log(4))
    assert torch.allclose(adv("seed_grpo", flat, entropy="logprob"), want, atol=1e-6)


@pytest.mark.parametrize("entropy", ["counts", "logprob"])
@pytest.mark.parametrize("f", ["linear", "exp", "inverse"])
def test_seed_grpo_one_answer_class_is_the_base(entropy: str, f: str) -> None:
    """SE = 0 (every rollout of a group gives the same answer): the base advantage exactly; alpha = 0 too."""
    b = random_batch(4, 6, seed=5)
    same = b.replace(answers=[["x"] * 6 for _ in range(4)])
    for scale, base in (("none", "dr_grpo"), ("group", "grpo")):
        assert torch.equal(adv("seed_grpo", same, f=f, entropy=entropy, scale=scale), adv(base, b))
        assert torch.equal(adv("seed_grpo", b, f=f, entropy=entropy, scale=scale, alpha=0.0), adv(base, b))
    distinct = b.replace(answers=[[str(i) for i in range(6)] for _ in range(4)])  # SE = SE_max
    assert torch.allclose(adv("seed_grpo", distinct, alpha=0.5), adv("dr_grpo", b) * 0.5, atol=1e-6)


def test_seed_grpo_bad_options() -> None:
    b = random_batch(1, 4, seed=0)
    for bad in ({"alpha": -0.1}, {"alpha": 1.5}, {"f": "focal"}, {"entropy": "nli"}, {"classes": "texts"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            adv("seed_grpo", b, **bad)
    assert torch.isfinite(adv("seed_grpo", b, f="exp", alpha=3.0)).all()  # only linear bounds alpha
    with pytest.raises(ValueError, match="old_logprobs"):
        adv("seed_grpo", b.replace(old_logprobs=None, mask=None), entropy="logprob")


# ---------------------------------------------------------------------------------------------
# Both: needs, invariants, unscorable rollouts
# ---------------------------------------------------------------------------------------------


def test_declared_needs() -> None:
    assert advantage_needs("outcome_batch").reads == {"answers"}
    assert advantage_needs("outcome_batch", {"classes": "partition"}).reads == {"partition"}
    assert advantage_needs("seed_grpo").reads == {"answers"}
    assert advantage_needs("seed_grpo", {"entropy": "logprob"}).reads == {"answers", "old_logprobs", "mask"}
    assert advantage_needs("seed_grpo", {"classes": "partition"}).reads == {"partition"}
    assert advantage_needs("pkpo").reads == frozenset()


def _permute(b: GroupBatch, perms: torch.Tensor) -> GroupBatch:
    def take(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None:
            return None
        return x.gather(1, perms.view(*perms.shape, *([1] * (x.dim() - 2))).expand_as(x))

    answers = [[row[j] for j in perm.tolist()] for row, perm in zip(b.answers, perms, strict=True)]  # type: ignore[arg-type]
    return GroupBatch(
        rewards=take(b.rewards),  # type: ignore[arg-type]
        correct=take(b.correct),
        answers=answers,
        partition=take(b.partition),
        old_logprobs=take(b.old_logprobs),
        mask=take(b.mask),
    )


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=IDS)
def test_permuting_a_group_permutes_advantages(name: str, options: dict[str, Any]) -> None:
    for seed in range(5):
        b = random_batch(3, 6, seed)
        gen = torch.Generator().manual_seed(100 + seed)
        perms = torch.stack([torch.randperm(6, generator=gen) for _ in range(3)])  # (P, G)
        assert torch.allclose(
            adv(name, _permute(b, perms), **options), adv(name, b, **options).gather(1, perms), atol=1e-5
        )


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=IDS)
def test_equal_rewards_give_exact_zeros_and_group_of_one(name: str, options: dict[str, Any]) -> None:
    """seed_grpo scales a zero advantage; outcome_batch is a diversity estimator: zeros only when the answers are
    all distinct or all the same."""
    r = torch.tensor([0.0, 1.0, 0.3])[:, None].repeat(1, 5)  # (3, 5)
    b = random_batch(3, 5, seed=1).replace(rewards=r, correct=r == 1)
    if name == "outcome_batch":
        b = b.replace(
            answers=[["x"] * 5, ["1", "2", "3", "4", "5"], ["x"] * 5], partition=torch.zeros(3, 5, dtype=torch.long)
        )
    assert torch.equal(adv(name, b, **options), torch.zeros(3, 5))
    assert torch.equal(adv(name, random_batch(4, 1, seed=2), **options), torch.zeros(4, 1))


def _one_group(b: GroupBatch, p: int, cols: list[int]) -> GroupBatch:
    def pick(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x[p, cols][None]

    return GroupBatch(
        rewards=b.rewards[p, cols][None],
        correct=pick(b.correct),
        answers=[[b.answers[p][g] for g in cols]],  # type: ignore[index]
        partition=pick(b.partition),
        old_logprobs=pick(b.old_logprobs),
        mask=pick(b.mask),
    )


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=IDS)
def test_g_with_c_scored_equals_g_equals_c_and_unscored_is_never_read(name: str, options: dict[str, Any]) -> None:
    gen = torch.Generator().manual_seed(7)
    for seed in range(15):
        full = random_batch(3, 6, seed)
        unscored = torch.rand(3, 6, generator=gen) < 0.4
        b = full.replace(rewards=full.rewards.masked_fill(unscored, NAN))
        a = adv(name, b, **options)
        assert torch.equal(a[unscored], torch.zeros(int(unscored.sum())))
        for p in range(3):
            cols = [g for g in range(6) if not unscored[p, g]]
            if cols:
                assert torch.allclose(a[p, cols], adv(name, _one_group(b, p, cols), **options)[0], atol=1e-6)
        junk = random_batch(3, 6, seed + 1000)
        other = b.replace(
            answers=[
                [j if u else x for x, j, u in zip(*row, strict=True)]
                for row in zip(b.answers, junk.answers, unscored.tolist(), strict=True)
            ],  # type: ignore[arg-type]
            partition=torch.where(unscored, junk.partition, b.partition),  # type: ignore[arg-type]
            old_logprobs=torch.where(unscored[..., None], junk.old_logprobs, b.old_logprobs),  # type: ignore[arg-type]
        )
        assert torch.allclose(adv(name, other, **options), a, atol=1e-6)
