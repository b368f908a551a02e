"""divrl inside TRL: a ``GRPOTrainer`` subclass with divrl advantages and R1-zero-Div's term, and reward functions.

Two ways in, from the most to the least general:

1. :class:`DiversityGRPOTrainer` (any world size). Advantages come from a divrl estimator computed over **whole
   groups, with their texts**, on every run (one process, multi-GPU, multi-node, DeepSpeed, FSDP, vLLM server or
   colocate), plus, optionally, R1-zero-Div's positive-entropy term in the loss::

       trainer = DiversityGRPOTrainer(
           model=..., reward_funcs=[accuracy], args=GRPOConfig(...), train_dataset=...,
           advantage="darling", partition_key=math_answer_key,         # DARLING, exact-key classes
           positive_entropy={"lam": 0.01, "gate": "correct"},          # R1-zero-Div (off when None)
       )

2. :func:`darling_reward`: a plain TRL reward function (DARLING's multiplied reward ``r * div``) for a stock
   ``GRPOTrainer``. It sees whole groups only under a batch-size rule (see there).

divrl's verifiers as TRL reward functions (``math_accuracy_reward``, ``boxed_format_reward``,
``think_boxed_format_reward``, ``countdown_reward``, the configurable ``MathAccuracyReward`` and ``CountdownReward``)
and the maths partition key ``math_answer_key`` live in :mod:`divrl.rewards.trl_rewards`, which needs no TRL, and are
re-exported here; so are the TRL-ready datasets of the shipped tasks (``countdown_dataset``, ``math_dataset``,
``task_dataset``: a ``prompt`` column as ``divrl train`` formats it plus the columns those rewards read) of
:mod:`divrl.integrations.trl_data`, whose docstring also names each task's partition key
(``divrl.tasks.countdown.equivalence_key`` for Countdown); and :class:`DivrlEvalCallback`
(:mod:`divrl.integrations.trl_callbacks`), which logs divrl's evaluation metrics (pass@k, distinct correct classes,
entropy) on a held-out set every N steps to TRL's loggers.

Why a subclass. TRL 1.16 runs reward functions per process on that process's slice of the generation batch, which
may hold only part of a group (trl#3896), and it has no advantage hook (trl#4525; PR #7298 proposes one). The
subclass overrides four private methods, each by calling ``super()`` and post-processing its result; no TRL method
is copied:

=========================================  ==========================================================================
``_calculate_rewards``                      super() returns the rewards already gathered over processes; also
                                            ``gather_object`` the prompts and completion texts, in the same order
``_generate_and_score_completions``         super() builds the batch; recompute ``advantages`` over the gathered
                                            groups with the divrl estimator and keep this process's slice; add a
                                            per-sample ``divrl_correct`` column for the loss
``_get_per_token_logps_and_entropies``      keep the (grad-carrying) log-probs and entropies of the training forward
``_compute_loss``                           super() loss + R1-zero-Div's term on the same forward pass
=========================================  ==========================================================================

These are private APIs, hence the pin ``trl>=1.16,<1.17`` (extra ``divrl[trl]``) and the contract test
``tests/integrations/test_trl.py::test_trl_contract``. Importing this module warns on another TRL version.

Layout facts relied on (TRL 1.16, ``grpo_trainer.py``): the rows of the gathered rewards are the processes' local
batches concatenated in process order, and every ``num_generations`` consecutive rows are one prompt's group (TRL's
own ``rewards.view(-1, num_generations)`` relies on the same); each process's slice is
``[process_index * B_local, (process_index + 1) * B_local)``. Both vLLM modes hand each process its own rows in that
order before rewards are computed (server mode: gather prompts, generate on the main process, broadcast, slice;
colocate: each process generates for its own prompts, tensor-parallel groups re-slice), so nothing here depends on
the generation backend. :func:`group_rollouts` checks that every group holds a single prompt and raises otherwise.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor

from divrl.core.advantages import (
    advantage_is_stateful,
    advantage_is_token_level,
    compute_advantages,
    get_advantage,
)
from divrl.core.batch import GroupBatch
from divrl.core.diversity import darling_diversity, labels_tensor, partition_by_key
from divrl.core.losses import LOSSES, compute_loss, get_loss, loss_needs
from divrl.core.metrics import distinct_correct_classes
from divrl.core.needs import Needs
from divrl.core.registry import check_options
from divrl.integrations.trl_callbacks import DivrlEvalCallback
from divrl.integrations.trl_checks import warn_replaced_trl_settings
from divrl.integrations.trl_data import countdown_dataset, math_dataset, task_dataset
from divrl.models.builtin import resolve_model_path
from divrl.rewards.trl_rewards import (
    CountdownReward,
    MathAccuracyReward,
    _completion_text,
    boxed_format_reward,
    countdown_reward,
    math_accuracy_reward,
    math_answer_key,
    think_boxed_format_reward,
)
from divrl.signals import (
    check_embedder,
    check_provided,
    embed_groups,
    group_batch,
    signal_size,
    synthetic_group,
    synthetic_loss_batch,
)

try:
    import trl
    from accelerate.utils import gather_object
    from trl.trainer.grpo_trainer import GRPOTrainer
except ImportError as exc:
    raise ImportError("divrl.integrations.trl needs TRL: pip install 'divrl[trl]' (pins trl>=1.16,<1.17)") from exc

__all__ = [
    "TESTED_TRL",
    "CountdownReward",
    "DiversityGRPOTrainer",
    "DivrlEvalCallback",
    "MathAccuracyReward",
    "PartitionFn",
    "PartitionKey",
    "boxed_format_reward",
    "check_loss",
    "completion_text",
    "countdown_dataset",
    "countdown_reward",
    "darling_reward",
    "group_rollouts",
    "math_accuracy_reward",
    "math_answer_key",
    "math_dataset",
    "task_dataset",
    "think_boxed_format_reward",
]

_LOGPROB_HINT = (
    "every rollout's old log-probs before the advantage, which DiversityGRPOTrainer does not compute; use divrl's "
    "own trainer (divrl train)"
)
_TRL_HINTS = {
    "partition": "pass a partition source, partition_key= or partition_fn=",
    "embeddings": "pass embedder=",
    "answers": (
        "DiversityGRPOTrainer gathers no final answers (outcome_batch, seed_grpo: pass partition_key=, e.g. the "
        "answer extractor, and the option classes='partition')"
    ),
    "old_logprobs": _LOGPROB_HINT,
    "mask": _LOGPROB_HINT,
    "hidden": (
        "every rollout's mean last-layer hidden state before the advantage, which DiversityGRPOTrainer does not "
        "compute (TRL's forwards return no hidden states); use divrl's own trainer (divrl train)"
    ),
}
"""How to provide a field an estimator declares it needs (core.needs), for the refusal message."""

TESTED_TRL = (1, 16)
"""The TRL minor version whose private methods the overrides were written against."""

PartitionFn = Callable[[Any, list[str]], Sequence[int]]
"""``fn(prompt, completion_texts) -> labels``: G class labels for one group (equal label = same class)."""

PartitionKey = Callable[[str], Hashable | None]
"""``key(completion_text) -> key``: equal keys share a class; ``None`` is a class of its own."""


def _trl_minor(version: str) -> tuple[int, int]:
    parts = [int(p) if p.isdigit() else 0 for p in version.split(".")[:2]]
    return (parts[0], parts[1] if len(parts) > 1 else 0)


if _trl_minor(trl.__version__) != TESTED_TRL:  # pragma: no cover - depends on the installed version
    warnings.warn(
        f"divrl.integrations.trl overrides private GRPOTrainer methods written for trl "
        f"{TESTED_TRL[0]}.{TESTED_TRL[1]}.x; found trl {trl.__version__}. Run tests/integrations/test_trl.py",
        stacklevel=2,
    )


# ---------------------------------------------------------------------------------------------
# Framework-free helpers (also used by the reward functions)
# ---------------------------------------------------------------------------------------------


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string (standard format) or a list of messages (conversational format,
    the ``content`` of every message joined; content blocks contribute their ``text``)."""
    text = _completion_text(completion)
    if text is None:
        raise TypeError(f"completion must be a string or a list of message dicts, got {type(completion).__name__}")
    return text


