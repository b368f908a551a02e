"""divrl's verifiers as TRL reward functions: ``fn(prompts, completions, **kwargs) -> list[float | None]``.

For ``GRPOTrainer(reward_funcs=[...])`` (or :class:`divrl.integrations.trl.DiversityGRPOTrainer`, which re-exports
these); this module does not import TRL::

    from divrl.integrations.trl import countdown_reward, math_accuracy_reward, think_boxed_format_reward

    trainer = GRPOTrainer(model=..., reward_funcs=[math_accuracy_reward], train_dataset=ds)  # ds has "solution"

* :data:`math_accuracy_reward`: 1.0 / 0.0 for the completion's final answer (last ``\\boxed{}``, else the ``####``
  line) against the reference answer, graded as ``divrl train`` grades the maths task
  (:class:`divrl.tasks.math.MathTask`: exact numbers in-process, math-verify in a
  :class:`~divrl.rewards.pool.TimeoutPool`); ``None`` on a timeout or verifier error. :class:`MathAccuracyReward`
  sets the column, timeout, workers and a format bonus.
* :func:`boxed_format_reward`: 1.0 when the completion has a complete, non-empty ``\\boxed{...}``, else 0.0.
* :func:`think_boxed_format_reward`: 1.0 when it has exactly one ``</think>`` with a ``\\boxed{...}`` after it
  (divrl's R1-zero template, whose prompt already opens ``<think>``), else 0.0.
* :data:`countdown_reward`: 1.0 / 0.0 from :func:`divrl.tasks.countdown.verify` on the expression in the last
  ``<answer>...</answer>``; the problem comes from the ``numbers`` (or TinyZero's ``nums``) and ``target`` columns.
  :class:`CountdownReward` sets the columns and ``exact_use``.
* :func:`math_answer_key`, not a reward: the normalised final answer of a completion, DARLING's exact partition key
  for maths (``DiversityGRPOTrainer(partition_key=math_answer_key)``).

Conventions followed (TRL 1.16, ``GRPOTrainer._calculate_rewards`` and ``trl.rewards``):

* Every dataset column other than ``prompt`` is passed as a keyword: a list with one value per completion (the row's
  value repeated for its ``num_generations`` completions). The reference answer is read from such a column,
  ``solution`` by default as in TRL's ``accuracy_reward``, else ``answer`` (GSM8K's name); a column missing from the
  call raises ``KeyError`` naming the columns it got (a set-up error, not a policy's).
* A completion is a string (standard format) or a list of message dicts (conversational format): the ``content`` of
  every message is joined, content blocks contributing their ``text`` (the rule of
  :func:`divrl.integrations.trl.completion_text`).
* ``None`` means unscorable (a math-verify timeout or crash, a reference that cannot be read, a completion that is not
  text). TRL turns it into NaN, and leaves a completion out of the group statistics (advantage 0) only when **every**
  reward function returned ``None`` for it; otherwise the NaN is summed as 0. So with a separate format reward, a
  timed-out completion keeps its format reward alone. Give :class:`MathAccuracyReward` its ``format_reward`` bonus
  instead, so that the one function answers ``None`` for the whole completion.
* Nothing here raises on model output. Each call with an unscorable completion logs one warning (logger
  ``divrl.rewards.trl``) with the count and the reasons, and, when TRL passes them, adds a ``<name>_reason`` column to
  the completions table (``log_extra``; ``"ok"``, ``"no final answer"``, ``"wrong answer: ..."``, ``"timeout: ..."``)
  and logs the metric ``<name>/unscorable_frac`` (``log_metric``).
* The reward objects are picklable (TRL's async GRPO sends reward functions to a spawned process): the verifier's
  worker pool is not pickled and restarts on the first call in the new process.
"""

from __future__ import annotations

import logging
import operator
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from divrl.rewards.math_verify import extract_final_answer, has_boxed_format, normalize_answer

__all__ = [
    "CountdownReward",
    "MathAccuracyReward",
    "boxed_format_reward",
    "countdown_reward",
    "math_accuracy_reward",
    "math_answer_key",
    "think_boxed_format_reward",
]

logger = logging.getLogger("divrl.rewards.trl")

