"""The verl-facing names and the reading of verl's config.

Holds the names divrl uses in verl (``divrl_<name>`` estimators, the ``divrl_sync`` trainer mode), the tested verl
version and its install hint, the lazy import of verl modules (the only place divrl imports verl), and the helpers
that read ``algorithm.divrl_*`` keys from an OmegaConf ``DictConfig`` (or any mapping): :func:`_cfg_get`,
:func:`_plain`, :func:`load_callable`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

TESTED_VERL = (0, 9)
"""The verl minor version whose internals the trainer override was written against."""

INSTALL_HINT = "pip install 'divrl[verl]'  (pins verl>=0.9,<0.10)"

ESTIMATOR_PREFIX = "divrl_"
"""verl name of a divrl estimator: ``divrl_<name>`` for divrl.core's ``<name>``."""

TRAINER_MODE = "divrl_sync"
"""``trainer.v1.trainer_mode`` of verl's sync trainer with divrl's side information."""


def _verl_module(name: str) -> Any:
    """Import a verl module, or raise ImportError naming the install command."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"divrl.integrations.verl needs verl 0.9 ({name} failed to import): {INSTALL_HINT}") from exc


def _cfg_get(config: Any, key: str, default: Any) -> Any:
    getter = getattr(config, "get", None)
    if config is None or not callable(getter):
        return default
    value = getter(key, default)
    return default if value is None else value


def _plain(value: Any) -> Any:
    """DictConfig/ListConfig (or any mapping/sequence) -> plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def load_callable(spec: str) -> Callable[..., Any]:
    """Import ``"package.module:function"`` (``importlib``, no eval) and return the callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'package.module:function', got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{spec!r} is not callable")
    return obj  # type: ignore[no-any-return]
