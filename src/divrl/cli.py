"""The ``divrl`` command: pretrain, train, eval, compare, demo, bench, classifier.

Bad input (a config, a ``--set`` value, a data file, a model or checkpoint folder, an output folder that holds a run)
ends in one ``error:`` line on stderr and exit code 2, with nothing written (:mod:`divrl.cliutil`).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from divrl.cliutil import fail, one_line, run_app
from divrl.eval.columns import METRIC_NOTES, metric_note


class _App(typer.Typer):
    """The ``divrl`` Typer app; calling it (the console script) turns usage errors into one line."""

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        run_app(self, kwargs.get("args"))


app = _App(
    add_completion=False,
    rich_markup_mode=None,  # plain click help: rich panels show flags as `--help <bool>` (typer 0.29)
    no_args_is_help=True,
    help="Diversity-aware RL with verifiable rewards: train, evaluate and compare GRPO, R1-zero-Div, DARLING, SetPO.",
)
console = Console()


OLD_CLASSIFIER_NAME_NOTE = "note: `divrl partition` is now `divrl classifier`; the old name will be removed"


def _old_classifier_name() -> None:
    typer.echo(OLD_CLASSIFIER_NAME_NOTE, err=True)


def _mount_subapps() -> None:
    from divrl.semantic.cli import classifier_app  # no torch import at this point

    app.add_typer(classifier_app, name="classifier", help="Equivalence classifiers for DARLING's learned partition.")
    # the former name of the same commands (docs/results.md records runs with it): hidden, one line on stderr
    app.add_typer(
        classifier_app,
        name="partition",
        hidden=True,
        callback=_old_classifier_name,
        help="Deprecated: the former name of `divrl classifier`.",
    )


_mount_subapps()

THREADS_HELP = "Torch CPU threads (0 = torch's default)."
GRID_THREADS_HELP = (
    "Torch CPU threads (of each worker with --workers > 1; 0 = torch's default, or with several workers the CPU "
    "cores shared out among them)."
)
WORKERS_HELP = (
    "Models trained and evaluated at once, each in a process of its own (spawned; its own copy of the model); "
    "1 = one after the other in this process. The run folders and metrics files are those of --workers 1 (on the "
    "same device and threads); one line per finished model instead of the training bars."
)
BENCH_PROBLEMS = 700
"""``divrl bench --problems``'s default (the same as :func:`divrl.eval.bench.run_bench`'s; a test checks)."""
DEVICE_HELP = "Where every model trains and is evaluated: cpu or cuda (with --workers, every worker on the one GPU)."
SET_HELP = "Override a config field, e.g. --set rollout.group_size=8 (repeatable)."


OVERWRITE_HELP = "If --out holds a run, remove it (config, metrics, checkpoints) and start over."


def _fail(message: str) -> NoReturn:
    fail(message)


@app.command()
def pretrain(
    out: Path = typer.Option(..., "--out", help="Output folder (a save_pretrained policy + tokenizer)."),
    task: str = typer.Option(None, help="Task to warm-start on (default: countdown)."),
    size: str = typer.Option("tiny", help="Policy size: tiny (~1M params) or small (~4M)."),
    steps: int = typer.Option(None, help="Optimizer steps (default from the config)."),
    config: Path = typer.Option(None, help="YAML with PretrainConfig values."),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help=SET_HELP),
    max_minutes: float = typer.Option(None, help="Stop (and save) after this many minutes."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="If --out holds a policy or a warm start, remove it and start over."
    ),
) -> None:
    """Supervised warm start of a fresh tiny policy on solver-generated solutions."""
    from divrl.config import InputError, apply_overrides, from_dict, load_yaml
    from divrl.trainer.config import PretrainConfig
    from divrl.trainer.sft import pretrain as run_pretrain

    try:
        data: dict[str, Any] = load_yaml(config) if config else {}
        if task is not None:
            data.setdefault("task", {})["name"] = task
        data["size"] = data.get("size", size)
        if steps is not None:
            data["steps"] = steps
        if max_minutes is not None:
            data["max_minutes"] = max_minutes
        cfg = from_dict(PretrainConfig, apply_overrides(data, set_))
        path = run_pretrain(cfg, out, overwrite=overwrite)  # checks --out and the task before it writes
    except InputError as exc:
        _fail(str(exc))
    console.print(f"saved base policy to [bold]{path}[/bold]")


@app.command()
def train(
    config: Path = typer.Option(None, "--config", "-c", help="YAML recipe (configs/countdown/*.yaml)."),
    out: Path = typer.Option(None, "--out", help="Run folder (default runs/<name>)."),
    resume: Path = typer.Option(None, "--resume", help="Continue the run in this folder from its latest checkpoint."),
    model: str = typer.Option(
        None,
        "--model",
        help="Policy: local folder, hub id or builtin:countdown-tiny (3 numbers) / builtin:countdown4-tiny (4).",
    ),
    steps: int = typer.Option(None, "--steps", help="Total optimizer steps."),
    task: str = typer.Option(None, "--task", help="Task name (countdown, math); --data alone implies math."),
    data_file: str = typer.Option(None, "--data", help="Local data file (JSONL/Parquet/CSV) for the task."),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help=SET_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """RL-train a policy with a recipe; writes config.yaml, metrics.jsonl, TensorBoard logs, checkpoints.

    A --out that already holds a run is refused: --resume continues it, --overwrite starts it over."""
    from divrl.config import InputError, apply_overrides, from_dict, load_yaml
    from divrl.trainer.common import RunFolderError
    from divrl.trainer.config import RLConfig
    from divrl.trainer.rl import train as run_train

    run_dir: Path | None
    try:
        if resume is not None:
            if config is not None:
                _fail("--resume continues with the run's own config.yaml; drop --config (change values with --set)")
            if out is not None and out.resolve() != resume.resolve():
                _fail(f"--resume {resume} continues the run in {resume}; drop --out {out}")
            if not (resume / "config.yaml").is_file():
                raise RunFolderError(
                    f"--resume {resume}: no run there to continue ({resume / 'config.yaml'} not found)"
                )
            data = load_yaml(resume / "config.yaml")
            run_dir = resume
        else:
            data = load_yaml(config) if config else {}
            run_dir = out
        if model is not None:
            data.setdefault("model", {})["path"] = model
        if steps is not None:
            data["steps"] = steps
        if task is not None or data_file is not None:
            section = data.setdefault("task", {})
            new_name = task or ("math" if data_file is not None else section.get("name", "countdown"))
            if new_name != section.get("name", "countdown"):
                section["options"] = {}  # a recipe's options belong to its own task
            section["name"] = new_name
            if data_file is not None:
                section.setdefault("options", {})["data"] = data_file
        cfg = from_dict(RLConfig, apply_overrides(data, set_))
        if run_dir is None:
            run_dir = Path("runs") / (cfg.name or cfg.advantage.name)
        # checks --out, the methods, the task and the model before it writes anything
        history = run_train(cfg, run_dir, resume=resume is not None, overwrite=overwrite)
    except InputError as exc:
        _fail(str(exc))
    if history:
        last = history[-1]
        console.print(
            f"done: {run_dir}  reward {last['reward']:.3f}  accuracy {last['accuracy']:.3f}  "
            f"distinct correct classes {last['distinct_correct_classes']:.2f}"
        )


EVAL_HELP = (
    "Sample n completions per problem; pass@k, Potential@k, Div-Equ, distinct classes, distinct-n, self-BLEU.\n\n"
    "Prints one row per metric, the meaning of each row under the table, and the path of the metrics JSON it wrote "
    "(--out).\n\n\b\nRows:\n"
    + "\n".join(
        textwrap.fill(f"{k}: {v}", 76, initial_indent="  ", subsequent_indent="      ")
        for k, v in METRIC_NOTES.items()
    )
)


@app.command("eval", help=EVAL_HELP)
def eval_(
    model: str = typer.Option(
        ...,
        "--model",
        help="Checkpoint folder, hub id or builtin:countdown-tiny (3 numbers) / builtin:countdown4-tiny (4 numbers).",
    ),
    task: str = typer.Option(None, "--task", help="Task name (default countdown; --data alone implies math)."),
    data_file: str = typer.Option(None, "--data", help="Local data file (JSONL/Parquet/CSV) for the task."),
    task_option: list[str] = typer.Option(
        [],
        "--task-option",
        metavar="KEY=VALUE",
        help="key=value option of the task (repeatable). Without any, a checkpoint of a divrl train run is evaluated "
        "with its run's task options (e.g. num_numbers=4); builtin:countdown4-tiny needs num_numbers=4.",
    ),
    split: str = typer.Option(
        "test",
        "--split",
        help="Problems to evaluate: test, val, train, ood (Countdown: numbers above the training range) or a .jsonl "
        "file of problems.",
    ),
    n: int = typer.Option(32, "--n", help="Samples per problem."),
    problems: int = typer.Option(200, "--problems", help="Number of problems (0 = the whole split)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature of the n samples."),
    max_new_tokens: int = typer.Option(
        None,
        "--max-new-tokens",
        help="Longest completion, in tokens (default: the rollout length of the run that made the model, else 64).",
    ),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (same seed, model and problems: same samples)."),
    out: Path = typer.Option(
        None,
        "--out",
        help="metrics file (default <model>/metrics.json for --split test, <model>/metrics-<split>.json for another "
        "named split, in the current folder when --model is not a folder).",
    ),
    threads: int = typer.Option(0, "--threads", help=THREADS_HELP),
    samples_out: Path = typer.Option(
        None,
        "--samples",
        help="Also write every completion here, one JSON line per problem: id, prompt, samples, correct, reasons (the "
        "verifier's), greedy, greedy_correct, greedy_reason (gzip when the name ends in .gz).",
    ),
) -> None:
    """Sample and score; the help text is EVAL_HELP."""
    import torch
    import yaml

    from divrl.config import InputError, yaml_error_line
    from divrl.eval.compare import is_split_name, metrics_filename
    from divrl.eval.evaluate import (
        generate_samples,
        grade_samples,
        sample_records,
        score_samples,
        write_jsonl,
        write_metrics,
    )
    from divrl.models import load_policy
    from divrl.trainer.common import MANIFEST, checkpoint_problem, input_errors, load_task
    from divrl.trainer.config import TaskConfig

    for name, value, low in (("--n", n, 1), ("--problems", problems, 0), ("--max-new-tokens", max_new_tokens, 1)):
        if value is not None and value < low:
            _fail(f"{name} must be >= {low}, got {value}")
    if not temperature > 0:
        _fail(f"--temperature must be > 0, got {temperature}")
    if threads < 0:
        _fail(f"--threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)
    task = task or ("math" if data_file is not None else "countdown")
    options = {}
    for item in task_option:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            _fail(f"--task-option {item!r}: expected key=value")
        try:
            options[key] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            _fail(f"--task-option {item!r}: invalid YAML value {raw!r} at {yaml_error_line(exc)}")
    made_with = _training_config(model)
    if made_with is not None:
        source, run_task, run_max_new = made_with
        if (
            run_task.get("name", "countdown") == task
            and not task_option
            and data_file is None
            and run_task.get("options")
        ):
            options = dict(run_task["options"])
            console.print(f"task options from {source}: {options}", soft_wrap=True, highlight=False, markup=False)
        if max_new_tokens is None and run_max_new is not None:
            max_new_tokens = int(run_max_new)
    max_new_tokens = 64 if max_new_tokens is None else max_new_tokens
    if data_file is not None:
        options["data"] = data_file
    if out is None:
        name = metrics_filename(split) if is_split_name(split) else "metrics.json"  # a split file: as before
        out = Path(model) / name if Path(model).is_dir() else Path(name)
    if out.is_dir():
        _fail(f"--out {out}: is a folder; give the path of the metrics JSON file to write")
    if samples_out is not None and samples_out.is_dir():
        _fail(f"--samples {samples_out}: is a folder; give the path of the JSONL file to write")
    folder = Path(model)
    if (folder / MANIFEST).is_file() and (problem := checkpoint_problem(folder)) is not None:  # a divrl checkpoint
        _fail(f"--model {model}: checkpoint is {problem}")
    try:
        the_task, chosen = load_task(TaskConfig(name=task, options=options, split=split), n=problems or None)
        with input_errors(f"--model {model!r}"):
            policy, tokenizer = load_policy(model)
    except InputError as exc:
        _fail(str(exc))
    bind = getattr(the_task, "bind_tokenizer", None)
    if callable(bind):
        bind(tokenizer)
    generated = generate_samples(
        policy, tokenizer, the_task, chosen, n, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed
    )
    graded = grade_samples(the_task, chosen, generated)
    metrics = score_samples(the_task, chosen, generated, graded)
    metrics.update(
        {"model": model, "task": task, "data": data_file, "split": split, "temperature": temperature, "seed": seed}
    )
    write_metrics(metrics, out)
    if samples_out is not None:
        write_jsonl(sample_records(the_task, chosen, generated, graded), samples_out)
    print_metrics({model: metrics})
    for line in metric_footnotes(metrics):
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    console.print(f"wrote {out.resolve()}", soft_wrap=True, highlight=False)
    if samples_out is not None:
        console.print(f"wrote {samples_out.resolve()}", soft_wrap=True, highlight=False)


def _training_config(model: str) -> tuple[Path, dict[str, Any], int | None] | None:
    """The task section and rollout length of the ``divrl train`` config that made ``model``, if there is one: its
    run's ``config.yaml`` (the model is the run folder or one of its checkpoints). None for anything else (a
    pretrained base's data options, e.g. ``min_classes``, are not an evaluation's), or for a config that does not
    parse (then the eval's own defaults apply, as for any model)."""
    import yaml

    from divrl.models.builtin import resolve_model_path

    try:
        folder = Path(resolve_model_path(model))
    except ValueError:
        return None
    if not folder.is_dir():
        return None
    for path in (folder / "config.yaml", folder.parent / "config.yaml"):
        if not path.is_file():
            continue
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("task"), dict):
            continue
        raw = data.get("rollout")
        rollout: dict[str, Any] = raw if isinstance(raw, dict) else {}
        max_new = rollout.get("max_new_tokens") if isinstance(rollout.get("max_new_tokens"), int) else None
        return path, data["task"], max_new
    return None


