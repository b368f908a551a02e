"""Supervised warm start (``divrl pretrain``): teach a fresh tiny policy the task's response format
from solver-generated solutions, drawing one *solution class* uniformly per problem, so the base
policy is diverse and imperfect, as a pre-trained base model is.

Sequences are ``prompt + completion + <eos>``; every prompt of a task config has the same length, so
padding sits only at the right end and no attention mask is needed. The loss covers completion
tokens and the final ``<eos>``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from divrl.config import ConfigError, save_yaml
from divrl.trainer.common import (
    MetricLogger,
    RunLayout,
    Timer,
    build_optimizer,
    build_scheduler,
    check_run_folder,
    derive_seed,
    input_errors,
    load_task,
    remove_run,
    save_checkpoint,
    seed_everything,
    set_threads,
)
from divrl.trainer.config import PretrainConfig


def make_batch(tokenizer: Any, prompts: list[str], completions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, L) right-padded with pad, and labels (B, L) with -100 outside completion + eos."""
    rows, labels = [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        p = tokenizer.encode(prompt, add_special_tokens=False)
        c = [*tokenizer.encode(completion, add_special_tokens=False), tokenizer.eos_token_id]
        rows.append(p + c)
        labels.append([-100] * len(p) + c)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)  # (B, L)
    lab = torch.full((len(rows), width), -100, dtype=torch.long)  # (B, L)
    for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(lb)] = torch.tensor(lb)
    return ids, lab


def sft_loss(model: Any, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions."""
    logits = model(input_ids=ids).logits[:, :-1]  # (B, L-1, V)
    target = labels[:, 1:]  # (B, L-1)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=-100)


PRETRAIN_RUN = RunLayout(
    "a pretrained policy or pretrain run",
    (
        "pretrain_config.yaml",
        "metrics.jsonl",
        "metrics.json",  # `divrl eval --model <out>` writes it here
        "tb",
        "checkpoints",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
    ),
    ("model*.safetensors", "model.safetensors.index.json", "*.yaml.tmp", "*.jsonl.tmp*"),
    resumable=False,
)


def pretrain(cfg: PretrainConfig, out: str | Path, progress: bool = True, overwrite: bool = False) -> Path:
    """Run the warm start and write a ``save_pretrained`` folder to ``out`` (plus step checkpoints).

    ``out`` must not hold a policy or an earlier warm start (:data:`PRETRAIN_RUN`) unless ``overwrite``: then those
    entries are removed after the inputs are checked, before the first write; else ``RunFolderError``."""
    from divrl.models import build_char_tokenizer, build_policy, save_policy

    out = Path(out)
    old_run = check_run_folder(out, PRETRAIN_RUN, overwrite=overwrite)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    task, problems = load_task(cfg.task)  # ConfigError naming the field on a bad task, split or data file
    if not callable(getattr(task, "reference_completion", None)):
        raise ConfigError(f"task.name: task {cfg.task.name!r} has no solver completions to warm-start on")
    tokenizer = build_char_tokenizer()
    with input_errors(f"size {cfg.size!r} / arch {cfg.arch!r}", catch=(ValueError,)):
        model = build_policy(cfg.size, arch=cfg.arch, tokenizer=tokenizer, seed=cfg.seed)
    remove_run(old_run)  # --overwrite: the old one goes just before the first write
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "pretrain_config.yaml")
    model.train()
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.steps, cfg.optim)
    logger = MetricLogger(out)
    timer = Timer()
    bar = tqdm(range(cfg.steps), desc="pretrain", disable=not progress, dynamic_ncols=True)
    step = 0
    for step in bar:
        rng = random.Random(derive_seed(cfg.seed, step))
        batch = [rng.choice(problems) for _ in range(cfg.batch_size)]
        prompts = [task.prompt(p) for p in batch]
        completions = [task.reference_completion(p, rng) for p in batch]
        ids, labels = make_batch(tokenizer, prompts, completions)
        loss = sft_loss(model, ids, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        metrics = {"loss": loss.item(), "lr": float(scheduler.get_last_lr()[0]), "elapsed_s": timer()}
        logger.log(step + 1, metrics)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}")
        done = step + 1 == cfg.steps or (cfg.max_minutes > 0 and timer() > 60 * cfg.max_minutes)
        if (step + 1) % cfg.save_every == 0 and not done:
            save_checkpoint(
                out / "checkpoints",
                step + 1,
                model,
                tokenizer,
                {"step": step + 1, "optimizer": optimizer.state_dict()},
            )
        if done:
            break
    logger.close()
    model.eval()
    save_policy(model, tokenizer, out)
    return out
