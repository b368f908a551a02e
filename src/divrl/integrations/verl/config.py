"""The verl-facing names and the reading of verl's config.

Holds the names divrl uses in verl (``divrl_<name>`` estimators, the ``divrl_sync`` trainer mode), the tested verl
version and its install hint, the lazy import of verl modules (the only place divrl imports verl), and the helpers
that read ``algorithm.divrl_*`` keys from an OmegaConf ``DictConfig`` (or any mapping) into an
:class:`EstimatorConfig` with their one-line refusals (:func:`read_estimator_config`), including which rows an
embedder embeds, read from the estimator's declared needs (:func:`embedding_rows`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from divrl.core.advantages import ADVANTAGES, advantage_needs
from divrl.core.registry import check_options

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


EMBED_ROWS_REMOVED = (
    "algorithm.divrl_embed_rows is no longer read: divrl embeds exactly the rows the estimator declares it reads "
    "(divrl.core.needs Needs.embed_rows: only the correct responses for setpo with divrl_options.members=correct "
    "and for dsdr, every response otherwise); remove it"
)


def embedding_rows(name: str, options: Mapping[str, Any], what: str) -> str:
    """Which rows an embedder embeds for divrl estimator ``name`` with ``options``: ``"correct"`` when its declared
    needs read only correct rollouts' embeddings (:attr:`divrl.core.needs.Needs.embed_rows`), else ``"all"``.
    Raises ValueError in one line naming ``what`` (the setting that gives the embedder) when the estimator reads no
    embeddings at all (neither required nor optional): an embedder nothing reads is a setting mistake."""
    needs = advantage_needs(name, options)
    if not needs.uses("embeddings"):
        raise ValueError(
            f"{what} is set, but divrl estimator {name!r} with options {dict(options)} reads no embeddings (a cosine "
            "kernel does: option kernel='cosine' of setpo, dra or dsdr); remove the embedder or set the kernel"
        )
    return needs.embed_rows


@dataclass(frozen=True)
class EstimatorConfig:
    """The ``algorithm.divrl_*`` keys of one divrl estimator, read and checked by :func:`read_estimator_config`.

    Attributes:
        options: the estimator's keyword options (``divrl_options``; ``scale="none"`` added for ``grpo`` under
            ``norm_adv_by_std_in_grpo=False``).
        correct_threshold: ``divrl_correct_threshold`` (default 1.0: ``correct = score >= 1``).
        partition_fn: ``divrl_partition_fn``, a ``"package.module:function"`` spec, or None.
        embedder: ``divrl_embedder``, an embedder spec, or None (checked: the estimator reads embeddings, see
            :func:`embedding_rows`, which also says which rows it embeds).
    """

    options: dict[str, Any]
    correct_threshold: float = 1.0
    partition_fn: str | None = None
    embedder: str | None = None


def read_estimator_config(name: str, config: Any) -> EstimatorConfig:
    """Read verl's ``algorithm`` config for divrl estimator ``name``, refusing in one line what cannot run: unknown
    options, the removed ``divrl_embed_rows``, an embedder the estimator does not read. Called by the estimator on
    every call and by the ``divrl_sync`` trainer's ``__init__`` (before verl builds its workers)."""
    verl_name = ESTIMATOR_PREFIX + name
    if _cfg_get(config, "divrl_embed_rows", None) is not None:
        raise ValueError(f"{verl_name}: {EMBED_ROWS_REMOVED}")
    options = _plain(_cfg_get(config, "divrl_options", {}))
    if not isinstance(options, dict):
        raise ValueError(f"algorithm.divrl_options must be a mapping of {name} options, got {options!r}")
    if name == "grpo" and "scale" not in options and _cfg_get(config, "norm_adv_by_std_in_grpo", True) is False:
        options["scale"] = "none"
    check_options(ADVANTAGES.get(name), options, f"{verl_name} (algorithm.divrl_options)")
    fn_spec = _cfg_get(config, "divrl_partition_fn", None)
    embedder = _cfg_get(config, "divrl_embedder", None)
    embedder = None if embedder == "" else embedder
    if embedder is not None:
        embedding_rows(name, options, f"{verl_name}: algorithm.divrl_embedder")
    return EstimatorConfig(
        options=options,
        correct_threshold=float(_cfg_get(config, "divrl_correct_threshold", 1.0)),
        partition_fn=str(fn_spec) if fn_spec else None,
        embedder=None if embedder is None else str(embedder),
    )