Columns = str | Sequence[str]
"""A column name, or names tried in order (the first one the call carries is used)."""


def _completion_text(completion: Any) -> str | None:
    """The text of a TRL completion: a string, or a list of messages whose ``content`` strings (and content blocks'
    ``text``) are joined; ``None`` when it is neither. :func:`divrl.integrations.trl.completion_text` (which imports
    TRL) is this with a ``TypeError`` for ``None``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        parts: list[str] = []
        for message in completion:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))
        return "".join(parts)
    return None


def _names(columns: Columns) -> tuple[str, ...]:
    names = (columns,) if isinstance(columns, str) else tuple(columns)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"column names must be non-empty strings, got {columns!r}")
    return names


def _column(kwargs: Mapping[str, Any], columns: tuple[str, ...], n: int, who: str) -> tuple[str, list[Any]]:
    """The first of ``columns`` present in the call's keyword arguments and its values, checked to be ``n``."""
    for name in columns:
        if name in kwargs:
            values = kwargs[name]
            if not isinstance(values, (list, tuple)) or len(values) != n:
                got = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
                raise ValueError(f"{who}: column {name!r} must hold one value per completion ({n}), got {got}")
            return name, list(values)
    passed = sorted(k for k in kwargs if k not in _TRL_EXTRAS)
    wanted = " or ".join(repr(c) for c in columns)
    raise KeyError(f"{who}: the dataset has no column {wanted} (columns passed: {passed}); set the column name")


_TRL_EXTRAS = frozenset({"completion_ids", "trainer_state", "log_extra", "log_metric", "environments"})


def _report(
    name: str, rewards: list[float | None], reasons: list[str], kwargs: Mapping[str, Any]
) -> list[float | None]:
    """Log the unscorable completions (one warning per call) and hand the reasons to TRL's hooks when given."""
    bad = [r for x, r in zip(rewards, reasons, strict=True) if x is None]
    if bad:
        kinds = Counter(r.split(":", 1)[0] for r in bad)
        examples = "; ".join(dict.fromkeys(r[:120] for r in bad))
        logger.warning(
            "%s: %d of %d completions unscorable (reward None; %s): %s",
            name,
            len(bad),
            len(rewards),
            ", ".join(f"{k} x{c}" for k, c in kinds.items()),
            examples,
        )
    log_extra, log_metric = kwargs.get("log_extra"), kwargs.get("log_metric")
    if callable(log_extra):
        log_extra(f"{name}_reason", reasons)
    if callable(log_metric) and rewards:
        log_metric(f"{name}/unscorable_frac", len(bad) / len(rewards))
    return rewards


# ---------------------------------------------------------------------------------------------
# Format rewards (plain functions)


def _format_reward(completions: Sequence[Any], think: bool) -> list[float | None]:
    out: list[float | None] = []
    for completion in completions:
        text = _completion_text(completion)
        out.append(None if text is None else float(has_boxed_format(text, think=think)))
    return out


def boxed_format_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0 when the completion holds a complete, non-empty ``\\boxed{...}`` (or ``\\fbox``), else 0.0
    (:func:`divrl.rewards.math_verify.has_boxed_format`); ``None`` only for a completion that is not text."""
    rewards = _format_reward(completions, think=False)
    return _report("boxed_format_reward", rewards, _format_reasons(rewards), kwargs)


def think_boxed_format_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0 when the completion holds exactly one ``</think>`` followed by a complete ``\\boxed{...}`` (R1-Zero's
    think-then-answer format, as :func:`divrl.rewards.math_verify.has_boxed_format` with ``think=True``; the prompt
    is expected to open the ``<think>``, as divrl's R1-zero template does), else 0.0; ``None`` only for a
    completion that is not text."""
    rewards = _format_reward(completions, think=True)
    return _report("think_boxed_format_reward", rewards, _format_reasons(rewards), kwargs)


def _format_reasons(rewards: list[float | None]) -> list[str]:
    return ["ok" if r == 1.0 else "bad format" if r == 0.0 else "completion is not text" for r in rewards]


# ---------------------------------------------------------------------------------------------
# Maths accuracy (math-verify behind the timeout pool)


