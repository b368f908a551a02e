"""Countdown: reach a target from a few numbers with ``+ - * /`` -- divrl's CPU testbed task.

A problem is a multiset of small positive integers and a target (``nums 10 7 7 target 59``). A
solution is an arithmetic expression over some of the numbers, each used at most once (or each
exactly once with ``exact_use``), whose exact rational value is the target. The task follows the
TinyZero / "Countdown" RLVR testbed; everything here (rules, format, canonical form) is our own
specification, first measured in a throwaway prototype (``shared/research/testbed-prototype.md``).

Format (what the policy reads and writes)
-----------------------------------------
* Prompt (:func:`format_prompt`): ``nums 10 7 7 target 59:`` left-padded with spaces to the fixed
  width :attr:`CountdownConfig.prompt_width` (25 for the default config), so every prompt of a task
  config has the same length and a character-level policy needs no attention mask.
* Completion (:func:`format_completion`): the steps in evaluation order (post-order, left subtree
  first), comma separated, then the answer: ``7*7=49,10+49=59<answer>10+7*7</answer>``. A
  completion ends at ``</answer>`` (``CountdownTask.stop``). Reference completions (solver output)
  only have positive integer steps; :attr:`CountdownConfig.max_completion_chars` bounds their length
  (47 for the default config).
* Search format (``attempts`` > 0, :attr:`CountdownConfig.attempts`; ours, off by default): a reference
  completion first shows up to ``attempts`` failed chains of true arithmetic over all the numbers, each ended by
  ``;`` (:func:`failed_attempt`), then the solution: ``10-1=9,9*5=45,45-1=44;...<answer>...</answer>``. A policy
  warm-started on it sees that a chain can miss and that another can follow.
* Grading (:func:`verify`): only the expression inside the last ``<answer>...</answer>`` pair is
  graded; the steps before it are not (malformed steps are harmless).

Expressions
-----------
ASCII ``+ - * /``, parentheses, non-negative integer literals of at most 8 digits (leading zeros
are read as decimal: ``07`` is 7), spaces/tabs/newlines. No unary minus or plus (``-3``, ``2*-3``
are unparsable): every reachable value is written without it, and it would open a second spelling
of every subtraction. At most 256 characters and 32 nested parentheses. Arithmetic is exact
(``fractions.Fraction``); there is no ``eval``.

Rules: the verifier versus the solver (a deliberate asymmetry)
--------------------------------------------------------------
* :func:`verify` grades the final expression only: any exact rational intermediate is fine, so
  ``(2-5)*(1-4)`` is a correct 9 and ``8/(1/2)`` a correct 16. It cannot enforce a rule on
  intermediate results because ``a+b-c`` and ``a-c+b`` are one solution class (below) yet only one
  of them may have a positive ``a-c``.
* The exhaustive solver (:func:`solve_all`) uses the classic Countdown rule: every intermediate
  result is a positive integer (subtraction only when the result is > 0, division only when exact).
  This keeps the reference chains of thought integer-valued, which a tiny character-level policy
  learns much more easily, and avoids junk classes through 0 (``x+(3-3)``). The verifier accepts
  every solver solution (tested). The converse does not hold: a correct answer can lie in a class
  the solver does not list when each of its spellings needs a negative or fractional intermediate,
  e.g. ``(1-3)*(2-7)`` (=10) or ``(1/2+3)*4`` (=14). Such answers are still correct and still get an
  exact :func:`canonical` key (their own class); only metrics that divide by :func:`count_solution_classes`
  should clip at 1.

Solution classes (:func:`canonical`)
------------------------------------
The canonical form is the exact semantic-equivalence key used by DARLING's partition and by Div-Equ
on this task. It normalises commutativity and associativity of ``+`` and ``*`` together with the
matching rewrites of ``-`` and ``/``: a ``+``/``-`` chain becomes a signed multiset of terms and a
``*``/``/`` chain a numerator and a denominator multiset of factors, recursively, each multiset is
sorted (numbers numerically first, then composite terms as strings) and rendered without spaces.
So ``(a+b)*c == c*(b+a)``, ``a+b-c == a-c+b``, ``a-(b-c) == a-b+c``, ``a/(b/c) == a*c/b``, but
``a*b-c != a-b*c``. Nothing else is applied: no distributivity (``a*(b+c) != a*b+a*c``), no
numeric folding (``2*3 != 6``), and identity factors stay as written (``x*1``, ``x/1`` and ``x``
are three classes), because they are different solutions a policy can write and folding them would
make the key depend on arithmetic, not on the expression. Equal canonical forms imply equal values
whenever both expressions are defined (every rewrite is a rational identity; ``a/(b/0)`` is
undefined while its class representative ``a*0/b`` is not).

Keeping identity factors has a visible cost: with a 1 among the numbers, ``x*1``-style variants
multiply the classes (``1 2 5 -> 3`` has 9: ``5-2``, ``1*(5-2)``, ``(5-2)/1``, ``1*5-2``, ``5/1-2``,
``5-1*2``, ``5-2/1``, ``1+2``, ``(1+5)/2``). ``low=2`` removes ones from the pool.

Problem pool (measured; numbers 1..13, max_target 100)
------------------------------------------------------
* 3 numbers: 7,338 problems; 83.6% have a single class, mean 1.32 classes. With ``min_classes=2``
  (the default), ``test_fraction`` 0.2 and ``val_fraction`` 0.1 (the defaults) 851 train, 138 val
  and 218 test problems remain (test: mean 2.73 classes); with ``min_classes=1`` 5,134 / 742 / 1,462.
  (``test_fraction`` 0.1 without val gives 1,098 / 109; 296 of the 1,207 multi-class problems
  contain a 1.) Solver: ~0.05 ms per problem cold.
* 4 numbers: 99,729 problems; 42% single-class, mean 3.10, max 53; with ``min_classes=2`` and
  ``test_fraction`` 0.1: 51,961 train / 5,747 test. Solver: ~1.3-1.6 ms per problem cold (a fresh multiset).

Out-of-distribution split (``ood``)
-----------------------------------
Problems that no train, val or test problem can be, so that neither SFT nor RL on this config's train split
shows them: at least one number lies above ``high`` (every number in ``low..ood_high``,
:attr:`CountdownConfig.ood_high`, 20 by default), the target is drawn as for the other splits (reachable,
<= ``max_target``, not one of the numbers, at least ``min_classes`` classes), and the problem's hash
(:func:`split_of`) lies in the *test* range. The hash keeps the split about the size of ``test`` (the whole
out-of-range pool of the default config has 1,692 multi-class problems) and leaves the pool's val range (10%) free
as an out-of-distribution validation set should one be needed; the choice of range and size is ours. Default
config: **300 problems**, mean 3.00 solution classes (``test``: 218, 2.73); 210 / 81 / 9 of them hold one / two /
three numbers in 14..20. Prompts keep the default prompt width (25: two-digit numbers, as for ``high`` 13), and a
3-number solution's one intermediate stays three digits (at most 20*20 = 400, against 13*13 = 169), so reference
completions stay within :attr:`CountdownConfig.max_completion_chars` (tested) and need no more tokens than in
distribution.


The package: ``expressions`` (limits, parser, evaluation, canonical form), ``problem`` (problems, JSONL),
``verifier`` (answer extraction, verification), ``solver``, ``formats`` (prompt, completion, reference
completions), ``data`` (config, generation, splits), ``task`` (:class:`CountdownTask`). Every name is
re-exported here."""