def group_rollouts(prompts: Sequence[Any], items: Sequence[Any], num_generations: int) -> list[list[Any]]:
    """Split ``items`` (one per rollout, TRL's flat layout) into groups of ``num_generations`` consecutive rows.

    Raises ``ValueError`` when the count is not a multiple of ``num_generations`` or when a group mixes prompts:
    both mean the rows are not whole groups (e.g. a reward function on one process of a multi-process run).
    """
    n = len(items)
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}")
    if len(prompts) != n:
        raise ValueError(f"got {len(prompts)} prompts for {n} completions; expected one prompt per completion")
    if n % num_generations != 0:
        raise ValueError(
            f"{n} completions are not a whole number of groups of num_generations={num_generations}: this process "
            "holds part of a group. Use DiversityGRPOTrainer, or make per_device_train_batch_size * "
            "steps_per_generation a multiple of num_generations"
        )
    groups: list[list[Any]] = []
    for start in range(0, n, num_generations):
        group_prompts = prompts[start : start + num_generations]
        if any(p != group_prompts[0] for p in group_prompts[1:]):
            raise ValueError(
                f"rows {start}..{start + num_generations - 1} mix different prompts, so they are not one group of "
                f"num_generations={num_generations} (is num_generations right? did TRL's batch layout change?)"
            )
        groups.append(list(items[start : start + num_generations]))
    return groups


