"""What a learned partition costs per DARLING training step, as a share of the step (issue 6's target: <= 10%).

    divrl classifier pairs --out runs/sem/pairs.jsonl --problems 400 --references 8
    divrl classifier train --pairs runs/sem/pairs.jsonl --out runs/sem/ckpt --no-short-rule --threshold 0.95
    python benchmarks/partition_cost.py --checkpoint runs/sem/ckpt --group 8 --steps 8

For each setting, a fresh DARLING trainer (the Countdown recipe, P prompts x G samples) starts from ``--model`` and
runs ``--warmup`` untimed steps, then ``--steps`` timed ones. Per step the trainer logs ``time_step_s`` and
``time_score_s`` (verification, partition, embeddings and advantages); the partition's cost is a setting's mean
scoring time minus the exact partition's (verification and the advantage are the same in both), and its share is
that cost over the setting's mean step time. Settings:

- ``exact``: the task's canonical form (no model; the reference point);
- ``learned``: the classifier over all G rollouts of each group (DARLING's released math script);
- ``learned, only correct``: ``partition.members=correct``: only correct rollouts are embedded and compared;
- ``setpo, ...``: the SetPO recipe with its character 3-gram kernel, and with MiniLM embeddings and the cosine
  kernel (every rollout is embedded: the kernel spans the whole group), in float32 and in bfloat16. Their cost is
  likewise their scoring time minus the exact DARLING partition's;
- ``setpo, ..., members=correct``: our variant whose set is each group's correct rollouts
  (``advantage.options.members=correct``), so only those are embedded (what SetPO then declares it reads).

The embedder's LRU cache lives as long as the trainer, so from the second step on texts seen in the previous
steps are not re-embedded, as in a real run. A sharper policy (``--model runs/x/checkpoint-000080``) repeats
itself more and has more correct rollouts; the base policy is the most diverse case. Numbers are only meaningful
on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from divrl.config import apply_overrides, from_dict, load_yaml
from divrl.eval.demo import RECIPES
from divrl.trainer.config import RLConfig
from divrl.trainer.rl import RLTrainer

ONLY_CORRECT = ["advantage.options.kernel=cosine", "advantage.options.members=correct"]
SETTINGS = {  # name: (recipe, overrides)
    "exact": ("darling", ["partition.source=exact"]),
    "learned": ("darling", ["partition.source=learned"]),
    "learned, only correct": ("darling", ["partition.source=learned", "partition.members=correct"]),
    "setpo, char 3-gram kernel": ("setpo", []),
    "setpo, MiniLM cosine kernel": ("setpo", ["embedder=all-MiniLM-L6-v2", "advantage.options.kernel=cosine"]),
    "setpo, MiniLM@bf16 cosine kernel": (
        "setpo",
        ["embedder=all-MiniLM-L6-v2@bf16", "advantage.options.kernel=cosine"],
    ),
    "setpo, MiniLM cosine, members=correct": ("setpo", [*ONLY_CORRECT, "embedder=all-MiniLM-L6-v2"]),
    "setpo, MiniLM@bf16 cosine, members=correct": ("setpo", [*ONLY_CORRECT, "embedder=all-MiniLM-L6-v2@bf16"]),
}


def run(setting: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    recipe, extra = SETTINGS[setting]
    data = load_yaml(RECIPES / "countdown" / f"{recipe}.yaml")
    overrides = [
        f"model.path={args.model}",
        f"rollout.prompts_per_step={args.prompts}",
        f"rollout.group_size={args.group}",
        f"steps={args.warmup + args.steps}",
        f"threads={args.threads}",
        f"seed={args.seed}",
        "save_every=100000",
        *extra,
    ]
    if "learned" in setting:
        overrides.append(f"partition.checkpoint={args.checkpoint}")
    cfg = from_dict(RLConfig, apply_overrides(data, overrides))
    trainer = RLTrainer(cfg, out, progress=False)
    records = [trainer.step(step) for step in range(args.warmup + args.steps)][args.warmup :]
    return {
        "step_s": statistics.fmean(r["time_step_s"] for r in records),
        "score_s": statistics.fmean(r["time_score_s"] for r in records),
        "accuracy": statistics.fmean(r["accuracy"] for r in records),
        "failures": sum(r["partition_failures"] for r in records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint", default=None, help="classifier folder from `divrl classifier train` (for the learned settings)"
    )
    parser.add_argument(
        "--setting",
        action="append",
        choices=list(SETTINGS),
        default=None,
        help="run only this setting (repeatable; `exact`, the reference, always runs); default: all",
    )
    parser.add_argument("--model", default="builtin:countdown-tiny")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    chosen = ["exact", *(s for s in SETTINGS if s != "exact" and (args.setting is None or s in args.setting))]
    if args.checkpoint is None and any("learned" in s for s in chosen):
        parser.error("the learned settings need --checkpoint (or choose others with --setting)")

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, setting in enumerate(chosen):
            results[setting] = run(setting, args, Path(tmp) / str(i))
            print(f"[{setting}] {results[setting]}", flush=True)
    base = results["exact"]["score_s"]
    print(
        f"\nmodel {args.model}, P = {args.prompts}, G = {args.group}, {args.steps} timed steps after "
        f"{args.warmup} warm-up, {args.threads} threads\n"
    )
    print("| setting | s/step | scoring s/step | diversity cost s/step | share of step | train accuracy |")
    print("|---|---|---|---|---|---|")
    for setting, r in results.items():
        cost = r["score_s"] - base
        print(
            f"| {setting} | {r['step_s']:.3f} | {r['score_s']:.3f} | {cost:.3f} | "
            f"{100 * cost / r['step_s']:.1f}% | {r['accuracy']:.3f} |"
        )


if __name__ == "__main__":
    main()
