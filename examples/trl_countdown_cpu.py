"""DARLING inside TRL on CPU: divrl's packaged tiny policy learns Countdown with DiversityGRPOTrainer.

Everything comes with divrl (no hub download): the policy ``builtin:countdown-tiny``, the Countdown dataset
(``countdown_dataset``: prompts exactly as ``divrl train`` formats them), the verifier as a TRL reward
(``countdown_reward``) and DARLING's exact partition key (``countdown.equivalence_key``: equal answer expressions up to
commutativity and associativity are one class). Every ``--eval-every`` steps 16 held-out (val) problems are
evaluated with divrl's metrics (pass@k, distinct correct classes, entropy; ``DivrlEvalCallback``) and logged through
TRL's loggers.

    pip install "divrl[trl]"
    python examples/trl_countdown_cpu.py                 # 30 steps, about 30 s on 2 CPU cores
    python examples/trl_countdown_cpu.py --smoke         # one step, tiny sizes (what the test suite runs)

Exercised by tests/test_examples.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from trl import GRPOConfig

from divrl.integrations.trl import (  # divrl
    DiversityGRPOTrainer,
    DivrlEvalCallback,
    countdown_dataset,
    countdown_reward,
)
from divrl.tasks import countdown  # divrl


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/trl_countdown_cpu", help="TRL output_dir.")
    parser.add_argument("--steps", type=int, default=30, help="Optimizer steps.")
    parser.add_argument("--advantage", default="darling", help="Any divrl estimator: darling, grpo, setpo, ...")
    parser.add_argument(
        "--threads", type=int, default=1, help="Torch CPU threads (a 1M-parameter model runs fastest on one)."
    )
    parser.add_argument("--eval-every", type=int, default=10, help="Evaluate the val problems every N steps.")
    parser.add_argument("--smoke", action="store_true", help="One step at tiny sizes (the test suite's run).")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps, G, prompts, length = (1, 4, 2, 16) if args.smoke else (args.steps, 8, 4, 32)

    config = GRPOConfig(
        output_dir=args.out,
        max_steps=steps,
        num_generations=G,
        per_device_train_batch_size=G * prompts,  # `prompts` whole groups per step
        max_completion_length=length,
        learning_rate=2e-4,
        temperature=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",  # or "tensorboard", "wandb": the divrl metrics go wherever TRL logs
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    trainer = DiversityGRPOTrainer(
        model="builtin:countdown-tiny",  # divrl: the packaged policy (a plain save_pretrained folder)
        reward_funcs=[countdown_reward],  # divrl: reads the dataset's "numbers" and "target" columns
        args=config,
        train_dataset=countdown_dataset("train"),  # divrl: columns prompt, numbers, target
        advantage=args.advantage,  # divrl: the advantage estimator
        partition_key=countdown.equivalence_key if args.advantage == "darling" else None,  # divrl: DARLING's classes
    )
    trainer.add_callback(  # divrl: pass@k, distinct correct classes, entropy of 16 val problems, in TRL's logs
        DivrlEvalCallback(
            trainer,
            "countdown",
            split="val",
            num_problems=2 if args.smoke else 16,
            n=4 if args.smoke else 8,
            every=1 if args.smoke else args.eval_every,
            at_start=True,
        )
    )
    trainer.train()
    train = [h for h in trainer.state.log_history if "reward" in h]
    evals = [h for h in trainer.state.log_history if "eval_divrl/pass@1" in h]
    summary = {"steps": trainer.state.global_step, "reward": train[-1]["reward"]}
    for key in ("pass@1", "pass@8" if not args.smoke else "pass@4", "distinct_correct_classes"):
        summary[f"{key} (first -> last eval)"] = [evals[0][f"eval_divrl/{key}"], evals[-1][f"eval_divrl/{key}"]]
    rank = trainer.accelerator.process_index  # under torchrun every rank gets here: one file each, one printed line
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"summary-rank{rank}.json").write_text(json.dumps(summary))
    if trainer.accelerator.is_main_process:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
