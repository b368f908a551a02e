"""Which of the shipped recipes' estimators act in a group whose rollouts are all wrong (all rewards 0), where GRPO
gives 0: only the outcome methods with their default ``gate: all`` (the novelty term alone, standardised, at unit
size, whatever its strength) and ucas (its token-level self-certainty term). docs/results.md traces the outcome
methods' pass@1 cost on Countdown to these groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from divrl.core.advantages import advantage_is_stateful, compute_advantages, compute_advantages_and_state
from divrl.eval.grid import RECIPES
from divrl.signals import synthetic_group

RECIPE_FILES = sorted((RECIPES / "countdown").glob("*.yaml"))
ACTS = {"outcome_batch", "outcome_ucb", "ucas"}


def _all_wrong_advantages(name: str, options: dict) -> torch.Tensor:
    b = synthetic_group(8, partition=True, embeddings=True, token_level=True, hidden=True)  # answers in 3 classes
    b = b.replace(rewards=torch.zeros(1, 8), correct=torch.zeros(1, 8, dtype=torch.bool))
    if advantage_is_stateful(name):
        return compute_advantages_and_state(name, b, {}, **options)[0]
    return compute_advantages(name, b, **options)


@pytest.mark.parametrize("path", RECIPE_FILES, ids=[p.stem for p in RECIPE_FILES])
def test_only_the_outcome_methods_and_ucas_act_in_all_wrong_groups(path: Path) -> None:
    advantage = yaml.safe_load(path.read_text())["advantage"]
    name, options = advantage["name"], advantage.get("options") or {}
    a = _all_wrong_advantages(name, options)
    if name in ACTS:
        assert float(a.abs().max()) > 0.01
    else:
        assert torch.equal(a, torch.zeros_like(a))


@pytest.mark.parametrize("name", ["outcome_batch", "outcome_ucb"])
def test_outcome_methods_gated_to_correct_leave_all_wrong_groups_alone(name: str) -> None:
    strengths = {"outcome_batch": "coef", "outcome_ucb": "c"}
    ungated = [_all_wrong_advantages(name, {strengths[name]: s}) for s in (0.25, 1.0, 4.0)]
    assert all(torch.allclose(a, ungated[0], atol=1e-4) for a in ungated)  # the strength cancels
    assert float(ungated[0].abs().max()) > 1.0
    gated = _all_wrong_advantages(name, {"gate": "correct"})
    assert torch.equal(gated, torch.zeros_like(gated))
