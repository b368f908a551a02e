"""What a config asks of ``divrl train``, decided before any model loads: the checks and the forward plan.

- :func:`check_methods`: the estimator and loss terms against their declared needs (:mod:`divrl.core.needs`) and
  what this config can provide, then a dry run on a synthetic group; every refusal is one line naming the field.
- :func:`check_rollout_side`: the sampler and prompt selector (:mod:`divrl.rollout.strategies`).
- :func:`forward_plan`: which statistics each forward of a step computes (:data:`OLD_PASS`, :data:`TRAIN_PASS`,
  :data:`ON_POLICY`), so that nothing is computed unless an entry declares it.

:mod:`divrl.trainer.rl` (the loop) calls these; :mod:`divrl.eval.grid` calls :func:`check_methods` before a grid
trains anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from divrl.config import ConfigError
from divrl.core.advantages import advantage_needs, compute_advantages
from divrl.core.losses import compute_loss, loss_needs
from divrl.core.needs import FIELDS, Needs
from divrl.signals import check_embedder, check_provided, synthetic_group, synthetic_loss_batch
from divrl.trainer.config import RLConfig


def check_methods(cfg: RLConfig) -> None:
    """Check the configured advantage estimator and loss terms before a model is loaded.

    First against their declared needs (:mod:`divrl.core.needs`): a field the estimator requires that this
    config cannot provide (a partition without ``partition.source``, embeddings without an ``embedder``) and an
    ``embedder`` that neither the estimator nor a loss term reads are refused. Then each is run once on a tiny
    synthetic group (one prompt, the real group size G, the fields a real step provides), so that a bad option value
    fails too.

    Raises:
        ConfigError: naming the field (``advantage.options``, ``loss.<i>.options``, ``embedder``, ...).
    """
    check_rollout_side(cfg)
    name = cfg.advantage.name
    try:
        needs = advantage_needs(name, cfg.advantage.options)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"advantage {name!r} (advantage.name): {exc}") from exc
    reads = needs  # the estimator's and every loss term's needs together (which rows the embedder embeds)
    for i, term in enumerate(cfg.loss):
        try:
            reads = reads | loss_needs(term.name, term.options)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"loss {term.name!r} (loss.{i}.name): {exc}") from exc
    if cfg.embedder:
        try:
            fix = "set advantage.options.kernel: cosine (or a loss term's kernel: cosine), or drop embedder"
            check_embedder(reads, f"embedder {cfg.embedder!r}", fix)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    available = list(TRAINER_PROVIDES)
    if cfg.partition.source != "none":
        available.append("partition")
    if cfg.embedder:
        available.append("embeddings")
    before = [f for f in available if f not in TRAIN_PASS]  # the training forward runs after the advantage
    hints = {**_PROVIDE_HINTS, **dict.fromkeys(TRAIN_PASS, "it comes from the training forward, after the advantage")}
    try:
        check_provided(name, cfg.advantage.options, before, hints, "divrl train")
    except ValueError as exc:
        raise ConfigError(f"{exc} (advantage.name / advantage.options)") from exc
    for i, term in enumerate(cfg.loss):
        for field in loss_needs(term.name, term.options).missing(available):
            hint = _PROVIDE_HINTS.get(field, "divrl train does not provide it")
            raise ConfigError(f"loss {term.name!r} (loss.{i}) needs GroupBatch.{field}: {hint}")
    plan = forward_plan(needs, Needs(), cfg.num_iterations * cfg.mini_batches)  # the estimator's side of the forwards
    batch = synthetic_group(
        cfg.rollout.group_size,
        partition=cfg.partition.source != "none",
        embeddings=bool(cfg.embedder),
        token_level=plan.before_advantage,  # the old pass then runs first and gives the token fields and the mask
        hidden="hidden" in plan.old,
    )
    try:
        advantages = compute_advantages(cfg.advantage.name, batch, **cfg.advantage.options)  # (1, G)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"advantage {cfg.advantage.name!r} (advantage.options): {exc}") from exc
    sub = synthetic_loss_batch(batch.rewards, texts=batch.texts, embeddings=batch.embeddings)
    for i, term in enumerate(cfg.loss):
        try:
            compute_loss(term.name, sub, advantages, **term.options)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"loss {term.name!r} (loss.{i}.options): {exc}") from exc


def check_rollout_side(cfg: RLConfig) -> tuple[Any, Any, Any, Any]:
    """The configured sampler and prompt selector with their built options (:mod:`divrl.rollout.strategies`):
    ``(sampler, sampler options, selector, selector options)``; ConfigError naming the field (an unknown name lists
    the known ones)."""
    from divrl.rollout.strategies import STANDARD_SAMPLER, sampler_entry, selector_entry

    sampler, sampler_options = sampler_entry(cfg.sampler.name, cfg.sampler.options)
    if cfg.sampler.name != STANDARD_SAMPLER and cfg.rollout.backend != "hf":
        raise ConfigError(
            f"sampler.name {cfg.sampler.name!r} runs in divrl's own decode loop; set rollout.backend: hf "
            f"(got {cfg.rollout.backend!r})"
        )
    selector, selector_options = selector_entry(cfg.prompt_selector.name, cfg.prompt_selector.options)
    return sampler, sampler_options, selector, selector_options


TRAINER_PROVIDES = tuple(f for f in FIELDS if f not in ("partition", "embeddings"))
"""GroupBatch fields ``divrl train`` can always provide (each computed only when a term declares it, in the forwards
:func:`forward_plan` decides; ``log_z``: a learned head on the prompt's mean hidden state, optimised with the policy
and saved in every checkpoint; ``history``: a stateful estimator's per-problem state, carried across steps and saved
in every checkpoint); ``partition`` and ``embeddings`` depend on ``partition.source`` and ``embedder``. The fields
of the training forward (:data:`TRAIN_PASS`) reach the loss terms only: an estimator runs before it."""

OLD_PASS = {
    "old_logprobs": "logprobs",
    "self_certainty": "self_certainty",
    "token_logits": "token_logits",
    "hidden": "hidden",
    "old_vocab_mean_logprobs": "vocab_mean_logprobs",
}
"""GroupBatch field -> the :func:`divrl.rollout.token_statistics` field that gives it, for the fields of the behaviour
policy that ``divrl train`` takes from its one no-grad forward of the current policy over all rollouts (the
old-log-prob pass; PPO reuses its log-probs as the old ones)."""

ON_POLICY = {"old_logprobs": "logprobs", "old_vocab_mean_logprobs": "vocab_mean_logprobs"}
"""Old-policy fields a loss term reads, and the training forward's statistic that stands for each when no old pass
runs (one optimiser step per batch: the old policy is the current one, so the value is that statistic, detached)."""

TRAIN_PASS = {
    "logprobs": "logprobs",
    "entropies": "entropies",
    "vocab_mean_logprobs": "vocab_mean_logprobs",
    "log_z": "prompt_hidden",
}
"""GroupBatch field -> :func:`divrl.rollout.token_statistics` field of the training forward (with grad, per
micro-batch): log-probs and entropies always (the loss and the ``entropy`` metric); ROVER's vocabulary means and
the prompt's mean hidden state, the input of FlowRL's learned log Z head (``log_z = head(prompt_hidden)``), only
when a loss term reads them."""


@dataclass(frozen=True)
class ForwardPlan:
    """Which statistics each forward of ``divrl train`` computes, decided in one place (:func:`forward_plan`) from the
    declared needs: nothing is computed unless an entry declares it, and no statistic takes a pass of its own.

    Attributes:
        before_advantage: the estimator requires a field of the old pass, which then runs before the advantage
            (its log-probs are PPO's old ones); otherwise it runs only when there is more than one optimizer step per
            rollout batch (``num_iterations`` or ``mini_batches`` > 1), in ``optimize``.
        old: GroupBatch fields of the old pass (``old_logprobs`` first), keys of :data:`OLD_PASS`; empty when no old
            pass runs.
        train: :func:`divrl.rollout.token_statistics` fields of the training forward.
    """

    before_advantage: bool
    old: tuple[str, ...]
    train: tuple[str, ...]

    def old_stats(self) -> list[str]:
        """The :func:`divrl.rollout.token_statistics` fields of the old pass."""
        return [OLD_PASS[f] for f in self.old]


def forward_plan(estimator: Needs, losses: Needs, updates: int = 1) -> ForwardPlan:
    """The statistics of ``divrl train``'s forwards for an estimator and loss terms (their united needs ``losses``).

    The old pass runs when the estimator requires one of its :data:`OLD_PASS` fields (before the advantage), or when
    ``updates`` > 1 (optimizer steps per rollout batch: ``num_iterations * mini_batches``; PPO's old log-probs) or a
    loss term requires an old field without an on-policy stand-in
    (both in ``optimize``); it computes ``old_logprobs`` and every other
    :data:`OLD_PASS` field the estimator requires or a loss term reads. The training forward computes log-probs and
    entropies, every :data:`TRAIN_PASS` field a loss term reads, and the on-policy stand-in (:data:`ON_POLICY`) of an
    old field a loss term reads when no old pass gives it. Plain GRPO (``ppo`` loss, one iteration): no old pass, the
    training forward's log-probs and entropies only."""
    early = [f for f in OLD_PASS if estimator.requires(f)]
    runs = bool(early) or updates > 1 or any(losses.requires(f) for f in OLD_PASS if f not in ON_POLICY)
    old = tuple(f for f in OLD_PASS if f == "old_logprobs" or f in early or losses.uses(f)) if runs else ()
    train = [TRAIN_PASS[f] for f in TRAIN_PASS if f in ("logprobs", "entropies") or losses.uses(f)]
    train += [ON_POLICY[f] for f in ON_POLICY if losses.uses(f) and f not in old]
    return ForwardPlan(bool(early), old, tuple(dict.fromkeys(train)))


_PROVIDE_HINTS = {
    "partition": "set partition.source: exact, answer, text or learned",
    "embeddings": "set embedder, e.g. embedder=all-MiniLM-L6-v2",
}
