"""outcome_ucb (Outcome-based exploration, historical variant, arXiv 2509.06941) and the stateful-estimator API.

Hand-computed bonuses and advantages; the state as a pure function of (batch, state); permutation invariance;
reduction to the base estimator when the bonus is constant; unscorable rollouts as every other estimator handles
them (G with c scored = G = c, advantages and history alike); splitting a run of steps and restoring the state
from a pickle gives the same advantages and state (what a checkpoint resume does).
"""

from __future__ import annotations

import copy
import math
import pickle
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from divrl.core.advantages import (
    ADVANTAGES,
    advantage_is_stateful,
    advantage_needs,
    compute_advantages,
    compute_advantages_and_state,
    register_advantage,
)
from divrl.core.batch import GroupBatch
from divrl.core.needs import Needs
from divrl.core.outcome_ucb import NO_ANSWER, outcome_ucb_bonus

NAN = math.nan
R2 = 2**-0.5


def _grpo_by_hand(r: list[float]) -> list[float]:
    """(r - mean) / (unbiased std + 1e-6), in plain floats."""
    m = sum(r) / len(r)
    sd = math.sqrt(sum((x - m) ** 2 for x in r) / (len(r) - 1))
    return [(x - m) / (sd + 1e-6) for x in r]


def _one(rewards: list[float], answers: list[str | None], pid: str = "q", **extra: Any) -> GroupBatch:
    return GroupBatch(rewards=torch.tensor([rewards]), answers=[answers], problem_ids=[pid], **extra)


# ---------------------------------------------------------------------------------------------
# Hand-computed
# ---------------------------------------------------------------------------------------------


def test_hand_computed_bonus_advantages_and_state():
    # history: "a" seen 3 times. This step: a, b, b, (no answer). count_current: N(a) = 4, N(b) = 2.
    state = {"q": {"a": 3}, "other": {"x": 1}}
    before = copy.deepcopy(state)
    batch = _one([1.0, 0.0, 0.0, 0.0], ["a", "b", "b", None])
    adv, new = compute_advantages_and_state("outcome_ucb", batch, state, c=1.0)
    shaped = [1.0 + 0.5, R2, R2, 0.0]  # b = 1/sqrt(4), 1/sqrt(2), 1/sqrt(2); no answer: no bonus (missing=skip)
    assert adv[0].tolist() == pytest.approx(_grpo_by_hand(shaped), abs=1e-6)
    assert adv[0].tolist() == pytest.approx([1.2587, -0.0350, -0.0350, -1.1887], abs=1e-4)
    assert new == {"q": {"a": 4, "b": 2}, "other": {"x": 1}}
    assert state == before  # pure: the input state is not modified
    assert new is not state


def test_options_by_hand():
    batch = _one([1.0, 0.0, 0.0, 0.0], ["a", "b", "b", None], history={"q": {"a": 3}})
    past_only, _ = outcome_ucb_bonus(batch, count_current=False)  # N(a) = 3, N(b) = 0 -> 1
    assert past_only[0].tolist() == pytest.approx([3**-0.5, 1.0, 1.0, 0.0])
    counted, up = outcome_ucb_bonus(batch, missing="count")  # "no answer" is one outcome, seen once
    assert counted[0].tolist() == pytest.approx([0.5, R2, R2, 1.0]) and up["q"][NO_ANSWER] == 1
    correct = torch.tensor([[True, False, False, False]])
    gated, _ = outcome_ucb_bonus(batch.replace(correct=correct), gate="correct")
    assert gated[0].tolist() == pytest.approx([0.5, 0.0, 0.0, 0.0])
    wrong, _ = outcome_ucb_bonus(batch.replace(correct=correct), gate="incorrect")
    assert wrong[0].tolist() == pytest.approx([0.0, R2, R2, 0.0])
    mean, _ = outcome_ucb_bonus(batch, baseline="mean")  # minus (0.5 + 2/sqrt 2) / 4 over all four scored
    m = (0.5 + 2 * R2) / 4
    assert mean[0].tolist() == pytest.approx([0.5 - m, R2 - m, R2 - m, -m], abs=1e-6)
    con, _ = outcome_ucb_bonus(batch, baseline="constant", b0=0.25)  # only where the bonus applies
    assert con[0].tolist() == pytest.approx([0.25, R2 - 0.25, R2 - 0.25, 0.0])