class MathAccuracyReward:
    """Maths accuracy as a TRL reward function, graded as ``divrl train`` grades the ``math`` task.

    ``reward = correct + format_reward * has_format`` for a scorable completion, where ``correct`` is 1.0 when the
    final answer (last ``\\boxed{}``, else the ``####`` line; none: 0.0, reason ``"no final answer"``) equals the
    reference answer: exact rational equality for plain numbers and equality of normal forms in-process, else
    math-verify in a worker process with ``timeout`` seconds per call
    (:class:`divrl.rewards.math_verify.MathVerifier`). ``None`` when that call times out or fails, or when the
    reference cannot be read.

    The reference column may hold a bare answer (``"\\frac{1}{3}"``, ``18``), a worked solution ending in
    ``\\boxed{...}`` (MATH's ``solution``) or GSM8K's ``... #### 18`` (read as the ``answer_format="auto"`` of
    :class:`divrl.tasks.math.MathConfig`).

    Args:
        answer_column: the dataset column of the reference answer, or names tried in order (default
            ``("solution", "answer")``).
        timeout: seconds per math-verify call.
        workers: verifier worker processes (started on the first answer that needs math-verify).
        format_reward: bonus for the template's format, added to scorable completions only (0: accuracy only).
        think: the format is ``</think>`` then ``\\boxed{}`` (divrl's R1-zero template) rather than a ``\\boxed{}``
            anywhere; used only when ``format_reward`` is non-zero.
        verifier: a :class:`~divrl.rewards.math_verify.MathVerifier` to share (its pool); default: a new one.
        name: the ``__name__`` TRL logs the reward under.
    """

    def __init__(
        self,
        answer_column: Columns = ("solution", "answer"),
        *,
        timeout: float = 5.0,
        workers: int = 2,
        format_reward: float = 0.0,
        think: bool = True,
        verifier: Any = None,
        name: str = "math_accuracy_reward",
    ) -> None:
        from divrl.tasks.math import MathConfig

        self.columns = _names(answer_column)
        # MathConfig checks timeout, workers and format_reward (dataset=None, data=...: never loaded, only graded)
        self.config = MathConfig(
            dataset=None,
            data="<reward function>",
            template="r1_zero" if think else "plain",
            format_reward=format_reward,
            timeout=timeout,
            workers=workers,
        )
        self.verifier = verifier
        self.__name__ = name
        self._task: Any = None

    def __repr__(self) -> str:
        c = self.config
        return (
            f"{type(self).__name__}(answer_column={self.columns!r}, timeout={c.timeout:g}, workers={c.workers}, "
            f"format_reward={c.format_reward:g}, think={c.template == 'r1_zero'})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_task"] = None  # the worker pool stays behind; a new one starts on first use
        if state["verifier"] is not None and hasattr(state["verifier"], "pool"):
            state["verifier"] = None
        return state

    def close(self) -> None:
        """Stop the verifier's worker processes (a later call starts them again)."""
        if self._task is not None:
            self._task.close()

    def _math_task(self) -> Any:
        if self._task is None:
            from divrl.tasks.math import MathTask

            self._task = MathTask(self.config, verifier=self.verifier)
        return self._task

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        from divrl.tasks.math import MathProblem, _gold_answer

        n = len(completions)
        column, references = _column(kwargs, self.columns, n, self.__name__)
        rewards: list[float | None] = [None] * n
        reasons = [""] * n
        todo: list[int] = []
        problems: list[MathProblem] = []
        texts: list[str] = []
        for i, (completion, reference) in enumerate(zip(completions, references, strict=True)):
            text = _completion_text(completion)
            if text is None:
                reasons[i] = f"completion is not text: {type(completion).__name__}"
                continue
            try:
                gold = _gold_answer(reference, column, "auto")
            except ValueError as exc:  # the task's own reading of an answer field (bare, boxed or GSM8K)
                reasons[i] = f"bad reference: {exc}"
                continue
            todo.append(i)
            problems.append(MathProblem("", gold, f"{column}[{i}]"))
            texts.append(text)
        if todo:
            try:
                verdicts = self._math_task().verify_batch(problems, texts)
                for i, verdict in zip(todo, verdicts, strict=True):
                    rewards[i], reasons[i] = verdict.reward, verdict.reason
            except Exception as exc:  # MathTask never raises on model output; a last line of defence all the same
                for i in todo:
                    rewards[i], reasons[i] = None, f"verifier error: {type(exc).__name__}: {exc}"
        return _report(self.__name__, rewards, reasons, kwargs)


