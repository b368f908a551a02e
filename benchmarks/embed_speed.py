"""MiniLM embedding time in float32 vs bfloat16 on Countdown-like completions (128 by default), and their agreement.

    python benchmarks/embed_speed.py            # --texts 128 --repeats 3 --threads 2

Mean of ``--repeats`` ``SentenceTransformer.encode`` calls (one batch of all texts, normalised) after one warm-up
call, per dtype, at ``--threads`` threads; then the smallest cosine between a text's bf16 and fp32 embeddings. bf16
is fast only on a CPU with native bf16 (AVX512-BF16 / AMX); run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import random
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=128, help="completions embedded per call (one batch)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per dtype")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if min(args.texts, args.repeats, args.threads) < 1:
        parser.error("--texts, --repeats and --threads must be >= 1")

    from sentence_transformers import SentenceTransformer

    from divrl.semantic.embedder import minilm_path

    torch.set_num_threads(args.threads)
    rng = random.Random(0)
    texts = [
        f"<think>{rng.randint(1, 13)}+{rng.randint(1, 13)}={rng.randint(1, 30)}, then *{rng.randint(2, 9)}</think>"
        f"<answer>({rng.randint(1, 13)}+{rng.randint(1, 13)})*{rng.randint(1, 9)}</answer>"
        for _ in range(args.texts)
    ]
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = SentenceTransformer(str(minilm_path()), device="cpu", model_kwargs={"dtype": dtype})
        model.encode(texts[:8])
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            out[dtype] = model.encode(
                texts, batch_size=len(texts), convert_to_tensor=True, normalize_embeddings=True
            ).float()
        print(f"{dtype}: {(time.perf_counter() - t0) / args.repeats:.3f} s for {len(texts)} texts")
    cos = torch.nn.functional.cosine_similarity(out[torch.float32], out[torch.bfloat16], dim=-1)
    print(f"min cosine bf16 vs fp32: {float(cos.min()):.4f}")


if __name__ == "__main__":
    main()
