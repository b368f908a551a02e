"""The single-machine RL loop. One step reads as one chain:

    prompts → rollout (G samples each) → verify → GroupBatch → diversity signals (partition)
            → advantages (registry) → policy loss terms (registry) → AdamW step

Every random choice of a step (which prompts, which samples) is seeded from ``(seed, step)``, so a run
resumed from a checkpoint reproduces the uninterrupted run exactly (on the same machine and threads).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from divrl.config import ConfigError, save_yaml
from divrl.core.advantages import (
    advantage_is_stateful,
    advantage_needs,
    compute_advantages,
    compute_advantages_and_state,
)
from divrl.core.batch import GroupBatch
from divrl.core.flowrl import flowrl_head_options
from divrl.core.losses import compute_loss, loss_needs
from divrl.core.needs import Needs
from divrl.signals import (
    Scored,
    distinct_correct_classes,
    embed_groups,
    group_batch,
    partition_labels,
    score,
    select_groups,
    signal_size,
)
from divrl.tasks.base import Task, problem_id
from divrl.trainer.common import (
    TRAIN_RUN,
    MetricLogger,
    RunFolderError,
    Timer,
    build_optimizer,
    build_scheduler,
    check_run_folder,
    derive_seed,
    input_errors,
    load_task,
    load_trainer_state,
    remove_run,
    resume_checkpoint,
    save_checkpoint,
    seed_everything,
    set_threads,
)
from divrl.trainer.config import RLConfig
from divrl.trainer.plan import OLD_PASS, ON_POLICY, TRAIN_PASS, check_methods, check_rollout_side, forward_plan


def resolve_dtype(name: str, device: torch.device | None = None) -> str:
    """``auto`` = bfloat16 on a GPU, float32 on CPU (bf16 autocast was no faster on the project's AMX CPU box at the
    testbed's size, docs/results.md); ``device``: the one the model goes to (``None``: a GPU when torch sees one)."""
    if name == "auto":
        gpu = torch.cuda.is_available() if device is None else device.type == "cuda"
        return "bfloat16" if gpu else "float32"
    return name


class RLTrainer:
    """Owns the policy, optimizer and run folder of one RL run. ``run()`` trains to ``cfg.steps``.

    ``run_dir`` must not hold a run (``config.yaml``, ``metrics.jsonl``, checkpoints) unless ``resume`` (continue
    it from its latest complete checkpoint) or ``overwrite`` (remove it, after every input check passed and before
    the first write) is given; else :class:`~divrl.trainer.common.RunFolderError`, with nothing written.

    ``device``: where the policy trains (``"cpu"``, ``"cuda"``); ``None``, the default: a GPU when torch sees one, else
    the CPU. Not a config field: it does not change what is trained, only where (and the float rounding)."""

    def __init__(
        self,
        cfg: RLConfig,
        run_dir: str | Path,
        resume: bool = False,
        progress: bool = True,
        overwrite: bool = False,
        device: str | None = None,
    ) -> None:
        from divrl.models import load_policy
        from divrl.models.lora import apply_lora

        self.run_dir = Path(run_dir)
        old_run = check_run_folder(self.run_dir, TRAIN_RUN, resume=resume, overwrite=overwrite)
        check_methods(cfg)
        self.sampler, self.sampler_options, self.selector, self.selector_options = check_rollout_side(cfg)
        self.cfg = cfg
        self.needs = advantage_needs(cfg.advantage.name, cfg.advantage.options)  # what the estimator reads
        self.stateful = advantage_is_stateful(cfg.advantage.name)  # e.g. outcome_ucb: per-problem history
        self.loss_reads = Needs()  # what the loss terms read together (e.g. dsdr_entropy: texts or embeddings)
        for term in cfg.loss:
            self.loss_reads = self.loss_reads | loss_needs(term.name, term.options)
        updates = cfg.num_iterations * cfg.mini_batches  # AdamW steps per rollout batch
        self.plan = forward_plan(self.needs, self.loss_reads, updates)  # what each forward computes
        self.advantage_state: dict[str, Any] = {}  # problem id -> the estimator's record; in every checkpoint
        self.progress = progress
        set_threads(cfg.threads)
        seed_everything(cfg.seed)
        self.task: Task
        self.task, self.problems = load_task(cfg.task)
        self.periodic_eval = self._periodic_eval() if cfg.eval_every else None  # its split is checked before writing
        if len(self.problems) < cfg.rollout.prompts_per_step:
            raise ConfigError(
                f"task {cfg.task.name!r} split {cfg.task.split!r} has {len(self.problems)} problems, fewer than "
                f"rollout.prompts_per_step={cfg.rollout.prompts_per_step}"
            )
        if cfg.rollout.filter_groups != "none" and len(self.problems) < cfg.rollout.gen_prompts:
            raise ConfigError(
                f"task {cfg.task.name!r} split {cfg.task.split!r} has {len(self.problems)} problems, fewer than "
                f"rollout.gen_prompts={cfg.rollout.gen_prompts}"
            )
        # a stateful prompt selector (gdro): its state (bin weights, per-problem rates) is in every checkpoint
        self.selector_state: Any = (
            self.selector.initial_state(self.selector_options) if self.selector.stateful else None
        )
        uniform = cfg.prompt_selector.name == "uniform"
        self.problem_ids = None if uniform else [problem_id(p) for p in self.problems]
        self.start_step = 0
        checkpoint = resume_checkpoint(self.run_dir) if resume else None
        state = load_trainer_state(checkpoint) if checkpoint is not None else None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        source = str(checkpoint) if checkpoint else cfg.model.path
        with input_errors(f"{checkpoint}" if checkpoint else f"model.path {cfg.model.path!r}"):
            self.model, self.tokenizer = load_policy(
                source,
                device=self.device,
                dtype=resolve_dtype(cfg.model.dtype, self.device),
                trainable_adapter=checkpoint is not None,  # a LoRA checkpoint resumes with trainable adapters
            )
        with input_errors("model.lora_*", catch=(ValueError, ImportError)):
            self.model = apply_lora(self.model, cfg.model)  # model.lora_r > 0: only the adapters train
        self.learned = self.embedder = None
        if cfg.partition.source == "learned":
            if not cfg.partition.checkpoint:
                raise ConfigError(
                    "partition.source 'learned' needs partition.checkpoint (from `divrl classifier train`)"
                )
            from divrl.semantic import learned_partition

            with input_errors(f"partition.checkpoint {cfg.partition.checkpoint!r}"):
                self.learned = learned_partition(cfg.partition.checkpoint, device=str(self.device))
        if cfg.embedder:
            from divrl.semantic import load_embedder

            with input_errors(f"embedder {cfg.embedder!r}"):
                self.embedder = load_embedder(cfg.embedder)
        self.model.train()
        if cfg.length_buckets < 1:
            raise ConfigError(f"length_buckets must be >= 1, got {cfg.length_buckets}")
        # the training forward; sampling calls self.model directly (a compiled KV-cache loop would recompile)
        self.train_model = torch.compile(self.model, dynamic=True) if cfg.compile else self.model
        self.ref_model = self._reference_model()
        self.vllm = self._vllm_sampler()
        self.log_z_head = self._log_z_head()  # flowrl: log Z(x), optimised with the policy, in every checkpoint
        self.optimizer = build_optimizer(self.model, cfg.optim, extra=self._head_parameters())
        self.scheduler = build_scheduler(self.optimizer, cfg.steps, cfg.optim)
        if state is not None:
            if self.log_z_head is not None:
                self._load_log_z_head(checkpoint, state)
            try:
                self.optimizer.load_state_dict(state["optimizer"])
                self.scheduler.load_state_dict(state["scheduler"])
            except (ValueError, KeyError, TypeError) as exc:
                raise RunFolderError(
                    f"{checkpoint}: its optimizer state does not fit this config ({exc}); resume with the run's own "
                    "model settings"
                ) from None
            self.start_step = int(state["step"])
            if self.stateful:
                self.advantage_state = self._load_advantage_state(checkpoint, state)
            if self.selector.stateful:
                self.selector_state = self._load_selector_state(checkpoint, state)
        remove_run(old_run)  # --overwrite: the old run goes just before the first write
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logger = MetricLogger(self.run_dir)
        if state is not None:
            self.logger.truncate_after(self.start_step)
        else:
            save_yaml(cfg, self.run_dir / "config.yaml")
        for task in (self.task, None if self.periodic_eval is None else self.periodic_eval.task):
            bind = getattr(task, "bind_tokenizer", None)
            if callable(bind):  # e.g. a chat template needs the policy's tokenizer
                bind(self.tokenizer)

    def _periodic_eval(self) -> Any:
        """The held-out evaluation of ``eval_every`` (:mod:`divrl.eval.periodic`): its own task object, so that
        evaluating never touches the training task's state."""
        from divrl.eval.periodic import PeriodicEval
        from divrl.trainer.config import TaskConfig

        cfg = self.cfg
        task_cfg = TaskConfig(name=cfg.task.name, options=cfg.task.options, split=cfg.eval_split)
        try:
            task, problems = load_task(task_cfg, n=cfg.eval_problems)
        except ConfigError as exc:
            raise ConfigError(f"eval_split {cfg.eval_split!r}: {exc}") from None
        ro = cfg.rollout
        return PeriodicEval(
            task, problems, n=cfg.eval_n, temperature=ro.temperature, max_new_tokens=ro.max_new_tokens, prefix="eval/"
        )

    def _vllm_sampler(self) -> Any:
        """A colocated vLLM engine for ``rollout.backend: vllm`` (else ``None``), started on the base model's
        folder; the policy's weights (adapters merged) are pushed into it before every step."""
        ro = self.cfg.rollout
        if ro.backend == "hf":
            return None
        if ro.backend != "vllm":
            raise ConfigError(f"rollout.backend must be 'hf' or 'vllm', got {ro.backend!r}")
        if self.device.type != "cuda":
            raise ConfigError("rollout.backend 'vllm' needs a CUDA GPU; on CPU use rollout.backend 'hf'")
        from divrl.models.builtin import resolve_model_path
        from divrl.rollout.vllm_backend import VLLMSampler

        return VLLMSampler(
            str(resolve_model_path(self.cfg.model.path)),
            self.tokenizer,
            gpu_memory_utilization=ro.vllm_gpu_memory_utilization,
            seed=self.cfg.seed,
        )

    def _log_z_head(self) -> Any:
        """FlowRL's learned log Z head (:class:`divrl.models.log_z.LogZHead`, float32) when a loss term declares it
        reads ``log_z``, else ``None``. Its initial weights are seeded from the run seed (not the global stream)."""
        terms = [t for t in self.cfg.loss if loss_needs(t.name, t.options).requires("log_z")]
        if not terms:
            return None
        from divrl.models.log_z import LogZHead

        with input_errors(f"loss {terms[0].name!r} (loss.options)", catch=(ValueError,)):
            layers, dropout = flowrl_head_options(terms[0].options)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.cfg.seed, 4))
            head = LogZHead(int(self.model.config.hidden_size), num_layers=layers, dropout=dropout)
        return head.to(self.device).train()

    def _head_parameters(self) -> list[torch.nn.Parameter]:
        return [] if self.log_z_head is None else list(self.log_z_head.parameters())

    def _load_log_z_head(self, checkpoint: Path | None, state: dict[str, Any]) -> None:
        """The log Z head's weights from ``trainer_state.pt``; a checkpoint without them is a one-line RunFolderError."""
        saved = state.get("log_z_head")
        try:
            if not isinstance(saved, dict):
                raise KeyError("no 'log_z_head'")
            self.log_z_head.load_state_dict(saved)
        except (KeyError, RuntimeError) as exc:
            raise RunFolderError(
                f"{checkpoint}: holds no fitting log Z head for the flowrl loss ({str(exc).splitlines()[0]}); resume "
                "with the run's own config, or --overwrite starts the run over"
            ) from None

    def _reference_model(self) -> Any:
        """The frozen reference policy when a loss term declares it reads ``ref_logprobs`` (``kl``, ``ppo`` with
        ``beta > 0``), else ``None``."""
        if not any(loss_needs(t.name, t.options).requires("ref_logprobs") for t in self.cfg.loss):
            return None
        if self.cfg.model.lora_r > 0:  # the same weights with the adapters switched off: no second copy
            from divrl.models.lora import AdaptersDisabled

            return AdaptersDisabled(self.model)
        from divrl.models import load_policy

        ref, _ = load_policy(
            self.cfg.model.path, device=self.device, dtype=resolve_dtype(self.cfg.model.dtype, self.device)
        )
        ref.eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref

    # ----------------------------------------------------------------------------------------------
    def run(self) -> list[dict[str, float]]:
        history = []
        bar = tqdm(
            range(self.start_step, self.cfg.steps),
            initial=self.start_step,
            total=self.cfg.steps,
            desc=self.cfg.name or self.cfg.advantage.name,
            disable=not self.progress,
            dynamic_ncols=True,
        )
        for step in bar:
            metrics = self.step(step)
            if self.periodic_eval is not None and (step + 1) % self.cfg.eval_every == 0:
                metrics.update(self.periodic_eval(self.model, self.tokenizer))  # eval/<metric>
            self.logger.log(step + 1, metrics)
            history.append(metrics)
            bar.set_postfix(
                reward=f"{metrics['reward']:.2f}",
                acc=f"{metrics['accuracy']:.2f}",
                ent=f"{metrics['entropy']:.2f}",
                classes=f"{metrics['distinct_correct_classes']:.2f}",
            )
            if (step + 1) % self.cfg.save_every == 0 or step + 1 == self.cfg.steps:
                self.save(step + 1)
        self.logger.close()
        return history

    def save(self, step: int) -> Path:
        state = {"step": step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.stateful:  # a stateful estimator's per-problem state, restored exactly by --resume
            state["advantage_state"] = {"estimator": self.cfg.advantage.name, "records": self.advantage_state}
        if self.selector.stateful:  # a stateful prompt selector's state (gdro), restored exactly by --resume
            state["prompt_selector_state"] = {"selector": self.cfg.prompt_selector.name, "state": self.selector_state}
        if self.log_z_head is not None:  # flowrl's learned log Z: written atomically with the rest
            state["log_z_head"] = self.log_z_head.state_dict()
        return save_checkpoint(self.run_dir, step, self.model, self.tokenizer, state, keep=self.cfg.keep_checkpoints)

    def _load_advantage_state(self, checkpoint: Path | None, state: dict[str, Any]) -> dict[str, Any]:
        """The stateful estimator's per-problem state saved in ``trainer_state.pt``; a checkpoint without it, or
        with another estimator's, is a one-line RunFolderError."""
        name = self.cfg.advantage.name
        saved = state.get("advantage_state")
        if not isinstance(saved, dict) or not isinstance(saved.get("records"), dict):
            raise RunFolderError(
                f"{checkpoint}: holds no per-problem state for the stateful estimator {name!r} (advantage.name); "
                "--overwrite starts the run over"
            )
        if saved.get("estimator") != name:
            raise RunFolderError(
                f"{checkpoint}: its per-problem state belongs to estimator {saved.get('estimator')!r}, not "
                f"{name!r} (advantage.name); resume with the run's own config"
            )
        return dict(saved["records"])

    def _load_selector_state(self, checkpoint: Path | None, state: dict[str, Any]) -> Any:
        """The stateful prompt selector's state saved in ``trainer_state.pt``; a checkpoint without it, or with
        another selector's, is a one-line RunFolderError."""
        name = self.cfg.prompt_selector.name
        saved = state.get("prompt_selector_state")
        if not isinstance(saved, dict) or "state" not in saved:
            raise RunFolderError(
                f"{checkpoint}: holds no state for the prompt selector {name!r} (prompt_selector.name); "
                "--overwrite starts the run over"
            )
        if saved.get("selector") != name:
            raise RunFolderError(
                f"{checkpoint}: its prompt-selector state belongs to {saved.get('selector')!r}, not {name!r} "
                "(prompt_selector.name); resume with the run's own config"
            )
        return saved["state"]

    # ----------------------------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, float]:
        """One RL step: rollout → verify → signals → advantage → loss → AdamW. Returns its metrics."""
        cfg, ro = self.cfg, self.cfg.rollout
        timer = Timer()
        torch.manual_seed(derive_seed(cfg.seed, step, 3))  # dropout (e.g. model.lora_dropout): exact on resume
        state_metrics: dict[str, float] = {}
        if ro.filter_groups == "none":
            problems = self._draw(step, 0, ro.prompts_per_step, set())
            rollouts = self._sample(step, 0, problems)
            t_sample = timer()
            scored = score(self.task, problems, rollouts.texts, ro.group_size)
            state_metrics.update(self._update_selector(problems, scored))
        else:  # DAPO's dynamic sampling: only groups whose rewards vary, from as many rounds as it takes
            problems, rollouts, scored, filter_metrics = self._sample_filtered(step)
            t_sample = timer()
            state_metrics.update(filter_metrics)
        texts = [rollouts.texts[p * ro.group_size : (p + 1) * ro.group_size] for p in range(len(problems))]
        old: dict[str, torch.Tensor] = {}  # GroupBatch field of the behaviour policy -> (P, G, T) or (P, G, H)
        mask = None
        if self.plan.before_advantage:  # e.g. unlikeliness: old log-probs; ucas: self-certainty; repexp: hidden
            old = self.old_pass(rollouts, len(problems), ro.group_size)
            mask = rollouts.completion_mask.view(old["old_logprobs"].shape)  # (P, G, T)
        labels, partition_failures = partition_labels(
            cfg.partition.source, scored, texts, self.learned, cfg.partition.members
        )
        batch = group_batch(
            scored.rewards,
            needs=self.needs,
            correct=scored.correct,
            texts=texts,
            answers=scored.answers,
            partition=labels,
            embeddings=self._embeddings(texts, scored),
            mask=None if mask is None else mask.cpu(),
            **{f: v.cpu() for f, v in old.items() if self.needs.uses(f)},  # what the estimator reads of the old pass
            problem_ids=[problem_id(p) for p in problems] if self.needs.uses("problem_ids") else None,
        )
        state_metrics.update({f"sampler/{k}": float(v) for k, v in getattr(rollouts, "stats", {}).items()})
        if self.stateful:  # (batch, state) -> (advantages, new state); the state goes into every checkpoint
            advantages, self.advantage_state = compute_advantages_and_state(
                cfg.advantage.name, batch, self.advantage_state, **cfg.advantage.options
            )  # (P, G)
            state_metrics["history_problems"] = float(len(self.advantage_state))
        else:
            advantages = compute_advantages(cfg.advantage.name, batch, **cfg.advantage.options)  # (P, G)
        t_score = timer()

        loss_metrics = self.optimize(batch, advantages, rollouts, old)

        lengths = rollouts.completion_mask.sum(-1).float()  # (N,)
        metrics = {
            "reward": float(torch.nanmean(scored.rewards)),
            "accuracy": float(scored.correct.float().mean()),
            "distinct_correct_classes": distinct_correct_classes(scored),
            "unscorable_frac": float(torch.isnan(scored.rewards).float().mean()),
            "partition_failures": float(partition_failures),
            "response_len": float(lengths.mean()),
            "finished_frac": float(rollouts.finished.float().mean()),
            "adv_abs_mean": _abs_mean(advantages, batch.mask),
            **signal_size(advantages, batch),
            "lr": float(self.scheduler.get_last_lr()[0]),
            "time_sample_s": t_sample,
            "time_score_s": t_score - t_sample,
            "time_step_s": timer(),
            **loss_metrics,
            **state_metrics,
            **{f"reasons/{kind.replace(' ', '_')}": float(n) for kind, n in sorted(scored.reasons.items())},
        }
        return metrics

    def _draw(self, step: int, round_: int, count: int, drawn: set[int]) -> list[Any]:
        """The problems of generation round ``round_`` of ``step``: ``count`` of them, by the prompt selector (e.g.
        gdro) or uniformly without replacement; a later round (dynamic sampling) draws uniformly among the problems
        not in ``drawn`` (indices, updated in place)."""
        seed = derive_seed(self.cfg.seed, step, 1) if round_ == 0 else derive_seed(self.cfg.seed, step, 1, round_)
        rng = random.Random(seed)
        if self.problem_ids is not None:  # a registered selector, e.g. gdro (bins of the running pass rates)
            chosen = self.selector.select(self.problem_ids, count, rng, self.selector_state, self.selector_options)
        elif round_ == 0:  # uniform (the default); the same draw as rng.sample(self.problems, count)
            chosen = rng.sample(range(len(self.problems)), count)
        else:
            left = [i for i in range(len(self.problems)) if i not in drawn]
            chosen = rng.sample(left, min(count, len(left)))
        drawn.update(chosen)
        return [self.problems[i] for i in chosen]

    def _sample(self, step: int, round_: int, problems: list[Any]) -> Any:
        """G completions of each problem's prompt by the configured backend and sampler (seeded per step and
        generation round); the policy is in eval mode for the call and in train mode after it."""
        from divrl.rollout import sample

        cfg, ro = self.cfg, self.cfg.rollout
        prompts = [self.task.prompt(p) for p in problems]
        self.model.eval()
        options: dict[str, Any] = {
            "num_samples": ro.group_size,
            "max_new_tokens": ro.max_new_tokens,
            "temperature": ro.temperature,
            "top_p": ro.top_p,
            "stop": self.task.stop,
            "seed": derive_seed(cfg.seed, step, 2) if round_ == 0 else derive_seed(cfg.seed, step, 2, round_),
        }
        if self.vllm is not None:
            if round_ == 0:
                self.vllm.sync_weights(self.model)
            rollouts = self.vllm.sample(self.model, prompts, **options)
        elif cfg.sampler.name == "standard":
            rollouts = sample(self.model, self.tokenizer, prompts, batch_size=ro.batch_size, **options)
        else:  # a registered sampler (e.g. latr), hf backend only (checked before the model loads)
            rollouts = self.sampler(
                self.model,
                self.tokenizer,
                prompts,
                batch_size=ro.batch_size,
                step=step,
                options=self.sampler_options,
                **options,
            )
        self.model.train()
        return rollouts

    def _update_selector(self, problems: list[Any], scored: Scored) -> dict[str, float]:
        """A stateful prompt selector (gdro) learns from the groups just scored; returns its metrics."""
        if not self.selector.stateful:  # the step's correctness moves the bin weights and the per-problem rates
            return {}
        ids = [problem_id(p) for p in problems]
        self.selector_state = self.selector.update(
            self.selector_state, ids, scored.correct.tolist(), self.selector_options
        )
        if self.selector.metrics is None:
            return {}
        return dict(self.selector.metrics(self.selector_state, self.selector_options))

    def _sample_filtered(self, step: int) -> tuple[list[Any], Any, Scored, dict[str, float]]:
        """DAPO's dynamic sampling (``rollout.filter_groups``; verl ``algorithm.filter_groups``): generation rounds
        of ``gen_prompts`` problems until ``prompts_per_step`` groups whose ``filter_groups`` signal varies are in
        hand; returns the first ``prompts_per_step`` of them in draw order (problems, rollouts, their scores) and the
        ``filter/*`` metrics. Raises :class:`ConfigError` naming ``rollout.max_gen_rounds`` when the rounds run out,
        or when the split has no problem left to draw."""
        from divrl.rollout import concat_rollouts
        from divrl.rollout.sampler import special_ids

        ro = self.cfg.rollout
        g, want = ro.group_size, ro.prompts_per_step
        per_round = ro.gen_prompts or want
        drawn: set[int] = set()
        kept: list[tuple[int, int]] = []  # (round, group within the round) of each informative group
        parts: list[Any] = []  # each round's rollouts
        round_scores: list[Scored] = []
        round_problems: list[list[Any]] = []
        drawn_groups = correct = 0
        while len(kept) < want:
            rounds = len(parts)
            if ro.max_gen_rounds and rounds >= ro.max_gen_rounds:
                raise ConfigError(
                    f"rollout.max_gen_rounds: step {step + 1} found {len(kept)} of {want} groups whose "
                    f"{ro.filter_groups} varies in {rounds} generation rounds of {per_round} prompts; raise it (0 = "
                    "no limit) or train on easier problems. Checkpoints already written stay: divrl train --resume "
                    "RUN --set rollout.max_gen_rounds=0"
                )
            problems = self._draw(step, rounds, per_round, drawn)
            if not problems:
                raise ConfigError(
                    f"rollout.filter_groups: step {step + 1} drew every problem of the split ({len(self.problems)}) "
                    f"and found {len(kept)} of {want} groups whose {ro.filter_groups} varies"
                )
            rollouts = self._sample(step, rounds, problems)
            scored = score(self.task, problems, rollouts.texts, g)
            self._update_selector(problems, scored)
            signal = scored.rewards if ro.filter_groups == "reward" else scored.correct.float()  # (p, G) NaN: unscored
            for p in range(len(problems)):
                values = signal[p][~torch.isnan(signal[p])]  # (scored,)
                if g == 1 or (len(values) >= 2 and bool(values.max() > values.min())):  # verl: std > 0 or n == 1
                    kept.append((rounds, p))
            parts.append(rollouts)
            round_scores.append(scored)
            round_problems.append(problems)
            drawn_groups += len(problems)
            correct += int(scored.correct.sum())
        informative = len(kept)
        kept = kept[:want]
        rows: list[list[int]] = [[] for _ in parts]
        for r, p in kept:
            rows[r].extend(range(p * g, (p + 1) * g))
        problems = [round_problems[r][p] for r, p in kept]
        rollouts = concat_rollouts(parts, rows, special_ids(self.model, self.tokenizer)[0])
        stats: dict[str, list[float]] = {}
        for part in parts:
            for k, v in getattr(part, "stats", {}).items():
                stats.setdefault(k, []).append(float(v))
        rollouts.stats = {k: sum(v) / len(v) for k, v in stats.items()}  # mean over the generation rounds
        scored = select_groups(round_scores, kept)  # the kept groups' verdicts (their reasons too)
        metrics = {
            "filter/gen_rounds": float(len(parts)),
            "filter/drawn_groups": float(drawn_groups),
            "filter/kept_frac": informative / drawn_groups,
            "filter/drawn_accuracy": correct / (drawn_groups * g),
        }
        return problems, rollouts, scored, metrics

    def _embeddings(self, texts: list[list[str]], scored: Scored) -> torch.Tensor | None:
        """(P, G, D) embeddings for a cosine kernel, of the rows the estimator and the loss terms declare they read
        (``Needs.embed_rows`` of their union; zero vectors elsewhere), or None without an embedder."""
        if self.embedder is None:
            return None
        rows = (self.needs | self.loss_reads).embed_rows
        return embed_groups(texts, self.embedder, rows, scored.correct)  # (P, G, D)

    def _chunks(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Prompt ranges of the forward/backward micro-batches of prompts ``lo:hi`` (``micro_batch_prompts``; 0 = one
        chunk)."""
        chunk = self.cfg.micro_batch_prompts or hi - lo
        return [(i, min(hi, i + chunk)) for i in range(lo, hi, chunk)]

    def _mini_batches(self, p_count: int) -> list[tuple[int, int]]:
        """Prompt ranges of the optimizer steps of one pass over a rollout batch (``mini_batches`` equal ones)."""
        size = p_count // self.cfg.mini_batches
        return [(i, i + size) for i in range(0, p_count, size)]

    def _forward(
        self, model: Any, rollouts: Any, lo: int, hi: int, g: int, grad: bool, fields: tuple[str, ...] | list[str]
    ) -> dict[str, torch.Tensor]:
        """:func:`divrl.rollout.token_statistics` ``fields`` of the rollouts of prompts ``lo:hi`` from one forward of
        ``model``: (p, G, T) per token, (p, G, H) per rollout."""
        from divrl.rollout import token_statistics

        rows = slice(lo * g, hi * g)
        input_ids = torch.cat([rollouts.prompt_ids[rows], rollouts.completion_ids[rows]], dim=1)  # (n, Lp+Lc)
        attention_mask = getattr(rollouts, "attention_mask", None)
        with torch.set_grad_enabled(grad):
            out = token_statistics(
                model,
                input_ids,
                rollouts.prompt_ids.shape[1],
                rollouts.completion_mask[rows],
                fields,
                temperature=self.cfg.rollout.temperature,
                attention_mask=attention_mask[rows] if attention_mask is not None else None,
                length_buckets=self.cfg.length_buckets,
                group_size=g if self.cfg.prefix_sharing else 1,
            )
        return {f: v.view(hi - lo, g, *v.shape[1:]) for f, v in out.items()}  # (p, G, T) or (p, G, H) each

    def old_pass(self, rollouts: Any, p_count: int, g: int) -> dict[str, torch.Tensor]:
        """The old-log-prob pass: one no-grad forward of the current (behaviour) policy over every rollout, giving the
        GroupBatch fields ``self.plan.old`` (``old_logprobs`` and what the estimator and the loss terms declare of
        :data:`OLD_PASS`), (P, G, T) or (P, G, H) each."""
        stats = self.plan.old_stats()
        parts = [
            self._forward(self.train_model, rollouts, lo, hi, g, False, stats) for lo, hi in self._chunks(0, p_count)
        ]
        return {f: torch.cat([p[OLD_PASS[f]] for p in parts]) for f in self.plan.old}

    def optimize(
        self, batch: GroupBatch, advantages: torch.Tensor, rollouts: Any, old: dict[str, torch.Tensor] | None = None
    ) -> dict[str, float]:
        """``num_iterations`` passes over one rollout batch, each ``mini_batches`` AdamW steps on consecutive equal
        mini-batches of whole groups, each computed in micro-batches.

        ``old``: the old pass's fields (``old_logprobs`` (P, G, T), ...) when it already ran before the advantage
        (else it runs here if there is more than one AdamW step per batch; without it the old values are the current
        ones, detached). With ``micro_batch_prompts`` set, each chunk's loss is aggregated within the chunk and the
        chunk losses of a mini-batch are averaged (as verl does with gradient accumulation); for ``token-mean`` this
        weights chunks equally rather than by their token counts. Logged values are means over chunks (``grad_norm``:
        over AdamW steps, each weighted by its chunk count)."""
        cfg, dev = self.cfg, self.device
        p_count, g = batch.num_prompts, batch.group_size
        advantages = advantages.to(dev)  # (P, G)
        rewards = batch.rewards.to(dev)  # (P, G)
        correct = batch.correct.to(dev) if batch.correct is not None else None  # (P, G)
        mask = rollouts.completion_mask  # (N, Lc)
        t = mask.shape[1]
        ref = None
        if not old and self.plan.old:  # several AdamW steps per batch and no old pass before the advantage
            old = self.old_pass(rollouts, p_count, g)
        old = old or {}
        if self.ref_model is not None:
            ref = torch.cat(
                [
                    self._forward(self.ref_model, rollouts, lo, hi, g, False, ["logprobs"])["logprobs"]
                    for lo, hi in self._chunks(0, p_count)
                ]
            )  # (P, G, T)
        # training-forward fields the loss terms read besides log-probs and entropies (rover, flowrl)
        loss_train = [f for f in TRAIN_PASS if f not in ("logprobs", "entropies") and self.loss_reads.uses(f)]
        # old-policy fields the loss terms read besides old_logprobs (from the old pass, else on-policy, detached)
        loss_old = [
            f for f in dict.fromkeys([*self.plan.old, *ON_POLICY]) if f != "old_logprobs" and self.loss_reads.uses(f)
        ]

        sums: dict[str, float] = {}
        n = 0  # chunks computed
        for mlo, mhi in [m for _ in range(cfg.num_iterations) for m in self._mini_batches(p_count)]:
            self.optimizer.zero_grad(set_to_none=True)
            chunks = self._chunks(mlo, mhi)
            n += len(chunks)
            for lo, hi in chunks:
                stats = self._forward(self.train_model, rollouts, lo, hi, g, True, self.plan.train)
                chunk_mask = mask[lo * g : hi * g].view(hi - lo, g, t)  # (p, G, T)
                lp, ent = stats["logprobs"], stats["entropies"]  # (p, G, T) each
                extra: dict[str, Any] = {
                    f: old[f][lo:hi] if f in old else stats[ON_POLICY[f]].detach() for f in loss_old
                }
                extra.update({f: stats[TRAIN_PASS[f]] for f in loss_train})  # (p, G, T) or (p, G, H)
                if "log_z" in extra:  # FlowRL: log Z(x) from the prompt's mean hidden state
                    hidden = extra["log_z"]  # (p, G, H)
                    extra["log_z"] = self.log_z_head(hidden.reshape(-1, hidden.shape[-1])).view(hi - lo, g)  # (p, G)
                sub = GroupBatch(
                    rewards=rewards[lo:hi],
                    correct=correct[lo:hi] if correct is not None else None,
                    texts=batch.texts[lo:hi] if batch.texts is not None else None,  # e.g. dsdr_entropy's kernel
                    embeddings=batch.embeddings[lo:hi].to(dev) if batch.embeddings is not None else None,
                    logprobs=lp,
                    old_logprobs=old["old_logprobs"][lo:hi] if old else lp.detach(),
                    ref_logprobs=ref[lo:hi] if ref is not None else None,
                    mask=chunk_mask,
                    entropies=ent,
                    **extra,
                )
                total = torch.zeros((), device=dev)
                for term in cfg.loss:
                    out = compute_loss(term.name, sub, advantages[lo:hi], **term.options)
                    total = total + out.loss
                    for key, value in out.metrics.items():
                        sums[f"{term.name}/{key}"] = sums.get(f"{term.name}/{key}", 0.0) + value
                with torch.no_grad():
                    m = chunk_mask.float()  # (p, G, T)
                    sums["entropy"] = sums.get("entropy", 0.0) + float((ent * m).sum() / m.sum().clamp(min=1))
                sums["loss"] = sums.get("loss", 0.0) + total.item()
                (total / len(chunks)).backward()
            if cfg.optim.grad_clip > 0:
                params = [*self.model.parameters(), *self._head_parameters()]
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(norm) * len(chunks)
            self.optimizer.step()
        self.scheduler.step()
        return {k: v / n for k, v in sums.items()}


def _abs_mean(advantages: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Mean |A| over rollouts (P, G), or over valid response tokens for token-level advantages (P, G, T)."""
    if advantages.dim() == 3 and mask is not None:
        keep = mask.to(advantages.device).bool()  # (P, G, T)
        return float(advantages.abs()[keep].mean()) if bool(keep.any()) else 0.0
    return float(advantages.abs().mean())


def train(
    cfg: RLConfig,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    device: str | None = None,
) -> list[dict[str, float]]:
    """Train (or resume) a run in ``run_dir``; returns the metrics of the steps run now. A folder that holds a run
    needs ``resume`` or ``overwrite``; ``device``: where it trains (``None``: a GPU when torch sees one; see
    :class:`RLTrainer`)."""
    trainer = RLTrainer(cfg, run_dir, resume=resume, progress=progress, overwrite=overwrite, device=device)
    return trainer.run()
