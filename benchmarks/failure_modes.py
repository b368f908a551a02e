"""Why a Countdown policy's samples fail: the verifier's reasons, and whether the written steps are true arithmetic.

For each model: ``--n`` completions for each of the first ``--problems`` problems of a split (divrl's sampler,
seeded as below), each graded by the task's verifier. Prints, per model, the share of samples by outcome:

- ``correct``; ``wrong value`` (the answer uses allowed numbers and evaluates to something else); ``reused`` and
  ``not available`` (the answer uses a number twice, or one the problem does not have); ``no answer`` (no answer tag);
  ``other`` (unparsable, division by zero, too long); ``truncated`` (the row hit ``--max-new-tokens``, whatever
  its verdict);

and of the chain-of-thought steps ``a op b = c`` written before the answer (the SFT format,
``7*7=49,10+49=59<answer>10+7*7</answer>``): the share of the steps before a sample's last one whose arithmetic is
false (``false inner``), the share of samples whose last step is false (``false last``), and the share of the wrong
samples whose last step claims the target (``claims target``: the model writes ``... = target`` although its answer
does not reach it). In the search format (task option ``attempts``) failed chains ended by ``;`` may come first:
``attempts`` is their mean number per sample, their steps count as inner ones, and "last step" is the final chain's.

    python benchmarks/failure_modes.py builtin:countdown4-tiny runs/grpo/checkpoint-000120 --split val --problems 200

Sampling: problems in chunks of ``512 // n``, chunk ``i`` seeded ``seed + i``; the same model, options and seed draw
the same samples.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

_NUM = r"\(?(-?\d+(?:/\d+)?)\)?"
_STEP = re.compile(rf"^{_NUM}([+\-*/]){_NUM}=(-?\d+(?:/\d+)?)$")
OUTCOMES = ("correct", "wrong value", "reused", "not available", "no answer", "other")


def outcome(reason: str, correct: bool) -> str:
    """The table's outcome for a verifier reason (:func:`divrl.tasks.countdown.verifier.verify`)."""
    if correct:
        return "correct"
    for prefix, name in (("wrong value", "wrong value"), ("number reused", "reused"),
                         ("number not available", "not available"), ("no answer tag", "no answer")):  # fmt: skip
        if reason.startswith(prefix):
            return name
    return "other"


def chains(completion: str) -> list[str]:
    """The chains written before the answer tag: failed ones (each ended by ``;``), then the final one.

    >>> chains("1+2=3;3*4=12<answer>3*4</answer>")
    ['1+2=3', '3*4=12']
    """
    return completion.split("<answer>", 1)[0].split(";")


def steps(chain: str) -> list[bool | None]:
    """Each written step of one chain (text after an answer tag is ignored): True if its arithmetic holds, False if
    not, None if it is no ``a op b = c`` step (e.g. cut off, or ``50=20``).

    >>> steps("7*7=49,10+49=58,(1/2)*4=2<answer>")
    [True, False, True]
    """
    head = chain.split("<answer>", 1)[0]
    out: list[bool | None] = []
    for part in filter(None, head.split(",")):
        m = _STEP.match(part.strip())
        if m is None:
            out.append(None)
            continue
        a, op, b, c = Fraction(m[1]), m[2], Fraction(m[3]), Fraction(m[4])
        if op == "/" and b == 0:
            out.append(False)
            continue
        value = a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a / b
        out.append(value == c)
    return out


def claims_target(completion: str, target: int) -> bool:
    """The final chain's last written step's result is the target (whatever the answer says)."""
    head = [p for p in chains(completion)[-1].split(",") if p]
    m = _STEP.match(head[-1].strip()) if head else None
    return m is not None and Fraction(m[4]) == target


def analyse(model_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Sample, grade and tally one model (the figures :func:`main` prints)."""
    from divrl.models.policy import load_policy
    from divrl.rollout.sampler import sample
    from divrl.tasks import get_task

    options: dict[str, Any] = {"num_numbers": 4}
    for item in args.task_option:
        key, _, value = item.partition("=")
        options[key] = int(value) if value.lstrip("-").isdigit() else value
    task = get_task("countdown", **options)
    problems = task.problems(args.split)[: args.problems]
    model, tokenizer = load_policy(model_name)
    counts: collections.Counter[str] = collections.Counter()
    truncated = inner = false_inner = lasts = false_last = wrong = claims = failed_chains = 0
    per_chunk = max(1, 512 // args.n)
    for i in range(0, len(problems), per_chunk):
        chunk = problems[i : i + per_chunk]
        rollouts = sample(model, tokenizer, [task.prompt(p) for p in chunk], num_samples=args.n,
                          max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          seed=args.seed + i // per_chunk)  # fmt: skip
        for j, text in enumerate(rollouts.texts):
            problem = chunk[j // args.n]
            verdict = task.verify(problem, text)
            counts[outcome(verdict.reason, verdict.correct)] += 1
            truncated += int(not bool(rollouts.finished[j]))
            *failed, final = chains(text)
            failed_chains += len(failed)
            earlier = [s for chain in failed for s in steps(chain) if s is not None]
            checked = [s for s in steps(final) if s is not None]
            if checked:
                lasts, false_last = lasts + 1, false_last + int(not checked[-1])
                earlier += checked[:-1]
            inner, false_inner = inner + len(earlier), false_inner + earlier.count(False)
            if not verdict.correct:
                wrong += 1
                claims += int(claims_target(text, problem.target))
    samples = sum(counts.values())
    return {
        "model": model_name,
        "samples": samples,
        **{name: counts[name] / samples for name in OUTCOMES},
        "truncated": truncated / samples,
        "attempts": failed_chains / samples,
        "false inner": false_inner / max(inner, 1),
        "false last": false_last / max(lasts, 1),
        "claims target": claims / max(wrong, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="checkpoint folders or builtin:countdown4-tiny")
    parser.add_argument("--split", default="val")
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--n", type=int, default=16, help="samples per problem")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=72)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task-option", action="append", default=[], help="KEY=VALUE (default num_numbers=4)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [analyse(m, args) for m in args.models]
    columns = [*OUTCOMES, "truncated", "attempts", "false inner", "false last", "claims target"]
    print(f"{args.split}: first {args.problems} problems x {args.n} samples, T = {args.temperature}, seed {args.seed}")
    print("| model | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for r in rows:
        print(f"| {r['model']} | " + " | ".join(f"{r[c]:.3f}" for c in columns) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
