"""MiniLM embedding time in float32 vs bfloat16 on 128 Countdown-like completions, and their agreement.

    python benchmarks/embed_speed.py

Mean of 3 ``SentenceTransformer.encode`` calls (batch 128, normalised) after one warm-up call, per dtype, at 2
threads; then the smallest cosine between a text's bf16 and fp32 embeddings. bf16 is fast only on a CPU with
native bf16 (AVX512-BF16 / AMX); run it on an otherwise idle machine.
"""

from __future__ import annotations

import os
import random
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from sentence_transformers import SentenceTransformer

    from divrl.semantic.embedder import minilm_path

    torch.set_num_threads(2)
    rng = random.Random(0)
    texts = [
        f"<think>{rng.randint(1, 13)}+{rng.randint(1, 13)}={rng.randint(1, 30)}, then *{rng.randint(2, 9)}</think>"
        f"<answer>({rng.randint(1, 13)}+{rng.randint(1, 13)})*{rng.randint(1, 9)}</answer>"
        for _ in range(128)
    ]
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = SentenceTransformer(str(minilm_path()), device="cpu", model_kwargs={"dtype": dtype})
        model.encode(texts[:8])
        t0 = time.perf_counter()
        for _ in range(3):
            out[dtype] = model.encode(texts, batch_size=128, convert_to_tensor=True, normalize_embeddings=True).float()
        print(f"{dtype}: {(time.perf_counter() - t0) / 3:.3f} s for {len(texts)} texts")
    cos = torch.nn.functional.cosine_similarity(out[torch.float32], out[torch.bfloat16], dim=-1)
    print(f"min cosine bf16 vs fp32: {float(cos.min()):.4f}")


if __name__ == "__main__":
    main()
