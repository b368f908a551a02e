"""Policies shipped inside the divrl package, addressed as ``builtin:<name>``.

``builtin:countdown-tiny`` is the ~1M-parameter Llama warm-started on Countdown by
``divrl pretrain --out runs/base --steps 450 --max-minutes 9.5`` (the command, its metrics and the
machine are recorded in docs/results.md). It is a plain ``save_pretrained`` folder.
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "builtin:"
ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUILTIN = {"countdown-tiny": ASSETS / "countdown-tiny"}


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
            f"`divrl pretrain --out {folder} --steps 450`"
        )
    return str(folder)
