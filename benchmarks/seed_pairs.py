"""Seed-paired differences to a baseline in a multi-seed demo or bench folder, and the seeds a target width needs.

    python benchmarks/seed_pairs.py runs/demo-v4-s3 --metric pass@32 --target 0.03

In a ``divrl demo --seeds N`` or ``divrl bench`` folder, seed ``i`` of every method shares the same prompt order (each
step's prompts are drawn from ``(seed, step)``) and the same evaluation sampling seed, so a method's run and the
baseline's run of one seed are a matched pair. This script takes, per seed, the difference of the two models' split
means (``seed<i>/<model>/metrics.json``, or ``metrics-<split>.json``) and reports the mean over seeds with a
Student-t 95% interval (``df = seeds - 1``). Each per-seed difference already carries evaluation noise (which
problems, which samples), so the interval covers both noise sources; t (not a bootstrap over a handful of seeds,
which cannot reach beyond the observed range) keeps it honest at 3 seeds. It complements ``divrl compare``, whose
hierarchical bootstrap resamples matched seeds as pairs too (``--seed-pairing auto``, the default since 2026-11-29)
and also resamples the problems, but cannot reach beyond the observed seeds' range at a handful of seeds.

``--target h`` adds the number of seeds at which the interval's half-width would be ``h`` if the per-seed differences
kept the spread measured here: the smallest n with ``t(0.975, n-1) * sd / sqrt(n) <= h``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path

from scipy import stats

from divrl.eval.compare import metrics_filename

SEED = re.compile(r"seed(\d+)")


def seeds_for(sd: float, half_width: float, cap: int = 1000) -> int | None:
    """Smallest n >= 2 with t(0.975, n-1) * sd / sqrt(n) <= half_width (None beyond ``cap``)."""
    for n in range(2, cap + 1):
        if stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) <= half_width:
            return n
    return None


def paired(diffs: list[float]) -> tuple[float, float, float, float]:
    """mean, sd, and the Student-t 95% interval (lo, hi) of per-seed differences (needs >= 2)."""
    n = len(diffs)
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="A demo or bench folder with seed<i>/<model>/ runs.")
    ap.add_argument("--split", default="test", help="test (metrics.json) or another split (metrics-<split>.json).")
    ap.add_argument("--baseline", default="grpo")
    ap.add_argument("--metric", action="append", help="Metric(s) to compare (default pass@1, pass@32, classes).")
    ap.add_argument("--target", type=float, default=0.03, help="Half-width for the seeds-needed column.")
    args = ap.parse_args(argv)
    metrics = args.metric or ["pass@1", "pass@32", "distinct_correct_classes"]
    name = metrics_filename(args.split)
    numbered = {int(m.group(1)): p for p in args.folder.iterdir() if p.is_dir() and (m := SEED.fullmatch(p.name))}
    seeds = [numbered[i] for i in sorted(numbered)]  # seed2 before seed10
    if len(seeds) < 2:
        print(f"{args.folder}: {len(seeds)} seed folder(s); a paired interval needs at least 2", file=sys.stderr)
        return 2
    models = sorted({p.name for s in seeds for p in s.iterdir() if (p / name).is_file()} - {args.baseline, "base"})
    print(f"{args.folder}, {args.split} split, {len(seeds)} seeds, vs {args.baseline} (seed-paired, Student-t 95%)")
    print(f"| method | metric | per-seed differences | mean | sd | 95% interval | seeds for ±{args.target:g} |")
    print("|---|---|---|---|---|---|---|")
    for model in models:
        for metric in metrics:
            diffs = []
            for s in seeds:
                a, b = s / model / name, s / args.baseline / name
                if a.is_file() and b.is_file():
                    diffs.append(json.loads(a.read_text())[metric] - json.loads(b.read_text())[metric])
            if len(diffs) < 2:
                continue
            mean, sd, lo, hi = paired(diffs)
            need = seeds_for(sd, args.target)
            verdict = "within noise" if lo <= 0 <= hi else ("higher" if lo > 0 else "lower")
            print(f"| {model} | {metric} | {', '.join(f'{d:+.3f}' for d in diffs)} | {mean:+.3f} | {sd:.3f} | "
                  f"[{lo:+.3f}, {hi:+.3f}] {verdict} | {need if need else '> 1000'} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