from __future__ import annotations

from divrl.tasks.countdown.data import (  # noqa: F401
    _MAX_MISSES,
    _MAX_POOL_MULTISETS,
    CountdownConfig,
    _all_multisets,
    _eligible_targets,
    _generate,
    _largest_number,
    _n_multisets,
    _split_of_key,
    generate,
    split_of,
)
from divrl.tasks.countdown.expressions import (  # noqa: F401
    _DIGITS,
    _LEAF_PREC,
    _PREC,
    _SPACE,
    ANSWER_CLOSE,
    ANSWER_OPEN,
    MAX_DEPTH,
    MAX_EXPR_CHARS,
    MAX_LITERAL_DIGITS,
    BinOp,
    EvaluationError,
    ExpressionError,
    Node,
    Num,
    ParseError,
    Token,
    _Canon,
    _canon_combine,
    _canon_leaf,
    _canon_of,
    _literals,
    _order,
    _Parser,
    canonical,
    exact_value,
    parse,
    render,
    tokenize,
)
from divrl.tasks.countdown.formats import (  # noqa: F401
    ATTEMPT_END,
    _apply,
    _operand,
    _shuffle_commutative,
    failed_attempt,
    format_completion,
    format_prompt,
    reference_completion,
)
from divrl.tasks.countdown.problem import Problem, _is_int, read_jsonl, write_jsonl  # noqa: F401
from divrl.tasks.countdown.solver import (  # noqa: F401
    _build_trees,
    _by_length,
    _candidate_multisets,
    _class_counts,
    _classes,
    _commutations,
    _join,
    _large_trees,
    _small_trees,
    _splits,
    _sub_multisets,
    _Tree,
    _trees,
    count_solution_classes,
    solution_classes,
    solve,
    solve_all,
)
from divrl.tasks.countdown.task import CountdownTask
from divrl.tasks.countdown.verifier import _usage_error, equivalence_key, extract_answer, verify  # noqa: F401

__all__ = [
    "ANSWER_CLOSE",
    "ANSWER_OPEN",
    "ATTEMPT_END",
    "MAX_DEPTH",
    "MAX_EXPR_CHARS",
    "MAX_LITERAL_DIGITS",
    "BinOp",
    "CountdownConfig",
    "CountdownTask",
    "EvaluationError",
    "ExpressionError",
    "Node",
    "Num",
    "ParseError",
    "Problem",
    "canonical",
    "count_solution_classes",
    "equivalence_key",
    "exact_value",
    "extract_answer",
    "failed_attempt",
    "format_completion",
    "format_prompt",
    "generate",
    "parse",
    "read_jsonl",
    "reference_completion",
    "render",
    "solution_classes",
    "solve",
    "solve_all",
    "split_of",
    "tokenize",
    "verify",
    "write_jsonl",
]
