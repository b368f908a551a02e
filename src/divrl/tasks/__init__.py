"""Tasks: prompts, a verifier and (optionally) an exact solution-class key. ``get_task`` builds one by name.

Each entry of :data:`TASKS` takes keyword options only (a YAML mapping) and imports its module lazily,
so a task with heavy dependencies costs nothing until it is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from divrl.core.registry import Registry
from divrl.tasks.base import Task, Verdict

__all__ = ["TASKS", "Task", "Verdict", "get_task"]

TASKS: Registry[Callable[..., Task]] = Registry("task")


@TASKS.register("countdown")
def _countdown(**options: Any) -> Task:
    from divrl.tasks.countdown import CountdownConfig, CountdownTask

    return CountdownTask(CountdownConfig.from_options(options))


@TASKS.register("math")
def _math(**options: Any) -> Task:
    from divrl.tasks.math import MathConfig, MathTask

    return MathTask(MathConfig.from_options(options))


def get_task(name: str, **options: Any) -> Task:
    """The task registered as ``name`` built with ``options`` (its config fields).

    Raises:
        divrl.core.registry.UnknownNameError: an unknown ``name`` (the message lists the known ones).
        ValueError: an unknown or invalid option (the message names it).
    """
    task: Task = TASKS.get(name)(**options)
    return task
