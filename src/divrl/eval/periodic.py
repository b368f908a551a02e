"""Evaluation during training: divrl's metrics (pass@k at k = 1, 2, 4, ..., n; Potential@k; distinct correct
classes; Div-Equ; entropy; ...) on a fixed held-out problem set, every N steps.

Used by divrl's own trainer (``RLConfig.eval_every``, logged to ``metrics.jsonl`` and TensorBoard) and by the TRL
callback :class:`divrl.integrations.trl_callbacks.DivrlEvalCallback` (logged to TRL's loggers). Both call
:func:`divrl.eval.evaluate.evaluate` with a fixed seed, so a logged value equals ``divrl eval`` on the checkpoint of
that step with the same problems, n, temperature, max new tokens and seed: a training curve then shows a collapse of
diversity (pass@k for large k, distinct correct classes falling while pass@1 rises) as it happens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from divrl.eval.evaluate import evaluate


@dataclass
class PeriodicEval:
    """What to evaluate and how (a fixed set, so that successive evaluations differ only by the policy).

    Attributes:
        task: a divrl task (its ``prompt``, ``verify``, ``equivalence_key``, ``stop``).
        problems: the held-out problems.
        n: samples per problem (pass@k for k = 1, 2, 4, ..., n).
        temperature: sampling temperature.
        max_new_tokens: longest completion.
        seed: sampling seed (``divrl eval``'s default is 0).
        prefix: put before every metric name in the logs, e.g. ``"eval/"``.
    """

    task: Any
    problems: Sequence[Any]
    n: int = 8
    temperature: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    prefix: str = "eval/"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if not self.problems:
            raise ValueError("no problems to evaluate")

    def __call__(self, model: Any, tokenizer: Any) -> dict[str, float]:
        """The scalar metrics of one evaluation, named ``prefix + name``; the model's train/eval mode is restored.
        Sampling uses a private generator: the global RNG (and so the training run) is not disturbed."""
        was_training = bool(getattr(model, "training", False))
        try:
            metrics = evaluate(
                model,
                tokenizer,
                self.task,
                self.problems,
                self.n,
                temperature=self.temperature,
                max_new_tokens=self.max_new_tokens,
                seed=self.seed,
                progress=False,
            )
        finally:
            model.train(was_training)
        return {
            self.prefix + k: float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
