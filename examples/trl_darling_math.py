"""DARLING (+ R1-zero-Div's entropy term) on maths with DiversityGRPOTrainer: the script of docs/scale-out.md.

On GPUs it runs under ``accelerate launch`` at any world size (vLLM server or colocate mode, DeepSpeed ZeRO, FSDP),
see docs/scale-out.md for the launch lines; DiversityGRPOTrainer gathers whole groups over all processes before the
advantage. The lines marked ``# divrl`` are everything divrl adds to a stock TRL GRPO script.

    # 8 GPUs: GPU 0 serves vLLM, GPUs 1-7 train (docs/scale-out.md, "Launch: one node, vLLM server mode")
    CUDA_VISIBLE_DEVICES=0 trl vllm-serve --model Qwen/Qwen2.5-Math-1.5B &
    CUDA_VISIBLE_DEVICES=1,2,3,4,5,6,7 accelerate launch --config_file "$CFG/zero3.yaml" --num_processes 7 \\
        examples/trl_darling_math.py --dataset gsm8k

    python examples/trl_darling_math.py --smoke   # one CPU step: builtin policy, tests/data/gsm8k_mini.jsonl

``--smoke`` swaps in divrl's packaged CPU policy, a local data file, no vLLM and no bf16; nothing else changes.
Exercised by tests/test_examples.py (``--smoke`` only: the GPU path is not run by the test suite).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trl import GRPOConfig

from divrl.integrations.trl import DiversityGRPOTrainer, MathAccuracyReward, math_answer_key, math_dataset  # divrl

MINI = Path(__file__).resolve().parents[1] / "tests" / "data" / "gsm8k_mini.jsonl"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="Qwen/Qwen2.5-Math-1.5B", help="Hub id, folder or builtin:<name>.")
    parser.add_argument("--dataset", default="gsm8k", help="A divrl maths dataset name (gsm8k, math, ...) or hub id.")
    parser.add_argument("--data", default=None, help="A local JSONL/Parquet/CSV file instead of --dataset.")
    parser.add_argument("--out", default="runs/darling", help="TRL output_dir.")
    parser.add_argument("--vllm-mode", default="server", choices=["server", "colocate"], help="TRL's vllm_mode.")
    parser.add_argument("--smoke", action="store_true", help="One CPU step with the builtin policy (no GPU).")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.data = "builtin:countdown-tiny", str(MINI)

    accuracy = MathAccuracyReward(timeout=5.0)  # divrl: math-verify in a worker pool, None on a timeout
    source = {"data": args.data} if args.data else {"dataset": args.dataset}
    train = math_dataset(args.data or "train", **source)  # divrl: columns "prompt" (R1-zero template), "solution"
    config = GRPOConfig(
        output_dir=args.out,
        num_generations=4 if args.smoke else 8,
        per_device_train_batch_size=4 if args.smoke else 8,
        gradient_accumulation_steps=1 if args.smoke else 4,
        max_completion_length=8 if args.smoke else 1024,
        max_steps=1 if args.smoke else -1,
        learning_rate=1e-6,
        bf16=not args.smoke,
        use_cpu=args.smoke,
        use_vllm=not args.smoke,
        vllm_mode=args.vllm_mode,
        logging_steps=1,
        save_strategy="no" if args.smoke else "steps",
        report_to="none" if args.smoke else "wandb",
    )
    trainer = DiversityGRPOTrainer(
        model=args.model,
        reward_funcs=[accuracy],
        args=config,
        train_dataset=train,
        advantage="darling",  # divrl: any registered estimator
        advantage_options={"scale": "none"},  # divrl: DARLING's default, no std division; not TRL's scale_rewards
        partition_key=math_answer_key,  # divrl: equal final answers = one class
        correct_reward="math_accuracy_reward",  # divrl: correct = accuracy >= 1.0
        positive_entropy={"lam": 0.01, "gate": "correct"},  # divrl: R1-zero-Div term (optional)
    )
    trainer.train()
    print(f"done: {trainer.state.global_step} steps")


if __name__ == "__main__":
    main()