def _labels(
    prompt: Any, texts: list[str], partition_fn: PartitionFn | None, partition_key: PartitionKey | None
) -> list[int]:
    if partition_key is not None:
        return partition_by_key([partition_key(t) for t in texts])
    assert partition_fn is not None
    labels = [int(x) for x in partition_fn(prompt, texts)]
    if len(labels) != len(texts):
        raise ValueError(f"partition_fn returned {len(labels)} labels for a group of {len(texts)} completions")
    return labels


def _check_partition_source(partition_fn: PartitionFn | None, partition_key: PartitionKey | None) -> None:
    if partition_fn is not None and partition_key is not None:
        raise ValueError("pass either partition_fn or partition_key, not both")
    for name, fn in (("partition_fn", partition_fn), ("partition_key", partition_key)):
        if fn is not None and not callable(fn):
            raise ValueError(f"{name} must be callable, got {type(fn).__name__}")


# ---------------------------------------------------------------------------------------------
# Reward functions for a stock GRPOTrainer
# ---------------------------------------------------------------------------------------------


def darling_reward(
    base_reward_fn: Callable[..., Sequence[float | None]],
    key_fn: PartitionKey,
    *,
    num_generations: int,
    floor: float = 0.1,
) -> Callable[..., list[float | None]]:
    """DARLING's multiplied reward ``r_i * div_i`` as a TRL reward function (Li et al., arXiv 2509.02534, Eq. 5).

    ``div_i = max((G - |C(i)|) / (G - 1), floor)`` (:func:`~divrl.core.diversity.darling_diversity`; the floor is
    from the official code) over the classes of ``key_fn`` on the completion texts within each group of
    ``num_generations`` consecutive completions. A completion whose base reward is ``None`` (unscorable) stays
    ``None`` and is left out of the partition: ``G`` and ``|C(i)|`` count the scored completions only, as
    ``divrl.core``'s ``darling`` does. Pair it with ``GRPOConfig(scale_rewards="none")``: DARLING centres
    the shaped reward without a std division (``norm_adv_by_std_in_grpo=False``), which TRL then does.

    **Batch-size rule.** TRL calls reward functions on each process's local generation batch, before gathering, so
    this sees whole groups only when ``per_device_train_batch_size * steps_per_generation`` (and, for evaluation,
    ``per_device_eval_batch_size``) is a multiple of ``num_generations``; one process always qualifies. Otherwise
    it raises (it never scores a partial group). :class:`DiversityGRPOTrainer` with ``advantage="darling"`` has no
    such rule.

    Args:
        base_reward_fn: a TRL reward function ``fn(prompts=, completions=, **kwargs) -> list[float | None]``; its
            rewards must be >= 0 (DARLING multiplies them by a diversity in (0, 1]). ``None`` passes through.
        key_fn: ``key(completion_text) -> Hashable | None``, e.g. a normalised final answer (exact classes).
        num_generations: G, the ``GRPOConfig.num_generations`` of the run.
        floor: diversity floor (official code: 0.1).
    """
    if not callable(base_reward_fn) or not callable(key_fn):
        raise ValueError("darling_reward: base_reward_fn and key_fn must be callable")
    if num_generations < 2:
        raise ValueError(f"darling_reward: num_generations must be >= 2, got {num_generations}")

    def reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
        base = list(base_reward_fn(prompts=prompts, completions=completions, **kwargs))
        if len(base) != len(completions):
            raise ValueError(f"darling_reward: base reward returned {len(base)} values for {len(completions)}")
        texts = [completion_text(c) for c in completions]
        groups = group_rollouts(prompts, texts, num_generations)
        labels = labels_tensor([partition_by_key([key_fn(t) for t in g]) for g in groups])  # (P, G)
        scored = torch.tensor([not _unscorable(r) for r in base]).view(labels.shape)  # (P, G)
        div = darling_diversity(labels, floor, scored).reshape(-1).tolist()  # (P*G,)
        out: list[float | None] = []
        for r, d in zip(base, div, strict=True):
            if r is None or _unscorable(r):
                out.append(None)
            elif r < 0:
                raise ValueError(f"darling_reward: base rewards must be >= 0, got {r}")
            else:
                out.append(float(r) * d)
        return out

    reward.__name__ = f"darling_{getattr(base_reward_fn, '__name__', 'reward')}"
    return reward


