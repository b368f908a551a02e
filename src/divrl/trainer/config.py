"""Documented config dataclasses for the RL trainer and the supervised warm start.

Every field has a docstring; YAML recipes under ``configs/`` hold only values, and any field can be
overridden from the command line as ``--set section.field=value``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from divrl.config import ConfigError


def _require(ok: bool, name: str, rule: str, value: Any) -> None:
    """Raise ConfigError ``name: must be <rule>, got <value>`` unless ``ok`` (``from_dict`` prefixes the section)."""
    if not ok:
        raise ConfigError(f"{name}: must be {rule}, got {value!r}")


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@dataclass(frozen=True)
class ModelConfig:
    path: str = "builtin:countdown-tiny"
    """Policy to start from: a local ``save_pretrained`` folder, a hub id, or ``builtin:countdown-tiny``
    (the pre-trained tiny Countdown base shipped with divrl)."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Parameter dtype: ``auto`` = bfloat16 on GPU, float32 on CPU."""
    lora_r: int = 0
    """LoRA rank (Hu et al. 2021) through ``peft`` (``pip install divrl[lora]``); 0 = full fine-tuning. With r > 0
    only the adapters train, the KL reference (``beta`` > 0) is the same weights with the adapters disabled, and a
    checkpoint holds just the adapter and the tokenizer (``load_policy`` reloads the base from ``path``)."""
    lora_alpha: int = 16
    """LoRA scale numerator: an adapter adds ``(lora_alpha / lora_r) · B A x`` to each targeted layer."""
    lora_dropout: float = 0.0
    """Dropout on the adapters' input during training (resumes stay exact: the trainer reseeds torch every step)."""
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Names of the linear layers that get adapters; the default covers the attention and MLP projections of
    Llama / Qwen2 (and most decoder-only models in transformers)."""


@dataclass(frozen=True)
class TaskConfig:
    name: str = "countdown"
    """A task registered in ``divrl.tasks`` (``countdown``, ...)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the task's config (e.g. ``num_numbers``, ``min_classes``)."""
    split: str = "train"
    """Split the RL prompts are drawn from."""


