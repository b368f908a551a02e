"""GPU check: ``divrl train`` and one ``DiversityGRPOTrainer`` step on CUDA, with throughput (issue 13, point 7).

Builds a randomly initialised ~50M-parameter Qwen2 with divrl's character tokenizer, then
1. runs ``divrl train`` (the GRPO Countdown recipe, ``model.dtype=bfloat16``, ``--steps`` steps) in a subprocess and
   reads the per-step times from its ``metrics.jsonl``;
2. runs TRL's trainer through ``DiversityGRPOTrainer`` (DARLING with Countdown's exact partition key, bf16) for two
   steps and times them (needs ``trl``; on a machine without it, carry its wheels).
Each part runs on its own, so one failure does not hide the other; the summary goes to ``<out>/gpu_check.json`` and
each part's log to ``<out>/<part>.log``. A random policy never emits EOS, so every completion runs to
``max_new_tokens``: the sampling figures are the worst case for that length.

    python benchmarks/gpu_check.py --out runs/gpu_check --steps 20
    python benchmarks/gpu_check.py --out runs/gpu_check --smoke    # tiny model, 2 steps: CPU-friendly check
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# ~50.4M parameters: 12 blocks of 4·512² (attention) + 3·512·2048 (SwiGLU MLP), plus the char embeddings
QWEN_50M = {"hidden_size": 512, "num_hidden_layers": 12, "num_attention_heads": 8, "num_key_value_heads": 8,
            "intermediate_size": 2048}  # fmt: skip
SMOKE = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
         "intermediate_size": 64}  # fmt: skip


def environment() -> dict[str, Any]:
    import torch
    import transformers

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name(0)
        env["cuda_version"] = torch.version.cuda
        env["bf16_supported"] = torch.cuda.is_bf16_supported()
    try:
        import trl

        env["trl"] = trl.__version__
    except ImportError:
        env["trl"] = None
    return env


def build_model(folder: Path, shape: dict[str, int]) -> int:
    from divrl.models.policy import PolicySize, build_policy, count_parameters, save_policy
    from divrl.models.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    model = build_policy(PolicySize(**shape), arch="qwen2", tokenizer=tok, seed=0)
    save_policy(model, tok, folder)
    return count_parameters(model)


def divrl_train(model_dir: Path, run_dir: Path, steps: int, smoke: bool, log: Path) -> dict[str, Any]:
    sets = [f"model.path={model_dir}", f"steps={steps}", f"save_every={steps}", "model.dtype=bfloat16"]
    if smoke:
        sets += ["model.dtype=float32", "rollout.prompts_per_step=2", "rollout.group_size=4"]
        sets += ["rollout.max_new_tokens=8"]
    cmd = [sys.executable, "-c", "from divrl.cli import app; app()", "train", "--config",
           str(ROOT / "src/divrl/recipes/countdown/grpo.yaml"), "--out", str(run_dir)]  # fmt: skip
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=400)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    timed = rows[2:] or rows  # steps 1-2 include CUDA warm-up
    step_s = sum(r["time_step_s"] for r in timed) / len(timed)
    sample_s = sum(r["time_sample_s"] for r in timed) / len(timed)
    rollouts = 2 * 4 if smoke else 16 * 16
    return {
        "returncode": proc.returncode,
        "wall_s": wall,
        "steps_logged": len(rows),
        "mean_step_s_after_2": step_s,
        "mean_sample_s_after_2": sample_s,
        "samples_per_s": rollouts / step_s,
        "mean_response_len": sum(r["response_len"] for r in rows) / len(rows),
        "last": {k: rows[-1][k] for k in ("reward", "loss", "grad_norm", "entropy") if k in rows[-1]},
        "checkpoint": (run_dir / "latest").read_text().strip() if (run_dir / "latest").exists() else None,
    }


def trl_step(model_dir: Path, out_dir: Path, smoke: bool) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from trl import GRPOConfig

    from divrl.integrations.trl import DiversityGRPOTrainer
    from divrl.models import load_policy
    from divrl.tasks import countdown, get_task

    task = get_task("countdown")
    problems = task.problems("train", n=16, seed=0)
    rows = {"prompt": [task.prompt(p) for p in problems], "problem": [p.to_json() for p in problems]}

    def countdown_reward(prompts: list[str], completions: list[str], problem: list[str], **_: Any) -> list[float]:
        return [
            float(countdown.verify(countdown.Problem.from_json(p), c).correct)
            for p, c in zip(problem, completions, strict=True)
        ]

    use_cuda = torch.cuda.is_available() and not smoke
    model, tok = load_policy(str(model_dir), dtype="bfloat16" if use_cuda else "float32")
    g = 4 if smoke else 8
    args = GRPOConfig(
        output_dir=str(out_dir), per_device_train_batch_size=2 * g if smoke else 64, num_generations=g,
        max_completion_length=8 if smoke else 56, learning_rate=1e-5, max_steps=2, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=not use_cuda, bf16=use_cuda, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = DiversityGRPOTrainer(
        model=model, reward_funcs=[countdown_reward], args=args, train_dataset=Dataset.from_dict(rows),
        processing_class=tok, advantage="darling", partition_key=countdown.equivalence_key,
    )  # fmt: skip
    times: list[float] = []

    class Clock:  # TrainerCallback duck type: time each optimizer step
        def __getattr__(self, name: str) -> Any:
            return lambda *a, **k: None

        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.t0 = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            if use_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    trainer.add_callback(Clock())
    trainer.train()
    return {
        "steps": trainer.state.global_step,
        "step_s": times,
        "device": str(next(trainer.model.parameters()).device),
        "dtype": str(next(trainer.model.parameters()).dtype),
        "completions_per_step": args.per_device_train_batch_size,
        "advantages_shape": list(trainer.last_advantages.shape) if trainer.last_advantages is not None else None,
        "log": trainer.state.log_history[-1] if trainer.state.log_history else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="Tiny model and batches (runs on CPU in seconds).")
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: <out>/work).")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "env": environment()}

    def part(name: str, fn: Any) -> None:
        t0 = time.perf_counter()
        try:
            summary[name] = {"ok": True, **fn()}
        except Exception as exc:
            summary[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        summary[name]["seconds"] = time.perf_counter() - t0
        (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=2, default=str))
        print(f"{name}: {'ok' if summary[name]['ok'] else summary[name]['error']}", flush=True)

    model_dir = work / "qwen2-random"
    part("build", lambda: {"parameters": build_model(model_dir, SMOKE if args.smoke else QWEN_50M)})
    part("divrl_train", lambda: divrl_train(model_dir, work / "run", args.steps, args.smoke, args.out / "train.log"))
    part("trl_step", lambda: trl_step(model_dir, work / "trl", args.smoke))
    print(json.dumps({k: v for k, v in summary.items() if k != "env"}, indent=1, default=str)[:6000])


if __name__ == "__main__":
    main()
