"""Loss terms that read more than token log-probs, in ``divrl train``: ROVER's vocabulary means come from the forwards
the trainer runs anyway (no extra pass on-policy; the old pass when ``num_iterations`` > 1), and FlowRL's learned
log Z head is optimised with the policy, saved in every checkpoint and restored exactly by ``--resume``."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from divrl.eval.demo import Budget, recipe
from divrl.trainer import rl
from divrl.trainer.common import RunFolderError, latest_checkpoint, load_trainer_state, read_metrics
from divrl.trainer.rl import RLTrainer, train

SMALL = ["model.path=builtin:countdown4-tiny", "rollout.prompts_per_step=3", "rollout.group_size=4", "threads=1"]


def _cfg(method: str, steps: int, extra: list[str] = ()) -> Any:
    return recipe(method, Budget(steps=steps, eval_problems=1, eval_n=1), seed=0, overrides=[*SMALL, *extra])


def _strip(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in records]


@pytest.mark.parametrize("iterations", [1, 2])
def test_rover_reads_the_vocabulary_means_of_forwards_already_run(iterations, tmp_path, monkeypatch):
    calls: list[tuple[bool, bool]] = []
    original = RLTrainer._forward

    def spy(self: Any, model: Any, rollouts: Any, lo: int, hi: int, g: int, grad: bool, fields: Any) -> Any:
        stats = original(self, model, rollouts, lo, hi, g, grad, fields)
        calls.append((grad, "vocab_mean_logprobs" in stats))
        return stats

    monkeypatch.setattr(RLTrainer, "_forward", spy)
    mixed = [
        "rollout.prompts_per_step=4",
        "rollout.group_size=8",
    ]  # 32 rollouts on the 4-number base: some groups mixed
    train(_cfg("rover", 1, [f"num_iterations={iterations}", *mixed]), tmp_path, progress=False)
    record = read_metrics(tmp_path)[0]
    assert record["adv_abs_mean"] > 0, "no mixed group: the loss checks below could not fail"
    # one training forward per iteration, each with the means; an old pass (with the means) only off-policy
    want = [(False, True)] * (iterations > 1) + [(True, True)] * iterations
    assert calls == want
    if iterations == 1:  # on-policy: old = current, so Q = 0 and the next-state value is 0
        assert record["rover/next_value_mean"] == 0.0 and record["rover/q_mean"] == 0.0
    else:  # the second step regresses a moved policy on a non-zero next-state value
        assert record["rover/next_value_mean"] != 0.0 and record["rover/q_mean"] != 0.0
    assert record["rover/rover_loss"] > 0


def test_flowrl_head_is_trained_checkpointed_and_resumed_exactly(tmp_path):
    train(_cfg("flowrl", 4, ["save_every=2"]), tmp_path / "full", progress=False)
    train(_cfg("flowrl", 2, ["save_every=2"]), tmp_path / "half", progress=False)
    half = load_trainer_state(latest_checkpoint(tmp_path / "half"))
    resumed = RLTrainer(_cfg("flowrl", 4, ["save_every=2"]), tmp_path / "half", resume=True, progress=False)
    assert all(torch.equal(resumed.log_z_head.state_dict()[k], v) for k, v in half["log_z_head"].items())
    resumed.run()
    full, again = (load_trainer_state(latest_checkpoint(tmp_path / r)) for r in ("full", "half"))
    assert _strip(read_metrics(tmp_path / "half")) == _strip(read_metrics(tmp_path / "full"))
    assert full["log_z_head"].keys() == again["log_z_head"].keys()
    assert all(torch.equal(full["log_z_head"][k], again["log_z_head"][k]) for k in full["log_z_head"])

    fresh = RLTrainer(_cfg("flowrl", 4), tmp_path / "fresh", progress=False)
    init = fresh.log_z_head.state_dict()
    assert any(not torch.equal(init[k], full["log_z_head"][k]) for k in init), "the head was not optimised"
    head_params = {id(p) for p in fresh.log_z_head.parameters()}
    optimised = {id(p) for group in fresh.optimizer.param_groups for p in group["params"]}
    assert head_params <= optimised
    assert all(math_isfinite(r["flowrl/log_z"]) for r in read_metrics(tmp_path / "full"))


def math_isfinite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def test_flowrl_refuses_a_checkpoint_without_its_head(tmp_path):
    train(_cfg("grpo", 1), tmp_path, progress=False)
    with pytest.raises(RunFolderError, match="log Z head"):
        RLTrainer(_cfg("flowrl", 2), tmp_path, resume=True, progress=False)


def test_flowrl_loads_the_reference_model_and_rover_does_not(tmp_path):
    assert RLTrainer(_cfg("flowrl", 1), tmp_path / "f", progress=False).ref_model is not None
    assert (
        RLTrainer(_cfg("flowrl", 1, ["loss.0.options.reference=false"]), tmp_path / "g", progress=False).ref_model
        is None
    )
    trainer = RLTrainer(_cfg("rover", 1), tmp_path / "r", progress=False)
    assert trainer.ref_model is None and trainer.log_z_head is None
    assert rl.loss_needs("rover").requires("old_vocab_mean_logprobs")
