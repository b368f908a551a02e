"""Throughput of divrl's RL trainer against TRL's ``GRPOTrainer`` on the same model, task and batch (CPU).

    python benchmarks/trainer_vs_trl.py --steps 5 --repeats 2 --prompts 16 --group 16 --threads 2

Both trainers start from the shipped ``builtin:countdown-tiny`` base (1.06M-parameter Llama, char tokenizer; reloaded
for every block) and train GRPO on Countdown with the same settings: P prompts x G completions per step and one
optimizer step per generation batch (TRL: ``per_device_train_batch_size = P*G``, ``num_generations = G``,
``gradient_accumulation_steps = steps_per_generation = num_iterations = 1``), ``max_new_tokens`` 56, temperature
1.0, top-p 1.0, top-k 0 (off; TRL's default is 0 too), fp32, AdamW at a constant lr 3e-4, betas (0.9, 0.999), no
weight decay, grad clip 1.0, beta 0 (no reference model), token-mean loss (divrl ``ppo agg=token-mean``, TRL
``loss_type="dapo"``), group-std GRPO advantages and the Countdown verifier as the reward. TRL runs with
``bf16=False, gradient_checkpointing=False, use_cpu=True`` (its defaults cost ~9x on an AVX2-only CPU).

Stop behaviour (why there are three blocks). divrl ends a completion at the task's stop string ``</answer>``. TRL
1.16 cannot on the transformers generation path: ``generation_kwargs={"stop_strings": [...]}`` is passed through to
``GenerationConfig``, but ``generate`` then raises "could not locate a tokenizer" because TRL does not pass
``tokenizer=``; forcing it in (wrapping ``model.generate``) stops generation, yet TRL masks only after the first EOS,
so the pad tokens that ``generate`` writes after a stop string are trained on as completion tokens and the rows count
as clipped. TRL therefore runs with EOS stopping only. The shipped base was warm-started on ``completion + <eos>``, so
it emits ``<eos>`` right after ``</answer>``: EOS-only completions are about one token longer. Blocks:

- ``divrl``: the native trainer (stops at ``</answer>`` or EOS);
- ``divrl-eos``: divrl with the stop string removed (EOS or the length cap only): the apples-to-apples comparison;
- ``trl``: TRL's ``GRPOTrainer`` (EOS or the length cap).

Timing. samples/s = completions trained per second of wall time: P*G / (mean seconds per step). A step's wall time is
end to end: for divrl ``RLTrainer.step`` plus its metric logging (what ``RLTrainer.run`` does per step); for TRL the
interval between consecutive ``on_step_end`` callbacks (data loading, generation, reward, loss, backward, optimizer,
logging). Each block loads the base, runs ``--warmup`` untimed steps, then ``--steps`` timed steps; the blocks
alternate within one process, in reversed order on odd repeats. Every block of a trainer uses the same seed, so
repeats differ only by timing noise. Under other CPU load the figures mean little (2 cores: +-15 % even when idle).

FLOPs. After its timed steps each block runs one more step under ``torch.utils.flop_counter.FlopCounterMode`` (not
timed), which counts every matmul of that step: the sampling forward passes (prefill and decode), the training
forward and backward. Attention is counted as the full L x L product (causality ignored), including the CPU flash
kernel, which torch's counter does not know by default. Achieved GFLOP/s = counted FLOPs of that step / mean timed
step time. The rule-of-thumb estimate printed beside it is ``6 * N * T_train + 2 * N * T_sample`` with N the
parameter count (embedding tied with the LM head, counted once), T_train the tokens of the training forward
(rows x padded prompt+completion length; for divrl, summed over its ``--length-buckets`` row buckets, each cut
to its longest completion; with ``--prefix-sharing``, each bucket's distinct prompts once plus its rows'
completions) and T_sample the tokens fed while sampling (divrl: each distinct prompt once, then each row's
generated tokens but the last; TRL/transformers ``generate``: every row's prompt, then one
token per row per decode step until the last row finishes); it ignores attention's L x L term and whatever padding the sampler does or avoids. The
peak is the best fp32 ``torch.matmul`` rate over square sizes 256..2048 at the same thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

BASE = "builtin:countdown-tiny"
VARIANTS = ("divrl", "divrl-eos", "trl")


@dataclass
class Block:
    """One block: a fresh trainer from the base, warm-up steps, timed steps, one FLOP-counted step."""

    variant: str
    repeat: int
    step_s: list[float] = field(default_factory=list)
    sample_s: list[float] = field(default_factory=list)  # of which sampling (generation)
    completion_len: list[float] = field(default_factory=list)  # mean completion tokens per step (stop/EOS included)
    train_tokens: list[int] = field(default_factory=list)  # rows x (prompt + completion) columns of the training pass
    sample_tokens: list[int] = field(default_factory=list)  # prompt + generated tokens fed while sampling
    flops: float = float("nan")  # counted FLOPs of the extra step
    flop_step: dict[str, float] = field(default_factory=dict)  # the extra step's token counts
    threads: int = 0

    @property
    def mean_step_s(self) -> float:
        return statistics.fmean(self.step_s)


# ------------------------------------------------------------------------------------------------
# FLOP counting and the matmul peak
# ------------------------------------------------------------------------------------------------


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that also counts CPU SDPA (``_scaled_dot_product_flash_attention_for_cpu`` and its backward,
    absent from torch's table), with torch's own SDPA formulas (full L x L, causality ignored)."""

    def forward(query: Any, key: Any, value: Any, *_: Any, out_shape: Any = None, **__: Any) -> int:
        return int(sdpa_flop_count(query, key, value))  # shapes (B, heads, L, E)

    def backward(grad_out: Any, query: Any, key: Any, value: Any, *_: Any, out_shape: Any = None, **__: Any) -> int:
        return int(sdpa_backward_flop_count(grad_out, query, key, value))

    aten = torch.ops.aten
    mapping = {
        aten._scaled_dot_product_flash_attention_for_cpu: forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: backward,
    }
    return FlopCounterMode(display=False, custom_mapping=mapping)


