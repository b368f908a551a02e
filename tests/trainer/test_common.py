import math
import os

import pytest
import torch

from divrl.trainer.common import MetricLogger, derive_seed, latest_checkpoint, lr_factor, read_metrics, save_checkpoint
from divrl.trainer.config import OptimConfig


def test_lr_schedule_warmup_then_cosine():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    assert [lr_factor(s, 12, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 12, cfg) == pytest.approx(1.0)
    assert lr_factor(8, 12, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(12, 12, cfg) == pytest.approx(0.1)
    assert lr_factor(3, 12, OptimConfig(schedule="constant")) == 1.0


def test_derive_seed_stable_and_distinct():
    assert derive_seed(0, 1) == derive_seed(0, 1)
    assert len({derive_seed(s, t) for s in range(5) for t in range(50)}) == 250


class _Saveable:
    def __init__(self, payload):
        self.payload = payload

    def save_pretrained(self, path):
        (path / "weights.txt").write_text(self.payload)


def test_checkpoint_atomic_pointer_and_rotation(tmp_path):
    save_checkpoint(tmp_path, 2, _Saveable("a"), None, {"step": 2}, keep=1)
    save_checkpoint(tmp_path, 4, _Saveable("b"), None, {"step": 4}, keep=1)
    latest = latest_checkpoint(tmp_path)
    assert latest is not None and latest.name == "checkpoint-000004"
    assert (latest / "weights.txt").read_text() == "b"
    assert torch.load(latest / "trainer_state.pt")["step"] == 4
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-000004"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_checkpoint_failure_keeps_previous(tmp_path):
    save_checkpoint(tmp_path, 2, _Saveable("a"), None, {"step": 2})

    class Broken:
        def save_pretrained(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 4, Broken(), None, {"step": 4})
    latest = latest_checkpoint(tmp_path)
    assert latest is not None and latest.name == "checkpoint-000002"


def test_metric_logger_truncates_on_resume(tmp_path):
    log = MetricLogger(tmp_path, tensorboard=False)
    for s in range(1, 6):
        log.log(s, {"reward": s / 10})
    log.truncate_after(3)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
