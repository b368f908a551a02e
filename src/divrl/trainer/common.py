"""Pieces shared by the RL trainer and the supervised warm start: optimizer and schedule,
atomic checkpoints, metric logging (JSONL + TensorBoard) and seeding."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from divrl.config import ConfigError, InputError
from divrl.trainer.config import OptimConfig, TaskConfig

LATEST = "latest"  # file holding the name of the newest complete checkpoint folder


@contextmanager
def input_errors(what: str, catch: tuple[type[BaseException], ...] = (Exception,)) -> Iterator[None]:
    """Turn an exception raised while reading user input (a model folder, a checkpoint, a classifier) into a
    ConfigError ``<what>: <Type>: <message>``, so the CLI prints one line instead of a traceback."""
    try:
        yield
    except InputError:
        raise
    except catch as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{what}: {type(exc).__name__}: {detail}"[:2000]) from exc


def load_task(cfg: TaskConfig, n: int | None = None) -> tuple[Any, list[Any]]:
    """The configured task and the problems of its split (the first ``n``, if given).

    Raises:
        ConfigError: an unknown task name, a bad option, split or data file; the message names the task and field.
    """
    from divrl.core.registry import UnknownNameError
    from divrl.tasks import get_task

    try:
        task = get_task(cfg.name, **cfg.options)
    except UnknownNameError as exc:
        raise ConfigError(f"task.name: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"task {cfg.name!r} (task.options): {exc}") from None
    try:
        problems = task.problems(cfg.split) if n is None else task.problems(cfg.split, n=n)
    except (ValueError, TypeError, OSError) as exc:  # a bad split; a missing, unreadable or empty data file
        raise ConfigError(f"task {cfg.name!r}: {exc}") from None
    if not problems:
        raise ConfigError(f"task {cfg.name!r}: split {cfg.split!r} has no problems")
    return task, list(problems)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def derive_seed(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (run seed, step, ...), stable across processes."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def build_optimizer(
    model: torch.nn.Module, cfg: OptimConfig, extra: Iterable[torch.nn.Parameter] = ()
) -> torch.optim.Optimizer:
    """AdamW over the model's trainable parameters, then ``extra`` ones (e.g. FlowRL's log Z head), one group."""
    params = [p for p in model.parameters() if p.requires_grad] + list(extra)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, cfg: OptimConfig) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based): linear warm-up, then constant or cosine."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, total - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total: int, cfg: OptimConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, cfg))


CHECKPOINT_PREFIX = "checkpoint-"
MANIFEST = "checkpoint.json"  # written last into a checkpoint: every other file with its size


class RunFolderError(InputError):
    """A run folder that cannot be used as asked: it holds a run and neither resume nor overwrite was given, or a
    resume finds no complete checkpoint. The message names the folder and what to do."""


class RunFolderWarning(UserWarning):
    """A resume that falls back from a missing or corrupt ``latest`` pointer to the newest complete checkpoint."""


@dataclass(frozen=True)
class RunLayout:
    """What one command writes into its output folder: the entries that make the folder "hold a run", and that
    ``--overwrite`` removes (nothing else in the folder is touched)."""

    kind: str  # how messages name it: "a run", "a demo", ...
    names: tuple[str, ...]
    patterns: tuple[str, ...] = ()  # fnmatch patterns of further entries (checkpoint folders, temporaries)
    resumable: bool = True

    def artifacts(self, folder: Path) -> list[Path]:
        """The entries of ``folder`` written by this command (sorted by name); [] when it does not exist."""
        if not folder.is_dir():
            return []
        return sorted(
            entry
            for entry in folder.iterdir()
            if entry.name in self.names or any(fnmatch.fnmatchcase(entry.name, pat) for pat in self.patterns)
        )


TRAIN_RUN = RunLayout(
    "a run",
    ("config.yaml", "metrics.jsonl", LATEST, "tb"),
    (CHECKPOINT_PREFIX + "*", ".tmp-checkpoint-*", ".old-checkpoint-*", "latest.tmp*", "*.yaml.tmp", "*.jsonl.tmp*"),
)


def check_run_folder(
    folder: str | Path, layout: RunLayout, *, resume: bool = False, overwrite: bool = False
) -> list[Path]:
    """Refuse an output folder that already holds a run unless asked to resume or overwrite it. Writes nothing.

    Returns the entries that ``overwrite`` must remove (call :func:`remove_run` just before the first write, so that
    a command that fails on its inputs first loses nothing); [] otherwise.

    Raises:
        RunFolderError: ``folder`` is a file; holds a run and neither flag is set; ``resume`` of a folder without a
            run; both flags at once.
    """
    folder = Path(folder)
    if resume and overwrite:
        raise RunFolderError(f"{folder}: --resume continues a run and --overwrite starts it over; give one of them")
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder}: is a file, expected a run folder")
    found = layout.artifacts(folder)
    if resume:
        if not found:
            raise RunFolderError(f"--resume {folder}: no run there to continue")
        return []
    if found and not overwrite:
        steps = sorted(s for p in found if (s := checkpoint_step(p)) is not None and p.is_dir())
        names = [p.name for p in found if checkpoint_step(p) is None]
        if steps:
            names.append(f"{len(steps)} checkpoint{'s' * (len(steps) > 1)} up to step {steps[-1]}")
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        how = (
            "use --resume to continue it or --overwrite to start over"
            if layout.resumable
            else ("use --overwrite to start over, or another --out")
        )
        raise RunFolderError(f"{folder} already holds {layout.kind} ({shown}); {how}")
    return found if overwrite else []


def remove_run(entries: Iterable[Path]) -> None:
    """Delete the entries returned by :func:`check_run_folder` (files and folders)."""
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:06d}"


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a ``checkpoint-000012`` folder name (12), or None for any other name."""
    digits = Path(path).name.removeprefix(CHECKPOINT_PREFIX)
    if digits == Path(path).name or not digits.isdigit():
        return None
    return int(digits)


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a complete checkpoint (a missing folder, no manifest, a missing or truncated file), or
    None when it is complete. A checkpoint written before manifests existed counts as complete when it holds
    ``trainer_state.pt``."""
    path = Path(path)
    if not path.is_dir():
        return "missing"
    manifest = path / MANIFEST
    if not manifest.is_file():
        return None if (path / "trainer_state.pt").is_file() else f"incomplete (no {MANIFEST})"
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        sizes = {str(name): int(size) for name, size in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"incomplete ({MANIFEST} is unreadable)"
    for name, size in sizes.items():
        file = path / name
        if not file.is_file():
            return f"incomplete ({name} is missing)"
        actual = file.stat().st_size
        if actual != size:
            return f"incomplete ({name} has {actual} bytes, {size} expected)"
    return None


def checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Every ``checkpoint-*`` folder of a run as (step, path), by step (complete or not)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in run_dir.iterdir() if p.is_dir()]
    return sorted((step, p) for step, p in found if step is not None)


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: Any,
    tokenizer: Any,
    state: dict[str, Any],
    keep: int = 1,
) -> Path:
    """Write ``run_dir/checkpoint-{step}`` atomically, then point ``run_dir/latest`` at it and apply the retention.

    The files are written into a temporary folder, listed with their sizes in ``checkpoint.json`` (the last file),
    flushed to disk (fsync), and the folder is renamed into place; only then is ``latest`` replaced (an fsynced
    temporary file renamed over it). A run killed at any moment leaves the previous checkpoint with ``latest``
    naming it, or the new one; a half-written temporary folder is never named and is removed by the next save.

    Retention: of the checkpoints with a step up to ``step``, the newest ``keep`` complete ones are kept (the one
    just written always is); checkpoints past ``step`` (left by a run that was resumed from an earlier step) and
    incomplete ones are removed. ``keep <= 0`` keeps every checkpoint up to ``step``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / checkpoint_name(step)
    tmp = run_dir / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    from divrl.models.lora import save_weights

    save_weights(model, tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    torch.save(state, tmp / "trainer_state.pt")
    _write_manifest(tmp, step)
    _fsync_tree(tmp)
    old = None
    if final.exists():  # the same step written again (a resumed run passing a step it had saved before)
        old = run_dir / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(run_dir)
    _write_atomic(run_dir / LATEST, final.name)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    prune_checkpoints(run_dir, step, keep)
    return final


def prune_checkpoints(run_dir: Path, step: int, keep: int) -> None:
    """The retention of :func:`save_checkpoint`, by step (never by name), after ``checkpoint-{step}`` was written."""
    run_dir = Path(run_dir)
    current = run_dir / checkpoint_name(step)
    older = [p for s, p in checkpoints(run_dir) if s < step]
    if keep > 0:
        complete = [p for p in older if checkpoint_problem(p) is None]
        kept = {current, *(complete[len(complete) - (keep - 1) :] if keep > 1 else [])}
    else:
        kept = {current, *older}
    for _, p in checkpoints(run_dir):
        if p not in kept:
            shutil.rmtree(p, ignore_errors=True)
    for stale in [*run_dir.glob(".tmp-checkpoint-*"), *run_dir.glob(".old-checkpoint-*")]:
        shutil.rmtree(stale, ignore_errors=True)  # left by a run killed while it saved


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint a resume continues from: the one ``latest`` names when it is complete; else (``latest``
    missing, unreadable, or naming an incomplete or missing folder) the newest complete checkpoint by step, with a
    :class:`RunFolderWarning`; None when there is no complete checkpoint."""
    run_dir = Path(run_dir)
    pointer = run_dir / LATEST
    if not run_dir.is_dir():
        return None
    if pointer.is_file():
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            name, reason = "", f"is unreadable ({type(exc).__name__})"
        else:
            reason = f"does not name a checkpoint ({name[:40]!r})"
        if checkpoint_step(name) is not None and "/" not in name and "\\" not in name:
            problem = checkpoint_problem(run_dir / name)
            if problem is None:
                return run_dir / name
            reason = f"names {name}, which is {problem}"
    else:
        reason = "is missing"
    complete = [p for _, p in checkpoints(run_dir) if checkpoint_problem(p) is None]
    if not complete:
        return None
    warnings.warn(
        f"{pointer} {reason}; resuming from the newest complete checkpoint, {complete[-1].name}",
        RunFolderWarning,
        stacklevel=2,
    )
    return complete[-1]


def resume_checkpoint(run_dir: str | Path) -> Path:
    """:func:`latest_checkpoint`, or a :class:`RunFolderError` saying why there is none."""
    run_dir = Path(run_dir)
    found = latest_checkpoint(run_dir)
    if found is not None:
        return found
    damaged = [f"{p.name} is {checkpoint_problem(p)}" for _, p in checkpoints(run_dir)]
    why = f" ({'; '.join(damaged[-3:])})" if damaged else " (the run stopped before its first save)"
    raise RunFolderError(f"--resume {run_dir}: no complete checkpoint to continue from{why}; --overwrite starts over")


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """``trainer_state.pt`` of a checkpoint; an unreadable one raises RunFolderError naming the file."""
    path = Path(checkpoint) / "trainer_state.pt"
    try:
        state = torch.load(path, weights_only=False)
    except Exception as exc:  # a truncated or foreign file: pickle/zip errors of many kinds
        raise RunFolderError(f"{path}: cannot load the trainer state ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise RunFolderError(f"{path}: not a divrl trainer state (no 'step')")
    return state


def _write_manifest(folder: Path, step: int) -> None:
    files = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    (folder / MANIFEST).write_text(json.dumps({"step": step, "files": files}, indent=1) + "\n", encoding="utf-8")


def _fsync_tree(folder: Path) -> None:
    """Flush every file of ``folder`` and the folders themselves to disk."""
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for d in [*sorted(p for p in folder.rglob("*") if p.is_dir()), folder]:
        _fsync_dir(d)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without directory handles (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: an fsynced temporary file renamed over it, then the folder fsynced."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class MetricLogger:
    """Appends one JSON line per step to ``metrics.jsonl`` (flushed each step) and mirrors scalars to
    TensorBoard when it is installed. ``truncate_after(step)`` drops lines past a checkpoint on resume."""

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))
            except Exception:  # tensorboard missing or broken: JSONL is the record
                self._tb = None

    def truncate_after(self, step: int) -> None:
        """Keep the records up to ``step`` (and drop a line torn by a kill during its write)."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if (s := _step_of(line)) is not None and s <= step]
        _write_atomic(self.path, "".join(line + "\n" for line in kept))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **metrics}
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _step_of(line: str) -> int | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``; a last line torn by a kill during its write is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if lines and _step_of(lines[-1]) is None:
        lines.pop()
    return [json.loads(line) for line in lines]


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else float("nan")
