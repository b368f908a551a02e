"""Where a trained model's pass@1 gain over its base comes from, problem by problem.

Reads two ``metrics.json`` files of the same problems and samples per problem (``divrl eval``, ``divrl demo`` or
``divrl bench`` write them, with ``per_problem``): the base's and the trained model's. Prints the mean pass@1 of
each, the share of problems at 0 correct for each, the problems the base solved at least once that the model never
solves ("abandoned") and the reverse ("opened"), the share the model solves at least half the time, and the gain by
bins of the base's per-problem success rate.

    python benchmarks/per_problem_shift.py runs/bench/seed0/base/metrics.json runs/bench/seed0/grpo/metrics.json

Several pairs (one per seed) print one block each: ``BASE MODEL [BASE MODEL ...]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

BINS = (0.0, 1e-9, 0.05, 0.15, 0.30, 0.50, 1.0 + 1e-9)  # [0, 0] then half-open bins of the base's rate


def rates(path: Path) -> tuple[list[str], np.ndarray]:
    """Problem ids and per-problem success rates (correct / n) of one metrics file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if "per_problem" not in data:
        raise SystemExit(f"{path}: no per_problem results (evaluate with a divrl version that keeps them)")
    rows = data["per_problem"]
    return [str(r["id"]) for r in rows], np.array([r["correct"] / r["n"] for r in rows], dtype=float)  # (N,)


def shift(base: np.ndarray, model: np.ndarray) -> dict[str, float]:
    """The summary figures of one pair (same problems, same order)."""
    gain = model - base  # (N,)
    return {
        "base_pass@1": float(base.mean()),
        "model_pass@1": float(model.mean()),
        "gain": float(gain.mean()),
        "base_zero": float((base == 0).mean()),
        "model_zero": float((model == 0).mean()),
        "abandoned": float(((base > 0) & (model == 0)).mean()),
        "opened": float(((base == 0) & (model > 0)).mean()),
        "model_half": float((model >= 0.5).mean()),
    }


def by_bins(base: np.ndarray, model: np.ndarray) -> list[tuple[float, float, int, float, float, float]]:
    """(low, high, problems, base mean, model mean, share of the total gain) per bin of the base's rate."""
    total = float((model - base).sum())
    out = []
    for low, high in itertools.pairwise(BINS):
        inside = (base >= low) & (base < high)  # (N,)
        if inside.any():
            part = float((model[inside] - base[inside]).sum())
            out.append(
                (low, high, int(inside.sum()), float(base[inside].mean()), float(model[inside].mean()),
                 part / total if total else float("nan"))
            )  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="BASE MODEL pairs of metrics.json files")
    args = parser.parse_args()
    if len(args.files) % 2:
        parser.error("give metrics files in pairs: BASE MODEL [BASE MODEL ...]")
    for base_path, model_path in zip(args.files[::2], args.files[1::2], strict=True):
        ids_b, base = rates(base_path)
        ids_m, model = rates(model_path)
        if ids_b != ids_m:
            parser.error(f"{base_path} and {model_path} hold different problems (or another order)")
        s = shift(base, model)
        print(f"{model_path} against {base_path} ({len(base)} problems)")
        print(
            f"  pass@1 {s['base_pass@1']:.3f} -> {s['model_pass@1']:.3f} (gain {s['gain']:+.3f}); "
            f"problems at 0 correct {s['base_zero']:.3f} -> {s['model_zero']:.3f}; abandoned {s['abandoned']:.3f}, "
            f"opened {s['opened']:.3f}; model >= 0.5: {s['model_half']:.3f}"
        )
        for low, high, count, b, m, share in by_bins(base, model):
            opening = "(" if 0 < low < 1e-6 else "["
            closing = "]" if high > 1 else ")"
            where = "= 0" if high <= 1e-6 else f"in {opening}{low:.2f}, {min(high, 1.0):.2f}{closing}"
            print(f"  base rate {where}: {count} problems, {b:.3f} -> {m:.3f}, {share:.0%} of the gain")


if __name__ == "__main__":
    main()
