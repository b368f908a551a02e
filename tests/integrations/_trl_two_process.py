"""Two-process DiversityGRPOTrainer run on CPU (gloo), launched by tests/integrations/test_trl.py via torchrun.

Usage: ``torchrun --standalone --nproc_per_node 2 _trl_two_process.py OUT_DIR``. Each rank writes
``OUT_DIR/rank<r>.json`` with what its reward function saw (a slice of the generation batch) and what the trainer
computed advantages over (whole gathered groups).

Layout: per_device_train_batch_size=6, num_generations=4, 2 ranks -> 12 rows = 3 groups per step; rank 0 holds
group 0 and half of group 1, rank 1 the other half of group 1 and group 2 (trl#3896's split).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from _tiny import NO_CHECKPOINTING, char_tokenizer, tiny_llama
from datasets import Dataset
from trl import GRPOConfig

from divrl.integrations.trl import DiversityGRPOTrainer
from divrl.semantic import CharNgramEmbedder

G = 4


def main(out_dir: Path) -> None:
    rank = int(os.environ["RANK"])
    tok = char_tokenizer()
    model = tiny_llama(tok)
    dataset = Dataset.from_dict({"prompt": [f"{c}{c}=" for c in "abcdefghijkl"]})

    seen_by_reward: list[list[str]] = []
    partition_calls: list[str] = []

    def parity(prompts: list[str], completions: list[str], **kwargs: object) -> list[float]:
        seen_by_reward.append(list(prompts))
        return [float(sum(map(ord, c)) % 2) for c in completions]

    def length_classes(prompt: str, texts: list[str]) -> list[int]:
        partition_calls.append(prompt)
        return [len(t) % 3 for t in texts]

    args = GRPOConfig(
        output_dir=str(out_dir / "run"), per_device_train_batch_size=6, num_generations=G, max_completion_length=8,
        learning_rate=1e-2, max_steps=2, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        bf16=False, **NO_CHECKPOINTING, disable_tqdm=True, seed=0, top_k=0, top_p=1.0,
    )  # fmt: skip

    steps: list[dict[str, object]] = []
    embedded: list[int] = []

    class Counting(CharNgramEmbedder):
        """Counts the texts this rank embeds in each step (no cache, so every call is counted)."""

        def _embed(self, texts):  # type: ignore[no-untyped-def]
            embedded[-1] += len(texts)
            return super()._embed(texts)

    class Recording(DiversityGRPOTrainer):  # type: ignore[misc]
        def _generate_and_score_completions(self, inputs):  # type: ignore[no-untyped-def]
            embedded.append(0)
            out = super()._generate_and_score_completions(inputs)
            batch = self.last_group_batch
            steps.append(
                {
                    "local_prompts": [x["prompt"] for x in inputs],
                    "group_prompts": self.last_group_prompts,
                    "group_texts": batch.texts,
                    "rewards": batch.rewards.tolist(),
                    "partition": batch.partition.tolist(),
                    "embeddings": batch.embeddings.tolist(),
                    "advantages": self.last_advantages.tolist(),
                    "local_advantages": out["advantages"].tolist(),
                    "local_correct": out["divrl_correct"].tolist(),
                }
            )
            return out

    trainer = Recording(
        model=model, reward_funcs=[parity], args=args, train_dataset=dataset, processing_class=tok,
        advantage="setpo", advantage_options={"base": "darling", "kernel": "cosine"}, partition_fn=length_classes,
        positive_entropy={"lam": 0.1, "gate": "correct"}, embedder=Counting(3, 16, cache_size=0),
    )  # fmt: skip
    trainer.train()
    record = {
        "rank": rank,
        "world_size": trainer.accelerator.num_processes,
        "steps": steps,
        "seen_by_reward": seen_by_reward,
        "partition_calls": partition_calls,
        "embedded": embedded,
        "div_term": trainer.state.log_history[0].get("divrl/div_term"),
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
