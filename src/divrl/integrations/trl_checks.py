"""Warnings for TRL settings that a divrl advantage estimator makes ineffective in :class:`DiversityGRPOTrainer`.

With ``advantage=`` set, divrl recomputes the advantages over the gathered groups and TRL's own are discarded
(:mod:`divrl.integrations.trl`), so the ``GRPOConfig`` fields that only shape TRL's advantage change nothing. In TRL
1.16 that is ``scale_rewards`` (``grpo_trainer.py``: the std division of ``sum_then_normalize``;
``multi_objective_aggregation`` other than ``sum_then_normalize`` is refused at construction instead). A value other
than TRL's default (``"group"``, i.e. a value the user chose) gets one warning that names the divrl option to use.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

from divrl.core.advantages import get_advantage

__all__ = ["REPLACED_TRL_SETTINGS", "warn_replaced_trl_settings"]

REPLACED_TRL_SETTINGS: dict[str, Any] = {"scale_rewards": "group"}
"""``GRPOConfig`` fields that only shape TRL's advantage, with TRL 1.16's defaults."""


def warn_replaced_trl_settings(args: Any, advantage: str | None) -> list[str]:
    """Warn (``UserWarning``) for each :data:`REPLACED_TRL_SETTINGS` field of ``args`` (a ``GRPOConfig``) set to a
    non-default value while a divrl ``advantage`` replaces TRL's advantages; return the messages."""
    if advantage is None or args is None:
        return []
    has_scale = "scale" in inspect.signature(get_advantage(advantage)).parameters
    messages = []
    for name, default in REPLACED_TRL_SETTINGS.items():
        value = getattr(args, name, default)
        if value == default or (name == "scale_rewards" and value is True):  # True is TRL's alias of "group"
            continue
        fix = (
            "set the estimator's scaling with advantage_options={'scale': ...} instead"
            if has_scale
            else f"{advantage!r} has no std scaling option"
        )
        messages.append(
            f"GRPOConfig({name}={value!r}) has no effect: advantage={advantage!r} replaces TRL's advantages "
            f"(DiversityGRPOTrainer); {fix}"
        )
    for message in messages:
        warnings.warn(message, UserWarning, stacklevel=3)
    return messages
