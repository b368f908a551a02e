"""What each column of ``divrl eval``'s table means (stdlib only: the CLI's ``--help`` reads it without torch).

The definitions are those of :mod:`divrl.eval.evaluate` (its module docstring names the papers and equations).
"""

from __future__ import annotations

__all__ = ["METRIC_NOTES", "metric_note"]

METRIC_NOTES: dict[str, str] = {
    "num_problems": "problems evaluated",
    "n": "samples per problem",
    "pass@k": "chance that at least one of k samples is correct (unbiased estimator over all n samples, mean over "
    "problems)",
    "greedy_pass@1": "share of problems whose single greedy (temperature 0) completion is correct",
    "potential@k": "among the problems whose greedy completion is wrong, the share where at least one of the FIRST k "
    "samples is correct (R1-zero-Div Eq. 6: a 0/1 per problem, not the unbiased estimator); potential@1 reads one "
    "sample per problem while pass@1 averages all n, so potential@1 = 0 beside pass@1 > 0 is expected when the "
    "correct samples are not the first ones; nan when greedy solves every problem",
    "div_equ": "distinct solutions / parsable samples per problem (R1-zero-Div Eq. 5), 1 = all different",
    "distinct_correct_classes": "distinct solution classes among the correct samples of a problem, mean over "
    "problems (classes: the task's equivalence key, e.g. Countdown's canonical expression)",
    "distinct_4": "distinct character 4-grams / all 4-grams of a problem's samples, mean over problems",
    "self_bleu": "self-BLEU (0-100) of a problem's samples against each other; lower = more diverse",
    "entropy": "mean per-token entropy (nats) of the policy on its own samples",
    "temperature": "the sampling temperature used (a setting, not a metric)",
    "seed": "the sampling seed used (a setting, not a metric)",
}
"""One line per column of ``divrl eval``'s table (``pass@k``/``potential@k`` stand for every k)."""


def metric_note(key: str) -> str | None:
    """The :data:`METRIC_NOTES` line of a metrics key (``pass@8`` -> the ``pass@k`` line), or ``None``."""
    head, at, _ = key.partition("@")
    generic = f"{head}@k" if at and key != "greedy_pass@1" else key
    return METRIC_NOTES.get(generic)