def metric_footnotes(metrics: dict[str, Any]) -> list[str]:
    """One line per kind of column of the eval table (``pass@k`` once for every k), from ``METRIC_NOTES``."""
    lines, seen = [], set()
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        generic = key.split("@")[0] + "@k" if "@" in key and key != "greedy_pass@1" else key
        note = metric_note(key)
        if note is not None and generic not in seen:
            seen.add(generic)
            lines.append(f"  {generic}: {note}")
    return lines


def print_metrics(rows: dict[str, dict[str, Any]]) -> None:
    """One row per metric, one column per run."""
    names = list(rows)
    keys = [k for k, v in rows[names[0]].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    table = Table(show_header=True, header_style="bold")
    table.add_column("metric")
    for name in names:
        table.add_column(name, justify="right")
    for k in keys:
        table.add_row(k, *(f"{rows[n][k]:.4g}" if isinstance(rows[n].get(k), (int, float)) else "-" for n in names))
    console.print(table)


@app.command()
def compare(
    runs: list[str] = typer.Argument(
        ...,
        metavar="RUN_OR_METRICS...",
        help="metrics.json files, run folders, demo folders, or name=path[,path...] (one path per seed). "
        "A run's method is its folder name, skipping seed<i>/ and checkpoint-<step>/ folders; "
        "runs of one method are its seeds.",
    ),
    baseline: str = typer.Option("grpo", "--baseline", help="The method every other one is compared with."),
    metrics: str = typer.Option(
        None,
        "--metrics",
        help="Comma-separated, e.g. pass@1,pass@16,distinct_correct_classes "
        "(default: pass@1, pass@8, pass@32, distinct_correct_classes; those the runs support).",
    ),
    resamples: int = typer.Option(2000, "--resamples", help="Bootstrap resamples."),
    confidence: float = typer.Option(0.95, "--confidence", help="Interval coverage."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap (the result is deterministic given it)."),
    split: str = typer.Option(
        "test",
        "--split",
        help="The evaluation split to compare: folders give their metrics.json for test, metrics-<split>.json "
        "otherwise (e.g. --split ood on a demo folder); a file recording another split is refused.",
    ),
    out: Path = typer.Option(None, "--out", help="Also write the table and notes as markdown to this file."),
    seed_pairing: str = typer.Option(
        "auto",
        "--seed-pairing",
        help="auto: resample a method's seeds together with the baseline's when both have runs under the same "
        "seed<i> folders (divrl demo / bench: seed i shares prompt order and evaluation samples), else "
        "independently; matched: require that pairing; independent: never pair.",
    ),
) -> None:
    """Paired differences vs a baseline with bootstrap intervals; marks a difference "within noise"."""
    from divrl.eval.bootstrap import ComparisonError, check_metric
    from divrl.eval.compare import available_metrics, compare_groups, console_table, load_groups, markdown_table
    from divrl.eval.compare import noise_notes as make_notes

    notes: list[str] = []
    try:
        groups = load_groups(runs, split)
        if metrics is None:
            chosen, notes = available_metrics(groups)
        else:
            chosen = [m.strip() for m in metrics.split(",") if m.strip()]
            for m in chosen:
                check_metric(m)
        comparisons = compare_groups(
            groups,
            baseline,
            chosen,
            resamples=resamples,
            confidence=confidence,
            seed=seed,
            seed_pairing=seed_pairing,
        )
    except ComparisonError as exc:
        _fail(str(exc))
    seeds = ", ".join(f"{name} {len(g)}" for name, g in groups.items())
    problems = f"{len(groups[baseline][0].ids)} problems of split {split}"
    notes = [*make_notes(comparisons, baseline), *notes]
    console.print(console_table(comparisons, baseline, split=split))
    console.print(f"seeds per method: {seeds}; {problems}; {resamples} resamples")
    for note in notes:
        console.print(f"note: {note}", soft_wrap=True)
    if out is not None:
        text = "\n".join(
            [
                f"# {', '.join(n for n in groups if n != baseline)} vs {baseline} ({split} split)",
                "",
                markdown_table(comparisons, baseline),
                "",
                f"Seeds per method: {seeds}; {problems}; paired bootstrap (seed pairing {seed_pairing}), "
                f"{resamples} resamples, seed {seed} (`divrl compare`; docs/methods.md).",
                "",
                *(f"- {note}" for note in notes),
            ]
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(out)
        console.print(f"wrote {out}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for runs, report.md and plots."),
    quick: bool = typer.Option(
        False, "--quick", help="A smaller budget: 10 RL steps, 80 test and 40 ood problems, 16 samples each."
    ),
    seeds: int = typer.Option(
        1,
        "--seeds",
        help="Repeat every method with this many seeds; report mean ± std and hierarchical intervals vs GRPO.",
    ),
    methods: str = typer.Option(
        "grpo,r1_zero_div,darling,setpo",
        "--methods",
        help="Comma-separated Countdown recipes (configs/countdown/*.yaml: also unlikeliness).",
    ),
    threads: int = typer.Option(0, "--threads", help=GRID_THREADS_HELP),
    workers: int = typer.Option(1, "--workers", help=WORKERS_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    set_: list[str] = typer.Option([], "--set", help="key.path=value applied to every method's recipe. " + SET_HELP),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the demo in --out (same budget and --set values); finished runs are reused."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="If --out holds a demo, remove it and start over."),
) -> None:
    """Train GRPO, R1-zero-Div, DARLING and SetPO from the tiny Countdown base; evaluate all on the test and ood
    splits; compare with GRPO (bootstrap intervals, "within noise" flags); write report.md.

    A --out that already holds a demo is refused: --resume continues it, --overwrite starts it over."""
    from divrl.config import InputError
    from divrl.eval.demo import run_demo
    from divrl.eval.grid import GridRunError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        run_demo(
            out,
            quick=quick,
            seeds=seeds,
            methods=[m.strip() for m in methods.split(",") if m.strip()],
            threads=threads,
            overrides=list(set_),
            resume=resume,
            overwrite=overwrite,
            workers=workers,
            device=device,
        )
    except InputError as exc:
        _fail(str(exc))
    except GridRunError as exc:
        _failed_runs(exc)


def _failed_runs(exc: Exception) -> NoReturn:
    """Models that failed in their workers: one ``error:`` line naming them, exit code 1 (not a usage error)."""
    typer.echo(f"{typer.style('error:', fg='red', bold=True)} {one_line(str(exc))}", err=True)
    raise typer.Exit(1)


def _command_line(ctx: typer.Context, skip: tuple[str, ...] = ()) -> str:
    """The command as given on the command line (options in their declared order; defaults and the parameters
    named in ``skip`` left out)."""
    import shlex

    parts = ["divrl", *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name or "")
        if getattr(source, "name", "") != "COMMANDLINE" or not param.opts or param.name in skip:
            continue
        value = ctx.params[param.name or ""]
        flag = param.opts[0]
        if isinstance(value, bool):
            parts += [flag] if value else []
        elif isinstance(value, (list, tuple)):
            for item in value:
                parts += [flag, str(item)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


@app.command()
def bench(
    ctx: typer.Context,
    out: Path = typer.Option(
        Path("runs/bench"), "--out", help="Folder for the runs (seed<i>/<method>/), bench.json and summary.json."
    ),
    leaderboard: Path = typer.Option(
        Path("docs/leaderboard.md"),
        "--leaderboard",
        help="The markdown file to write; the pass@1-vs-pass@32 pictures go beside it (<name>.png, <name>-ood.png).",
    ),
    methods: str = typer.Option(
        None,
        "--methods",
        help="Comma-separated Countdown recipes (default: every configs/countdown/*.yaml, read at run time).",
    ),
    seeds: int = typer.Option(3, "--seeds", help="Train every method with seeds 0 .. N-1 (as divrl demo --seeds)."),
    steps: int = typer.Option(None, "--steps", help="RL steps of every run (default: each recipe's own)."),
    set_: list[str] = typer.Option(
        [], "--set", metavar="KEY=VALUE", help="key.path=value applied to every recipe. " + SET_HELP
    ),
    problems: int = typer.Option(
        BENCH_PROBLEMS,
        "--problems",
        help="Problems per evaluation split (the first N; fewer if the split is smaller; 0 = the whole split: "
        "11,510 test problems, hours per model on a CPU). 700 gives a pass@32 interval of about ±0.03 from "
        "evaluation noise (docs/results.md).",
    ),
    samples: int = typer.Option(32, "--samples", help="Samples per problem (pass@32 needs 32)."),
    split: str = typer.Option(
        "test,ood", "--split", help="Comma-separated evaluation splits; the first heads the leaderboard."
    ),
    baseline: str = typer.Option("grpo", "--baseline", help="The method every other one is compared with."),
    threads: int = typer.Option(0, "--threads", help=GRID_THREADS_HELP),
    workers: int = typer.Option(1, "--workers", help=WORKERS_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the bench in --out (same --steps, --set, --problems, --samples, --split); finished runs are "
        "kept, methods and seeds may be added.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="If --out holds a bench, remove it and start over."),
) -> None:
    """Train every recipe for N seeds, evaluate on the test and ood splits, write the leaderboard: pass@1, pass@8,
    pass@32, distinct correct classes with 95% intervals, the paired difference to GRPO ("within noise" marks), a
    pass@1-vs-pass@32 picture, the command, versions, machine and wall time.

    A --out that already holds a bench is refused: --resume continues it, --overwrite starts it over."""
    from divrl.config import InputError
    from divrl.eval.bench import run_bench
    from divrl.eval.grid import GridRunError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        run_bench(
            out,
            leaderboard,
            methods=[m.strip() for m in methods.split(",") if m.strip()] if methods is not None else None,
            seeds=seeds,
            steps=steps,
            overrides=list(set_),
            problems=problems,
            samples=samples,
            splits=[s.strip() for s in split.split(",") if s.strip()],
            baseline=baseline,
            threads=threads,
            workers=workers,
            device=device,
            resume=resume,
            overwrite=overwrite,
            command=_command_line(ctx, skip=("resume", "overwrite")),
        )
    except InputError as exc:
        _fail(str(exc))
    except GridRunError as exc:
        _failed_runs(exc)


if __name__ == "__main__":  # pragma: no cover
    app()