def test_two_groups_of_one_problem_share_this_steps_counts():
    batch = GroupBatch(rewards=torch.zeros(2, 2), answers=[["a", "b"], ["a", "a"]], problem_ids=["q", "q"], history={})
    bonus, up = outcome_ucb_bonus(batch)  # N(a) = 3, N(b) = 1 over both groups
    assert bonus.flatten().tolist() == pytest.approx([3**-0.5, 1.0, 3**-0.5, 3**-0.5])
    assert up == {"q": {"a": 3, "b": 1}}


def test_bonus_decays_over_steps():
    """The same answer, step after step: 1, 1/sqrt 2, 1/sqrt 3 ... (G = 1 per step, count_current)."""
    state: dict[str, Any] = {}
    seen = []
    for _ in range(4):
        batch = _one([0.0], ["a"]).replace(history={"q": state["q"]} if "q" in state else {})
        bonus, up = outcome_ucb_bonus(batch)
        seen.append(float(bonus[0, 0]))
        state = {**state, **up}
    assert seen == pytest.approx([1.0, R2, 3**-0.5, 0.5])
    assert state == {"q": {"a": 4}}


# ---------------------------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------------------------


def _random_batch(p: int, g: int, seed: int) -> tuple[GroupBatch, dict[str, Any]]:
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 2, (p, g), generator=gen).float()
    letters = "abcd"
    answers = [
        [None if int(i) == 4 else letters[int(i)] for i in torch.randint(0, 5, (g,), generator=gen)] for _ in range(p)
    ]
    ids = [f"q{int(i)}" for i in torch.randint(0, 3, (p,), generator=gen)]  # repeats happen
    state = {f"q{k}": {x: int(torch.randint(1, 5, (), generator=gen)) for x in letters[: k + 1]} for k in range(2)}
    return GroupBatch(rewards=rewards, correct=rewards > 0.5, answers=answers, problem_ids=ids), state


OPTIONS = [
    {},
    {"c": 0.3, "baseline": "mean"},
    {"count_current": False, "missing": "count"},
    {"gate": "incorrect", "base": "rloo"},
    {"gate": "correct", "baseline": "constant", "b0": 0.2, "base": "dr_grpo"},
]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_permutation_within_a_group(options):
    for seed in range(10):
        batch, state = _random_batch(3, 6, seed)
        adv, new = compute_advantages_and_state("outcome_ucb", batch, state, **options)
        perm = torch.randperm(6, generator=torch.Generator().manual_seed(seed))
        permuted = batch.replace(
            rewards=batch.rewards[:, perm],
            correct=batch.correct[:, perm],  # type: ignore[index]
            answers=[[row[int(i)] for i in perm] for row in batch.answers],  # type: ignore[union-attr]
        )
        adv_p, new_p = compute_advantages_and_state("outcome_ucb", permuted, state, **options)
        assert torch.allclose(adv_p, adv[:, perm], atol=1e-6)
        assert new_p == new


@pytest.mark.parametrize("base", ["grpo", "dr_grpo", "rloo"])
def test_reduces_to_the_base_estimator_when_the_bonus_is_constant(base):
    for seed in range(10):
        batch, state = _random_batch(3, 5, seed)
        plain = compute_advantages(base, batch)
        # c = 0: exactly the base
        assert torch.equal(compute_advantages_and_state("outcome_ucb", batch, state, c=0.0, base=base)[0], plain)
        # every answer distinct and never seen: b = 1 for all, a constant shift of each group
        fresh = batch.replace(answers=[[f"{p}-{g}" for g in range(5)] for p in range(3)])
        adv, _ = compute_advantages_and_state("outcome_ucb", fresh, {}, c=0.7, base=base)
        assert torch.allclose(adv, compute_advantages(base, fresh), atol=1e-5)


def test_mean_and_constant_baselines_cancel_under_a_centring_base():
    for seed in range(5):
        batch, state = _random_batch(3, 6, seed)
        none, _ = compute_advantages_and_state("outcome_ucb", batch, state)
        for options in ({"baseline": "mean"}, {"baseline": "constant", "b0": 0.4}):
            adv, _ = compute_advantages_and_state("outcome_ucb", batch, state, **options)
            if options["baseline"] == "mean":
                assert torch.allclose(adv, none, atol=1e-5)
        # the constant baseline shifts only rollouts with an outcome: equal to none only when all have one
        full = batch.replace(answers=[[a or "z" for a in row] for row in batch.answers])  # type: ignore[union-attr]
        a1, _ = compute_advantages_and_state("outcome_ucb", full, state)
        a2, _ = compute_advantages_and_state("outcome_ucb", full, state, baseline="constant", b0=0.4)
        assert torch.allclose(a1, a2, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Unscorable rollouts, as every estimator handles them
# ---------------------------------------------------------------------------------------------


@st.composite
def masked(draw: st.DrawFn) -> tuple[GroupBatch, dict[str, Any], Tensor, dict[str, Any]]:
    p, g = draw(st.integers(1, 3)), draw(st.integers(2, 7))
    batch, state = _random_batch(p, g, draw(st.integers(0, 10_000)))
    unscored = torch.tensor(draw(st.lists(st.lists(st.booleans(), min_size=g, max_size=g), min_size=p, max_size=p)))
    return batch, state, unscored, draw(st.sampled_from(OPTIONS))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=masked())
