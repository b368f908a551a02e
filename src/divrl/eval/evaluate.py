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
- ``entropy``: mean full-vocabulary token entropy of the policy on its own samples (from the logits each token was
  drawn from, ``sample(with_entropy=True)``: no second forward pass).

The one-line meaning of each row of `divrl eval`'s table is :data:`divrl.eval.columns.METRIC_NOTES`.

``per_problem`` (written last) keeps one record per problem so that statistics can be computed after the fact
(``divrl compare``, :mod:`divrl.eval.bootstrap`): ``id`` (:func:`problem_id`), ``n`` samples, ``correct`` (how many
were correct), ``first_correct`` (index of the first correct sample, ``null`` if none), ``greedy_correct`` and
``classes`` (the sorted distinct solution-class keys among correct samples). From these, pass@k for any k <= n,
Potential@k and distinct correct classes are recomputed exactly (:func:`recompute`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from divrl.core import metrics as M
from divrl.tasks.base import Task, problem_id  # problem_id: re-exported (the pairing id of an evaluation)
from divrl.tasks.verify import safe_key, verify_all


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


@dataclass(frozen=True)
class Graded:
    """The verdicts of one evaluation's completions (:func:`grade_samples`).

    Attributes:
        correct: (P, n) bool, sample j of problem p is correct.
        keys: ``keys[p][j]``, the solution-class key of sample j of problem p (``None``: no key).
        reasons: ``reasons[p][j]``, the verifier's reason (``"ok"`` when correct).
        greedy: (P,) bool, the greedy completion of problem p is correct.
        greedy_reasons: the verifier's reason for each greedy completion.
    """

    correct: np.ndarray
    keys: list[list[str | None]]
    reasons: list[list[str]]
    greedy: np.ndarray
    greedy_reasons: list[str]


def grade_samples(task: Task, problems: Sequence[Any], samples: EvalSamples) -> Graded:
    """Verify every completion once (the task's batch verifier if it has one)."""
    n = len(samples.samples[0]) if samples.samples else 0
    correct = np.zeros((len(problems), n), dtype=bool)  # (P, n)
    keys: list[list[str | None]] = []
    reasons: list[list[str]] = []
    flat = [(problem, text) for p, problem in enumerate(problems) for text in samples.samples[p]]
    verdicts = verify_all(task, [pr for pr, _ in flat], [t for _, t in flat])  # the task's batch verifier if any
    for p, problem in enumerate(problems):
        row = []
        for j, text in enumerate(samples.samples[p]):
            verdict = verdicts[p * n + j]
            correct[p, j] = verdict.correct
            row.append(verdict.key if verdict.keyed else safe_key(task, problem, text))
        keys.append(row)
        reasons.append([verdicts[p * n + j].reason for j in range(n)])
    greedy_verdicts = verify_all(task, list(problems), list(samples.greedy))
    greedy = np.array([v.correct for v in greedy_verdicts], dtype=bool)  # (P,)
    return Graded(correct, keys, reasons, greedy, [v.reason for v in greedy_verdicts])


def score_samples(
    task: Task, problems: Sequence[Any], samples: EvalSamples, graded: Graded | None = None
) -> dict[str, Any]:
    """All metrics from fixed completions (no model involved; the unit under test for hand-made cases); ``graded``:
    their verdicts when :func:`grade_samples` already ran."""
    n = len(samples.samples[0]) if samples.samples else 0
    graded = grade_samples(task, problems, samples) if graded is None else graded
    correct, keys, greedy = graded.correct, graded.keys, graded.greedy
    out: dict[str, Any] = {"num_problems": len(problems), "n": n}
    for k in ks_for(n):
        out[f"pass@{k}"] = M.mean_pass_at_k(correct, k)
    out["greedy_pass@1"] = float(greedy.mean()) if len(greedy) else float("nan")
    for k in ks_for(n):
        out[f"potential@{k}"] = M.potential_at_k(greedy.astype(float), correct[:, :k].any(axis=1).astype(float))
    out["div_equ"] = M.div_equ([[k for k in row if k is not None] for row in keys])
    out["distinct_correct_classes"] = float(
        np.mean([len(M.correct_classes(row, correct[p])) for p, row in enumerate(keys)])
    )  # one definition: core.metrics.correct_classes
    out["distinct_4"] = _mean_finite(M.distinct_n(texts, 4, unit="char") for texts in samples.samples)
    out["self_bleu"] = _mean_finite(M.self_bleu(texts) for texts in samples.samples)
    out["entropy"] = samples.entropy
    out["per_problem"] = [
        {
            "id": problem_id(problem),
            "n": n,
            "correct": int(correct[p].sum()),
            "first_correct": int(np.argmax(correct[p])) if correct[p].any() else None,
            "greedy_correct": bool(greedy[p]),
            "classes": sorted(M.correct_classes(keys[p], correct[p])),
        }
        for p, problem in enumerate(problems)
    ]
    return out


def sample_records(task: Task, problems: Sequence[Any], samples: EvalSamples, graded: Graded) -> list[dict[str, Any]]:
    """One record per problem for ``divrl eval --samples``: ``id`` (as in ``per_problem``), ``prompt``, ``samples``
    (the n completions), ``correct`` and ``reasons`` (the verifier's verdict on each), ``greedy``, ``greedy_correct``
    and ``greedy_reason``."""
    return [
        {
            "id": problem_id(problem),
            "prompt": task.prompt(problem),
            "samples": list(samples.samples[p]),
            "correct": [bool(c) for c in graded.correct[p]],
            "reasons": list(graded.reasons[p]),
            "greedy": samples.greedy[p],
            "greedy_correct": bool(graded.greedy[p]),
            "greedy_reason": graded.greedy_reasons[p],
        }
        for p, problem in enumerate(problems)
    ]


def write_jsonl(records: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write one JSON object per line atomically (a temporary file, then a rename); gzip when ``path`` ends in
    ``.gz``."""
    import gzip

    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    _replace(Path(path), gzip.compress(data) if Path(path).suffix == ".gz" else data)


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed over it (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def recompute(per_problem: Sequence[dict[str, Any]], k: int) -> dict[str, float]:
    """pass@k, Potential@k and distinct correct classes (mean over problems) from ``per_problem`` records alone;
    equal to :func:`score_samples`'s top-level values for the same k."""
    n = np.array([r["n"] for r in per_problem], dtype=np.int64)  # (P,)
    c = np.array([r["correct"] for r in per_problem], dtype=np.int64)  # (P,)
    greedy = np.array([r["greedy_correct"] for r in per_problem], dtype=float)  # (P,)
    first = [r["first_correct"] for r in per_problem]
    hit = np.array([f is not None and f < k for f in first], dtype=float)  # (P,) any of the first k correct
    return {
        f"pass@{k}": float(M.pass_at_k_array(n, c, k).mean()),
        f"potential@{k}": M.potential_at_k(greedy, hit),
        "distinct_correct_classes": float(np.mean([len(r["classes"]) for r in per_problem])),
    }


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
    from divrl.rollout import sample

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
            with_entropy=True,  # from the sampling logits: no second forward pass
        )
        texts.extend(ro.texts)
        assert ro.entropies is not None
        ent_sum += float(ro.entropies.sum())  # 0 outside the completion mask
        ent_count += int(ro.completion_mask.sum())
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


def metrics_json(metrics: dict[str, Any]) -> str:
    """``metrics`` as indented JSON with ``per_problem`` last, one problem per line (readable and diffable)."""
    head = {k: v for k, v in metrics.items() if k != "per_problem"}
    if "per_problem" not in metrics:
        return json.dumps(head, indent=2)
    rows = "".join(("," if i else "") + "\n    " + json.dumps(r) for i, r in enumerate(metrics["per_problem"]))
    body = json.dumps(head, indent=2)[1:-2]  # the indented members without the braces
    sep = "," if head else ""
    return "{" + body + sep + '\n  "per_problem": [' + rows + "\n  ]\n}"


def write_metrics(metrics: dict[str, Any], path: str | Path) -> None:
    """Write ``metrics.json`` atomically (a temporary file, then a rename)."""
    _replace(Path(path), (metrics_json(metrics) + "\n").encode("utf-8"))
