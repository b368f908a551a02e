"""Fingerprint every recipe's first steps, to show that a refactor changed no number (issue 14's "done when").

    python benchmarks/recipe_fingerprint.py --out before.json                 # on the old commit
    python benchmarks/recipe_fingerprint.py --out after.json --against before.json

Each recipe in ``configs/countdown/`` is trained for ``--steps`` steps (5 by default) from its own config, with
checkpoints only at the end, in a temporary folder, one torch thread (CPU arithmetic then depends on the code and the
library versions only). The fingerprint of a recipe is its ``metrics.jsonl`` without the wall-clock fields
(``time_*``) plus a SHA-256 of the final weights (every tensor of ``model.safetensors``, in name order) and of the
trainer state's tensors (optimizer moments, a stateful estimator's state, a learned log Z head).

``--against`` compares with an earlier fingerprint: per recipe ``identical`` (every metric bit-equal and both
hashes equal), or the metrics that differ with their largest absolute difference. A metric present on one side only
(a renamed or new log key) is listed as such; it does not make the weights differ. Exit status 1 when any recipe
differs, so a refactor that claims "no arithmetic changed" can be checked in one command.

The math recipes (``configs/math/``) name hub models and datasets that cannot be downloaded here: they run only
with ``--math-set`` overrides that point them at local files (e.g. ``--math-set model.path=runs/tiny-qwen
--math-set task.options.data_files=problems.jsonl``), otherwise they are listed as skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def _tensor_hash(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _state_tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside a nested dict/list (the trainer state), keyed by its path."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_state_tensors(v, f"{prefix}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_state_tensors(v, f"{prefix}/{i}"))
    return out


def fingerprint(config: Path, steps: int, overrides: list[str]) -> dict[str, Any]:
    """Train ``config`` for ``steps`` steps in a temporary folder; return its metrics and hashes."""
    from safetensors.torch import load_file

    from divrl.config import apply_overrides, from_dict, load_yaml
    from divrl.trainer.config import RLConfig
    from divrl.trainer.rl import train

    data = apply_overrides(load_yaml(config), [f"steps={steps}", f"save_every={steps}", *overrides])
    cfg = from_dict(RLConfig, data)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        train(cfg, run, progress=False)
        lines = (run / "metrics.jsonl").read_text().splitlines()
        metrics = [{k: v for k, v in json.loads(line).items() if not k.startswith("time_")} for line in lines]
        ckpt = run / f"checkpoint-{steps:06d}"
        weights = _tensor_hash(load_file(str(ckpt / "model.safetensors")))
        state = torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=False)
        state_hash = _tensor_hash(_state_tensors(state))
    return {"metrics": metrics, "weights_sha256": weights, "state_sha256": state_hash}


def compare(before: dict[str, Any], after: dict[str, Any]) -> tuple[list[str], bool]:
    """Lines describing each recipe's difference; and whether every recipe run on both sides is identical."""
    lines, same_all = [], True
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a is None or b is None or "skipped" in a or "skipped" in b:
            lines.append(f"{name}: not compared ({'absent' if a is None or b is None else 'skipped'} on one side)")
            continue
        diffs: dict[str, float] = {}
        only: set[str] = set()
        if len(a["metrics"]) != len(b["metrics"]):
            diffs["<steps>"] = float(abs(len(a["metrics"]) - len(b["metrics"])))
        for ra, rb in zip(a["metrics"], b["metrics"], strict=False):  # a length difference is reported above
            only |= set(ra) ^ set(rb)
            for key in set(ra) & set(rb):
                x, y = ra[key], rb[key]
                if x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)):
                    continue
                d = abs(x - y) if isinstance(x, (int, float)) and isinstance(y, (int, float)) else math.inf
                diffs[key] = max(diffs.get(key, 0.0), d)
        hashes = [h for h in ("weights_sha256", "state_sha256") if a[h] != b[h]]
        if not diffs and not hashes:
            lines.append(f"{name}: identical" + (f" (log keys on one side only: {sorted(only)})" if only else ""))
            continue
        same_all = False
        parts = [f"{k} max |diff| {v:.3g}" for k, v in sorted(diffs.items())] + [f"{h} differs" for h in hashes]
        lines.append(f"{name}: DIFFERS: " + "; ".join(parts) + (f" (one side only: {sorted(only)})" if only else ""))
    return lines, same_all


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="Write the fingerprints here (JSON).")
    ap.add_argument("--against", type=Path, help="An earlier fingerprint file to compare with.")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--recipes", default="all", help="Comma-separated recipe names (file stems), or 'all'.")
    ap.add_argument("--configs", type=Path, default=ROOT / "configs")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key=value applied to every recipe")
    ap.add_argument("--math-set", action="append", default=[], help="key=value for the math recipes (else skipped)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    files = sorted((args.configs / "countdown").glob("*.yaml")) + sorted((args.configs / "math").glob("*.yaml"))
    wanted = None if args.recipes == "all" else set(args.recipes.split(","))
    result: dict[str, Any] = {}
    for path in files:
        name = f"{path.parent.name}/{path.stem}"
        if wanted is not None and path.stem not in wanted:
            continue
        extra = list(args.overrides)
        if path.parent.name == "math":
            if not args.math_set:
                result[name] = {"skipped": "hub model and data (pass --math-set overrides)"}
                print(f"{name}: skipped (hub model and data)", flush=True)
                continue
            extra += args.math_set
        result[name] = fingerprint(path, args.steps, extra)
        last = result[name]["metrics"][-1]
        print(f"{name}: reward@{args.steps} {last.get('reward')}, weights {result[name]['weights_sha256'][:12]}",
              flush=True)  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True))
    if args.against is None:
        return 0
    lines, same = compare(json.loads(args.against.read_text()), result)
    print("\n".join(lines))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
