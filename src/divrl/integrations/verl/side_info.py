"""Per-sample side information: what a divrl estimator gets from verl beyond rewards and uids.

Holds :class:`SampleInfo` (per-row uids, texts, partition keys, correctness) and the context that hands it to the
estimators (:func:`use_sample_info`), how it is read from the reward extra info (``divrl_key``, ``divrl_correct``,
``divrl_text``: :func:`sample_info_from_rows`) or from verl's ``non_tensor_batch``, the per-call checks (the rows
line up with verl's ``index``; the estimator's declared needs are provided: :func:`check_side_info`), and the
embedder of ``algorithm.divrl_embedder``, loaded once per process.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from divrl.core.advantages import advantage_needs
from divrl.integrations.verl.config import TRAINER_MODE

EXTRA_KEY = "divrl_key"
"""Reward extra info key: a per-sample partition key (equal keys = one DARLING class; ``None`` = its own class)."""

EXTRA_CORRECT = "divrl_correct"
"""Reward extra info key: per-sample verifier correctness (bool); otherwise ``score >= divrl_correct_threshold``."""

EXTRA_TEXT = "divrl_text"
"""Reward extra info key: a text to use instead of the decoded response (e.g. the extracted solution)."""


VERL_CAN_PROVIDE = ("correct", "texts", "partition", "embeddings")
"""GroupBatch fields the verl adapter can build (texts and partition keys from the reward extra info under the
``divrl_sync`` trainer, embeddings from the texts). An estimator declared to need anything else is refused."""


@dataclass(frozen=True)
class SampleInfo:
    """Per-row side information of one verl batch, aligned with the rows the estimator sees.

    Attributes:
        uids: (bs,) the rows' uids, checked against verl's ``index`` before use.
        texts: bs response texts (SetPO's n-gram kernel, a partition function).
        keys: bs partition keys from the reward extra info ``divrl_key``.
        correct: (bs,) bool from the reward extra info ``divrl_correct``.
        stats: filled by the estimator with metrics for the trainer to log.
    """

    uids: np.ndarray
    texts: list[str] | None = None
    keys: list[Hashable | None] | None = None
    correct: np.ndarray | None = None
    stats: dict[str, float] = field(default_factory=dict)


_SAMPLE_INFO: contextvars.ContextVar[SampleInfo | None] = contextvars.ContextVar("divrl_sample_info", default=None)


@contextlib.contextmanager
def use_sample_info(info: SampleInfo) -> Iterator[SampleInfo]:
    """Make ``info`` visible to divrl estimators called inside the ``with`` block (same thread)."""
    token = _SAMPLE_INFO.set(info)
    try:
        yield info
    finally:
        _SAMPLE_INFO.reset(token)


def _column(extras: Sequence[Mapping[str, Any]], key: str) -> list[Any] | None:
    """The values of ``key`` over all rows; None when no row has it; raises when only some rows do."""
    present = [key in extra for extra in extras]
    if not any(present):
        return None
    if not all(present):
        missing = [i for i, p in enumerate(present) if not p]
        raise ValueError(
            f"reward extra info {key!r} is set for some samples but missing for {len(missing)} of {len(extras)} "
            f"(rows {missing[:5]}...): the reward function must return it for every sample"
        )
    return [extra[key] for extra in extras]


def sample_info_from_rows(
    uids: Sequence[Hashable] | np.ndarray,
    *,
    texts: Sequence[str] | None = None,
    extras: Sequence[Mapping[str, Any] | None] | None = None,
) -> SampleInfo:
    """Build :class:`SampleInfo` from per-row uids, decoded texts and reward extra info dicts.

    The extra info keys ``divrl_key``, ``divrl_correct`` and ``divrl_text`` are read when present; ``divrl_text``
    replaces the decoded text.
    """
    uid_array = np.asarray(list(uids), dtype=object)
    n = uid_array.size
    rows = [dict(extra or {}) for extra in extras] if extras is not None else [{} for _ in range(n)]
    if len(rows) != n:
        raise ValueError(f"got {len(rows)} reward extra info rows for {n} samples")
    text_list = list(texts) if texts is not None else None
    override = _column(rows, EXTRA_TEXT)
    if override is not None:
        text_list = [str(t) for t in override]
    if text_list is not None and len(text_list) != n:
        raise ValueError(f"got {len(text_list)} texts for {n} samples")
    keys = _column(rows, EXTRA_KEY)
    correct_values = _column(rows, EXTRA_CORRECT)
    correct = None if correct_values is None else np.asarray([bool(c) for c in correct_values], dtype=bool)
    return SampleInfo(uids=uid_array, texts=text_list, keys=keys, correct=correct)


def _info_from_non_tensor_batch(non_tensor_batch: Mapping[str, Any], bs: int) -> SampleInfo | None:
    """Side information from verl's ``non_tensor_batch`` columns (``divrl_key``/``divrl_correct``/``divrl_text``)."""
    if not any(k in non_tensor_batch for k in (EXTRA_KEY, EXTRA_CORRECT, EXTRA_TEXT)):
        return None
    uids = non_tensor_batch.get("uid")
    extras: list[dict[str, Any]] = [{} for _ in range(bs)]
    for key in (EXTRA_KEY, EXTRA_CORRECT, EXTRA_TEXT):
        if key in non_tensor_batch:
            for row, value in zip(extras, list(non_tensor_batch[key]), strict=True):
                row[key] = value
    return sample_info_from_rows(uids if uids is not None else [None] * bs, extras=extras)


_SIDE_INFO_HINTS = {
    "partition": (
        "a partition: return {'score': ..., 'divrl_key': <key>} from the reward function, or set "
        "+algorithm.divrl_partition_fn='pkg.module:fn' (fn(texts) -> labels)"
    ),
    "texts": "the response texts",
    "embeddings": "the response texts and +algorithm.divrl_embedder",
}
"""How a verl run provides a field an estimator declares it needs (the needs themselves: divrl.core.needs)."""


def check_side_info(
    verl_name: str,
    name: str,
    options: Mapping[str, Any],
    info: SampleInfo | None,
    *,
    partition_fn: Any = None,
    embedder: Any = None,
) -> None:
    """Raise ValueError, in one line saying how to provide it, when divrl estimator ``name`` with ``options``
    declares a field (:mod:`divrl.core.needs`) that this call's side information cannot build."""
    texts_ok = info is not None and info.texts is not None
    keys_ok = info is not None and info.keys is not None
    provided = ["correct"] + ["texts"] * texts_ok + ["embeddings"] * (texts_ok and embedder is not None)
    if keys_ok or (texts_ok and partition_fn is not None):
        provided.append("partition")
    missing = advantage_needs(name, options).missing(provided)
    if missing:
        raise ValueError(
            f"{verl_name} needs {_SIDE_INFO_HINTS.get(missing[0], 'GroupBatch.' + missing[0])}. verl passes "
            f"estimators only rewards and uids: run with trainer.v1.trainer_mode={TRAINER_MODE} so divrl receives "
            "the responses and the reward extra info"
        )


def _check_alignment(info: SampleInfo, index: np.ndarray, who: str) -> None:
    uids = np.asarray(index, dtype=object).reshape(-1)
    if info.uids.shape != uids.shape or not bool(np.all(info.uids == uids)):
        raise RuntimeError(
            f"{who}: the side information fetched by the {TRAINER_MODE} trainer ({info.uids.size} rows) does not line "
            f"up with the rows verl passed to the estimator ({uids.size} rows): did verl's _compute_advantage change "
            "its row order? (divrl was written against verl 0.9)"
        )


_EMBEDDERS: dict[str, Any] = {}


def _embedder(spec: Any) -> Any:
    """The embedder of ``algorithm.divrl_embedder`` (``None``: none), loaded once per spec and process, so its cache of
    recent texts lives across steps."""
    if spec is None or spec == "":
        return None
    key = str(spec)
    if key not in _EMBEDDERS:
        from divrl.semantic import load_embedder

        _EMBEDDERS[key] = load_embedder(key)
    return _EMBEDDERS[key]