def _unscorable(r: float | None) -> bool:
    return r is None or (isinstance(r, float) and math.isnan(r))


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


def _dry_run(
    advantage: str | None,
    options: Mapping[str, Any],
    entropy_options: Mapping[str, Any] | None,
    num_generations: int,
    partition: Any,
    embedder: Any,
) -> None:
    """Run the estimator and the entropy term once on a synthetic group of ``num_generations`` rollouts (as
    ``divrl train`` does before loading a model), so that a bad option value (e.g. ``gate="bogus"``) fails at
    construction with the argument to change, not at the first step."""
    batch = synthetic_group(num_generations, partition=partition is not None, embeddings=embedder is not None)
    advantages = torch.zeros_like(batch.rewards)  # (1, G)
    if advantage is not None:
        try:
            advantages = compute_advantages(advantage, batch, **options)  # (1, G)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"advantage={advantage!r}, advantage_options={dict(options)}: {exc}") from exc
    if entropy_options is not None:
        try:
            compute_loss("positive_entropy", synthetic_loss_batch(batch.rewards), advantages, **entropy_options)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"positive_entropy={dict(entropy_options)}: {exc}") from exc


def check_loss(name: str, options: Mapping[str, Any] | None = None) -> None:
    """Whether divrl policy loss ``name`` runs under :class:`DiversityGRPOTrainer`: ``positive_entropy`` does (its
    ``positive_entropy=`` argument, added to TRL's loss); any other raises ValueError in one line saying why, read
    from its declared needs. ``rover`` and ``flowrl`` replace the policy loss and need full-vocabulary means of the old
    and current policy or a learned log Z head, which TRL's GRPOTrainer does not compute; the PPO-style losses are
    TRL's own (``GRPOConfig.loss_type``, ``epsilon``, ``beta``)."""
    if name not in LOSSES:
        LOSSES.get(name)  # raises, listing the known names
    if name == "positive_entropy":
        check_options(get_loss(name), dict(options or {}), "policy loss 'positive_entropy'")
        return
    needs = loss_needs(name, options)
    if needs.requires("vocab_mean_logprobs") or needs.requires("old_vocab_mean_logprobs"):
        why = "it needs full-vocabulary means of the old and current policy, which TRL's GRPOTrainer does not compute"
    elif needs.requires("log_z"):
        why = "it needs a learned log Z head on the prompt's hidden states, which TRL's GRPOTrainer neither has nor saves"
    else:
        why = "the policy loss is TRL's own (GRPOConfig.loss_type, epsilon, beta)"
    raise ValueError(f"DiversityGRPOTrainer: policy loss {name!r} is not supported: {why}; use divrl train")


