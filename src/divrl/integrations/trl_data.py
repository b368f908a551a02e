"""TRL-ready datasets of divrl's shipped tasks: the ``prompt`` column divrl's own trainer would show, plus the
columns divrl's TRL reward functions read (:mod:`divrl.rewards.trl_rewards`).

Needs ``datasets`` only (no TRL); :mod:`divrl.integrations.trl` re-exports everything here::

    from trl import GRPOConfig
    from divrl.integrations.trl import DiversityGRPOTrainer, countdown_dataset, countdown_reward
    from divrl.tasks import countdown

    trainer = DiversityGRPOTrainer(
        model="builtin:countdown-tiny",                       # divrl's packaged ~1M-parameter policy, no hub
        reward_funcs=[countdown_reward],                      # reads the "numbers" and "target" columns
        args=GRPOConfig(output_dir="out", num_generations=8, max_completion_length=64),
        train_dataset=countdown_dataset("train"),
        advantage="darling", partition_key=countdown.equivalence_key,   # DARLING, exact classes
    )

Columns (one row per problem):

* :func:`countdown_dataset`: ``prompt`` (``task.prompt(problem)``, i.e. :func:`divrl.tasks.countdown.format_prompt`
  at the task's prompt width: exactly the text ``divrl train`` samples from), ``numbers`` (list of ints) and
  ``target`` (int), the columns :data:`~divrl.rewards.trl_rewards.countdown_reward` and
  :class:`~divrl.rewards.trl_rewards.CountdownReward` read by default.
* :func:`math_dataset`: ``prompt`` (``task.prompt(problem)`` in the task's ``template``) and ``solution`` (the
  reference final answer, the column :data:`~divrl.rewards.trl_rewards.math_accuracy_reward` reads first).

**Partition keys (DARLING).** ``divrl.tasks.countdown.equivalence_key(completion)`` is the canonical form of the
completion's ``<answer>`` expression (equal up to commutativity and associativity of ``+``/``*``, ``None`` without
a parsable answer): pass it as ``DiversityGRPOTrainer(partition_key=countdown.equivalence_key)``. For maths,
:func:`divrl.rewards.trl_rewards.math_answer_key` (the normalised final answer) plays the same part. Both are the keys
``divrl train`` uses for DARLING's exact partition and for ``distinct_correct_classes``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["countdown_dataset", "math_dataset", "task_dataset"]


def _dataset(rows: dict[str, list[Any]]) -> Any:
    try:
        from datasets import Dataset
    except ImportError as exc:  # pragma: no cover - datasets comes with TRL
        raise ImportError("divrl's TRL datasets need the datasets library: pip install 'divrl[trl]'") from exc
    return Dataset.from_dict(rows)


def task_dataset(task: Any, split: str = "train", n: int | None = None, *, seed: int = 0) -> Any:
    """A ``datasets.Dataset`` of ``task``'s problems of ``split`` (the first ``n`` if given; ``seed`` as in
    ``task.problems``): a ``prompt`` column formatted by ``task.prompt`` and the task's reference columns (Countdown:
    ``numbers``, ``target``; maths: ``solution``).

    Raises:
        ValueError: a bad split or ``n``; a task of another kind (no known reference columns).
    """
    from divrl.tasks.countdown import CountdownTask
    from divrl.tasks.math import MathTask

    problems = task.problems(split, n=n, seed=seed)
    rows: dict[str, list[Any]] = {"prompt": [task.prompt(p) for p in problems]}
    if isinstance(task, CountdownTask):
        rows["numbers"] = [list(p.numbers) for p in problems]
        rows["target"] = [p.target for p in problems]
    elif isinstance(task, MathTask):
        rows["solution"] = [p.answer for p in problems]
    else:
        raise ValueError(f"task_dataset: no reference columns known for {type(task).__name__}; known: countdown, math")
    return _dataset(rows)


def countdown_dataset(split: str = "train", n: int | None = None, *, seed: int = 0, **options: Any) -> Any:
    """Countdown problems as a TRL dataset: columns ``prompt``, ``numbers``, ``target``.

    Args:
        split: ``train``, ``val``, ``test``, ``ood`` or the path of a ``.jsonl`` problem file (as ``divrl eval
            --split``). The splits are disjoint, as in ``divrl train`` / ``divrl eval``.
        n: the first ``n`` problems (``None``: the whole split, in the task's seeded order).
        seed: the generator's seed (``divrl eval`` uses 0).
        **options: :class:`divrl.tasks.countdown.CountdownConfig` fields (e.g. ``num_numbers=4``, ``high=13``); the
            defaults are those of ``divrl train``'s Countdown recipes and of the builtin policy.
    """
    from divrl.tasks import get_task

    return task_dataset(get_task("countdown", **options), split, n, seed=seed)


def math_dataset(
    split: str = "test", n: int | None = None, *, tokenizer: Any = None, seed: int = 0, **options: Any
) -> Any:
    """A maths task's problems as a TRL dataset: columns ``prompt`` and ``solution`` (for
    :data:`~divrl.rewards.trl_rewards.math_accuracy_reward`).

    Args:
        split: a split of the configured data (``options``: :class:`divrl.tasks.math.MathConfig` fields such as
            ``data="problems.jsonl"`` or ``dataset="gsm8k"``) or a data file's path.
        n: the first ``n`` problems.
        tokenizer: the policy's tokenizer, needed by ``template="chat"``.
        **options: the maths task's config fields.
    """
    from divrl.tasks import get_task

    task = get_task("math", **options)
    if tokenizer is not None:
        task.bind_tokenizer(tokenizer)  # type: ignore[attr-defined]
    return task_dataset(task, split, n, seed=seed)
