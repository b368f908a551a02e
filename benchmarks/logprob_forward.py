"""Forward+backward time of the training log-prob pass on one Countdown step, by length buckets and prefix sharing,
eager or compiled.

    python benchmarks/logprob_forward.py            # eager: 1 padded pass vs 2/4/8 length buckets, 1/4 prefix-shared
    python benchmarks/logprob_forward.py --compile  # the same after torch.compile(model.forward, dynamic=True)

One step of the shipped base: ``--prompts`` train problems x ``--samples`` samples (16 x 16, seed 0), max
``--max-new-tokens`` (56) new tokens, T = 1. Prints the largest log-prob difference of each bucketing against the
single padded pass, then the mean of ``--repeats`` (3) timed forward+backward passes (after a warm-up) per setting.
"prefix-shared": ``group_size = --samples`` (each prompt's forward once per bucket, its KV cache serving its rows).
2 threads; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from divrl.models.policy import load_policy
from divrl.rollout import sample, token_logprobs
from divrl.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=16, help="train problems in the batch")
    parser.add_argument("--samples", type=int, default=16, help="completions per problem")
    parser.add_argument("--max-new-tokens", type=int, default=56)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per setting")
    args = parser.parse_args()
    if min(args.threads, args.prompts, args.samples, args.max_new_tokens, args.repeats) < 1:
        parser.error("--threads, --prompts, --samples, --max-new-tokens and --repeats must be >= 1")
    torch.set_num_threads(args.threads)
    model, tok = load_policy("builtin:countdown-tiny")[:2]
    task = get_task("countdown")
    problems = random.Random(0).sample(task.problems("train"), args.prompts)
    prompts = [task.prompt(p) for p in problems]
    r = sample(
        model, tok, prompts, num_samples=args.samples, max_new_tokens=args.max_new_tokens, stop=task.stop, seed=0
    )
    model.train()

    def step(buckets: int, shared: bool = False) -> torch.Tensor:
        lp, ent = token_logprobs(
            model,
            r.input_ids,
            r.completion_start,
            r.completion_mask,
            with_entropy=True,
            attention_mask=r.attention_mask,
            length_buckets=buckets,
            group_size=args.samples if shared else 1,
        )
        (lp.sum() + ent.sum()).backward()
        return lp.detach()

    one_pass = step(1)
    for k in (2, 4, 8):
        print(f"buckets {k}: max |logp - one pass| = {float((step(k) - one_pass).abs().max()):.2e}")
    for k in (1, 4):
        diff = float((step(k, True) - one_pass).abs().max())
        print(f"buckets {k}, prefix-shared: max |logp - one pass| = {diff:.2e}")
    if args.compile:
        t0 = time.perf_counter()
        model.forward = torch.compile(model.forward, dynamic=True)
        step(1)
        print(f"compile + first pass: {time.perf_counter() - t0:.1f} s")
    print(f"{tuple(r.input_ids.shape)} tokens, mean completion {float(r.completion_mask.sum(-1).float().mean()):.1f}")
    for k, shared in ((1, False), (2, False), (4, False), (8, False), (1, True), (4, True)):
        step(k, shared)
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            step(k, shared)
        mean_s = (time.perf_counter() - t0) / args.repeats
        mode = "compiled" if args.compile else "eager"
        print(f"{mode}, buckets {k}{', prefix-shared' if shared else ''}: {mean_s:.3f} s")


if __name__ == "__main__":
    main()