class DiversityGRPOTrainer(GRPOTrainer):
    """TRL ``GRPOTrainer`` whose advantages come from a divrl estimator over whole gathered groups, optionally with
    R1-zero-Div's positive-entropy term (Yao et al., arXiv 2505.23433, Eq. 12) added to TRL's loss.

    Every ``GRPOTrainer`` argument is accepted unchanged, except that a ``model`` string ``builtin:<name>`` (e.g.
    ``"builtin:countdown-tiny"``) is first resolved to divrl's packaged policy folder; the divrl ones are keyword-only.

    Args:
        advantage: a registered divrl estimator (``grpo``, ``dr_grpo``, ``rloo``, ``darling``, ``setpo``,
            ``passk``, ...); ``None`` keeps TRL's own advantages (e.g. to add only the entropy term). Estimators
            needing token-level inputs (``unlikeliness``, ``arm``) are refused here (``divrl train`` runs them). The estimator sees
            ``GroupBatch(rewards, correct, texts, answers=None, partition)``, ``(P, G)`` over the **global**
            generation batch; rewards are TRL's ``reward_weights``-weighted sum of the reward functions (NaN where
            every function returned ``None``, TRL's own rule for an unscorable completion: it gets advantage 0 and
            takes no part in its group's statistics, as in TRL's ``GRPOTrainer``; it is never ``correct``).
        advantage_options: keyword options of the estimator (checked at construction), e.g. ``{"lam": 0.5}``.
        partition_fn: ``fn(prompt, completion_texts) -> labels`` for one group (e.g. a learned equivalence, or
            :func:`divrl.core.diversity.partition` over a pairwise judge). Each group is partitioned once, by one
            process (groups are dealt round-robin across processes and the labels gathered).
        partition_key: ``key(completion_text) -> Hashable | None``: exact-key classes (fast path). Give at most one
            of the two; ``darling`` needs one.
        embedder: an embedder for ``GroupBatch.embeddings`` ``(P, G, D)``: a :class:`divrl.semantic.Embedder` or a
            spec for :func:`divrl.semantic.load_embedder` (``"all-MiniLM-L6-v2"``, ``"all-MiniLM-L6-v2@bf16"``,
            ``"char-ngram"``, a local folder). Only an estimator that reads embeddings uses it (``setpo``, ``dra``,
            ``dsdr`` with ``advantage_options={"kernel": "cosine"}``; their default kernel is ``"ngram"``), so it
            is refused at construction when the estimator does not. Each group is embedded once, by one process
            (round-robin), and the embeddings gathered; only the correct completions are embedded (zero vectors
            elsewhere) when the estimator declares it reads those only (``setpo`` with ``members="correct"``,
            ``dsdr``). ``None``: no embeddings.
        correct_reward: which reward function decides correctness (index into ``reward_funcs`` or its name);
            ``correct = reward >= correct_threshold`` (NaN is incorrect). Used for ``GroupBatch.correct``
            (``passk``, ``setpo`` with ``gate="correct"``) and for the entropy term's ``gate="correct"``.
        correct_threshold: see ``correct_reward`` (default 1.0: R1-zero-Div's ``1(r_i = 1)`` for 0/1 rewards).
        positive_entropy: options of ``divrl.core.losses.compute_loss("positive_entropy", ...)`` (``lam``,
            ``gate``, ``estimator``, ``ratio``; checked at construction), or ``None`` for no term. The term
            ``-lam * J_div`` of the micro-batch is divided by the gradient-accumulation steps, like TRL's own
            entropy bonus, and added to TRL's loss. It reuses the training forward pass (no extra forward) and
            ignores ``top_entropy_quantile`` and the vLLM importance-sampling correction.
        sampler, prompt_selector: only ``"standard"`` and ``"uniform"`` (TRL samples with its own engine and draws
            prompts with its own data loader); ``latr`` and ``gdro`` (``divrl train``'s rollout-side entries,
            :mod:`divrl.rollout.strategies`) are refused in one line before anything loads.

    Attributes:
        last_group_batch: the ``GroupBatch`` of the latest generation batch (global), when ``advantage`` is set.
        last_advantages: its ``(P, G)`` divrl advantages.
        last_group_prompts: its P prompts, one per group.

    Caveat: TRL's logged reward statistics are its own; the completions table's ``advantages`` column is replaced
    with the divrl values. Extra metrics: ``divrl/classes_per_group`` (partition classes over all rollouts),
    ``divrl/distinct_correct_classes`` (:func:`divrl.core.metrics.distinct_correct_classes` over the partition labels:
    classes among correct rollouts; a rollout whose partition key was ``None`` is its own class here), ``divrl/correct_frac``,
    ``divrl/div_term``, ``divrl/div_gate_frac``.
    """

    def __init__(
        self,
        *args: Any,
        advantage: str | None = None,
        advantage_options: Mapping[str, Any] | None = None,
        partition_fn: PartitionFn | None = None,
        partition_key: PartitionKey | None = None,
        embedder: Any = None,
        correct_reward: int | str = 0,
        correct_threshold: float = 1.0,
        positive_entropy: Mapping[str, Any] | None = None,
        sampler: str = "standard",
        prompt_selector: str = "uniform",
        **kwargs: Any,
    ) -> None:
        from divrl.rollout.strategies import adapter_refusal

        if "embed_rows" in kwargs:  # removed: not a TRL argument either, so say so before TRL does
            raise ValueError(
                "DiversityGRPOTrainer: embed_rows= was removed: the embedder embeds the completions the estimator "
                "declares it reads (only the correct ones for setpo with members='correct'); drop it"
            )
        refusal = adapter_refusal("DiversityGRPOTrainer", sampler, prompt_selector)
        if refusal is not None:  # TRL samples with its own engine and draws prompts with its own loader
            raise ValueError(refusal)
        _check_partition_source(partition_fn, partition_key)
        options = dict(advantage_options or {})
        needs = None
        if advantage is not None:
            check_options(get_advantage(advantage), options, f"advantage estimator {advantage!r}")
            if advantage_is_token_level(advantage):
                raise ValueError(
                    f"DiversityGRPOTrainer: advantage {advantage!r} gives one advantage per token from per-token "
                    "statistics of an old-log-prob forward (GroupBatch.self_certainty, token_logits), which this "
                    "trainer does not compute; use divrl train"
                )
            if advantage_is_stateful(advantage):
                raise ValueError(
                    f"DiversityGRPOTrainer: advantage {advantage!r} keeps per-problem state across steps "
                    "(GroupBatch.history), which this trainer neither carries nor saves in TRL checkpoints; use "
                    "divrl train, which checkpoints it"
                )
            provided = ["correct", "texts"]  # what _generate_and_score_completions gathers, by the declared needs
            if partition_fn is not None or partition_key is not None:
                provided.append("partition")
            if embedder is not None:
                provided.append("embeddings")
            needs = check_provided(advantage, options, provided, _TRL_HINTS, "DiversityGRPOTrainer")
        elif options:
            raise ValueError("advantage_options given without an advantage name")
        entropy_options = None if positive_entropy is None else dict(positive_entropy)
        reads = needs or Needs()  # the estimator's and the entropy term's needs together
        if entropy_options is not None:
            check_options(get_loss("positive_entropy"), entropy_options, "policy loss 'positive_entropy'")
            reads = reads | loss_needs("positive_entropy", entropy_options)
        if embedder is not None:
            from divrl.semantic import load_embedder

            fix = "pass advantage_options={..., 'kernel': 'cosine'} (setpo, dra, dsdr), or drop embedder="
            check_embedder(reads, "DiversityGRPOTrainer: embedder=", fix)
            embedder = load_embedder(embedder)
        if args and isinstance(args[0], str):  # "builtin:countdown-tiny" -> the packaged folder (TRL sees a path)
            args = (resolve_model_path(args[0]), *args[1:])
        elif isinstance(kwargs.get("model"), str):
            kwargs["model"] = resolve_model_path(kwargs["model"])
        super().__init__(*args, **kwargs)
        warn_replaced_trl_settings(self.args, advantage)  # e.g. scale_rewards: divrl's advantage replaces TRL's
        if advantage is not None and self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "DiversityGRPOTrainer: advantage= needs GRPOConfig(multi_objective_aggregation='sum_then_normalize') "
                f"(divrl estimators take the weighted reward sum), got {self.multi_objective_aggregation!r}"
            )
        if isinstance(correct_reward, str):
            if correct_reward not in self.reward_func_names:
                raise ValueError(f"correct_reward={correct_reward!r} is not one of {self.reward_func_names}")
            correct_reward = self.reward_func_names.index(correct_reward)
        if not 0 <= correct_reward < len(self.reward_func_names):
            raise ValueError(
                f"correct_reward={correct_reward} is out of range for {len(self.reward_func_names)} funcs"
            )
        assert self.num_generations is not None  # TRL types it Optional; GRPOTrainer.__init__ has set it
        _dry_run(advantage, options, entropy_options, self.num_generations, partition_fn or partition_key, embedder)
        self.divrl_advantage = advantage
        self.divrl_advantage_options = options
        self.divrl_needs = needs  # the estimator's declared needs (divrl.core.needs), as the trainer reads them
        self.divrl_partition_fn = partition_fn
        self.divrl_partition_key = partition_key
        self.divrl_embedder = embedder
        self.divrl_embed_rows = reads.embed_rows  # the rows the declared needs read (not a setting)
        self.divrl_correct_index = int(correct_reward)
        self.divrl_correct_threshold = float(correct_threshold)
        self.divrl_positive_entropy = entropy_options
        self.last_group_batch: GroupBatch | None = None
        self.last_advantages: Tensor | None = None
        self.last_group_prompts: list[Any] = []
        self._divrl_gathered: tuple[Tensor, list[Any], list[str]] | None = None
        self._divrl_forward: tuple[Tensor, Tensor | None] | None = None

    # -- override 1: the gathered rewards, plus the gathered prompts and texts in the same row order ---------------

    def _calculate_rewards(self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any) -> Tensor:
        rewards_per_func: Tensor = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self.divrl_advantage is not None:  # every process calls this, so the collectives line up
            texts = [completion_text(c) for c in completions]
            self._divrl_gathered = (rewards_per_func, gather_object(list(prompts)), gather_object(texts))
        else:
            self._divrl_gathered = (rewards_per_func, [], [])
        return rewards_per_func

    # -- override 2: advantages over whole groups, this process's slice kept ---------------------------------------

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        out: dict[str, Any] = super()._generate_and_score_completions(inputs)
        if self._divrl_gathered is None:
            raise RuntimeError("DiversityGRPOTrainer: _calculate_rewards was not called (did TRL 1.16's flow change?)")
        rewards_per_func, prompts, texts = self._divrl_gathered
        self._divrl_gathered = None
        mode = self._divrl_mode()
        n_local = int(out["advantages"].shape[0])
        local = slice(self.accelerator.process_index * n_local, (self.accelerator.process_index + 1) * n_local)
        correct = rewards_per_func[:, self.divrl_correct_index].nan_to_num(nan=-math.inf)  # (N,)
        correct = correct >= self.divrl_correct_threshold  # (N,) bool
        self._metrics[mode]["divrl/correct_frac"].append(correct.float().mean().item())  # every method logs it
        if self.divrl_positive_entropy is not None:
            out["divrl_correct"] = correct[local].to(out["advantages"].device)  # (B,)
        if self.divrl_advantage is None:
            return out

        g: int = self.num_generations if mode == "train" else self.num_generations_eval  # type: ignore[assignment]
        weights = self.reward_weights.to(rewards_per_func.device)  # (F,)
        rewards = (rewards_per_func * weights).nansum(dim=1)  # (N,)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan  # unscorable rows
        prompt_groups, text_groups = group_rollouts(prompts, prompts, g), group_rollouts(prompts, texts, g)
        batch = group_batch(
            rewards.view(-1, g).float().cpu(),  # (P, G)
            needs=self.divrl_needs,
            correct=correct.view(-1, g).cpu(),  # (P, G)
            texts=text_groups,
            partition=self._partition([group[0] for group in prompt_groups], text_groups),
            embeddings=self._embed(text_groups, correct.view(-1, g).cpu()),
        )
        adv = self.compute_group_advantages(batch)  # (P, G)
        self.last_group_batch, self.last_advantages = batch, adv
        for key, value in signal_size(adv, batch).items():  # how far the method moves GRPO's advantages
            self._metrics[mode][f"divrl/{key}"].append(value)
        self.last_group_prompts = [group[0] for group in prompt_groups]
        flat = adv.reshape(-1).to(out["advantages"])  # (N,)
        out["advantages"] = flat[local]  # (B,)
        logged = cast("deque[float]", self._logs["advantages"])  # replace TRL's logged (original) advantages with ours
        for _ in range(min(flat.numel(), len(logged))):
            logged.pop()
        logged.extend(flat.tolist())
        if batch.partition is not None and batch.correct is not None:  # group_batch was given correct= above
            classes = (batch.partition.sort(-1).values.diff(dim=-1) != 0).sum(-1) + 1  # (P,)
            self._metrics[mode]["divrl/classes_per_group"].append(classes.float().mean().item())
            dcc = distinct_correct_classes(batch.partition.tolist(), batch.correct)  # core.metrics' one definition
            self._metrics[mode]["divrl/distinct_correct_classes"].append(dcc)
        return out

    def _divrl_mode(self) -> str:
        return "train" if self.model is not None and self.model.training else "eval"

    def compute_group_advantages(self, batch: GroupBatch) -> Tensor:
        """``(P, G)`` advantages for the gathered groups; override to plug in another computation."""
        assert self.divrl_advantage is not None
        return compute_advantages(self.divrl_advantage, batch, **self.divrl_advantage_options)

    def _partition(self, prompts: list[Any], texts: list[list[str]]) -> Tensor | None:
        """(P, G) labels, each group partitioned by one process (round-robin), then gathered to all."""
        if self.divrl_partition_fn is None and self.divrl_partition_key is None:
            return None
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        mine = [
            (i, _labels(prompts[i], texts[i], self.divrl_partition_fn, self.divrl_partition_key))
            for i in range(rank, len(texts), world)
        ]
        pairs = gather_object(mine) if world > 1 else mine
        by_group = dict(pairs)
        return labels_tensor([by_group[i] for i in range(len(texts))])  # (P, G)

    def _embed(self, texts: list[list[str]], correct: Tensor) -> Tensor | None:
        """(P, G, D) embeddings, each group embedded by one process (round-robin), then gathered to all."""
        if self.divrl_embedder is None:
            return None
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        idx = list(range(rank, len(texts), world))  # this process's groups, embedded in one batched call
        emb = (
            embed_groups([texts[i] for i in idx], self.divrl_embedder, self.divrl_embed_rows, correct[idx])
            if idx
            else None
        )
        mine = [(i, emb[k]) for k, i in enumerate(idx)] if emb is not None else []  # (G, D) each
        by_group = dict(gather_object(mine) if world > 1 else mine)
        return torch.stack([by_group[i].cpu() for i in range(len(texts))])  # (P, G, D)

    # -- overrides 3 and 4: R1-zero-Div's term on the training forward pass ----------------------------------------

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
        result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self.divrl_positive_entropy is not None and kwargs.get("compute_entropy"):
            self._divrl_forward = (result[0], result[1])  # (B, T) each, with grad in training
        return result

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> Tensor:
        self._divrl_forward = None
        loss: Tensor = super()._compute_loss(model, inputs)  # type: ignore[no-untyped-call]
        if self.divrl_positive_entropy is None:
            return loss
        if self._divrl_forward is None:
            raise RuntimeError("DiversityGRPOTrainer: no training forward was seen (did TRL 1.16's flow change?)")
        logps, entropies = self._divrl_forward
        self._divrl_forward = None
        mask = inputs["completion_mask"]  # (B, T)
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]  # (B, T)
        old = inputs.get("old_per_token_logps")  # (B, T) or None: on-policy
        batch = GroupBatch(  # one "group" of the B local sequences; the term needs no group structure
            rewards=torch.zeros(1, logps.shape[0], device=logps.device),  # (1, B) unused
            correct=inputs["divrl_correct"].bool()[None],  # (1, B)
            logprobs=logps[None],  # (1, B, T)
            old_logprobs=None if old is None else old[None],  # (1, B, T)
            mask=mask[None],  # (1, B, T)
            entropies=None if entropies is None else entropies[None],  # (1, B, T)
        )
        term = compute_loss("positive_entropy", batch, inputs["advantages"][None], **self.divrl_positive_entropy)
        mode = self._divrl_mode()
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
        for name, value in term.metrics.items():
            stat = self.accelerator.gather(torch.tensor([value], device=logps.device)).mean().item()
            self._metrics[mode][f"divrl/{name}"].append(stat)
        return loss + term.loss / accumulation
