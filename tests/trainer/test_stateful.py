"""A stateful estimator in ``divrl train``: its per-problem state lives in the checkpoint and ``--resume`` restores
it exactly (N steps = N/2, a resume, N/2: identical state and identical advantages at every step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _interrupted import run_first_steps

from divrl.config import ConfigError
from divrl.eval.demo import Budget, recipe
from divrl.trainer import rl
from divrl.trainer.common import (
    MANIFEST,
    RunFolderError,
    _write_manifest,
    latest_checkpoint,
    load_trainer_state,
    read_metrics,
)
from divrl.trainer.plan import check_methods
from divrl.trainer.rl import RLTrainer, train

SMALL = ["model.path=builtin:countdown4-tiny", "rollout.prompts_per_step=3", "rollout.group_size=4", "threads=1"]


def _cfg(steps: int, extra: list[str] = ()) -> Any:
    return recipe("outcome_ucb", Budget(steps=steps, eval_problems=1, eval_n=1), seed=0, overrides=[*SMALL, *extra])


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.Tensor, dict[str, Any]]]:
    """Every (advantages, new state) the trainer computes, in order."""
    calls: list[tuple[torch.Tensor, dict[str, Any]]] = []
    original = rl.compute_advantages_and_state

    def spy(name: str, batch: Any, state: Any, **options: Any) -> Any:
        adv, new = original(name, batch, state, **options)
        calls.append((adv.clone(), new))
        return adv, new

    monkeypatch.setattr(rl, "compute_advantages_and_state", spy)
    return calls


def _saved(run: Path) -> dict[str, Any]:
    """``trainer_state.pt`` of a run's latest checkpoint."""
    path = latest_checkpoint(run)
    assert path is not None
    return load_trainer_state(path)


def _strip(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in records]


def test_half_then_resume_equals_uninterrupted(tmp_path, recorded):
    cfg = _cfg(steps=6, extra=["save_every=3"])
    train(cfg, tmp_path / "full", progress=False)
    full = list(recorded)
    recorded.clear()

    run_first_steps(cfg, tmp_path / "split", 3)
    RLTrainer(cfg, tmp_path / "split", resume=True, progress=False).run()
    split = list(recorded)

    assert len(full) == len(split) == 6
    for (a_full, s_full), (a_split, s_split) in zip(full, split, strict=True):
        assert torch.equal(a_full, a_split) and s_full == s_split
    final = [_saved(run)["advantage_state"] for run in (tmp_path / "full", tmp_path / "split")]
    assert final[0] == final[1] == {"estimator": "outcome_ucb", "records": full[-1][1]}
    counted = sum(sum(r.values()) for r in full[-1][1].values())
    assert 0 < counted <= 6 * 3 * 4  # answers of scored rollouts with an extracted answer
    assert _strip(read_metrics(tmp_path / "full")) == _strip(read_metrics(tmp_path / "split"))


def test_resume_without_the_state_is_refused(tmp_path):
    cfg = _cfg(steps=2, extra=["save_every=1"])
    train(cfg, tmp_path, progress=False)
    path = latest_checkpoint(tmp_path)
    assert path is not None
    state = load_trainer_state(path)
    del state["advantage_state"]
    torch.save(state, path / "trainer_state.pt")
    (path / MANIFEST).unlink()
    _write_manifest(path, 2)  # a complete checkpoint, without the state
    with pytest.raises(RunFolderError, match="no per-problem state for the stateful estimator 'outcome_ucb'"):
        RLTrainer(_cfg(steps=3, extra=["save_every=1"]), tmp_path, resume=True, progress=False)


def test_stateless_checkpoints_hold_no_state(tmp_path):
    cfg = recipe("grpo", Budget(steps=1, eval_problems=1, eval_n=1), seed=0, overrides=SMALL)
    train(cfg, tmp_path, progress=False)
    assert "advantage_state" not in _saved(tmp_path)
    assert "history_problems" not in read_metrics(tmp_path)[0]


def test_check_methods_accepts_the_recipe_and_names_bad_options():
    check_methods(_cfg(steps=1))
    with pytest.raises(ConfigError, match=r"advantage 'outcome_ucb' \(advantage.options\): .*baseline"):
        check_methods(_cfg(steps=1, extra=["advantage.options.baseline=median"]))