def test_g_with_c_scored_equals_g_equals_c(case):
    """Each group's c scored rollouts alone (G = c) give the same advantages on them, 0 elsewhere, and the same new
    state: an unscorable rollout's answer, correctness and reward are never read nor counted."""
    batch, state, unscored, options = case
    b = batch.replace(rewards=batch.rewards.masked_fill(unscored, NAN))
    adv, new = compute_advantages_and_state("outcome_ucb", b, state, **options)
    assert torch.equal(adv[unscored], torch.zeros(int(unscored.sum())))
    # with one group per problem, each group's c scored rollouts alone (G = c) are the oracle
    ids = [f"q{p}" for p in range(b.num_prompts)]
    adv_u, new_u = compute_advantages_and_state("outcome_ucb", b.replace(problem_ids=ids), state, **options)
    expected, oracle_state = torch.zeros_like(adv_u), dict(state)
    for p in range(b.num_prompts):
        keep = [g for g in range(b.group_size) if not bool(unscored[p, g])]
        if not keep:
            continue
        one = GroupBatch(
            rewards=b.rewards[p, keep][None],
            correct=b.correct[p, keep][None],  # type: ignore[index]
            answers=[[b.answers[p][g] for g in keep]],  # type: ignore[index]
            problem_ids=[ids[p]],
        )
        a_one, up = compute_advantages_and_state("outcome_ucb", one, state, **options)
        expected[p, keep] = a_one[0]
        if ids[p] in up:  # up: the whole new state; take this group's problem
            oracle_state[ids[p]] = up[ids[p]]
    assert torch.allclose(adv_u, expected, atol=1e-5)
    assert new_u == oracle_state
    junk = b.replace(
        answers=[
            [("junk" if bool(u) else a) for a, u in zip(row, unscored[p], strict=True)]
            for p, row in enumerate(b.answers)
        ],  # type: ignore[arg-type]
        correct=torch.where(unscored, ~b.correct, b.correct),  # type: ignore[arg-type, operator]
    )
    adv_j, new_j = compute_advantages_and_state("outcome_ucb", junk, state, **options)
    assert torch.allclose(adv_j, adv, atol=1e-6) and new_j == new


def test_groups_with_zero_or_one_scored_get_zeros():
    batch = GroupBatch(
        rewards=torch.tensor([[NAN, NAN, NAN], [NAN, 1.0, NAN]]),
        answers=[["a", "b", "c"], ["a", "b", "c"]],
        problem_ids=["p", "q"],
    )
    adv, new = compute_advantages_and_state("outcome_ucb", batch, {})
    assert torch.equal(adv, torch.zeros(2, 3))
    assert new == {"q": {"b": 1}}  # the one scored rollout is counted; nothing of the unscorable ones


# ---------------------------------------------------------------------------------------------
# The state across steps: a split run restored from a pickle is the uninterrupted run
# ---------------------------------------------------------------------------------------------


def _steps(n: int) -> list[GroupBatch]:
    out = []
    for step in range(n):
        batch, _ = _random_batch(4, 5, 100 + step)
        out.append(batch)
    return out


def test_split_and_restored_state_is_exact():
    batches = _steps(8)
    state: dict[str, Any] = {}
    full = []
    for batch in batches:
        adv, state = compute_advantages_and_state("outcome_ucb", batch, state, c=0.5)
        full.append(adv)
    half: dict[str, Any] = {}
    split = []
    for batch in batches[:4]:
        adv, half = compute_advantages_and_state("outcome_ucb", batch, half, c=0.5)
        split.append(adv)
    half = pickle.loads(pickle.dumps(half))  # what a checkpoint's trainer_state.pt round-trip does
    for batch in batches[4:]:
        adv, half = compute_advantages_and_state("outcome_ucb", batch, half, c=0.5)
        split.append(adv)
    assert half == state
    assert all(torch.equal(a, b) for a, b in zip(full, split, strict=True))
    assert sum(sum(r.values()) for r in state.values()) == sum(
        sum(a is not None for a in row)
        for b in batches
        for row in b.answers  # type: ignore[union-attr]
    )


