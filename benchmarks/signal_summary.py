"""How strongly each method acted during training, from the runs' training logs: the method's signal next to GRPO's.

    python benchmarks/signal_summary.py runs/demo-s10

For a ``divrl demo --seeds N`` or ``divrl bench`` folder (``seed<i>/<method>/metrics.jsonl``), per method the mean
over seeds (± sd over seeds) of each run's mean over its training steps of:

- ``signal/rms_ratio``: RMS of (method's advantage − GRPO's on the same groups) over RMS of GRPO's
  (:func:`divrl.signals.signal_size`); 0 for GRPO and for methods that act through a loss term only;
- ``signal/groups_changed``: the share of groups whose advantages the method changed;
- ``signal/corr``: correlation of the method's advantages with GRPO's;
- every loss term's own diagnostics other than the PPO loss's (e.g. R1-zero-Div's ``positive_entropy/div_term``,
  the entropy bonus added to the loss, and ``positive_entropy/div_gate_frac``, the share of rollouts it applies to),
  with ``ppo/pg_loss`` beside them for scale;
- the training ``entropy`` (nats per token), ``reward`` and ``distinct_correct_classes`` per group, over the first and
  the last ``--window`` steps.

Issue 12 asks, where a method fails to separate from GRPO, how often its signal is non-zero and how large it is
next to the advantage; this prints both, from files every training run already writes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

SIGNAL = ("signal/rms_ratio", "signal/groups_changed", "signal/corr")
TRAJECTORY = ("reward", "entropy", "distinct_correct_classes")


def read_log(path: Path) -> list[dict[str, float]]:
    """The step records of one ``metrics.jsonl`` (one JSON object per line; a torn last line is skipped)."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in records if isinstance(r, dict) and "step" in r]


def run_summary(records: list[dict[str, float]], window: int) -> dict[str, float]:
    """One run: mean over steps of the signal and loss-term keys; first/last ``window`` steps of the trajectory."""
    keys = [k for k in records[0] if k in SIGNAL or ("/" in k and not k.startswith(("ppo/", "reasons/", "signal/")))]
    out = {k: statistics.fmean(r[k] for r in records if k in r) for k in keys}
    out["ppo/pg_loss"] = statistics.fmean(r.get("ppo/pg_loss", 0.0) for r in records)
    for k in TRAJECTORY:
        values = [r[k] for r in records if k in r]
        if values:
            out[f"{k} first"] = statistics.fmean(values[:window])
            out[f"{k} last"] = statistics.fmean(values[-window:])
    return out


def summarise(folder: Path, window: int) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Per method, per key: (mean over seeds, sd over seeds (0 for one seed), seeds)."""
    per_method: dict[str, list[dict[str, float]]] = {}
    for log in sorted(folder.glob("seed*/*/metrics.jsonl")):
        records = read_log(log)
        if records:
            per_method.setdefault(log.parent.name, []).append(run_summary(records, window))
    table = {}
    for method, runs in sorted(per_method.items()):
        keys = [k for k in runs[0] if all(k in r for r in runs)]
        table[method] = {
            k: (
                statistics.fmean(r[k] for r in runs),
                statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0,
                len(runs),
            )
            for k in keys
        }
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="A demo or bench folder with seed<i>/<method>/metrics.jsonl.")
    ap.add_argument("--window", type=int, default=10, help="Steps averaged at the start and at the end.")
    args = ap.parse_args(argv)
    table = summarise(args.folder, args.window)
    if not table:
        print(f"{args.folder}: no seed<i>/<method>/metrics.jsonl below it", file=sys.stderr)
        return 2
    print(f"{args.folder}: training-log means per run, then mean ± sd over seeds (first/last {args.window} steps)")
    print("| method | seeds | key | mean ± sd |")
    print("|---|---|---|---|")
    for method, keys in table.items():
        for key, (mean, sd, seeds) in keys.items():
            print(f"| {method} | {seeds} | {key} | {mean:.4f} ± {sd:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
