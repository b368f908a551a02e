"""divrl inside verl 0.9: estimators and a policy loss in verl's registries, plus a trainer for text-based signals.

The adapter only translates. verl hands an advantage estimator a flat batch: ``token_level_rewards`` and
``response_mask`` of shape ``(bs, T)`` and ``index``, the ``uid`` of each row's prompt, as a numpy array of strings.
The rows of a group may be scattered anywhere in the batch, and groups may differ in size. This package:

1. groups the rows by uid (:func:`group_rows`);
2. builds one ``GroupBatch`` of shape ``(P, G)`` per group size;
3. runs :func:`divrl.core.advantages.compute_advantages`;
4. writes the values back to their rows and broadcasts them over the response tokens: ``(bs, T)`` advantages and
   returns, as verl's own GRPO does.

**Unequal group sizes** (rollouts evicted after a failure, multi-output agent loops) are handled exactly. Groups of
equal size are batched together and each size is computed separately, so every per-group estimator gives the same
values as on a batch of whole groups. Padding would not: a padded member changes the group std, G and DARLING's
``G - 1``. Batch-level statistics (``scale="batch"``) would then cover only one size bucket, so that combination
raises instead.

**Unscorable rows.** A verl reward function returns a number, never ``None``. For a response that cannot be scored
(a verifier timeout), return ``float("nan")`` as its score: verl puts it on the last response token, the row's summed
score is NaN, and divrl treats the row as ``divrl.core`` treats any NaN reward: it takes no part in its group's
statistics (mean, std, leave-one-out, ranks, classes, kernels), gets advantage 0 on every token and is never
``correct``. verl's own score metrics (``critic/score/*``) average over every row and show NaN for such a step.

Three ways in, all loaded with ``import verl`` in every process verl starts (driver, trainer, workers) through the
``verl.plugins`` entry point ``divrl = "divrl.integrations.verl_plugin"`` (verl 0.9 ``verl/__init__.py``;
``VERL_USE_EXTERNAL_PLUGINS=none`` turns plugins off):

=================================  =================================================================================
``algorithm.adv_estimator=``        ``divrl_<name>`` for every divrl estimator (``divrl_grpo``, ``divrl_dr_grpo``,
                                    ``divrl_rloo``, ``divrl_passk``, ``divrl_darling``, ``divrl_setpo``, ...).
                                    Options come from ``+algorithm.divrl_options.<key>=...``; a cosine kernel
                                    (``kernel=cosine``: setpo, dra, dsdr) embeds with
                                    ``+algorithm.divrl_embedder=all-MiniLM-L6-v2``, only the rows the estimator
                                    declares it reads (the correct ones for setpo ``members=correct`` and dsdr).
``actor_rollout_ref.actor.policy_   ``divrl_positive_entropy``: verl's ``vanilla`` PPO loss plus R1-zero-Div's term
loss.loss_mode=``                   (:func:`positive_entropy_term`). Its gate must be set, e.g.
                                    ``DIVRL_VERL_POSITIVE_ENTROPY=gate=positive_advantage``: verl cannot serve
                                    divrl.core's default ``gate=correct``
``trainer.v1.trainer_mode=``        ``divrl_sync``: verl's sync trainer, which also hands each estimator call the
                                    rows' response texts and reward extra info (:class:`DivrlAdvantageMixin`).
                                    DARLING's partition and SetPO's n-gram kernel need it
=================================  =================================================================================

**What relies on verl internals.** The registries, the estimator call and the policy-loss call are public, documented
extension points. The ``divrl_sync`` trainer overrides the private ``PPOTrainer._compute_advantage(batch, metrics)``
(verl 0.9 ``verl/trainer/ppo/v1/trainer_base.py``). It reads the fields ``uid``, ``responses`` and
``extra_fields["reward_extra_info"]`` from TransferQueue, and relies on two facts: verl computes advantages over the
rows in ``batch.keys`` order, and it calls the estimator in the trainer process. The per-row uids are checked against
verl's ``index`` on every call, so a change in row order raises instead of mixing signals up. Pinned by the extra
``divrl[verl]`` (``verl>=0.9,<0.10``); ``tests/integrations/verl`` checks these contracts.

The package, one module per concern (every name below is re-exported here):

=================================  =================================================================================
:mod:`~.config`                     verl-facing names, the lazy verl import, reading ``algorithm.divrl_*``
:mod:`~.groups`                     the translation: uid groups, size buckets, ``(bs,)`` <-> ``(P, G)``, stats
:mod:`~.side_info`                  per-sample texts, keys, correctness; the per-call checks; the embedder
:mod:`~.estimators`                 ``divrl_<name>`` estimators, and which estimators verl cannot run
:mod:`~.policy_loss`                ``divrl_positive_entropy`` and its options; which divrl losses verl runs
:mod:`~.trainer`                    the ``divrl_sync`` trainer (the only module on verl internals)
=================================  =================================================================================

Only the verl-facing functions import verl, and they do it lazily (:func:`~.config._verl_module`): importing this
package imports torch, numpy and divrl, not verl. The translation helpers (:func:`group_rows`,
:func:`token_advantages`, :func:`positive_entropy_term`, ...) need only torch and numpy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from divrl.core.advantages import ADVANTAGES
from divrl.integrations.verl.config import (
    ESTIMATOR_PREFIX,
    INSTALL_HINT,
    TESTED_VERL,
    TRAINER_MODE,
    EstimatorConfig,
    embedding_rows,
    load_callable,
    read_estimator_config,
)
from divrl.integrations.verl.estimators import _unsupported as _unsupported  # tests and checks read it
from divrl.integrations.verl.estimators import make_estimator, register_estimator
from divrl.integrations.verl.groups import PartitionFn, group_advantages, group_rows, token_advantages
from divrl.integrations.verl.policy_loss import (
    POSITIVE_ENTROPY_ENV,
    POSITIVE_ENTROPY_LOSS,
    check_loss,
    make_positive_entropy_loss,
    positive_entropy_term,
    register_positive_entropy_loss,
    term_options,
)
from divrl.integrations.verl.side_info import (
    EXTRA_CORRECT,
    EXTRA_KEY,
    EXTRA_TEXT,
    VERL_CAN_PROVIDE,
    SampleInfo,
    sample_info_from_rows,
    use_sample_info,
)
from divrl.integrations.verl.trainer import DivrlAdvantageMixin, check_config, register_trainer

__all__ = [
    "ESTIMATOR_PREFIX",
    "EXTRA_CORRECT",
    "EXTRA_KEY",
    "EXTRA_TEXT",
    "INSTALL_HINT",
    "POSITIVE_ENTROPY_ENV",
    "POSITIVE_ENTROPY_LOSS",
    "TESTED_VERL",
    "TRAINER_MODE",
    "VERL_CAN_PROVIDE",
    "DivrlAdvantageMixin",
    "EstimatorConfig",
    "PartitionFn",
    "SampleInfo",
    "check_config",
    "check_loss",
    "embedding_rows",
    "group_advantages",
    "group_rows",
    "load_callable",
    "make_estimator",
    "make_positive_entropy_loss",
    "positive_entropy_term",
    "read_estimator_config",
    "register",
    "register_estimator",
    "register_positive_entropy_loss",
    "register_trainer",
    "sample_info_from_rows",
    "term_options",
    "token_advantages",
    "use_sample_info",
]

logger = logging.getLogger(__name__)


def register(*, estimators: Sequence[str] | None = None, losses: bool = True, trainer: bool = True) -> list[str]:
    """Register divrl's estimators (all supported ones by default), the policy loss and the ``divrl_sync`` trainer.

    Idempotent. A trainer that cannot be registered (e.g. TransferQueue missing) is logged and skipped: the
    estimators and the loss still work. Returns the registered verl names.
    """
    names = [n for n in ADVANTAGES.names() if _unsupported(n) is None] if estimators is None else list(estimators)
    registered = [register_estimator(n) for n in names]
    if losses:
        registered.append(register_positive_entropy_loss())
    if trainer:
        try:
            register_trainer()
            registered.append(TRAINER_MODE)
        except ImportError as exc:
            logger.warning("divrl: trainer.v1.trainer_mode=%s is unavailable: %s", TRAINER_MODE, exc)
    return registered
