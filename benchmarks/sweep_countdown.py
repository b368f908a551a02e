"""Hyperparameter sweeps for the Countdown demo recipes, evaluated on the *validation* split (never test).

Each setting is ``method:override,override,...``; the run trains from the shipped base with the
method's recipe plus the overrides (and the ``--common`` ones) and is evaluated on the ``val`` split at
the end, or at each step of ``--eval-steps``. Finished settings are reused (their folder holds
``val_metrics.json``). Prints one table and writes ``sweep.json`` (metrics per setting, seed and evaluated
step, plus the training curve in 20-step windows); ``--samples`` also keeps every evaluation's completions
(``samples-<step>.json.gz``) so that any metric can be recomputed later.

    python benchmarks/sweep_countdown.py --out runs/sweep --steps 80 \
        "grpo:" "r1_zero_div:loss.1.options.lam=0.1" "darling:advantage.options.scale=none"

    # the recipes' defaults at seeds 0-2 were trained by `divrl bench`: evaluate those models on val instead of
    # training them again (a run is reused only when its config.yaml equals the setting's config)
    python benchmarks/sweep_countdown.py --out runs/val --steps 120 --reuse runs/bench "grpo:" "grpo:seed=1"

    # three seeds, four runs at a time, evaluated at steps 120, 180 and 240
    python benchmarks/sweep_countdown.py --out runs/sweep --steps 240 --seeds 0,1,2 --workers 4 \
        --eval-steps 120,180,240 --common optim.lr=1e-4 "grpo:"

Overrides use the CLI's ``key.path=value`` syntax, where a list item is addressed by its index
(``loss.1.options.lam``). Runs use the GPU when torch sees one (the trainer's own choice).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

KEYS = ["pass@1", "pass@8", "pass@32", "distinct_correct_classes", "div_equ", "entropy"]


def build(setting: str, steps: int, seed: int, common: list[str], base: str | None = None) -> tuple[str, Any]:
    """The run config of ``setting`` (``method:override,...``): the method's recipe, then ``model.path=base`` (when
    given; else the recipe's own base), the steps, the seed, the ``common`` overrides and the setting's own."""
    from divrl.config import apply_overrides, from_dict, load_yaml
    from divrl.eval.demo import RECIPES
    from divrl.trainer.config import RLConfig

    method, _, rest = setting.partition(":")
    data = load_yaml(RECIPES / "countdown" / f"{method}.yaml")
    overrides = [o for o in rest.split(",") if o]
    start = [f"model.path={base}"] if base else []
    data = apply_overrides(data, [*start, f"steps={steps}", f"seed={seed}", *common, *overrides])
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", setting.rstrip(":")) + f"_s{seed}"
    return name, from_dict(RLConfig, data)


def windows(run_dir: Path, width: int = 20) -> list[float]:
    """Mean training reward over consecutive ``width``-step windows."""
    from divrl.trainer.common import read_metrics

    rewards = [float(r["reward"]) for r in read_metrics(run_dir)]
    return [sum(rewards[i : i + width]) / len(rewards[i : i + width]) for i in range(0, len(rewards), width)]


def find_reusable(cfg: Any, root: Path | None, step: int) -> Path | None:
    """A finished run under ``root`` (any depth) whose ``config.yaml`` equals ``cfg`` and whose newest complete
    checkpoint is at ``step``: the trainer is deterministic for a config and seed, so its model is the one this
    setting would train. None when there is none (or no ``root``). With a constant learning rate the configs'
    ``steps`` may differ (a staged run saves its first stage's)."""
    from divrl.config import ConfigError, from_dict, load_yaml, to_dict
    from divrl.trainer.common import checkpoint_step, latest_checkpoint
    from divrl.trainer.config import RLConfig

    if root is None:
        return None
    want = to_dict(cfg)
    for path in sorted(root.rglob("config.yaml")):
        run_dir = path.parent
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None or checkpoint_step(ckpt.name) != step:
            continue
        try:
            saved = to_dict(from_dict(RLConfig, load_yaml(path)))
        except ConfigError:  # not an RL run's config
            continue
        # a staged run (--eval-steps) saved the steps of its first stage; with a constant learning rate the
        # total does not change the model at a step (the trainer reseeds every step), otherwise it must match
        if saved["optim"]["schedule"] == "constant":
            saved["steps"] = want["steps"]
        if saved == want:
            return run_dir
    return None


def reuse_run(source: Path, run_dir: Path) -> None:
    """Copy ``source``'s config, metrics and newest checkpoint into ``run_dir`` (which must hold no run yet)."""
    import shutil

    from divrl.trainer.common import LATEST, latest_checkpoint

    ckpt = latest_checkpoint(source)
    assert ckpt is not None
    run_dir.mkdir(parents=True, exist_ok=False)
    shutil.copy2(source / "config.yaml", run_dir / "config.yaml")
    shutil.copy2(source / "metrics.jsonl", run_dir / "metrics.jsonl")
    shutil.copytree(ckpt, run_dir / ckpt.name)
    (run_dir / LATEST).write_text(ckpt.name)
    (run_dir / "reused_from.txt").write_text(f"{source.resolve()}\n")


def evaluate_folder(folder: str, cfg: Any, args: argparse.Namespace, keep: Path | None) -> dict[str, Any]:
    """Evaluate the policy in ``folder`` on ``args.split`` (``args.problems`` problems, ``args.n`` samples, seed 7)
    with the task and rollout length of the run config ``cfg``; ``keep``: also save the completions there."""
    import torch

    from divrl.eval.evaluate import generate_samples, score_samples
    from divrl.models import load_policy
    from divrl.tasks import get_task

    task = get_task(cfg.task.name, **cfg.task.options)
    problems = task.problems(args.split, n=args.problems or None)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load_policy(folder, device=device, dtype="float32")
    samples = generate_samples(
        model, tok, task, problems, args.n, max_new_tokens=cfg.rollout.max_new_tokens, seed=7, progress=False
    )
    if keep is not None:
        keep.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(keep, "wt") as fh:
            json.dump({"samples": samples.samples, "greedy": samples.greedy, "entropy": samples.entropy}, fh)
    return score_samples(task, problems, samples)


def run_one(
    setting: str, seed: int, args: argparse.Namespace, eval_steps: list[int]
) -> tuple[str, str, int, dict[str, Any]]:
    """Train one setting (or resume it) and evaluate the requested checkpoints; returns (name, setting, seed, result)."""
    import torch

    from divrl.eval.evaluate import write_metrics
    from divrl.trainer.common import latest_checkpoint
    from divrl.trainer.rl import train

    if args.threads:
        torch.set_num_threads(args.threads)
    name, cfg = build(setting, args.steps, seed, args.common, args.base)
    run_dir = args.out / name
    path = run_dir / f"{args.split}_metrics.json"
    if path.exists():
        return name, setting, seed, json.loads(path.read_text())
    if len(eval_steps) > 1 and cfg.optim.schedule != "constant":
        raise ValueError(f"{name}: --eval-steps trains in stages, which needs optim.schedule 'constant'")
    t0 = time.perf_counter()
    result: dict[str, Any] = {"at": {}}
    if not run_dir.exists() and not eval_steps:
        source = find_reusable(cfg, args.reuse, args.steps)
        if source is not None:
            reuse_run(source, run_dir)
            result["reused_from"] = str(source)
    partial = run_dir / f"{args.split}_partial.json"
    if partial.exists():
        result = json.loads(partial.read_text())
    for step in eval_steps or [args.steps]:
        # train up to each evaluated step, then resume (the trainer reseeds every step, so this equals one run
        # to the end as long as the learning-rate schedule does not depend on the total: `constant`, the recipes')
        if str(step) in result["at"]:
            continue
        ckpt = latest_checkpoint(run_dir)
        done = int(ckpt.name.split("-")[-1]) if ckpt is not None else 0
        if done < step:
            train(
                dataclasses.replace(cfg, steps=step),
                run_dir,
                resume=ckpt is not None,
                overwrite=ckpt is None,
                progress=False,
            )
        ckpt = latest_checkpoint(run_dir)
        keep = args.out / "samples" / f"{name}-{step}.json.gz" if args.samples else None
        result["at"][str(step)] = evaluate_folder(str(ckpt), cfg, args, keep)
        result["reward_windows"] = windows(run_dir)
        write_metrics(result, partial)
    result.update(result["at"][str((eval_steps or [args.steps])[-1])])
    result["wall_s"] = time.perf_counter() - t0  # of this call (a resumed setting counts only what it ran now)
    write_metrics(result, path)
    return name, setting, seed, result


def run_base(args: argparse.Namespace) -> tuple[str, str, int, dict[str, Any]]:
    """Evaluate the base policy (``--base``) on the split, with the task and length of the first setting's config."""
    import torch

    from divrl.eval.evaluate import write_metrics

    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.out / "base" / f"{args.split}_metrics.json"
    if not path.exists():
        _, cfg = build(args.settings[0], args.steps, 0, args.common, args.base)
        keep = args.out / "samples" / "base.json.gz" if args.samples else None
        t0 = time.perf_counter()
        res = evaluate_folder(cfg.model.path, cfg, args, keep)
        res["wall_s"] = time.perf_counter() - t0
        write_metrics(res, path)
    return "base", "base", 0, json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="+")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0, help="Seed of every run (ignored when --seeds is given).")
    parser.add_argument("--seeds", default="", help="Comma-separated seeds; each setting runs once per seed.")
    parser.add_argument("--n", type=int, default=32, help="Samples per evaluation problem.")
    parser.add_argument("--split", default="val", help="Evaluation split (tune on val; report on test).")
    parser.add_argument("--eval-steps", default="", help="Comma-separated steps to evaluate (default: the last).")
    parser.add_argument("--common", action="append", default=[], help="Override applied to every setting.")
    parser.add_argument("--workers", type=int, default=1, help="Runs in parallel (one process each).")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0 = torch's default).")
    parser.add_argument("--deadline-min", type=float, default=0.0, help="Start no run after this many minutes.")
    parser.add_argument("--samples", action="store_true", help="Keep every evaluation's completions (gzip JSON).")
    parser.add_argument("--problems", type=int, default=0, help="Evaluation problems (0 = the whole split).")
    parser.add_argument("--include-base", action="store_true", help="Also evaluate the base policy.")
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="Folder of finished runs (e.g. a `divrl bench` output): a setting whose exact config was already trained "
        "there to --steps is evaluated from that model instead of trained again (not with --eval-steps).",
    )
    parser.add_argument(
        "--base",
        default=None,
        help="Policy every run starts from (default: each recipe's model.path, the testbed's base).",
    )
    args = parser.parse_args()
    if args.steps < 1 or args.n < 1 or args.problems < 0:
        parser.error("--steps and --n must be >= 1, --problems >= 0")
    seeds = [int(s) for s in args.seeds.split(",") if s] or [args.seed]
    eval_steps = sorted(int(s) for s in args.eval_steps.split(",") if s)
    if any(s > args.steps or s < 1 for s in eval_steps):
        parser.error(f"--eval-steps must lie in 1..{args.steps}")
    start = time.perf_counter()

    results: dict[str, dict[str, Any]] = {}
    if args.include_base and args.workers <= 1:
        results["base"] = run_base(args)[3]
    # seed-major: every setting gets its seed-0 run first
    jobs = [(setting, seed) for seed in seeds for setting in args.settings]
    if args.workers <= 1:
        for setting, seed in jobs:
            name, _, _, res = run_one(setting, seed, args, eval_steps)
            results[name] = {"setting": setting, "seed": seed, **res}
    else:
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            pending: dict[Future[Any], tuple[str, int]] = {}
            if args.include_base:  # evaluated alongside the first runs, in a worker of its own
                pending[pool.submit(run_base, args)] = ("base", 0)
            queue = list(jobs)
            while queue or pending:
                late = args.deadline_min and (time.perf_counter() - start) / 60 > args.deadline_min
                while queue and len(pending) < args.workers and not late:
                    setting, seed = queue.pop(0)
                    pending[pool.submit(run_one, setting, seed, args, eval_steps)] = (setting, seed)
                if late:
                    queue.clear()
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    setting, seed = pending.pop(fut)
                    try:
                        name, _, _, res = fut.result()
                    except Exception as exc:  # one failed run must not lose the others
                        print(f"FAILED {setting} seed {seed}: {type(exc).__name__}: {exc}", file=sys.stderr)
                        continue
                    results[name] = res if name == "base" else {"setting": setting, "seed": seed, **res}
                    print(f"done {name} in {res.get('wall_s', 0):.0f} s", flush=True)
                    (args.out / "sweep.json").write_text(json.dumps(results, indent=2))
    print("| run | " + " | ".join(KEYS) + " |")
    print("|---|" + "---|" * len(KEYS))
    for name, m in results.items():
        cells = [f"{m[k]:.3f}" if k in m else "-" for k in KEYS]  # pass@k exists only for n >= k
        print(f"| {name} | " + " | ".join(cells) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(results, indent=2))
    print(f"wall {time.perf_counter() - start:.0f} s, cpu count {os.cpu_count()}")


if __name__ == "__main__":
    main()