def matmul_peak(sizes: tuple[int, ...] = (256, 512, 1024, 2048), min_time: float = 0.3) -> dict[int, float]:
    """GFLOP/s of fp32 ``torch.matmul`` on square (n, n) @ (n, n) products (2 n^3 FLOPs each), best of repeats."""
    out = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.matmul(a, b)  # warm-up
        best, spent = float("inf"), 0.0
        while spent < min_time:
            t0 = time.perf_counter()
            torch.matmul(a, b)
            dt = time.perf_counter() - t0
            best, spent = min(best, dt), spent + dt
        out[n] = 2 * n**3 / best / 1e9
    return out


# ------------------------------------------------------------------------------------------------
# divrl
# ------------------------------------------------------------------------------------------------


def run_divrl(args: argparse.Namespace, repeat: int, stop: bool, run_dir: Path) -> Block:
    from divrl.trainer.config import (
        AdvantageConfig,
        LossTermConfig,
        ModelConfig,
        OptimConfig,
        RLConfig,
        RolloutConfig,
    )
    from divrl.trainer.rl import RLTrainer

    total = args.warmup + args.steps + 1
    cfg = RLConfig(
        model=ModelConfig(path=BASE, dtype="float32"),
        rollout=RolloutConfig(
            prompts_per_step=args.prompts,
            group_size=args.group,
            temperature=1.0,
            top_p=1.0,
            max_new_tokens=args.max_new_tokens,
            batch_size=max(512, args.prompts * args.group),  # one decode batch, as TRL's single generate call
        ),
        advantage=AdvantageConfig(name="grpo"),
        loss=[LossTermConfig(name="ppo", options={"agg": "token-mean"})],
        optim=OptimConfig(lr=args.lr, grad_clip=1.0),
        steps=total,
        seed=args.seed,
        save_every=10**9,
        threads=args.threads,
        length_buckets=args.length_buckets,
        prefix_sharing=args.prefix_sharing,
        compile=args.compile,
        name="divrl" if stop else "divrl-eos",
    )
    trainer = RLTrainer(cfg, run_dir, progress=False)
    if not stop:
        trainer.task.stop = ()  # type: ignore[misc]  # instance attribute shadows CountdownTask.stop
    block = Block("divrl" if stop else "divrl-eos", repeat)
    shapes: list[tuple[int, int, int, int]] = []
    optimize = trainer.optimize

    def recording_optimize(
        batch: Any, advantages: torch.Tensor, rollouts: Any, *rest: Any, **options: Any
    ) -> dict[str, float]:
        # records the batch's shapes, then calls the trainer's own optimize with whatever else it was given
        n, lp = rollouts.prompt_ids.shape
        lengths = rollouts.completion_mask.sum(-1)  # (N,)
        # tokens the training forward sees: per length bucket, its rows x (prompt + its longest completion); with
        # prefix sharing, its distinct prompts x prompt + its rows x (longest completion - 1)
        order = torch.argsort(lengths, stable=True)  # (N,)
        train_tokens = 0
        for rows in order.chunk(max(1, min(args.length_buckets, n))):
            width = max(int(lengths[rows].max()), 1)
            if args.prefix_sharing:
                train_tokens += len(set((rows // args.group).tolist())) * lp + len(rows) * (width - 1)
            else:
                train_tokens += len(rows) * (lp + width)
        generated = int(lengths.sum())
        shapes.append((n, lp, train_tokens, generated))
        return optimize(batch, advantages, rollouts, *rest, **options)

    trainer.optimize = recording_optimize  # type: ignore[method-assign]

    def one_step(step: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        metrics = trainer.step(step)
        trainer.logger.log(step + 1, metrics)
        return time.perf_counter() - t0, metrics["time_sample_s"]

    for step in range(args.warmup):
        one_step(step)
    for step in range(args.warmup, args.warmup + args.steps):
        step_s, sample_s = one_step(step)
        block.step_s.append(step_s)
        block.sample_s.append(sample_s)
        n, lp, train_tokens, generated = shapes[-1]
        block.completion_len.append(generated / n)
        block.train_tokens.append(train_tokens)
        # the sampler prefills each distinct prompt once (its logits give every row's first token), then feeds
        # each row's generated tokens but the last; finished rows are dropped as they finish
        block.sample_tokens.append(args.prompts * lp + generated - n)
    if not args.no_flops:
        with flop_counter() as counter:
            trainer.step(total - 1)
        n, lp, train_tokens, generated = shapes[-1]
        block.flops = float(counter.get_total_flops())
        block.flop_step = {"train_tokens": train_tokens, "sample_tokens": args.prompts * lp + generated - n}
    trainer.logger.close()
    block.threads = torch.get_num_threads()
    return block


# ------------------------------------------------------------------------------------------------
# TRL
# ------------------------------------------------------------------------------------------------


def run_trl(args: argparse.Namespace, repeat: int, out_dir: Path) -> Block:
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from divrl.models import load_policy
    from divrl.models.builtin import resolve_model_path
    from divrl.tasks import get_task

    torch.set_num_threads(args.threads)
    task = get_task("countdown")
    problems = task.problems("train")
    by_prompt = {task.prompt(p): p for p in problems}
    if len(by_prompt) != len(problems):
        raise RuntimeError("two Countdown problems share a prompt; the TRL reward cannot find its problem")

    def countdown_reward(prompts: list[str], completions: list[str], **_: Any) -> list[float | None]:
        rewards = []
        for prompt, completion in zip(prompts, completions, strict=True):
            verdict = task.verify(by_prompt[prompt], completion)
            rewards.append(None if verdict.reward is None else float(verdict.reward))
        return rewards

    total = args.warmup + args.steps + 1
    config = GRPOConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=args.prompts * args.group,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=1,
        num_generations=args.group,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        max_grad_norm=1.0,
        beta=0.0,
        loss_type="dapo",
        scale_rewards="group",
        max_steps=total,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=args.seed,
        torch_compile=args.trl_compile,
    )
    model, tokenizer = load_policy(resolve_model_path(BASE), dtype="float32")
    dataset = Dataset.from_dict({"prompt": list(by_prompt)})
    block = Block("trl", repeat)
    ends: list[float] = []
    counter = flop_counter()

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, *a: Any, **k: Any) -> None:
            ends.append(time.perf_counter())

        def on_step_begin(self, _args: Any, state: Any, *a: Any, **k: Any) -> None:
            if state.global_step == total - 1 and not args.no_flops:
                counter.__enter__()

        def on_step_end(self, _args: Any, state: Any, *a: Any, **k: Any) -> None:
            if state.global_step == total and not args.no_flops:
                counter.__exit__(None, None, None)
            ends.append(time.perf_counter())

    shapes: list[tuple[int, int, int, int]] = []
    generate_s: list[float] = []

    class Recording(GRPOTrainer):  # type: ignore[misc]
        def _generate_single_turn(self, *a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            out = super()._generate_single_turn(*a, **k)
            generate_s.append(time.perf_counter() - t0)
            return out

        def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
            out: dict[str, Any] = super()._generate_and_score_completions(inputs)
            n, lp = out["prompt_ids"].shape
            lc = out["completion_ids"].shape[1]
            shapes.append((n, lp, lc, int(out["completion_mask"].sum())))
            return out

    trainer = Recording(
        model=model,
        reward_funcs=[countdown_reward],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Clock()],
    )
    trainer.remove_callback(PrinterCallback)  # divrl prints nothing per step either
    trainer.train()
    if len(shapes) != total or len(generate_s) != total or len(ends) != total + 1:
        raise RuntimeError(f"TRL ran {len(shapes)} generation batches / {len(ends) - 1} steps, expected {total}")
    for step in range(args.warmup, args.warmup + args.steps):
        block.step_s.append(ends[step + 1] - ends[step])
        block.sample_s.append(generate_s[step])
        n, lp, lc, generated = shapes[step]
        block.completion_len.append(generated / n)
        block.train_tokens.append(n * (lp + lc))
        # transformers' generate prefills every row (prompts repeated G times), then one token per row per decode
        # step until every row has finished (finished rows keep decoding padding)
        block.sample_tokens.append(n * lp + n * (lc - 1))
    if not args.no_flops:
        n, lp, lc, generated = shapes[-1]
        block.flops = float(counter.get_total_flops())
        block.flop_step = {"train_tokens": n * (lp + lc), "sample_tokens": n * lp + n * (lc - 1)}
    block.threads = torch.get_num_threads()
    return block


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def pooled_rate(blocks: list[Block], per_step: int) -> float:
    """Completions per second over every timed step of these blocks (total completions / total time)."""
    steps = sum(len(b.step_s) for b in blocks)
    return steps * per_step / sum(sum(b.step_s) for b in blocks)


def report(args: argparse.Namespace, blocks: list[Block], peak: dict[int, float], params: int) -> str:
    per_step = args.prompts * args.group
    lines = [
        "## divrl RLTrainer vs TRL GRPOTrainer (CPU)",
        "",
        "| setting | value |",
        "|---|---|",
        f"| command | `{' '.join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])}` |",
        f"| torch threads | {sorted({b.threads for b in blocks})} (requested {args.threads}) |",
        f"| versions | torch {torch.__version__}, transformers {_version('transformers')}, trl {_version('trl')} |",
        f"| machine | {cpu_name()}, {os.cpu_count()} logical CPUs |",
        f"| model | {BASE}, {params:,} parameters, fp32 |",
        f"| batch | {args.prompts} prompts x {args.group} = {per_step} completions/step, max_new_tokens "
        f"{args.max_new_tokens}, T=1.0, top-p 1, top-k 0, lr {args.lr} |",
        f"| timing | {args.warmup} warm-up + {args.steps} timed steps per block, {args.repeats} repeat(s), "
        "alternating |",
        "",
        "| block | repeat | s/step (mean) | of which sampling | samples/s | mean completion tokens | train tokens/step "
        "| sample tokens/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in blocks:
        lines.append(
            f"| {b.variant} | {b.repeat} | {b.mean_step_s:.3f} | {statistics.fmean(b.sample_s):.3f} | "
            f"{per_step / b.mean_step_s:.1f} | "
            f"{statistics.fmean(b.completion_len):.1f} | {statistics.fmean(b.train_tokens):,.0f} | "
            f"{statistics.fmean(b.sample_tokens):,.0f} |"
        )
    rates = {v: pooled_rate([b for b in blocks if b.variant == v], per_step) for v in VARIANTS}
    block_rates = {v: [per_step / b.mean_step_s for b in blocks if b.variant == v] for v in VARIANTS}
    lines += [
        "",
        "| trainer | samples/s (pooled) | range over blocks | ratio vs trl |",
        "|---|---|---|---|",
    ]
    for v in VARIANTS:
        lo, hi = min(block_rates[v]), max(block_rates[v])
        lines.append(f"| {v} | {rates[v]:.1f} | {lo:.1f}-{hi:.1f} | {rates[v] / rates['trl']:.2f}x |")
    lines += [
        "",
        f"divrl / TRL samples/s: **{rates['divrl'] / rates['trl']:.2f}x** native (divrl stops at `</answer>`), "
        f"**{rates['divrl-eos'] / rates['trl']:.2f}x** with both stopping at EOS only (target >= 2x).",
    ]
    if not args.no_flops:
        best = max(peak.values())
        lines += [
            "",
            "fp32 matmul peak: " + ", ".join(f"{n}: {g:.1f}" for n, g in peak.items()) + f" GFLOP/s (best {best:.1f})",
            "",
            "| trainer | counted GFLOP/step | estimate 6NT_train + 2NT_sample | achieved GFLOP/s | % of matmul peak |",
            "|---|---|---|---|---|",
        ]
        for v in VARIANTS:
            bs = [b for b in blocks if b.variant == v]
            flops = statistics.fmean(b.flops for b in bs)
            est = statistics.fmean(
                6 * params * b.flop_step["train_tokens"] + 2 * params * b.flop_step["sample_tokens"] for b in bs
            )
            secs = statistics.fmean(b.mean_step_s for b in bs)
            rate = flops / secs / 1e9
            lines.append(f"| {v} | {flops / 1e9:.2f} | {est / 1e9:.2f} | {rate:.1f} | {100 * rate / best:.0f} % |")
    return "\n".join(lines)


def cpu_name() -> str:
    """CPU model and its widest SIMD/matrix extensions (they decide the fp32 peak and whether bf16 is native)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{model} ({' '.join(isa) or 'no avx2'})"


def _version(name: str) -> str:
    try:
        return str(__import__(name).__version__)
    except ImportError:
        return "missing"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per block")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of (divrl, divrl-eos, trl) blocks")
    parser.add_argument("--prompts", type=int, default=16, help="P: prompts per step")
    parser.add_argument("--group", type=int, default=16, help="G: completions per prompt")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of each block")
    parser.add_argument("--max-new-tokens", type=int, default=56)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--length-buckets", type=int, default=4, help="divrl's length_buckets (1 = one padded forward, as TRL)"
    )
    parser.add_argument("--compile", action="store_true", help="divrl compile=true (the warm-up steps compile)")
    parser.add_argument(
        "--prefix-sharing",
        action="store_true",
        help="divrl prefix_sharing=true (each prompt's forward shared by its G rows)",
    )
    parser.add_argument("--trl-compile", action="store_true", help="TRL torch_compile=True")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP-counted step and the matmul peak")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw per-step times here")
    args = parser.parse_args()
    for name in ("steps", "repeats", "prompts", "threads", "max_new_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.group < 2 or args.warmup < 0:
        parser.error("--group must be >= 2 and --warmup >= 0")

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)

    from divrl.models import count_parameters, load_policy
    from divrl.models.builtin import resolve_model_path

    params = count_parameters(load_policy(resolve_model_path(BASE), dtype="float32")[0])
    peak = {} if args.no_flops else matmul_peak()

    runners: dict[str, Callable[[int, Path], Block]] = {
        "divrl": lambda r, d: run_divrl(args, r, True, d),
        "divrl-eos": lambda r, d: run_divrl(args, r, False, d),
        "trl": lambda r, d: run_trl(args, r, d),
    }
    blocks: list[Block] = []
    with tempfile.TemporaryDirectory(prefix="divrl-vs-trl-") as tmp:
        for repeat in range(args.repeats):
            order = VARIANTS if repeat % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                t0 = time.perf_counter()
                block = runners[variant](repeat, Path(tmp) / f"{variant}-{repeat}")
                blocks.append(block)
                print(
                    f"[{variant} r{repeat}] {block.mean_step_s:.3f} s/step, "
                    f"{args.prompts * args.group / block.mean_step_s:.1f} samples/s "
                    f"(block {time.perf_counter() - t0:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    print(report(args, blocks, peak, params))
    if args.json is not None:
        raw = [{**b.__dict__, "mean_step_s": b.mean_step_s} for b in blocks]
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "blocks": raw}, indent=1))


if __name__ == "__main__":
    main()
