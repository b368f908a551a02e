"""Declared needs: what an advantage estimator or a policy loss reads, as a function of its options.

Every estimator and loss is registered with a *needs function* ``needs(options) -> Needs`` (see
:meth:`divrl.core.registry.Registry.register`). It is the one place that says which :class:`GroupBatch` fields
the entry reads with those options; everything else reads it instead of keeping its own list:

- the trainer (:mod:`divrl.trainer.rl`) computes what is needed and nothing more (the old-log-prob pass before
  the advantage, the reference model for a KL term), and its config check refuses a config that cannot provide
  a needed field before a model is loaded, in one line naming the config field;
- the TRL and verl adapters refuse an estimator that needs a field they cannot provide, naming it;
- a trainer embeds exactly the rows the union of the estimator's and the loss terms' needs says
  (:attr:`Needs.embed_rows`: only the correct rollouts when every reader of embeddings reads those only; the
  others are then zero vectors), and refuses an embedder that no entry reads;
- ``history`` (with ``problem_ids``) marks a stateful estimator: a trainer carries its per-problem state across
  steps and in its checkpoints, or refuses it (the TRL and verl adapters do).

``rewards`` is always read and is not listed. This module is ours (no paper); the field names are those of
:class:`~divrl.core.batch.GroupBatch`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["FIELDS", "TOKEN_FIELDS", "Needs", "NeedsFn", "no_needs"]

TOKEN_FIELDS = (
    "logprobs",
    "old_logprobs",
    "ref_logprobs",
    "mask",
    "entropies",
    "self_certainty",
    "token_logits",
    "vocab_mean_logprobs",
    "old_vocab_mean_logprobs",
)
"""The per-token fields (part of :data:`FIELDS`), shape ``(P, G, T)`` with one ``T`` shared by all of them
(:class:`~divrl.core.batch.GroupBatch` checks them together)."""

FIELDS = (
    "correct",
    "texts",
    "answers",
    *TOKEN_FIELDS,
    "log_z",
    "embeddings",
    "hidden",
    "partition",
    "problem_ids",
    "history",
)
"""The optional :class:`~divrl.core.batch.GroupBatch` fields an entry may declare (``rewards`` is always read).

``hidden`` is one mean last-layer hidden state per rollout (RepExp), which a trainer takes from a forward it runs
anyway (``divrl train``: the old-log-prob pass).

``history`` marks a *stateful* estimator: it reads the per-problem state of the batch's problems from before this
step (``GroupBatch.history``, keyed by ``problem_ids``) and returns the updated records, which the caller keeps
across steps and checkpoints (:func:`divrl.core.advantages.compute_advantages_and_state`).

``self_certainty`` and ``token_logits`` are per-token full-vocabulary statistics of the behaviour policy (UCAS):
a trainer computes them in its one old-log-prob forward, only when an entry declares them.

``vocab_mean_logprobs`` / ``old_vocab_mean_logprobs`` are full-vocabulary statistics of the current / old policy at
every response position (ROVER's uniform-policy value); a trainer computes them from the logits of the forward it
already runs (the training forward, the old-log-prob pass). ``log_z`` is a learned per-prompt normaliser (log-partition)
(FlowRL): a trainer that provides it owns the learned head, optimises it with the policy and checkpoints it."""


@dataclass(frozen=True)
class Needs:
    """What one entry reads with one set of options.

    Attributes:
        reads: fields that must be set (the entry raises when one is None).
        optional: fields read when set, ignored when None (e.g. ``old_logprobs`` of a PPO loss: None = on-policy).
        embed_rows: whose embeddings are read when embeddings are read: ``"all"`` rollouts, or only the
            ``"correct"`` ones (reward-verified correct; an unscorable rollout is never correct). A trainer embeds
            exactly these rows (the union of the estimator's and the loss terms' needs) and gives the others zero
            vectors; it is not a setting.
    """

    reads: frozenset[str] = field(default_factory=frozenset)
    optional: frozenset[str] = field(default_factory=frozenset)
    embed_rows: Literal["all", "correct"] = "all"

    def __post_init__(self) -> None:
        unknown = sorted((set(self.reads) | set(self.optional)) - set(FIELDS))
        if unknown:
            raise ValueError(f"Needs: unknown GroupBatch field(s) {unknown}; known: {list(FIELDS)}")
        if self.embed_rows not in ("all", "correct"):
            raise ValueError(f"Needs.embed_rows must be 'all' or 'correct', got {self.embed_rows!r}")

    @staticmethod
    def of(
        reads: Iterable[str] = (), optional: Iterable[str] = (), embed_rows: Literal["all", "correct"] = "all"
    ) -> Needs:
        """``Needs`` from any iterables of field names."""
        return Needs(frozenset(reads), frozenset(optional) - frozenset(reads), embed_rows)

    def requires(self, name: str) -> bool:
        """Whether field ``name`` must be set."""
        return name in self.reads

    def uses(self, name: str) -> bool:
        """Whether field ``name`` is read (required or when set)."""
        return name in self.reads or name in self.optional

    def missing(self, available: Iterable[str]) -> list[str]:
        """The required fields not in ``available``, in :data:`FIELDS` order."""
        have = set(available)
        return [f for f in FIELDS if f in self.reads and f not in have]

    def __or__(self, other: Needs) -> Needs:
        """Union: what two entries read together (``embed_rows`` is ``"correct"`` only if both say so, or only one
        reads embeddings and says so)."""
        rows: Literal["all", "correct"]
        mine, theirs = self.uses("embeddings"), other.uses("embeddings")
        if mine and theirs:
            rows = "correct" if self.embed_rows == other.embed_rows == "correct" else "all"
        else:
            rows = self.embed_rows if mine else other.embed_rows if theirs else "all"
            if not mine and not theirs:
                rows = "correct" if "correct" in (self.embed_rows, other.embed_rows) else "all"
        return Needs.of(self.reads | other.reads, self.optional | other.optional, rows)


NeedsFn = Callable[[Mapping[str, Any]], Needs]
"""``needs(options) -> Needs``: what an entry reads with those (keyword) options."""


def no_needs(options: Mapping[str, Any]) -> Needs:
    """The needs of an entry that reads only ``rewards`` (the default of a registration without ``needs=``)."""
    return Needs()