def test_history_changes_the_advantages():
    """A test that could fail: the same batch after a history of its answers gets other advantages."""
    batch = _one([1.0, 1.0, 0.0, 0.0], ["a", "b", "c", "c"])
    fresh, _ = compute_advantages_and_state("outcome_ucb", batch, {})
    seen, _ = compute_advantages_and_state("outcome_ucb", batch, {"q": {"a": 50}})
    assert fresh[0, 0] == fresh[0, 1] and seen[0, 0] < seen[0, 1]


# ---------------------------------------------------------------------------------------------
# Declared needs, registration, errors
# ---------------------------------------------------------------------------------------------


def test_declared_needs_and_missing_fields():
    assert advantage_is_stateful("outcome_ucb") and not advantage_is_stateful("grpo")
    assert advantage_needs("outcome_ucb").reads == {"answers", "problem_ids", "history"}
    assert advantage_needs("outcome_ucb", {"gate": "correct", "base": "unlikeliness"}).reads == {
        "answers",
        "problem_ids",
        "history",
        "correct",
        "old_logprobs",
        "mask",
    }
    full = _one([1.0, 0.0], ["a", "b"], history={})
    for field in ("answers", "history"):
        with pytest.raises(ValueError, match=f"GroupBatch.{field}"):
            compute_advantages("outcome_ucb", full.replace(**{field: None}))
    with pytest.raises(ValueError, match="problem_ids"):
        compute_advantages_and_state("outcome_ucb", GroupBatch(rewards=torch.zeros(1, 2), answers=[["a", "b"]]), {})
    with pytest.raises(ValueError, match="gate='correct' needs GroupBatch.correct"):
        compute_advantages("outcome_ucb", full, gate="correct")
    with pytest.raises(ValueError, match=r"history\['q'\] must map answers"):
        compute_advantages("outcome_ucb", full.replace(history={"q": {"a": -1}}))
    with pytest.raises(ValueError, match="baseline must be"):
        compute_advantages("outcome_ucb", full, baseline="median")
    with pytest.raises(ValueError, match="stateless"):
        compute_advantages("outcome_ucb", full, base="outcome_ucb")
    with pytest.raises(ValueError, match="setpo: base 'outcome_ucb' keeps per-problem state"):
        compute_advantages("setpo", full.replace(texts=[["a", "b"]]), base="outcome_ucb")


def test_a_stateless_estimator_passes_the_state_through():
    batch = _one([1.0, 0.0, 1.0], ["a", "b", "c"])
    state = {"q": {"a": 1}}
    adv, new = compute_advantages_and_state("grpo", batch, state)
    assert torch.equal(adv, compute_advantages("grpo", batch)) and new == state


def test_batch_validates_problem_ids_and_history():
    with pytest.raises(ValueError, match="problem_ids must be a list of P=1 str ids"):
        GroupBatch(rewards=torch.zeros(1, 2), problem_ids=["a", "b"])
    with pytest.raises(ValueError, match="GroupBatch.problem_ids must be set too"):
        GroupBatch(rewards=torch.zeros(1, 2), history={})
    with pytest.raises(ValueError, match="mapping from problem id"):
        GroupBatch(rewards=torch.zeros(1, 2), problem_ids=["a"], history={1: {}})  # type: ignore[dict-item]


def test_registration_rules(monkeypatch):
    monkeypatch.setattr(ADVANTAGES, "_entries", dict(ADVANTAGES._entries))
    monkeypatch.setattr(ADVANTAGES, "_needs", dict(ADVANTAGES._needs))
    needs = lambda o: Needs.of({"problem_ids", "history"})  # noqa: E731
    with pytest.raises(ValueError, match="handles_unscored=True"):
        register_advantage("_toy_state", stateful=True, needs=needs)
    with pytest.raises(ValueError, match="'problem_ids' and 'history'"):
        register_advantage("_toy_state", stateful=True, handles_unscored=True)

    @register_advantage("_toy_state", stateful=True, handles_unscored=True, needs=needs)
    def toy(batch: GroupBatch) -> Any:
        return torch.zeros_like(batch.rewards), {"elsewhere": 1}

    with pytest.raises(ValueError, match="state for problems not in the batch"):
        compute_advantages_and_state("_toy_state", _one([1.0, 0.0], ["a", "b"]), {})