def math_answer_key(completion: Any) -> str | None:
    """The normalised final answer of a completion (last ``\\boxed{}``, else the ``####`` line;
    :func:`divrl.rewards.math_verify.normalize_answer`), ``None`` without one: DARLING's exact partition key for
    maths, for ``DiversityGRPOTrainer(partition_key=...)`` or :func:`divrl.integrations.trl.darling_reward`.

    A syntactic key (``0.5`` and ``\\frac{1}{2}`` share one, ``x^2+2x+1`` and ``(x+1)^2`` do not), unlike ``divrl
    train``'s maths task, which also puts every answer math-verify found correct into the reference's class. Never
    raises."""
    text = _completion_text(completion)
    if text is None:
        return None
    try:
        answer = extract_final_answer(text)
        return None if answer is None else normalize_answer(answer)
    except Exception:  # a partition key never raises on model output
        return None


# ---------------------------------------------------------------------------------------------
# Countdown


class CountdownReward:
    """Countdown correctness as a TRL reward function: :func:`divrl.tasks.countdown.verify` (1.0 iff the expression
    in the completion's last ``<answer>...</answer>`` uses only the problem's numbers, each at most once, or exactly
    once with ``exact_use``, and equals the target exactly; else 0.0 with its reason).

    Args:
        numbers_column: the column of the numbers (a list of ints), or names tried in order (default
            ``("numbers", "nums")``: divrl's problem files, then TinyZero's ``Countdown-Tasks-3to4``).
        target_column: the column of the target (an int).
        exact_use: every number must be used exactly once.
        name: the ``__name__`` TRL logs the reward under.

    ``None`` for a row whose numbers or target are not a valid :class:`~divrl.tasks.countdown.Problem`
    (reason ``"bad reference: ..."``) or a completion that is not text.
    """

    def __init__(
        self,
        numbers_column: Columns = ("numbers", "nums"),
        target_column: str = "target",
        *,
        exact_use: bool = False,
        name: str = "countdown_reward",
    ) -> None:
        self.numbers_columns = _names(numbers_column)
        self.target_columns = _names(target_column)
        if not isinstance(exact_use, bool):
            raise ValueError(f"exact_use must be a bool, got {exact_use!r}")
        self.exact_use = exact_use
        self.__name__ = name

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(numbers_column={self.numbers_columns!r}, target_column="
            f"{self.target_columns[0]!r}, exact_use={self.exact_use})"
        )

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        from divrl.tasks.countdown import Problem, verify

        n = len(completions)
        _, numbers = _column(kwargs, self.numbers_columns, n, self.__name__)
        _, targets = _column(kwargs, self.target_columns, n, self.__name__)
        rewards: list[float | None] = []
        reasons: list[str] = []
        for completion, nums, target in zip(completions, numbers, targets, strict=True):
            text = _completion_text(completion)
            if text is None:
                rewards.append(None)
                reasons.append(f"completion is not text: {type(completion).__name__}")
                continue
            try:
                problem = Problem(tuple(map(operator.index, nums)), operator.index(target))  # numpy ints too
            except (TypeError, ValueError) as exc:
                rewards.append(None)
                reasons.append(f"bad reference: {exc}")
                continue
            verdict = verify(problem, text, exact_use=self.exact_use)
            rewards.append(verdict.reward)
            reasons.append(verdict.reason)
        return _report(self.__name__, rewards, reasons, kwargs)


math_accuracy_reward = MathAccuracyReward()
"""``MathAccuracyReward()``: reference in ``solution`` (else ``answer``), 5 s per math-verify call, 2 workers."""

countdown_reward = CountdownReward()
"""``CountdownReward()``: numbers in ``numbers`` (else ``nums``), target in ``target``."""
