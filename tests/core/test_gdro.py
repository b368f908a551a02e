"""Prompt-GDRO (divrl.core.gdro): pass@k of a group, bins with hysteresis, the bias-corrected EMA and the
multiplicative-weights update by hand, selection, purity and an exact split run.

No official code was found (docs/methods.md), so there is no reference-agreement test; the method is reconstructed.
"""

from __future__ import annotations

import copy
import math
import pickle
import random

import pytest

from divrl.core import gdro
from divrl.core.gdro import GdroOptions


def test_group_pass_at_k():
    assert gdro.group_pass_at_k([False, True, False, False]) == 1.0  # k=0: any of G
    assert gdro.group_pass_at_k([False] * 4) == 0.0
    assert gdro.group_pass_at_k([True, False, False, False], k=1) == pytest.approx(0.25)
    assert gdro.group_pass_at_k([True, False, False, False], k=2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert gdro.group_pass_at_k([True, True, False, False], k=3) == 1.0  # fewer than k incorrect


def test_assign_bin_with_hysteresis():
    edges = [0.25, 0.5, 0.75]
    assert [gdro.assign_bin(r, edges) for r in (0.0, 0.25, 0.3, 0.74, 0.75, 1.0)] == [0, 1, 1, 2, 3, 3]
    # in bin 1 = [0.25, 0.5): stays while 0.20 <= rate < 0.55
    assert gdro.assign_bin(0.52, edges, previous=1, hysteresis=0.05) == 1
    assert gdro.assign_bin(0.56, edges, previous=1, hysteresis=0.05) == 2
    assert gdro.assign_bin(0.21, edges, previous=1, hysteresis=0.05) == 1
    assert gdro.assign_bin(0.19, edges, previous=1, hysteresis=0.05) == 0
    assert gdro.assign_bin(0.52, edges, previous=1, hysteresis=0.0) == 2
    assert gdro.assign_bin(0.9, edges, previous=gdro.unseen_bin(edges), hysteresis=0.05) == 3  # unseen: no stay


def test_update_by_hand():
    opts = GdroOptions(edges=[0.5], eta=1.0, ema=0.5, hysteresis=0.0, window=2)  # bins: 0 hard, 1 easy, 2 unseen
    s0 = gdro.initial_state(opts)
    # step 1: two unseen problems; losses 1 - 1/4 = 0.75 and 1 - 0/4 = 1 -> bin 2's batch mean 0.875
    s1 = gdro.update(s0, ["a", "b"], [[True, False, False, False], [False] * 4], opts)
    assert s1["ema"] == [0.0, 0.0, 0.4375] and s1["updates"] == [0, 0, 1]
    # debiased: 0.4375 / (1 - 0.5) = 0.875; log w = [0, 0, 0.875] shifted to max 0
    assert s1["log_weights"] == pytest.approx([-0.875, -0.875, 0.0])
    assert s1["problems"]["a"] == {"window": [1.0], "rate": 1.0, "bin": 1}  # pass@4 = 1 -> easy bin
    assert s1["problems"]["b"] == {"window": [0.0], "rate": 0.0, "bin": 0}
    # step 2: "b" (bin 0) all wrong again (loss 1), "c" (unseen) all right (loss 0)
    s2 = gdro.update(s1, ["b", "c"], [[False] * 4, [True] * 4], opts)
    assert s2["updates"] == [1, 0, 2]
    assert s2["ema"] == pytest.approx([0.5, 0.0, 0.21875])  # bin 2: 0.5 * 0.4375 + 0.5 * 0
    est = gdro.bin_loss_estimates(s2, opts)
    assert est[0] == pytest.approx(1.0) and est[1] is None and est[2] == pytest.approx(0.21875 / 0.75)
    raw = [-0.875 + 1.0, -0.875, 0.0 + 0.21875 / 0.75]
    assert s2["log_weights"] == pytest.approx([w - max(raw) for w in raw])
    assert s2["problems"]["b"]["window"] == [0.0, 0.0]
    # the sampling distribution (mix 0.1 over the 3 non-empty bins)
    probs = gdro.bin_probabilities(s2, [True, True, True], 0.1)
    z = sum(math.exp(w) for w in s2["log_weights"])
    assert probs == pytest.approx([0.9 * math.exp(w) / z + 0.1 / 3 for w in s2["log_weights"]])
    assert gdro.bin_probabilities(s2, [True, False, True], 0.0)[1] == 0.0


def test_update_is_pure_and_state_pickles():
    opts = GdroOptions()
    s0 = gdro.initial_state(opts)
    s1 = gdro.update(s0, ["a"], [[True, False]], opts)
    snapshot = copy.deepcopy(s1)
    s2 = gdro.update(s1, ["a", "b"], [[False, False], [True, True]], opts)
    assert s1 == snapshot and s0 == gdro.initial_state(opts)  # inputs untouched
    assert pickle.loads(pickle.dumps(s2)) == s2


def test_constant_loss_keeps_weights_uniform_among_observed_bins():
    """All bins observed with the same loss: the update adds the same eta * L to every log-weight (uniform q)."""
    opts = GdroOptions(edges=[0.5], eta=0.3, hysteresis=0.0)
    state = {
        "log_weights": [0.0, 0.0, 0.0],
        "ema": [0.0] * 3,
        "updates": [0] * 3,
        "problems": {"h": {"window": [0.0], "rate": 0.0, "bin": 0}, "e": {"window": [1.0], "rate": 1.0, "bin": 1}},
    }
    new = gdro.update(state, ["h", "e", "u"], [[True, False]] * 3, opts)
    assert new["log_weights"] == pytest.approx([0.0, 0.0, 0.0])


def test_select_draws_distinct_problems_and_favours_heavy_bins():
    opts = GdroOptions(edges=[0.5], mix=0.0)
    ids = [f"p{i}" for i in range(20)]
    problems = {pid: {"window": [0.0], "rate": 0.0, "bin": 0} for pid in ids[:10]}
    problems.update({pid: {"window": [1.0], "rate": 1.0, "bin": 1} for pid in ids[10:]})
    state = {"log_weights": [0.0, -50.0, -50.0], "ema": [0.0] * 3, "updates": [0] * 3, "problems": problems}
    chosen = gdro.select(ids, 10, random.Random(0), state, opts)
    assert sorted(chosen) == list(range(10))  # all weight on bin 0 (the hard problems)
    chosen = gdro.select(ids, 15, random.Random(0), state, opts)  # bin 0 runs out: the rest from bin 1
    assert len(set(chosen)) == 15 and set(range(10)) <= set(chosen)
    assert gdro.select(ids, 7, random.Random(3), state, opts) == gdro.select(ids, 7, random.Random(3), state, opts)


def test_one_bin_is_exactly_the_uniform_draw():
    """Every problem in one bin (the first step: all unseen; or all equally hard): gdro draws as rng.sample."""
    opts = GdroOptions()
    ids = [f"p{i}" for i in range(40)]
    for seed in range(10):
        assert gdro.select(ids, 6, random.Random(seed), gdro.initial_state(opts), opts) == random.Random(seed).sample(
            range(40), 6
        )
    same = {
        "log_weights": [-3.0, 0.0, 0.0, 0.0, 0.0],
        "ema": [0.0] * 5,
        "updates": [0] * 5,
        "problems": {pid: {"window": [0.0], "rate": 0.0, "bin": 0} for pid in ids},
    }
    assert gdro.select(ids, 6, random.Random(1), same, opts) == random.Random(1).sample(range(40), 6)


def test_select_with_uniform_weights_and_one_bin_is_uniform_over_problems():
    opts = GdroOptions()
    state = gdro.initial_state(opts)  # every problem unseen: one bin
    counts = [0] * 6
    rng = random.Random(0)
    for _ in range(3000):
        for i in gdro.select([str(i) for i in range(6)], 2, rng, state, opts):
            counts[i] += 1
    assert all(abs(c / 6000 - 1 / 6) < 0.02 for c in counts)


def test_split_run_equals_uninterrupted():
    opts = GdroOptions()
    ids = [f"p{i}" for i in range(30)]
    outcomes = random.Random(7)

    def run(state, steps, first):
        for step in range(first, first + steps):
            chosen = gdro.select(ids, 5, random.Random(step), state, opts)
            correct = [[outcomes.random() < 0.3 for _ in range(4)] for _ in chosen]
            state = gdro.update(state, [ids[i] for i in chosen], correct, opts)
        return state

    full = run(gdro.initial_state(opts), 10, 0)
    outcomes.seed(7)
    half = pickle.loads(pickle.dumps(run(gdro.initial_state(opts), 5, 0)))
    assert run(half, 5, 5) == full


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"edges": [0.5, 0.4]}, "edges"),
        ({"edges": []}, "edges"),
        ({"k": -1}, "k"),
        ({"window": 0}, "window"),
        ({"ema": 1.0}, "ema"),
        ({"mix": 2}, "mix"),
        ({"eta": -1}, "eta"),
    ],
)
def test_bad_options_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        GdroOptions(**kwargs)
