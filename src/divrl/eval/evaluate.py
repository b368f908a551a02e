"""``divrl eval``: sample n completions per held-out problem and measure accuracy and diversity.

Metrics (all from ``divrl.core.metrics``):
- ``pass@k`` for k = 1, 2, 4, ..., n: the unbiased estimator (Chen et al. 2021) over all n samples.
- ``potential@k`` (R1-zero-Div Eq. 6): pass@1 from one *greedy* completion (0/1), pass@k = any of the
  first k samples correct (0/1); the share of greedy failures that sampling recovers.
- ``div_equ`` (R1-zero-Div Eq. 5): per problem |unique| / |all| over the solutions (task canonical form)
  of all parsable answers, averaged over problems that have at least one.
- ``distinct_correct_classes``: per problem, the number of distinct solution classes among correct samples.
- ``distinct_4``: distinct character 4-grams of the completions of one problem, averaged over problems.
- ``self_bleu``: sacrebleu self-BLEU (0-100, lower = more diverse) of one problem's completions, averaged.
- ``entropy``: mean full-vocabulary token entropy of the policy on its own samples.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from divrl.core import metrics as M
from divrl.tasks.base import Task
from divrl.trainer.rl import safe_key, safe_verify


@dataclass(frozen=True)
class EvalSamples:
    """Completions of one evaluation: ``samples[p]`` holds n texts for problem p, ``greedy[p]`` one."""

    samples: list[list[str]]
    greedy: list[str]
    entropy: float = float("nan")


def ks_for(n: int) -> list[int]:
    """1, 2, 4, ... up to n (n itself included)."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    ks.append(n)
    return ks


def score_samples(task: Task, problems: Sequence[Any], samples: EvalSamples) -> dict[str, Any]:
    """All metrics from fixed completions (no model involved; the unit under test for hand-made cases)."""
    n = len(samples.samples[0]) if samples.samples else 0
    correct = np.zeros((len(problems), n), dtype=bool)  # (P, n)
    keys: list[list[str | None]] = []
    for p, problem in enumerate(problems):
        row = []
        for j, text in enumerate(samples.samples[p]):
            correct[p, j] = safe_verify(task, problem, text).correct
            row.append(safe_key(task, problem, text))
        keys.append(row)
    greedy = np.array([safe_verify(task, pr, t).correct for pr, t in zip(problems, samples.greedy, strict=True)])
    out: dict[str, Any] = {"num_problems": len(problems), "n": n}
    for k in ks_for(n):
        out[f"pass@{k}"] = M.mean_pass_at_k(correct, k)
    out["greedy_pass@1"] = float(greedy.mean()) if len(greedy) else float("nan")
    for k in ks_for(n):
        out[f"potential@{k}"] = M.potential_at_k(greedy.astype(float), correct[:, :k].any(axis=1).astype(float))
    out["div_equ"] = M.div_equ([[k for k in row if k is not None] for row in keys])
    out["distinct_correct_classes"] = float(
        np.mean(
            [
                len({k for k, c in zip(row, correct[p], strict=True) if c and k is not None})
                for p, row in enumerate(keys)
            ]
        )
    )
    out["distinct_4"] = _mean_finite(M.distinct_n(texts, 4, unit="char") for texts in samples.samples)
    out["self_bleu"] = _mean_finite(M.self_bleu(texts) for texts in samples.samples)
    out["entropy"] = samples.entropy
    return out


def _mean_finite(values: Any) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def generate_samples(
    model: Any,
    tokenizer: Any,
    task: Task,
    problems: Sequence[Any],
    n: int,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 512,
    progress: bool = True,
) -> EvalSamples:
    """n sampled + 1 greedy completion per problem, plus the mean token entropy of the samples."""
    from divrl.rollout import sample, token_logprobs

    prompts = [task.prompt(p) for p in problems]
    per_chunk = max(1, batch_size // n)
    texts: list[str] = []
    ent_sum, ent_count = 0.0, 0
    model.eval()
    chunks = range(0, len(prompts), per_chunk)
    for i in tqdm(chunks, desc="eval", disable=not progress, dynamic_ncols=True):
        ro = sample(
            model,
            tokenizer,
            prompts[i : i + per_chunk],
            num_samples=n,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=task.stop,
            seed=seed + i,
            batch_size=batch_size,
        )
        texts.extend(ro.texts)
        with torch.inference_mode():
            ids = torch.cat([ro.prompt_ids, ro.completion_ids], dim=1)
            _, ent = token_logprobs(
                model,
                ids,
                ro.prompt_ids.shape[1],
                ro.completion_mask,
                temperature=temperature,
                with_entropy=True,
                attention_mask=getattr(ro, "attention_mask", None),
            )
            m = ro.completion_mask.float()
            ent_sum += float((ent * m).sum())
            ent_count += int(m.sum())
    greedy = sample(
        model,
        tokenizer,
        prompts,
        num_samples=1,
        max_new_tokens=max_new_tokens,
        stop=task.stop,
        greedy=True,
        batch_size=batch_size,
    ).texts
    grouped = [texts[p * n : (p + 1) * n] for p in range(len(prompts))]
    return EvalSamples(grouped, greedy, ent_sum / max(1, ent_count))


def evaluate(
    model: Any,
    tokenizer: Any,
    task: Task,
    problems: Sequence[Any],
    n: int,
    **kwargs: Any,
) -> dict[str, Any]:
    """Sample and score; returns the metrics dict written to ``metrics.json``."""
    samples = generate_samples(model, tokenizer, task, problems, n, **kwargs)
    return score_samples(task, problems, samples)


def write_metrics(metrics: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=False))
    tmp.replace(path)
