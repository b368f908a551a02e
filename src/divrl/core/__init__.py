"""The pure group layer: GroupBatch, diversity signals, advantage estimators, policy losses, metrics.

Imports only torch, numpy and the standard library (``self_bleu`` imports sacrebleu lazily).
"""

from divrl.core.batch import GroupBatch
from divrl.core.needs import Needs
from divrl.core.registry import Registry, UnknownNameError

__all__ = ["GroupBatch", "Needs", "Registry", "UnknownNameError"]

from divrl.core.advantages import (
    ADVANTAGES,
    advantage_is_stateful,
    advantage_is_token_level,
    advantage_names,
    advantage_needs,
    advantage_needs_logprobs,
    compute_advantages,
    compute_advantages_and_state,
    get_advantage,
    register_advantage,
    setpo_bonus,
)
from divrl.core.answer_estimators import outcome_batch, seed_grpo, semantic_entropy  # registers both
from divrl.core.diversity import (
    cosine_kernel,
    darling_diversity,
    labels_tensor,
    ngram_kernel,
    partition,
    partition_by_key,
    setpo_marginal_contributions,
)
from divrl.core.losses import (
    LOSSES,
    LossOutput,
    aggregate,
    compute_loss,
    get_loss,
    loss_names,
    loss_needs,
    masked_mean,
    register_loss,
)
from divrl.core.metrics import (
    answer_entropy,
    correct_classes,
    distinct_correct_classes,
    distinct_n,
    div_equ,
    mean_pairwise_cosine_distance,
    mean_pass_at_k,
    num_classes,
    pass_at_k,
    pass_at_k_array,
    potential_at_k,
    self_bleu,
)
from divrl.core.outcome_ucb import outcome_ucb_bonus  # registers the stateful estimator ``outcome_ucb``
from divrl.core.pkpo import pkpo  # registers it

__all__ += ["LOSSES", "LossOutput", "aggregate", "compute_loss", "get_loss", "loss_names"]
__all__ += ["loss_needs"]
__all__ += ["masked_mean", "register_loss"]
__all__ += ["correct_classes", "distinct_correct_classes"]
__all__ += ["answer_entropy", "distinct_n", "div_equ", "mean_pairwise_cosine_distance", "mean_pass_at_k"]
__all__ += ["num_classes", "pass_at_k", "pass_at_k_array", "potential_at_k", "self_bleu"]

__all__ += ["ADVANTAGES", "advantage_names", "advantage_needs_logprobs", "compute_advantages", "get_advantage"]
__all__ += ["advantage_needs", "register_advantage"]
__all__ += ["setpo_bonus"]
__all__ += ["advantage_is_stateful", "compute_advantages_and_state", "outcome_ucb_bonus"]
__all__ += ["advantage_is_token_level"]
__all__ += ["cosine_kernel", "darling_diversity", "labels_tensor", "ngram_kernel", "partition", "partition_by_key"]
__all__ += ["setpo_marginal_contributions"]
__all__ += ["outcome_batch", "pkpo", "seed_grpo", "semantic_entropy"]

# registers the estimators "arm" (ProGRPO's ARM), "dra" (DRA-GRPO), "dsdr" (with the loss "dsdr_entropy") and the
# token-level "ucas"
from divrl.core import arm, dra, dsdr, ucas  # noqa: E402

__all__ += ["arm", "dra", "dsdr", "ucas"]

from divrl.core import repexp  # noqa: E402  registers "repexp" (representation-based exploration)

__all__ += ["repexp"]

from divrl.core import flowrl, rover  # noqa: E402  registers the policy losses "flowrl" and "rover"

__all__ += ["flowrl", "rover"]
