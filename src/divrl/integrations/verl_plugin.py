"""verl plugin entry point: ``import verl`` imports this module in every process verl starts.

Declared in pyproject.toml as ``[project.entry-points."verl.plugins"] divrl = "divrl.integrations.verl_plugin"``.
verl 0.9's ``verl/__init__.py`` loads every entry point of the group ``verl.plugins`` when
``VERL_USE_EXTERNAL_PLUGINS`` is ``auto`` (the default) or names ``divrl``; ``none`` disables plugins. It swallows
a plugin's import error at DEBUG level, so a failure is also logged here as a warning before it propagates.

Importing this module registers, in verl's registries of the importing process:

- the advantage estimators ``divrl_grpo``, ``divrl_dr_grpo``, ``divrl_rloo``, ``divrl_passk``, ``divrl_darling``,
  ``divrl_setpo`` (every supported divrl.core estimator, as ``divrl_<name>``);
- the policy loss ``divrl_positive_entropy`` (without options: set its gate in ``DIVRL_VERL_POSITIVE_ENTROPY``);
- the trainer ``trainer.v1.trainer_mode=divrl_sync``.

See :mod:`divrl.integrations.verl`.
"""

from __future__ import annotations

import logging

from divrl.integrations.verl import register

try:
    REGISTERED = register()
except Exception:
    logging.getLogger(__name__).warning("divrl: registering divrl's components with verl failed", exc_info=True)
    raise