@dataclass(frozen=True)
class RolloutConfig:
    prompts_per_step: int = 16
    """P: prompts sampled per step."""
    group_size: int = 16
    """G: completions per prompt (one group)."""
    temperature: float = 1.0
    """Sampling temperature (log-probs in the loss use the same temperature, as TRL does)."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_new_tokens: int = 64
    """Cap on completion length in tokens."""
    batch_size: int = 512
    """Rows decoded at once (``hf`` backend)."""
    backend: Literal["hf", "vllm"] = "hf"
    """``hf``: divrl's KV-cache loop on the policy itself (CPU or GPU). ``vllm``: a colocated vLLM engine that
    gets the policy's weights before every step (GPU and ``pip install vllm``; written to TRL's colocate pattern
    and tested against a fake vLLM only, see ``divrl.rollout.vllm_backend``)."""
    vllm_gpu_memory_utilization: float = 0.3
    """Share of GPU memory vLLM may take (the rest is the policy's and the optimizer's)."""
    filter_groups: Literal["none", "reward", "correct"] = "none"
    """DAPO's dynamic sampling (Yu et al., arXiv 2503.14476: the constraint ``0 < |{o_i : o_i correct}| < G`` of its
    objective; verl's ``algorithm.filter_groups``):
    drop every group whose ``reward`` (the verifier's scored rewards) or ``correct`` (correctness; verl's ``acc``)
    does not vary, and draw more prompts in further generation rounds until ``prompts_per_step`` groups remain; the
    first ``prompts_per_step`` kept, in draw order, are trained on. A group with no variation has GRPO advantage 0
    everywhere, so the filter gives every step ``prompts_per_step`` groups with a learning signal at the cost of
    extra sampling. ``none`` (the default) draws once, as before. Logged per step: ``filter/gen_rounds``,
    ``filter/drawn_groups``, ``filter/kept_frac`` (informative share of the drawn groups) and
    ``filter/drawn_accuracy`` (accuracy over every drawn rollout; ``accuracy`` and ``reward`` are the trained
    batch's, as verl logs them). A prompt selector (gdro) learns from every drawn group."""
    gen_prompts: int = 0
    """Prompts drawn per generation round when ``filter_groups`` is on (verl's ``data.gen_batch_size``; 0 =
    ``prompts_per_step``). Later rounds of a step draw problems not yet drawn in it (uniform draw; a prompt selector
    such as gdro draws from the whole pool every round)."""
    max_gen_rounds: int = 10
    """Generation rounds per step before a step with too few informative groups stops the run with an error naming
    this field (verl's ``max_num_gen_batches``, whose DAPO recipe uses 10; 0 = no limit). Checkpoints already
    written stay; ``divrl train --resume RUN --set rollout.max_gen_rounds=0`` continues."""

    def __post_init__(self) -> None:
        for name in ("prompts_per_step", "group_size", "max_new_tokens", "batch_size"):
            _require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        for name in ("gen_prompts", "max_gen_rounds"):
            _require(getattr(self, name) >= 0, name, ">= 0", getattr(self, name))
        _require(_finite(self.temperature) and self.temperature > 0, "temperature", "> 0", self.temperature)
        _require(_finite(self.top_p) and 0 < self.top_p <= 1, "top_p", "in (0, 1]", self.top_p)
        u = self.vllm_gpu_memory_utilization
        _require(_finite(u) and 0 < u <= 1, "vllm_gpu_memory_utilization", "in (0, 1]", u)


@dataclass(frozen=True)
class PartitionConfig:
    source: Literal["none", "exact", "answer", "text", "learned"] = "none"
    """Semantic classes of a group: ``exact`` = the task's canonical form of the solution, ``answer`` =
    equality of extracted final answers, ``text`` = identical completion strings (a surface-level baseline),
    ``learned`` = a trained equivalence classifier, ``none``."""
    checkpoint: str | None = None
    """Classifier checkpoint for ``source: learned``."""
    members: Literal["all", "correct"] = "all"
    """Which rollouts the classes are formed among (the word and values of setpo's ``members``): ``all``, or
    ``correct`` (reward-verified correct; an unscorable rollout is never correct): every other rollout is a class
    of its own (DARLING's ``partition_correct`` variant; its released math script partitions all rollouts). For
    ``darling`` this changes nothing with the ``exact`` source (a correct and an incorrect solution never share a
    canonical form) and, with ``learned``, stops an incorrect rollout from joining a correct one's class; it embeds
    and compares only the correct rollouts, which is what makes a learned partition cheap (docs/results.md)."""

    RETIRED: ClassVar[dict[str, str]] = {
        "only_correct": "renamed partition.members (all | correct): only_correct: true is members: correct",
    }
    RETIRED_DEFAULTS: ClassVar[dict[str, Any]] = {"only_correct": False}


@dataclass(frozen=True)
class AdvantageConfig:
    name: str = "grpo"
    """An estimator in ``divrl.core.advantages`` (grpo, dr_grpo, rloo, darling, setpo, ...)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of that estimator."""


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "standard"
    """How each prompt's G completions are sampled (``divrl.rollout.strategies.SAMPLERS``): ``standard`` =
    independent samples (``rollout.backend`` hf or vllm); ``latr`` = lookahead tree-based rollouts (arXiv
    2510.24302: fork at uncertain tokens, prune near-duplicate forks after a lookahead window; ``rollout.backend: hf``
    only)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Options of that sampler (``latr``: the fields of ``divrl.rollout.latr.LatrOptions``, e.g. ``windows``,
    ``prob_abs``, ``mix_ratio_schedule``)."""


@dataclass(frozen=True)
class PromptSelectorConfig:
    name: str = "uniform"
    """How each step's ``rollout.prompts_per_step`` problems are chosen (``divrl.rollout.strategies.PROMPT_SELECTORS``):
    ``uniform`` = distinct problems uniformly at random; ``gdro`` = Prompt-GDRO (arXiv 2601.19280): multiplicative
    weights over difficulty bins of the running per-problem pass rate, its state saved in every checkpoint."""
    options: dict[str, Any] = field(default_factory=dict)
    """Options of that selector (``gdro``: the fields of ``divrl.core.gdro.GdroOptions``, e.g. ``edges``, ``eta``)."""


@dataclass(frozen=True)
class LossTermConfig:
    name: str = "ppo"
    """An entry of ``divrl.core.losses`` (ppo, positive_entropy, entropy_bonus, ...)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of that loss."""


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-4
    """Peak AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    schedule: Literal["constant", "cosine"] = "constant"
    """Learning-rate shape after warm-up."""
    min_lr_ratio: float = 0.1
    """Cosine floor as a fraction of ``lr``."""

    def __post_init__(self) -> None:
        for name in ("lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            _require(_finite(value) and value >= 0, name, "a finite number >= 0", value)
        _require(self.warmup_steps >= 0, "warmup_steps", ">= 0", self.warmup_steps)
        _require(
            _finite(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "in [0, 1]", self.min_lr_ratio
        )
        _require(
            len(self.betas) == 2 and all(_finite(b) and 0 <= b < 1 for b in self.betas),
            "betas",
            "two numbers in [0, 1)",
            self.betas,
        )


@dataclass(frozen=True)
class RLConfig:
    """One RL run: rollout → verify → GroupBatch → signals → advantage → loss → AdamW step."""

    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    prompt_selector: PromptSelectorConfig = field(default_factory=PromptSelectorConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    embedder: str | None = None
    """Sentence embedder for ``GroupBatch.embeddings``: ``all-MiniLM-L6-v2`` (packaged, ``divrl[semantic]``),
    ``char-ngram[:N[:D]]`` (hashed character n-grams, no weights), or a sentence-transformers folder / cached hub
    id; ``None`` = no embeddings. Only an entry that reads embeddings uses it (``setpo``, ``dra``, ``dsdr`` and the
    ``dsdr_entropy`` loss with the option ``kernel: cosine``; their default kernel is ``ngram``), so it is refused
    when none does. It embeds exactly the rollouts they read: only the correct ones when every reader reads only
    those (e.g. setpo with ``members: correct``; the others get zero vectors), else all."""
    loss: list[LossTermConfig] = field(default_factory=lambda: [LossTermConfig()])
    """Loss terms, summed; the first is normally ``ppo`` (its ``beta`` > 0 loads a frozen reference)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 60
    """Optimizer steps (one rollout batch per step when ``num_iterations`` = 1)."""
    num_iterations: int = 1
    """Optimizer passes over each rollout batch (> 1 reuses stored old log-probs: off-policy PPO)."""
    mini_batches: int = 1
    """Optimizer steps per pass: each rollout batch's groups are split, in order, into this many equal mini-batches,
    each its own AdamW step (verl's ``data.train_batch_size / actor.ppo_mini_batch_size``, TRL's
    ``steps_per_generation``). > 1 costs no extra training forward, but the policy moves within the batch, so the
    old-log-prob pass runs and PPO's clip applies from the second mini-batch on. ``rollout.prompts_per_step`` must be
    a multiple of it; ``micro_batch_prompts`` then splits each mini-batch; the lr schedule steps once per batch."""
    micro_batch_prompts: int = 0
    """Prompts per forward/backward chunk (0 = the whole step at once); losses are averaged over chunks."""
    length_buckets: int = 4
    """Rows of each chunk sorted by completion length into this many sub-batches for the log-prob forward, each
    cut to its longest completion, so padding is not computed (same values up to float rounding; 1 = off)."""
    prefix_sharing: bool = False
    """Run each prompt once per length bucket and let its KV cache serve its G completions in the training, old-pass
    and reference forwards (:func:`divrl.rollout.token_statistics` ``group_size``), instead of repeating the prompt
    in every row: the same values up to float rounding (cached vs full attention, as the sampler computes them), 27%
    less forward/backward time on the Countdown testbed (docs/results.md). Off by default for now, so that the
    recorded figures (README, leaderboard) reproduce digit for digit; a model without a transformers KV cache runs
    the plain forward."""
    compile: bool = False
    """``torch.compile`` the policy's training forward (dynamic shapes; sampling stays eager). Costs a one-off
    compile (≈ 45 s cold, ≈ 10 s from inductor's disk cache, on 2 CPU cores) and needs a C++ compiler on CPU.
    On the Countdown testbed it made whole steps at most ~10% faster (docs/results.md)."""
    seed: int = 0
    """Seeds prompt choice, sampling and initialisation; a resumed run reproduces an uninterrupted one."""
    save_every: int = 20
    """Checkpoint every N steps (and at the end)."""
    keep_checkpoints: int = 1
    """How many step checkpoints to keep."""
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    name: str = ""
    """Run name shown in tables (defaults to the advantage name)."""
    eval_every: int = 0
    """Evaluate every N steps (0 = never): ``eval_problems`` problems of ``eval_split``, ``eval_n`` samples each, by
    ``divrl eval``'s code with seed 0, ``rollout.temperature`` and ``rollout.max_new_tokens``. The metrics go into
    that step's record of ``metrics.jsonl`` and TensorBoard as ``eval/<name>`` (``eval/pass@1``, ``eval/pass@<n>``,
    ``eval/distinct_correct_classes``, ``eval/entropy``, ...; meanings: ``divrl eval --help``), and equal ``divrl eval
    --split <eval_split> --problems <eval_problems> --n <eval_n> --seed 0`` (same temperature and max new tokens) on
    the policy of that step: a curve of pass@1 rising while pass@<n> and distinct correct classes fall is diversity
    collapsing. Each evaluation costs ``eval_problems * (eval_n + 1)`` completions."""
    eval_split: str = "val"
    """Split (or problem file) of the task evaluated every ``eval_every`` steps; keep it apart from ``task.split``."""
    eval_problems: int = 32
    """Problems evaluated every ``eval_every`` steps (the first of ``eval_split``; the same ones each time)."""
    eval_n: int = 8
    """Samples per problem of the periodic evaluation (pass@k for k = 1, 2, 4, ..., eval_n)."""

    RETIRED: ClassVar[dict[str, str]] = {
        "embed_rows": (
            "removed: the embedder embeds the rollouts the estimator and loss terms declare they read (only the "
            "correct ones for setpo with advantage.options.members: correct); drop it"
        ),
    }
    RETIRED_DEFAULTS: ClassVar[dict[str, Any]] = {"embed_rows": "all"}

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "num_iterations",
            "mini_batches",
            "length_buckets",
            "save_every",
            "eval_problems",
            "eval_n",
        ):
            _require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        for name in ("micro_batch_prompts", "keep_checkpoints", "threads", "eval_every"):
            _require(getattr(self, name) >= 0, name, ">= 0", getattr(self, name))
        per_step = self.rollout.prompts_per_step
        _require(
            per_step % self.mini_batches == 0,
            "mini_batches",
            f"a divisor of rollout.prompts_per_step ({per_step}) so that mini-batches are equal",
            self.mini_batches,
        )


@dataclass(frozen=True)
class PretrainConfig:
    """Supervised warm start on solver-generated solutions (one solution class drawn uniformly per problem)."""

    task: TaskConfig = field(default_factory=lambda: TaskConfig(options={"min_classes": 1}))
    """Task and split to warm-start on; all train problems by default (single-class ones included)."""
    size: str = "tiny"
    """Named policy size (``tiny`` ≈ 1M params, ``small`` ≈ 4M)."""
    arch: Literal["llama", "qwen2"] = "llama"
    """transformers architecture of the policy."""
    steps: int = 400
    """Optimizer steps."""
    batch_size: int = 128
    """Sequences per step."""
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=2e-3, warmup_steps=20, schedule="cosine", min_lr_ratio=0.1)
    )
    seed: int = 0
    """Seeds initialisation and data order."""
    save_every: int = 100
    """Checkpoint every N steps (and at the end)."""
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    max_minutes: float = 0.0
    """Stop early (and save) after this many minutes; 0 = no limit."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "save_every"):
            _require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        _require(self.threads >= 0, "threads", ">= 0", self.threads)
        _require(_finite(self.max_minutes) and self.max_minutes >= 0, "max_minutes", ">= 0", self.max_minutes)
