"""Policies shipped inside the divrl package, addressed as ``builtin:<name>``.

``builtin:countdown-tiny`` is the ~1M-parameter Llama warm-started on Countdown by
``divrl pretrain --out runs/base --steps 450 --max-minutes 9.5`` (the command, its metrics and the
machine are recorded in docs/results.md). It is a plain ``save_pretrained`` folder.

``builtin:countdown4-tiny`` is the same architecture warm-started on the 4-number task (the testbed v2 base,
issue 12) by ``divrl pretrain --task countdown --set task.options.num_numbers=4 --steps 1200``; use it with
``task.options.num_numbers: 4`` and ``rollout.max_new_tokens: 72``. Each folder's README.md says how it was made.
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "builtin:"
ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUILTIN = {"countdown-tiny": ASSETS / "countdown-tiny", "countdown4-tiny": ASSETS / "countdown4-tiny"}
REMAKE = {
    "countdown-tiny": "divrl pretrain --out {folder} --steps 450",
    "countdown4-tiny": "divrl pretrain --task countdown --set task.options.num_numbers=4 --out {folder} --steps 1200",
}


def resolve_model_path(path: str) -> str:
    """Map ``builtin:<name>`` to its folder; any other string is returned unchanged."""
    if not path.startswith(PREFIX):
        return path
    name = path[len(PREFIX) :]
    if name not in BUILTIN:
        raise ValueError(f"unknown builtin policy {path!r}; known: {[PREFIX + k for k in sorted(BUILTIN)]}")
    folder = BUILTIN[name]
    if not (folder / "config.json").exists():
        raise FileNotFoundError(
            f"{path}: the shipped weights are missing from {folder}; re-create them with "
            f"`{REMAKE[name].format(folder=folder)}`"
        )
    return str(folder)
