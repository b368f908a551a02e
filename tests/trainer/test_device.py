"""Where the RL trainer puts the policy: ``device`` given (``divrl bench --device``) or, by default, a GPU when torch
sees one; ``model.dtype: auto`` follows the device the model goes to, not the GPU's mere presence."""

from __future__ import annotations

import pytest
import torch

from divrl.eval.demo import Budget, recipe
from divrl.trainer.rl import RLTrainer, resolve_dtype

TINY = ["rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=8", "threads=1"]


def test_auto_dtype_follows_the_device():
    assert resolve_dtype("auto", torch.device("cpu")) == "float32"
    assert resolve_dtype("auto", torch.device("cuda")) == "bfloat16"
    assert resolve_dtype("auto", torch.device("cuda", 0)) == "bfloat16"
    assert resolve_dtype("float32", torch.device("cuda")) == "float32"  # an explicit dtype is kept
    assert resolve_dtype("bfloat16", torch.device("cpu")) == "bfloat16"
    assert resolve_dtype("auto") == ("bfloat16" if torch.cuda.is_available() else "float32")  # no device: as before


@pytest.mark.parametrize("device", ["cpu", None])
def test_trainer_device(device, tmp_path, monkeypatch):
    """``device="cpu"`` trains on the CPU in float32 even where torch sees a GPU (here one is pretended: the trainer
    must not ask); ``None`` keeps the trainer's own choice."""
    cfg = recipe("grpo", Budget(steps=1, eval_problems=1, eval_n=1), seed=0, overrides=TINY)
    if device == "cpu":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    trainer = RLTrainer(cfg, tmp_path, progress=False, device=device)
    want = "cpu" if device == "cpu" or not torch.cuda.is_available() else "cuda"
    assert trainer.device.type == want
    param = next(trainer.model.parameters())
    assert param.device.type == want
    assert param.dtype == (torch.float32 if want == "cpu" else torch.bfloat16)
