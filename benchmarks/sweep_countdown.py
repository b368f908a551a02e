"""Hyperparameter sweeps for the Countdown demo recipes, evaluated on the *validation* split (never test).

Each setting is ``method:override,override,...``; the run trains from the shipped base with the
method's recipe plus the overrides and is evaluated on the ``val`` split. Finished settings are
reused (their folder holds ``val_metrics.json``). Prints one table and writes ``sweep.json``.

    python benchmarks/sweep_countdown.py --out runs/sweep --steps 80 \
        "grpo:" "r1_zero_div:loss.1.options.lam=0.1" "darling:advantage.options.scale=none"

Overrides use the CLI's ``key.path=value`` syntax, where a list item is addressed by its index
(``loss.1.options.lam``).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

from divrl.config import apply_overrides, from_dict, load_yaml
from divrl.eval.demo import RECIPES
from divrl.eval.evaluate import evaluate, write_metrics
from divrl.models import load_policy
from divrl.tasks import get_task
from divrl.trainer.common import latest_checkpoint
from divrl.trainer.config import RLConfig
from divrl.trainer.rl import train

KEYS = ["pass@1", "pass@8", "pass@32", "distinct_correct_classes", "div_equ", "entropy"]


def build(setting: str, steps: int, seed: int) -> tuple[str, RLConfig]:
    method, _, rest = setting.partition(":")
    data = load_yaml(RECIPES / "countdown" / f"{method}.yaml")
    overrides = [o for o in rest.split(",") if o]
    data = apply_overrides(data, [f"steps={steps}", f"seed={seed}", *overrides])
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", setting.rstrip(":")) + f"_s{seed}"
    return name, from_dict(RLConfig, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="+")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--include-base", action="store_true")
    args = parser.parse_args()

    task = get_task("countdown")
    problems = task.problems("val")
    results: dict[str, dict[str, Any]] = {}
    if args.include_base:
        path = args.out / "base" / "val_metrics.json"
        if not path.exists():
            model, tok = load_policy("src/divrl/assets/countdown-tiny")
            write_metrics(evaluate(model, tok, task, problems, args.n, max_new_tokens=56, seed=7), path)
        results["base"] = json.loads(path.read_text())
    for setting in args.settings:
        name, cfg = build(setting, args.steps, args.seed)
        run_dir = args.out / name
        path = run_dir / "val_metrics.json"
        if not path.exists():
            t0 = time.perf_counter()
            ckpt = latest_checkpoint(run_dir)
            if ckpt is None or ckpt.name != f"checkpoint-{args.steps:06d}":
                train(cfg, run_dir, resume=ckpt is not None, overwrite=ckpt is None)  # the sweep owns its folders
            train_s = time.perf_counter() - t0
            model, tok = load_policy(str(latest_checkpoint(run_dir)))
            metrics = evaluate(model, tok, task, problems, args.n, max_new_tokens=cfg.rollout.max_new_tokens, seed=7)
            metrics["train_s"] = train_s
            write_metrics(metrics, path)
        results[name] = json.loads(path.read_text())
    print("| run | " + " | ".join(KEYS) + " |")
    print("|---|" + "---|" * len(KEYS))
    for name, m in results.items():
        print(f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in KEYS) + " |")
    (args.out / "sweep.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
