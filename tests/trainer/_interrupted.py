"""A run stopped after its first steps, as ``RLTrainer.run`` leaves it: for tests that resume it and compare with an
uninterrupted run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from divrl.trainer.rl import RLTrainer


def run_first_steps(cfg: Any, run_dir: Path, steps: int) -> None:
    """Steps ``0 .. steps-1`` of ``cfg`` in ``run_dir``, logged as ``run()`` logs them, then a checkpoint at ``steps``
    (a process stopped there would have written this)."""
    trainer = RLTrainer(cfg, run_dir, progress=False)
    for step in range(steps):
        trainer.logger.log(step + 1, trainer.step(step))
    trainer.save(steps)
    trainer.logger.close()
