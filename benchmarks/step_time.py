"""Time per RL step of every Countdown recipe against GRPO's (issue 16: "measure each one's time per step against
GRPO on the testbed").

    python benchmarks/step_time.py --steps 8 --warmup 2 --threads 2

Each recipe of ``configs/countdown/`` trains ``--warmup + --steps`` steps from its own config (its base, P x G,
max new tokens), checkpointing only at the end, in a temporary folder; the trainer logs per step ``time_step_s``
(the whole step: sampling, verification and signals, the advantage, any old-log-prob pass, the training forward
and backward, the optimizer), ``time_sample_s`` and ``time_score_s`` (verification, partition, embeddings, the
advantage). The table gives their means over the timed steps, the rest (``step - sample - score``: the forwards,
backward and optimizer) and the ratio of the step time to GRPO's. Every recipe samples with the same seed from the
same base, so the first step's completions are the same for all and the difference is the method's own work; later
steps differ as the policies do (the mean completion length is in the table to read that by). Numbers mean
something only on an otherwise idle machine (2 cores: about +-15 % run to run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def time_recipe(config: Path, steps: int, warmup: int, overrides: list[str]) -> dict[str, Any]:
    from divrl.config import apply_overrides, from_dict, load_yaml
    from divrl.trainer.config import RLConfig
    from divrl.trainer.rl import train

    total = warmup + steps
    data = apply_overrides(load_yaml(config), [f"steps={total}", f"save_every={total}", *overrides])
    cfg = from_dict(RLConfig, data)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run", progress=False)
        records = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    timed = records[warmup:]

    def mean(key: str) -> float:
        return statistics.fmean(float(r[key]) for r in timed)

    step, sample, score = mean("time_step_s"), mean("time_sample_s"), mean("time_score_s")
    return {"step_s": step, "sample_s": sample, "score_s": score, "rest_s": step - sample - score,
            "response_len": mean("response_len"), "steps": [float(r["time_step_s"]) for r in timed]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", default="all", help="Comma-separated recipe names (file stems), or 'all'.")
    ap.add_argument("--steps", type=int, default=8, help="Timed steps per recipe.")
    ap.add_argument("--warmup", type=int, default=2, help="Untimed steps first.")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key=value applied to every recipe")
    ap.add_argument("--configs", type=Path, default=ROOT / "configs" / "countdown")
    ap.add_argument("--json", type=Path, help="Also write the raw figures here.")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    files = sorted(args.configs.glob("*.yaml"))
    if args.recipes != "all":
        wanted = args.recipes.split(",")
        files = [f for f in files if f.stem in wanted]
    files.sort(key=lambda f: f.stem != "grpo")  # GRPO first: the reference
    results: dict[str, dict[str, Any]] = {}
    for path in files:
        results[path.stem] = time_recipe(path, args.steps, args.warmup, [f"threads={args.threads}", *args.overrides])
        r = results[path.stem]
        print(f"{path.stem}: {r['step_s']:.3f} s/step", file=sys.stderr, flush=True)
    ref = results.get("grpo", {}).get("step_s")
    print("| recipe | s/step | sampling | scoring + advantage | forwards, backward, optimizer | × GRPO | "
          "completion tokens |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        ratio = f"{r['step_s'] / ref:.2f}×" if ref else "–"
        print(f"| {name} | {r['step_s']:.3f} | {r['sample_s']:.3f} | {r['score_s']:.3f} | {r['rest_s']:.3f} | {ratio} | "
              f"{r['response_len']:.1f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
