"""The Countdown task object.

Part of :mod:`divrl.tasks.countdown` (see its docstring for the rules and format)."""

from __future__ import annotations

import random

from divrl.tasks.base import Verdict
from divrl.tasks.countdown.data import CountdownConfig, _generate
from divrl.tasks.countdown.expressions import ANSWER_CLOSE
from divrl.tasks.countdown.formats import format_prompt, reference_completion
from divrl.tasks.countdown.problem import Problem, read_jsonl
from divrl.tasks.countdown.solver import count_solution_classes
from divrl.tasks.countdown.verifier import equivalence_key, verify

# --------------------------------------------------------------------------------------------------
# The task object


class CountdownTask:
    """Countdown as a :class:`~divrl.tasks.base.Task` (see the module docstring for the format).

    ``problems(split)`` takes ``"train"``/``"val"``/``"test"``/``"ood"`` (generated, see :func:`generate`; ``ood``
    is out of distribution, see the module docstring) or the path of a ``.jsonl`` file written by
    :func:`write_jsonl` (a held-out set).
    """

    name = "countdown"
    stop: tuple[str, ...] = (ANSWER_CLOSE,)

    def __init__(self, config: CountdownConfig | None = None) -> None:
        self.config = config if config is not None else CountdownConfig()
        self.prompt_width = self.config.prompt_width
        self.max_completion_chars = self.config.max_completion_chars

    def __repr__(self) -> str:
        return f"CountdownTask({self.config})"

    def problems(self, split: str, n: int | None = None, seed: int = 0) -> list[Problem]:
        if split.endswith(".jsonl"):
            problems = read_jsonl(split)
            return problems if n is None else problems[:n]
        return _generate(self.config, n, split, seed)

    def prompt(self, problem: Problem) -> str:
        return format_prompt(problem, self.prompt_width)

    def verify(self, problem: Problem, completion: str) -> Verdict:
        return verify(problem, completion, exact_use=self.config.exact_use)

    def equivalence_key(self, problem: Problem, completion: str) -> str | None:
        return equivalence_key(completion)

    def reference_completion(self, problem: Problem, rng: random.Random) -> str:
        """See :func:`reference_completion`."""
        return reference_completion(problem, rng, exact_use=self.config.exact_use, attempts=self.config.attempts)

    def count_solution_classes(self, problem: Problem) -> int:
        """See :func:`count_solution_classes`."""
        return count_solution_classes(problem, exact_use=self.config.exact_use)
