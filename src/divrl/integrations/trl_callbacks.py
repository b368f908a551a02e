"""A TRL/transformers ``TrainerCallback`` that evaluates a held-out problem set with divrl's metrics every N steps.

::

    from divrl.integrations.trl import DiversityGRPOTrainer, DivrlEvalCallback

    trainer = DiversityGRPOTrainer(model="builtin:countdown-tiny", ...)
    trainer.add_callback(DivrlEvalCallback(trainer, task="countdown", split="val", num_problems=32, n=8, every=10))
    trainer.train()   # logs eval_divrl/pass@1, eval_divrl/pass@8, eval_divrl/distinct_correct_classes, ...

The metrics are those of ``divrl eval`` (:mod:`divrl.eval.evaluate`; their meaning: ``divrl eval --help``), computed
by the same code with a fixed seed, so a logged ``pass@k`` equals ``divrl eval`` on the checkpoint of that step with
the same problems, ``n``, temperature, ``max_new_tokens`` and seed. They are logged with ``transformers.Trainer.log``,
so they reach every logger of ``report_to`` (TensorBoard, W&B, ...) and ``trainer.state.log_history``. (The base
class's ``log`` is called: ``GRPOTrainer.log`` would also flush, and so move, its pending training metrics.)

Following TRL's own callbacks that log (``WinRateCallback``), the callback is given the trainer. Every process
evaluates the full set (under DeepSpeed ZeRO-3 every rank must take part in the forward passes anyway); the
loggers of transformers write from the main process only. The cost is one ``divrl eval`` of ``num_problems`` x
``n`` samples (plus one greedy completion per problem) every ``every`` steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import Trainer, TrainerCallback

from divrl.eval.periodic import PeriodicEval

__all__ = ["DivrlEvalCallback"]


class DivrlEvalCallback(TrainerCallback):
    """Evaluate ``num_problems`` held-out problems every ``every`` optimizer steps (and, with ``at_start``, before the
    first) and log divrl's metrics, named ``prefix + name`` (``eval_divrl/pass@8``, ...).

    Args:
        trainer: the trainer to log through (its model and ``processing_class`` are evaluated).
        task: a divrl task name (``"countdown"``, ``"math"``) or a task object.
        split: the task's split or a problem file (as ``divrl eval --split``); ignored when ``problems`` is given.
        num_problems: the first problems of ``split``.
        problems: the problems themselves, instead of ``split``/``num_problems``.
        n: samples per problem (pass@k for k = 1, 2, 4, ..., n).
        every: evaluate when ``global_step`` is a multiple of this.
        temperature, max_new_tokens, seed: sampling settings (``divrl eval``'s defaults: 1.0, 64, 0).
        task_options: options of a named task (e.g. ``{"data": "problems.jsonl"}`` for maths).
        at_start: also evaluate at step 0, before training.
        prefix: put before every metric name.
    """

    def __init__(
        self,
        trainer: Any,
        task: Any = "countdown",
        *,
        split: str = "val",
        num_problems: int = 32,
        problems: Sequence[Any] | None = None,
        n: int = 8,
        every: int = 10,
        temperature: float = 1.0,
        max_new_tokens: int = 64,
        seed: int = 0,
        task_options: dict[str, Any] | None = None,
        at_start: bool = False,
        prefix: str = "eval_divrl/",
    ) -> None:
        if every < 1:
            raise ValueError(f"DivrlEvalCallback: every must be >= 1, got {every}")
        if num_problems < 1 and problems is None:
            raise ValueError(f"DivrlEvalCallback: num_problems must be >= 1, got {num_problems}")
        if isinstance(task, str):
            from divrl.tasks import get_task

            task = get_task(task, **(task_options or {}))
        elif task_options:
            raise ValueError("DivrlEvalCallback: task_options go with a task name, not a task object")
        tokenizer = trainer.processing_class
        bind = getattr(task, "bind_tokenizer", None)
        if callable(bind):
            bind(tokenizer)
        chosen = list(problems) if problems is not None else task.problems(split, n=num_problems)
        self.trainer = trainer
        self.every = every
        self.at_start = at_start
        self.evaluation = PeriodicEval(
            task, chosen, n=n, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed, prefix=prefix
        )
        self.history: list[dict[str, float]] = []
        """Every logged evaluation, with its ``step``."""

    def _evaluate(self, model: Any) -> None:
        tokenizer = self.trainer.processing_class
        unwrapped = self.trainer.accelerator.unwrap_model(model) if model is not None else self.trainer.model
        metrics = self.evaluation(unwrapped, tokenizer)
        self.history.append({"step": self.trainer.state.global_step, **metrics})
        Trainer.log(self.trainer, dict(metrics))

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.at_start and state.global_step == 0:
            self._evaluate(model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.global_step % self.every == 0:
            self._evaluate(model)
