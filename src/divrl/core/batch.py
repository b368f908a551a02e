"""``GroupBatch``: P prompts × G rollouts, the one input type of every estimator, loss and signal.

Dimension letters used across ``divrl.core``:
    P  prompts in the batch
    G  rollouts (samples) per prompt -- one *group*
    T  response tokens (padded; ``mask`` marks the real ones)
    D  embedding width
    H  hidden width (``hidden``: one mean last-layer hidden state per rollout)

Rewards may hold ``NaN`` for an *unscorable* rollout (a reward function returned ``None``);
:func:`divrl.core.advantages.compute_advantages` leaves such rollouts out of every group statistic and gives
them a zero advantage. An unscorable rollout is never counted as correct, whatever ``correct`` says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from divrl.core.needs import TOKEN_FIELDS


@dataclass(frozen=True)
class GroupBatch:
    """A batch of P prompts with G rollouts each. Only ``rewards`` is required; every other field
    is optional and validated against ``(P, G[, T | D])`` when given.

    Attributes:
        rewards: (P, G) float rewards; NaN marks an unscorable rollout.
        correct: (P, G) bool verifier correctness (R1-zero-Div's gate, distinct-correct metrics); read only
            where the reward is scored.
        texts: P lists of G completion strings (n-gram kernels, learned partitions).
        answers: P lists of G extracted final answers, ``None`` where none was found.
        logprobs: (P, G, T) current-policy log-probs of the sampled tokens (carry grad in a loss).
        old_logprobs: (P, G, T) behaviour-policy log-probs (no grad).
        ref_logprobs: (P, G, T) frozen reference-policy log-probs, for the KL term.
        mask: (P, G, T) bool/0-1 response-token mask.
        entropies: (P, G, T) full-vocabulary token entropies of the current policy.
        self_certainty: (P, G, T) behaviour-policy self-certainty per token, ``logsumexp(z) - mean(z)`` over the
            full vocabulary of the temperature-scaled logits ``z`` (= ``KL(U || p) + log |V|``; UCAS), no grad.
        token_logits: (P, G, T) raw logit of the sampled token (before temperature; UCAS), no grad.
        vocab_mean_logprobs: (P, G, T) ``mean_v log pi(v | s_t) = mean(z_t) - logsumexp(z_t)`` of the current policy
            at the position that predicts response token t (temperature-scaled logits ``z``, the whole vocabulary):
            the uniform-policy expectation of the log-probability (ROVER's next-state value). From the training
            forward; used as a value (no grad is needed).
        old_vocab_mean_logprobs: (P, G, T) the same under the old (behaviour) policy, no grad.
        log_z: (P, G) learned normaliser ``log Z(x)`` of each rollout's prompt (FlowRL); carries grad into the
            learned head. Equal within a group when the prompt is.
        embeddings: (P, G, D) one embedding per rollout (cosine kernels).
        hidden: (P, G, H) the policy's last-layer hidden states averaged over each completion's tokens (RepExp's
            representation), from a forward the trainer already runs (the old-log-prob pass).
        partition: (P, G) int semantic-class labels per group (equal label = same class).
        problem_ids: P problem ids, one per group (:func:`divrl.tasks.base.problem_id`); two groups of one
            problem share an id.
        history: a stateful estimator's per-problem state from before this step, keyed by problem id (a problem
            without a record has none yet; ``{}`` at the first step); the records are the estimator's own (e.g.
            ``outcome_ucb``: answer -> count). Needs ``problem_ids``. Set by
            :func:`divrl.core.advantages.compute_advantages_and_state`, which keeps the state across steps.
    """

    rewards: Tensor
    correct: Tensor | None = None
    texts: list[list[str]] | None = None
    answers: list[list[str | None]] | None = None
    logprobs: Tensor | None = None
    old_logprobs: Tensor | None = None
    ref_logprobs: Tensor | None = None
    mask: Tensor | None = None
    entropies: Tensor | None = None
    self_certainty: Tensor | None = None
    token_logits: Tensor | None = None
    vocab_mean_logprobs: Tensor | None = None
    old_vocab_mean_logprobs: Tensor | None = None
    log_z: Tensor | None = None
    embeddings: Tensor | None = None
    hidden: Tensor | None = None
    partition: Tensor | None = None
    problem_ids: list[str] | None = None
    history: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        r = self.rewards
        if not isinstance(r, Tensor):
            raise ValueError(f"GroupBatch.rewards must be a torch.Tensor of shape (P, G), got {type(r).__name__}")
        if r.dim() != 2:
            raise ValueError(f"GroupBatch.rewards must have shape (P, G), got shape {tuple(r.shape)}")
        if not torch.is_floating_point(r):
            raise ValueError(f"GroupBatch.rewards must be a float tensor, got dtype {r.dtype}")
        pg = (r.shape[0], r.shape[1])

        if self.correct is not None:
            _check_tensor("correct", self.correct, pg, "(P, G)")
            if self.correct.dtype is not torch.bool:
                raise ValueError(f"GroupBatch.correct must be a bool tensor, got dtype {self.correct.dtype}")
        if self.log_z is not None:
            _check_tensor("log_z", self.log_z, pg, "(P, G)")
            if not torch.is_floating_point(self.log_z):
                raise ValueError(f"GroupBatch.log_z must be a float tensor, got dtype {self.log_z.dtype}")
        if self.partition is not None:
            _check_tensor("partition", self.partition, pg, "(P, G)")
            if torch.is_floating_point(self.partition) or self.partition.dtype is torch.bool:
                raise ValueError(f"GroupBatch.partition must hold integer labels, got dtype {self.partition.dtype}")
        token_shape: tuple[int, ...] | None = None
        for name in TOKEN_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if token_shape is None:
                _check_tensor(name, value, pg, "(P, G, T)", extra_dims=1)
                token_shape = tuple(value.shape)
            elif tuple(value.shape) != token_shape:
                raise ValueError(
                    f"GroupBatch.{name} has shape {tuple(value.shape)} but the other token fields have shape "
                    f"{token_shape} (P, G, T)"
                )
        if self.embeddings is not None:
            _check_tensor("embeddings", self.embeddings, pg, "(P, G, D)", extra_dims=1)
        if self.hidden is not None:
            _check_tensor("hidden", self.hidden, pg, "(P, G, H)", extra_dims=1)
            if not torch.is_floating_point(self.hidden):
                raise ValueError(f"GroupBatch.hidden must be a float tensor, got dtype {self.hidden.dtype}")
        for name in ("texts", "answers"):
            _check_nested(name, getattr(self, name), pg)
        if self.problem_ids is not None:
            ids = self.problem_ids
            if not isinstance(ids, (list, tuple)) or len(ids) != pg[0] or not all(isinstance(i, str) for i in ids):
                got = len(ids) if isinstance(ids, (list, tuple)) else type(ids).__name__
                raise ValueError(f"GroupBatch.problem_ids must be a list of P={pg[0]} str ids, got {got}")
        if self.history is not None:
            if not isinstance(self.history, Mapping) or not all(isinstance(k, str) for k in self.history):
                raise ValueError("GroupBatch.history must be a mapping from problem id (str) to that problem's record")
            if self.problem_ids is None:
                raise ValueError("GroupBatch.history is keyed by problem id: GroupBatch.problem_ids must be set too")

    @property
    def num_prompts(self) -> int:
        """P."""
        return int(self.rewards.shape[0])

    @property
    def group_size(self) -> int:
        """G."""
        return int(self.rewards.shape[1])

    @property
    def scored(self) -> Tensor:
        """(P, G) bool: rollouts whose reward is a number (not NaN)."""
        return ~torch.isnan(self.rewards)

    def replace(self, **changes: Any) -> GroupBatch:
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)


def _check_tensor(name: str, value: object, pg: tuple[int, int], spec: str, extra_dims: int = 0) -> None:
    if not isinstance(value, Tensor):
        raise ValueError(f"GroupBatch.{name} must be a torch.Tensor of shape {spec}, got {type(value).__name__}")
    shape = tuple(value.shape)
    if value.dim() != 2 + extra_dims or shape[:2] != pg:
        raise ValueError(f"GroupBatch.{name} must have shape {spec} with (P, G) = {pg}, got shape {shape}")


def _check_nested(name: str, value: object, pg: tuple[int, int]) -> None:
    if value is None:
        return
    p, g = pg
    if not isinstance(value, (list, tuple)) or len(value) != p:
        got = len(value) if isinstance(value, (list, tuple)) else type(value).__name__
        raise ValueError(f"GroupBatch.{name} must be a list of P={p} lists of G={g} items, got {got} rows")
    for i, row in enumerate(value):
        if not isinstance(row, (list, tuple)) or len(row) != g:
            got = len(row) if isinstance(row, (list, tuple)) else type(row).__name__
            raise ValueError(f"GroupBatch.{name}[{i}] must hold G={g} items, got {got} (shape (P, G) = {pg})")
        for j, item in enumerate(row):
            if not (isinstance(item, str) or (name == "answers" and item is None)):
                allowed = "str or None" if name == "answers" else "str"
                raise ValueError(f"GroupBatch.{name}[{i}][{j}] must be {allowed}, got {type(item).__name__}")
