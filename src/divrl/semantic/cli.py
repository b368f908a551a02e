"""``divrl classifier ...``: generate labelled pairs, train an equivalence classifier, measure the partitions it
induces (learned partitions) against the exact ones.

Mounted by the main CLI as ``app.add_typer(classifier_app, name="classifier")``; ``divrl partition ...`` is the
former, deprecated spelling (hidden, prints a one-line note). Heavy imports happen inside the commands, so
``divrl --help`` stays cheap.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from divrl.cliutil import fail

classifier_app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,  # plain click help, as the main app (no `--help <bool>`)
    no_args_is_help=True,
    help="Equivalence classifiers for DARLING's learned partition: pairs, training, agreement with exact classes.",
)
console = Console()


def _fail(message: str) -> NoReturn:
    fail(message)  # one line on stderr, exit code 2


@classifier_app.command("pairs")
def pairs_command(
    out: Annotated[Path, typer.Option("--out", help="Output JSONL (fields a, b, label, group).")],
    task: Annotated[str, typer.Option("--task", help="Task with an exact equivalence key.")] = "countdown",
    split: Annotated[str, typer.Option(help="Problem split: train, val or test.")] = "train",
    problems: Annotated[int, typer.Option(help="Number of problems.")] = 400,
    source: Annotated[str, typer.Option(help="policy (samples), reference (solver completions) or mix.")] = "mix",
    samples: Annotated[int, typer.Option(help="Policy samples per problem.")] = 8,
    references: Annotated[int, typer.Option(help="Reference completions per problem.")] = 8,
    model: Annotated[str, typer.Option(help="Policy for --source policy/mix.")] = "builtin:countdown-tiny",
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    neg_ratio: Annotated[
        float, typer.Option(help="Negatives kept per positive (1 = balanced; 0 = keep every pair).")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed (problems, sampling, balancing).")] = 0,
) -> None:
    """Labelled pairs from sampled/solver responses; label = equal canonical form of the extracted answers."""
    from divrl.core.registry import UnknownNameError
    from divrl.semantic.pairs import task_pairs
    from divrl.semantic.train import write_pairs

    t0 = time.perf_counter()
    try:
        pairs, stats = task_pairs(
            task,
            problems=problems,
            split=split,
            source=source,
            samples=samples,
            references=references,
            model=model,
            temperature=temperature,
            neg_ratio=neg_ratio,
            seed=seed,
        )
    except (ValueError, OSError, UnknownNameError) as exc:
        _fail(str(exc))
    if not pairs:
        _fail("no pairs could be formed (every response lacked an equivalence key?)")
    n = write_pairs(pairs, out)
    console.print(
        f"wrote {n} pairs to [bold]{out}[/bold] ({stats.kept_positives} equivalent, {stats.kept_negatives} not; "
        f"before balancing {stats.positives}/{stats.negatives}) from {stats.problems} {split} problems, "
        f"{stats.responses} responses ({stats.distinct} distinct, {stats.no_key} without a key; keyed by source "
        f"{stats.by_source}) in {time.perf_counter() - t0:.1f} s"
    )


def _metrics_table(title: str, rows: list[tuple[str, dict[str, Any]]]) -> Table:
    table = Table(title=title)
    for col in ("", "n", "accuracy", "precision", "recall", "F1", "confusion (tn fp / fn tp)"):
        table.add_column(col, justify="left" if col in ("", "confusion (tn fp / fn tp)") else "right")
    for name, m in rows:
        table.add_row(
            name,
            str(m["n"]),
            f"{m['accuracy']:.3f}",
            f"{m['precision']:.3f}",
            f"{m['recall']:.3f}",
            f"{m['f1']:.3f}",
            "{} {} / {} {}".format(*m["confusion"][0], *m["confusion"][1]),
        )
    return table


@classifier_app.command("train")
def train_command(
    pairs: Annotated[Path, typer.Option("--pairs", help="Training pairs JSONL (a, b, label[, group]).")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder to write (config.json, weights, eval.json).")],
    eval_pairs: Annotated[
        Path | None, typer.Option("--eval-pairs", help="Held-out pairs JSONL (default: split --pairs).")
    ] = None,
    eval_fraction: Annotated[float, typer.Option(help="Held-out share of --pairs (by group when given).")] = 0.2,
    kind: Annotated[str, typer.Option(help="bi (frozen embeddings + MLP head) or cross (fine-tuned encoder).")] = "bi",
    embedder: Annotated[
        str, typer.Option(help="Embedder (bi) / base encoder (cross): all-MiniLM-L6-v2, char-ngram, or a folder.")
    ] = "all-MiniLM-L6-v2",
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 400,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.")] = 128,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default 1e-3 bi, 3e-5 cross).")] = None,
    hidden: Annotated[int, typer.Option(help="MLP hidden width (bi).")] = 256,
    threshold: Annotated[float, typer.Option(help="Equivalent iff P > threshold (DARLING: 0.5).")] = 0.5,
    short_rule: Annotated[
        bool, typer.Option(help="DARLING's rule for responses of <= 5 words before the classifier.")
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed (split, init, batches).")] = 0,
) -> None:
    """Train an equivalence classifier (class-weighted loss) and evaluate it on held-out pairs."""
    from divrl.semantic.train import TrainOptions, evaluate_classifier, read_pairs, split_pairs, train_classifier

    t0 = time.perf_counter()
    try:
        options = TrainOptions(
            kind=kind,
            embedder=embedder,
            hidden=hidden,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            threshold=threshold,
            short_rule=short_rule,
            seed=seed,
        )
        data = read_pairs(pairs)
        if eval_pairs is not None:
            train_set, held, how = data, read_pairs(eval_pairs), f"file {eval_pairs}"
        else:
            train_set, held = split_pairs(data, eval_fraction, seed)
            how = "by group" if all(p.group is not None for p in data) else "by pair"
            how = f"{eval_fraction:g} of {pairs} ({how})"
        classifier = train_classifier(train_set, options, log=lambda msg: console.print(f"  {msg}"))
    except (ValueError, ImportError, OSError) as exc:
        _fail(str(exc))
    train_time = time.perf_counter() - t0
    classifier.save(out)
    majority = int(2 * sum(p.label for p in train_set) >= len(train_set))
    report: dict[str, Any] = {
        "options": {k: getattr(options, k) for k in options.__dataclass_fields__},
        "pairs": str(pairs),
        "train_pairs": len(train_set),
        "train_positive_rate": sum(p.label for p in train_set) / len(train_set),
        "held_out": how,
        "train_seconds": train_time,
        "eval": evaluate_classifier(classifier, held, majority_label=majority) if held else None,
    }
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"saved classifier to [bold]{out}[/bold] ({len(train_set)} training pairs, {train_time:.1f} s)")
    ev = report["eval"]
    if ev is None:
        console.print("no held-out pairs (eval_fraction 0 and no --eval-pairs): nothing evaluated")
        return
    rows = [
        ("classifier", ev["model"]),
        ("classifier + rules", ev["with_rules"]),
        (f"majority of training (label {ev['majority']['label']})", ev["majority"]),
    ]
    if ev["best_constant"]["label"] != ev["majority"]["label"]:
        rows.append((f"best constant (label {ev['best_constant']['label']})", ev["best_constant"]))
    console.print(_metrics_table(f"held-out pairs: {how}", rows))
    console.print(
        f"rules decided {ev['rule_coverage']:.1%} of the held-out pairs; positive rate {ev['positive_rate']:.3f}; "
        f"written to {out / 'eval.json'}"
    )
    if options.short_rule and ev["rule_coverage"] > 0.5:
        console.print(
            "[yellow]warning:[/yellow] the short-answer rule decides most pairs (a response without spaces is one "
            "'word': on Countdown the rule reduces to string equality and the classifier is never asked); "
            "train with --no-short-rule to let the classifier decide"
        )


@classifier_app.command("agree")
def agree_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Classifier checkpoint folder.")],
    task: Annotated[str, typer.Option("--task", help="Task with an exact equivalence key.")] = "countdown",
    model: Annotated[str, typer.Option(help="Policy that samples the groups.")] = "builtin:countdown-tiny",
    split: Annotated[str, typer.Option(help="Problem split.")] = "val",
    prompts: Annotated[int, typer.Option(help="Groups per step (P).")] = 16,
    group_size: Annotated[int, typer.Option(help="Samples per group (G).")] = 8,
    steps: Annotated[int, typer.Option(help="Steps (batches of P groups).")] = 4,
    short_rule: Annotated[
        bool | None, typer.Option("--short-rule/--no-short-rule", help="Override the checkpoint's short_rule.")
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="Override the checkpoint's decision threshold.")] = None,
    threads: Annotated[int, typer.Option(help="torch threads for the run (0: torch's default).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="Write the report as JSON here.")] = None,
) -> None:
    """Learned vs exact partitions on policy rollouts (adjusted Rand index) and the per-step cost."""
    from divrl.core.registry import UnknownNameError
    from divrl.semantic.partition import measure_agreement

    try:
        report = measure_agreement(
            checkpoint,
            task_name=task,
            model=model,
            split=split,
            prompts=prompts,
            group_size=group_size,
            steps=steps,
            seed=seed,
            short_rule=short_rule,
            threshold=threshold,
            threads=threads,
        )
    except (ValueError, ImportError, OSError, UnknownNameError) as exc:
        _fail(str(exc))
    table = Table(title=f"learned vs exact partitions: {report['groups']} groups of G={group_size} ({split})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (
        "short_rule",
        "threshold",
        "torch_threads",
        "mean_ari",
        "pooled_ari",
        "identical_partition_rate",
        "mean_exact_classes",
        "mean_learned_classes",
        "mean_distinct_texts",
        "partition_s",
        "partition_cold_s",
        "embed_s",
    ):
        value = report[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"written to {out}")
