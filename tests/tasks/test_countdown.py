"""Countdown task: parser, canonical form, verifier, solver, generator, format, task object."""

from __future__ import annotations

import itertools
import random
import re
import time
from collections import Counter, defaultdict
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from divrl.core.registry import UnknownNameError
from divrl.tasks import Task, get_task
from divrl.tasks.countdown import (
    MAX_DEPTH,
    BinOp,
    CountdownConfig,
    CountdownTask,
    EvaluationError,
    Node,
    Num,
    ParseError,
    Problem,
    canonical,
    count_solution_classes,
    equivalence_key,
    exact_value,
    extract_answer,
    failed_attempt,
    format_completion,
    format_prompt,
    generate,
    parse,
    read_jsonl,
    reference_completion,
    render,
    solution_classes,
    solve,
    solve_all,
    split_of,
    tokenize,
    verify,
    write_jsonl,
)

FUZZ = settings(max_examples=200, deadline=500, suppress_health_check=[HealthCheck.too_slow])


def tag(expr: str) -> str:
    return f"<answer>{expr}</answer>"


def value_or_none(node: Node) -> Fraction | None:
    try:
        return exact_value(node)
    except EvaluationError:
        return None


# --------------------------------------------------------------------------------------------------
# Parser and evaluation


def test_tokenize_positions_and_whitespace() -> None:
    assert tokenize(" 12 *( 3\t-4)\n") == [
        ("num", "12", 1),
        ("op", "*", 4),
        ("(", "(", 5),
        ("num", "3", 7),
        ("op", "-", 9),
        ("num", "4", 10),
        (")", ")", 11),
    ]


def test_parse_precedence_and_left_associativity() -> None:
    assert parse("10+7*7") == BinOp("+", Num(10), BinOp("*", Num(7), Num(7)))
    assert parse("8-3-2") == BinOp("-", BinOp("-", Num(8), Num(3)), Num(2))
    assert parse("8/4/2") == BinOp("/", BinOp("/", Num(8), Num(4)), Num(2))
    assert parse("((5))") == Num(5)
    assert parse("007") == Num(7)
    assert exact_value(parse("8-3-2")) == 3
    assert exact_value(parse("8/4/2")) == 1
    assert exact_value(parse("7/2")) == Fraction(7, 2)
    assert exact_value(parse("(13-1)*(2+6)/4")) == 24


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("-3", "unary minus at 0 is not allowed"),
        ("2*-3", "unary minus at 2 is not allowed"),
        ("+3", "unary plus at 0 is not allowed"),
        ("1+", "unexpected end of expression at 2"),
        ("(1+2", "unclosed '(' at 0"),
        ("1+2)", "unbalanced ')' at 3"),
        ("2 3", "unexpected '3' at 2"),
        ("2**3", "expected a number or '(' at 2, found '*'"),
        ("()", "expected a number or '(' at 1, found ')'"),
        ("1.5", "unexpected character '.' at 1"),
        ("2x3", "unexpected character 'x' at 1"),
        ("²", "unexpected character '²' at 0"),  # a unicode digit is not a literal
        ("٣+1", "unexpected character '٣' at 0"),
        ("123456789", "huge literal at 0: 9 digits > 8"),
        ("1+" + "0" * 9, "huge literal at 2: 9 digits > 8"),
        ("1" * 300, "too long: 300 chars > 256"),
        ("(" * 33 + "1" + ")" * 33, "nesting deeper than 32 at 32"),
    ],
)
def test_parse_errors_name_the_reason(expr: str, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(expr)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


def test_limits_are_inclusive() -> None:
    assert parse("12345678") == Num(12345678)
    assert exact_value(parse("(" * MAX_DEPTH + "3" + ")" * MAX_DEPTH)) == 3
    assert exact_value(parse("+".join(["1"] * 128))) == 128  # 255 chars, a 127-deep left chain
    with pytest.raises(ParseError):
        parse(123)  # type: ignore[arg-type]


def test_division_by_zero() -> None:
    with pytest.raises(EvaluationError, match="division by zero"):
        exact_value(parse("5/(3-3)"))
    assert exact_value(parse("0/5")) == 0


# --------------------------------------------------------------------------------------------------
# Random expression trees and class-preserving rewrites

leaf_values = st.integers(0, 13)
trees = st.recursive(
    leaf_values.map(Num),
    lambda kids: st.builds(BinOp, st.sampled_from("+-*/"), kids, kids),
    max_leaves=7,
)

# (outer op, inner op) of ``(x i y) o z`` -> (new outer, new inner) of ``x o' (y i' z)``, and back.
_REASSOC_RIGHT = {
    ("+", "+"): ("+", "+"),
    ("-", "+"): ("+", "-"),
    ("+", "-"): ("-", "-"),
    ("-", "-"): ("-", "+"),
    ("*", "*"): ("*", "*"),
    ("/", "*"): ("*", "/"),
    ("*", "/"): ("/", "/"),
    ("/", "/"): ("/", "*"),
}
_REASSOC_LEFT = {v: k for k, v in _REASSOC_RIGHT.items()}


def rewrite(node: Node, draw_bool) -> Node:  # type: ignore[no-untyped-def]
    """Apply commutations / reassociations at random places (each a rational identity)."""
    if isinstance(node, Num):
        return node
    node = BinOp(node.op, rewrite(node.left, draw_bool), rewrite(node.right, draw_bool))
    if node.op in "+*" and draw_bool():
        node = BinOp(node.op, node.right, node.left)
    left, right = node.left, node.right
    if isinstance(left, BinOp) and (node.op, left.op) in _REASSOC_RIGHT and draw_bool():
        outer, inner = _REASSOC_RIGHT[(node.op, left.op)]
        node = BinOp(outer, left.left, BinOp(inner, left.right, right))
    elif isinstance(right, BinOp) and (node.op, right.op) in _REASSOC_LEFT and draw_bool():
        outer, inner = _REASSOC_LEFT[(node.op, right.op)]
        node = BinOp(outer, BinOp(inner, left, right.left), right.right)
    return node


@FUZZ
@given(trees, st.data())
def test_canonical_invariant_under_commuting_and_reassociating(tree: Node, data: st.DataObject) -> None:
    rewritten = tree
    for _ in range(3):
        rewritten = rewrite(rewritten, lambda: data.draw(st.booleans()))
    assert canonical(render(rewritten)) == canonical(render(tree))
    a, b = value_or_none(tree), value_or_none(rewritten)
    if a is not None and b is not None:
        assert a == b


@FUZZ
@given(trees)
def test_render_round_trips_and_canonical_is_idempotent(tree: Node) -> None:
    text = render(tree)
    assert parse(text) == tree
    c = canonical(text)
    assert canonical(c) == c
    assert value_or_none(parse(c)) == value_or_none(tree) or value_or_none(tree) is None


def test_canonical_equal_implies_equal_value_exhaustively() -> None:
    """Every tree of up to 3 leaves over {0, 1, 2, 3}: a class never holds two different defined values."""
    by_size: dict[int, list[Node]] = {1: [Num(v) for v in range(4)]}
    for size in (2, 3):
        by_size[size] = [
            BinOp(op, a, b) for k in range(1, size) for a in by_size[k] for b in by_size[size - k] for op in "+-*/"
        ]
    values: dict[str, set[Fraction]] = defaultdict(set)
    members: Counter[str] = Counter()
    for tree in itertools.chain.from_iterable(by_size.values()):
        key = canonical(render(tree))
        members[key] += 1
        if (v := value_or_none(tree)) is not None:
            values[key].add(v)
    assert sum(members.values()) == 4 + 64 + 2 * 64 * 16
    assert max(members.values()) >= 8  # the classes are not trivially singletons (e.g. a+b+c: 12 trees)
    assert all(len(vs) <= 1 for vs in values.values())


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("(1+2)*3", "3*(2+1)"),
        ("5+2-3", "5-3+2"),
        ("5-(3-1)", "5-3+1"),
        ("8/(4/2)", "8*2/4"),
        ("2*3*4", "4*(3*2)"),
        ("8-(1+2)", "8-2-1"),
        ("12/(2*3)", "12/3/2"),
        (" 10 + 7 * 7 ", "7*7+10"),
        ("007+1", "1+7"),
    ],
)
def test_canonical_equivalent_pairs(a: str, b: str) -> None:
    assert canonical(a) == canonical(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("5*3-2", "5-3*2"),
        ("2*3", "6"),
        ("4*1", "4"),
        ("4*1", "4/1"),
        ("3*(4+5)", "3*4+3*5"),  # no distributivity
        ("8-3", "3-8"),
        ("8/2", "2/8"),
        ("(8-3)-2", "8-(3-2)"),
        ("(8/4)/2", "8/(4/2)"),
    ],
)
def test_canonical_distinguishes(a: str, b: str) -> None:
    assert canonical(a) != canonical(b)


def test_canonical_hand_computed() -> None:
    assert canonical("(1+2)*3") == "3*(1+2)"
    assert canonical("8/(4/2)") == "2*8/4"
    assert canonical("5-(3-1)") == "1+5-3"
    assert canonical("13+10+2") == "2+10+13"  # numbers sort numerically
    assert canonical("(7-2)/(1+4)*3") == "3*(7-2)/(1+4)"
    with pytest.raises(ValueError):
        canonical("1+")


# --------------------------------------------------------------------------------------------------
# Answer extraction and verification

P59 = Problem((10, 7, 7), 59)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("7*7=49,10+49=59<answer>10+7*7</answer>", "10+7*7"),
        ("<answer>1</answer> then <answer>2</answer>", "2"),
        ("<answer>1+2</answer>junk</answer>", "1+2"),
        ("<answer>a</answer><answer>b", "a"),
        ("<answer></answer>", ""),
        ("no tags", None),
        ("<answer>1+2", None),
        ("</answer><answer>", None),
    ],
)
def test_extract_answer(completion: str, expected: str | None) -> None:
    assert extract_answer(completion) == expected


@pytest.mark.parametrize(
    ("completion", "reward", "answer", "reason"),
    [
        ("7*7=49,10+49=59<answer>10+7*7</answer>", 1.0, "10+7*7", "ok"),
        ("garbage steps 1+=/<answer> 7 * 7 + 10 </answer>", 1.0, "10+7*7", "ok"),
        ("<answer>10+7*7</answer>trailing", 1.0, "10+7*7", "ok"),
        ("10+7*7", 0.0, None, "no answer tag"),
        ("<answer>10+7*9</answer>", 0.0, "10+7*9", "number not available: 9"),
        ("<answer>10+7*7-7</answer>", 0.0, "10+7*7-7", "number reused: 7"),
        ("<answer>10*7-7</answer>", 0.0, "7*10-7", "wrong value 63 != 59"),
        ("<answer>7/(10-7)</answer>", 0.0, "7/(10-7)", "wrong value 7/3 != 59"),
        ("<answer>10+7*7)</answer>", 0.0, "10+7*7)", "unparsable: unbalanced ')' at 6"),
        ("<answer>123456789</answer>", 0.0, "123456789", "unparsable: huge literal at 0: 9 digits > 8"),
        ("<answer>" + "1" * 257 + "</answer>", 0.0, None, "too long: 257 chars > 256"),
        (
            "<answer>" + "(" * 40 + "7" + ")" * 40 + "</answer>",
            0.0,
            "(" * 40 + "7" + ")" * 40,
            "unparsable: nesting deeper than 32 at 32",
        ),
    ],
)
def test_verify_cases(completion: str, reward: float, answer: str | None, reason: str) -> None:
    v = verify(P59, completion)
    assert (v.reward, v.correct, v.answer, v.reason) == (reward, reward == 1.0, answer, reason)


def test_verify_division_by_zero_and_exact_use() -> None:
    p = Problem((3, 3, 5), 2)
    assert verify(p, tag("5/(3-3)")).reason == "division by zero"
    assert verify(p, tag("5-3")).correct
    v = verify(p, tag("5-3"), exact_use=True)
    assert (v.reward, v.reason) == (0.0, "number unused: 3")
    assert verify(Problem((3, 3, 5), 5), tag("5*3/3"), exact_use=True).correct


def test_verify_never_raises_on_bad_types() -> None:
    v = verify(P59, b"<answer>10+7*7</answer>")  # type: ignore[arg-type]
    assert (v.reward, v.reason) == (0.0, "completion is not a str: bytes")
    v = verify(None, tag("10+7*7"))  # type: ignore[arg-type]
    assert v.reward is None and v.reason.startswith("verifier error: AttributeError")


def test_verifier_accepts_answers_outside_the_solver_classes() -> None:
    """The documented asymmetry: the verifier allows negative/fractional intermediates, the solver not."""
    p = Problem((1, 2, 4, 5), 9)
    v = verify(p, tag("(2-5)*(1-4)"))
    assert v.correct and v.answer == "(1-4)*(2-5)"
    assert v.answer not in solution_classes(p)
    assert "(4-1)*(5-2)" in solution_classes(p)


def check_consistent(problem: Problem, completion: str) -> None:
    """verify() never raises, and rewards 1.0 exactly when an independent check says so."""
    v = verify(problem, completion)
    assert v.reward in (0.0, 1.0) and isinstance(v.reason, str)
    raw = extract_answer(completion)
    try:
        node = parse(raw) if raw is not None else None
    except ParseError:
        node = None
    expected = False
    if node is not None:
        used, have = Counter(_leaves(node)), Counter(problem.numbers)
        expected = not (used - have) and value_or_none(node) == problem.target
    assert v.correct == expected == (v.reward == 1.0)


def _leaves(node: Node) -> list[int]:
    return [node.value] if isinstance(node, Num) else _leaves(node.left) + _leaves(node.right)


@FUZZ
@given(st.text())
def test_fuzz_verify_random_text(s: str) -> None:
    check_consistent(P59, s)
    check_consistent(P59, tag(s))


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_verify_binary(b: bytes) -> None:
    s = b.decode("latin-1")
    check_consistent(P59, s)
    check_consistent(P59, "<answer>" + s + "</answer>")


MUTATION_ALPHABET = "0123456789+-*/() <>answer/\x00\n"


@FUZZ
@given(st.data())
def test_fuzz_verify_mutated_valid_answers(data: st.DataObject) -> None:
    problem = Problem((13, 2, 5, 6), 24)
    text = list(tag(data.draw(st.sampled_from(solve_all(problem)))))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text)))
        kind = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        c = data.draw(st.sampled_from(MUTATION_ALPHABET))
        if kind == "insert":
            text.insert(i, c)
        elif i < len(text):
            if kind == "delete":
                del text[i]
            else:
                text[i] = c
    check_consistent(problem, "".join(text))


def best_time(fn, repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.parametrize(
    ("completion", "reason"),
    [
        ("7" * 1_000_000, "no answer tag"),
        ("\x00\xff" * 500_000, "no answer tag"),
        ("<answer" * 150_000 + "</answer" * 30_000, "no answer tag"),
        ("x" * 1_000_000 + tag("10+7*7"), "ok"),
        ("<answer>" + "(" * 1_000_000 + "</answer>", "too long: 1000000 chars > 256"),
        ("</answer>" * 112_000 + "<answer>10+7*7</answer>", "ok"),
    ],
)
def test_verify_one_megabyte_is_fast(completion: str, reason: str) -> None:
    assert len(completion) >= 1_000_000
    assert verify(P59, completion).reason == reason
    assert best_time(lambda: verify(P59, completion)) < 0.050  # typically < 2 ms; robust under load


# --------------------------------------------------------------------------------------------------
# Solver


def test_solver_hand_computed() -> None:
    p = Problem((1, 2, 3), 6)
    assert sorted(solution_classes(p)) == ["1*2*3", "1+2+3", "2*3", "2*3/1"]
    assert count_solution_classes(p) == 4
    assert solve(p) == ["2*3", "1*2*3", "1+2+3", "2*3/1"]
    assert sorted(solution_classes(p, exact_use=True)) == ["1*2*3", "1+2+3", "2*3/1"]
    assert set(solve_all(Problem((2, 2), 4))) == {"2+2", "2*2"}
    assert solve(P59) == ["10+7*7"]
    assert set(solve_all(P59)) == {"10+7*7", "7*7+10"}
    assert count_solution_classes(Problem((1, 1, 1), 50)) == 0
    assert solve(Problem((1, 1, 1), 50)) == []


def test_solver_intermediates_are_positive_integers() -> None:
    # 8/(1/2) = 16 needs the fraction 1/2; its class 2*8/1 is reachable as 8*2/1 with integer steps.
    assert "2*8/1" in solution_classes(Problem((1, 2, 8), 16))
    # (3-5)*(1-4) = 6 needs negatives: the solver lists (5-3)*(4-1) instead.
    classes = solution_classes(Problem((1, 3, 4, 5), 6))
    assert "(4-1)*(5-3)" in classes and "(1-4)*(3-5)" not in classes


def sample_problems(k: int, count: int, seed: int) -> list[Problem]:
    return generate(count, "train", seed, num_numbers=k, min_classes=1)


@pytest.mark.parametrize(("k", "count"), [(2, 40), (3, 150), (4, 25)])
def test_every_solver_solution_verifies(k: int, count: int) -> None:
    for p in sample_problems(k, count, seed=k):
        classes = solution_classes(p)
        assert len(classes) == count_solution_classes(p) >= 1
        every = solve_all(p)
        assert len(every) == len(set(every)) >= len(classes)
        seen = set()
        for expr in every:
            v = verify(p, tag(expr))
            assert v.correct, (p, expr, v)
            assert v.answer in classes
            seen.add(v.answer)
        assert seen == set(classes)
        assert sorted(canonical(e) for e in solve(p)) == sorted(classes)


def test_every_exact_use_solution_uses_every_number() -> None:
    for p in sample_problems(4, 10, seed=7):
        for expr in solve_all(p, exact_use=True):
            assert verify(p, tag(expr), exact_use=True).correct


def test_solver_speed() -> None:
    from divrl.tasks import countdown

    problems = [Problem(tuple(random.Random(i).choices(range(1, 14), k=4)), 24) for i in range(20)]
    countdown._large_trees.cache_clear()
    countdown._classes.cache_clear()
    elapsed = best_time(lambda: [count_solution_classes(p) for p in problems], repeats=1)
    assert elapsed / len(problems) < 0.05  # measured ~1.3 ms per cold 4-number problem


# --------------------------------------------------------------------------------------------------
# Generator, splits, JSONL


def test_generate_is_reproducible_and_prefix_stable() -> None:
    a = generate(60, "train", seed=3)
    assert a == generate(60, "train", seed=3)
    assert a[:25] == generate(25, "train", seed=3)
    assert a != generate(60, "train", seed=4)
    assert len({p.key for p in a}) == 60


def test_generated_problems_respect_the_config() -> None:
    cfg = dict(num_numbers=(3, 4), low=2, high=9, max_target=50, min_classes=3)
    problems = generate(120, "train", 0, **cfg)  # type: ignore[arg-type]
    assert {len(p.numbers) for p in problems} == {3, 4}
    for p in problems:
        assert all(2 <= x <= 9 for x in p.numbers)
        assert 1 <= p.target <= 50 and p.target not in p.numbers
        assert count_solution_classes(p) >= 3
        assert split_of(p) == "train"


def test_splits_are_disjoint_and_exhaustive() -> None:
    train = generate(None, "train")
    test = generate(None, "test")
    assert not {p.key for p in train} & {p.key for p in test}
    val = generate(None, "val")
    assert not {p.key for p in train} & {p.key for p in val} and not {p.key for p in val} & {p.key for p in test}
    # Measured pool of the default config (3 numbers from 1..13, >= 2 classes, test 0.2, val 0.1).
    assert (len(train), len(val), len(test)) == (851, 138, 218)
    no_val = {"test_fraction": 0.1, "val_fraction": 0.0}
    assert (len(generate(None, "train", **no_val)), len(generate(None, "test", **no_val))) == (1098, 109)
    assert all(split_of(p) == "val" for p in val)
    assert all(split_of(p) == "test" for p in test)
    assert {p.key for p in generate(218, "test", seed=5)} == {p.key for p in test}  # sweeps to exhaustion
    with pytest.raises(ValueError, match="only 218 distinct test problems exist"):
        generate(219, "test")
    # Generated test problems of any size/seed are never train problems of the default split.
    four = generate(30, "test", seed=1, num_numbers=4)
    assert all(split_of(p) == "test" for p in four)


def test_ood_split_is_out_of_range_solvable_disjoint_and_deterministic() -> None:
    ood = generate(None, "ood")
    # Measured size of the default config's ood split (numbers 1..20 with one above 13, >= 2 classes, test hash).
    assert len(ood) == 300 and len({p.key for p in ood}) == 300
    for p in ood:
        assert max(p.numbers) > 13 and all(1 <= x <= 20 for x in p.numbers)  # outside the training range
        assert 1 <= p.target <= 100 and p.target not in p.numbers
        assert count_solution_classes(p) >= 2  # solvable, several solution classes, as the test split
        assert verify(p, tag(solve(p)[0])).correct
        assert split_of(p) == "test"  # the test range of the out-of-range pool
    in_distribution = {p.key for split in ("train", "val", "test") for p in generate(None, split)}
    assert not {p.key for p in ood} & in_distribution
    assert ood == generate(None, "ood")  # deterministic
    assert generate(40, "ood", seed=2) == generate(40, "ood", seed=2)[:40] == generate(60, "ood", seed=2)[:40]
    assert {p.key for p in generate(300, "ood", seed=2)} == {p.key for p in ood}  # draws sweep to the same pool
    assert CountdownTask().problems("ood") == ood
    # Numbers above another config's range: ood_high 16 keeps only 14..16.
    small = generate(None, "ood", ood_high=16)
    assert {max(p.numbers) for p in small} == {14, 15, 16} and len(small) == 120


def test_ood_prompts_fit_the_prompt_width_and_the_char_tokenizer() -> None:
    from divrl.models import build_char_tokenizer

    tok = build_char_tokenizer()
    task = CountdownTask()
    prompts = [task.prompt(p) for p in task.problems("ood")]
    assert {len(x) for x in prompts} == {task.prompt_width} == {25}
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    assert all(tok.unk_token_id not in row and len(row) == 25 for row in ids)
    assert tok.batch_decode(ids) == prompts
    # every solver solution of an ood problem is no longer than the in-distribution bound on completions
    rng = random.Random(0)
    assert max(len(task.reference_completion(p, rng)) for p in task.problems("ood")) <= task.max_completion_chars


def test_ood_split_rejects_a_range_it_cannot_hold() -> None:
    with pytest.raises(ValueError, match="ood split needs high < ood_high < 100"):
        generate(3, "ood", high=20)  # default ood_high 20 is not above high
    with pytest.raises(ValueError, match="ood_high=100"):
        generate(3, "ood", ood_high=100)  # three digits: longer prompts than the task's width
    with pytest.raises(ValueError, match="ood_high must be an int"):
        CountdownConfig(ood_high=2.5)  # type: ignore[arg-type]


def test_generate_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="split"):
        generate(3, "validation")
    with pytest.raises(ValueError, match="num_numbers"):
        generate(3, num_numbers=7)
    with pytest.raises(ValueError, match="low"):
        generate(3, low=0)
    with pytest.raises(ValueError, match="min_classes"):
        generate(3, min_classes=0)
    with pytest.raises(ValueError, match="n must be"):
        generate(-1)


def test_jsonl_round_trip_and_malformed_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    problems = generate(5, "test", seed=2)
    path = tmp_path / "held_out.jsonl"
    write_jsonl(problems, path)
    assert read_jsonl(path) == problems
    assert path.read_text().splitlines()[0] == problems[0].to_json()
    assert Problem.from_json('{"numbers": [10, 7, 7], "target": 59, "note": "extra keys ignored"}') == P59
    with open(path, "a") as f:
        f.write("\n")  # a blank line is skipped
        f.write('{"numbers": [1, 2], "traget": 3}\n')
    with pytest.raises(ValueError, match=re.escape(f"{path}:7: malformed problem: problem is missing field 'target'")):
        read_jsonl(path)
    path.write_text(problems[0].to_json() + "\n{not json\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:2:")):
        read_jsonl(path)
    path.write_bytes(b'{"numbers": [1, 2], "target": 3}\n\xff\xfe\n')
    with pytest.raises(ValueError, match=re.escape(f"{path}:2:")):
        read_jsonl(path)
    with pytest.raises(ValueError, match="numbers"):
        Problem.from_json('{"numbers": [1, true], "target": 3}')


# --------------------------------------------------------------------------------------------------
# Prompt and completion format


def test_prompt_widths_are_equal() -> None:
    cfg = CountdownConfig()
    assert cfg.prompt_width == 25
    assert format_prompt(Problem((13, 13, 13), 100), 25) == "nums 13 13 13 target 100:"
    assert format_prompt(Problem((1, 2, 3), 6), 25) == " " * 5 + "nums 1 2 3 target 6:"
    task = CountdownTask(CountdownConfig(num_numbers=(3, 4)))
    assert task.prompt_width == 28
    prompts = [task.prompt(p) for p in task.problems("train", 200)]
    assert {len(s) for s in prompts} == {28}
    with pytest.raises(ValueError, match="prompt width 25"):
        format_prompt(Problem((13, 13, 13, 13), 100), 25)


def test_format_completion() -> None:
    assert format_completion(P59, "10 + 7*7") == "7*7=49,10+49=59<answer>10+7*7</answer>"
    p = Problem((2, 3, 4, 5), 3)
    assert format_completion(p, "((5-2))*(4-3)") == "5-2=3,4-3=1,3*1=3<answer>(5-2)*(4-3)</answer>"
    assert format_completion(p, "5-(4-2)") == "4-2=2,5-2=3<answer>5-(4-2)</answer>"
    # A non-integer or negative operand is parenthesised in its step (never produced by the solver).
    assert format_completion(Problem((1, 2, 8), 16), "8/(1/2)") == "1/2=1/2,8/(1/2)=16<answer>8/(1/2)</answer>"
    assert (
        format_completion(Problem((1, 3, 4, 5), 6), "(3-5)*(1-4)")
        == "3-5=-2,1-4=-3,(-2)*(-3)=6<answer>(3-5)*(1-4)</answer>"
    )
    with pytest.raises(ValueError, match="wrong value"):
        format_completion(P59, "10*7-7")


def test_reference_completion_samples_classes_uniformly() -> None:
    p = Problem((1, 2, 3), 6)
    rng = random.Random(0)
    completions = [reference_completion(p, rng) for _ in range(400)]
    classes = Counter(equivalence_key(c) for c in completions)
    assert set(classes) == set(solution_classes(p))
    assert min(classes.values()) >= 60  # 4 classes, 100 expected each
    assert len(set(completions)) > 10  # random trees and operand orders within a class
    for c in completions:
        assert verify(p, c).correct
        assert c.split("<answer>")[0].split(",")[-1].endswith("=6")


def test_max_completion_chars_bounds_every_reference_completion() -> None:
    for k, bound in ((3, 47), (4, 65)):
        cfg = CountdownConfig(num_numbers=k, min_classes=1)
        assert cfg.max_completion_chars == bound
        rng = random.Random(k)
        problems = generate(None if k == 3 else 300, "train", 0, num_numbers=k, min_classes=1)
        lengths = [len(reference_completion(p, rng)) for p in problems]
        assert max(lengths) <= bound
    with pytest.raises(ValueError, match="no solution"):
        reference_completion(Problem((1, 1, 1), 50), rng)


_STEP = re.compile(r"^(\d+)([+\-*/])(\d+)=(\d+)$")


def _true_steps(chain: str) -> list[int]:
    """The values of a failed attempt's steps, each checked to be true arithmetic over positive integers."""
    values = []
    for step in chain.split(","):
        m = _STEP.match(step)
        assert m is not None, step
        a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
        assert c == {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op] and c > 0, step
        assert op != "/" or (a % b == 0 and b > 1), step
        values.append(c)
    return values


def test_failed_attempt_by_hand() -> None:
    """nums 10 1 5 1 target 25: three true steps over all four numbers, ending away from 25, then ';'."""
    p = Problem((10, 1, 5, 1), 25)
    chains = {failed_attempt(p, random.Random(seed)) for seed in range(50)}
    assert None not in chains and len(chains) > 20
    for chain in chains:
        assert chain is not None and chain.endswith(";") and chain.count(";") == 1
        values = _true_steps(chain[:-1])
        assert len(values) == 3 and 25 not in values  # 4 numbers, 3 steps; no step reaches the target
        written = Counter(int(x) for x in re.findall(r"\d+", chain))  # an intermediate: its step, then an operand
        assert written - Counter(values) - Counter(values[:-1]) == Counter({1: 2, 10: 1, 5: 1})  # each number once
    # 2+2 = 2*2 = 4 hit the target, 2/2 does not: with one try, either no chain or that one
    assert {failed_attempt(Problem((2, 2), 4), random.Random(s), tries=1) for s in range(20)} == {None, "2/2=1;"}


@FUZZ
@given(seed=st.integers(0, 10**6), attempts=st.integers(1, 3))
def test_search_format_reference_completions(seed: int, attempts: int) -> None:
    """attempts > 0: up to ``attempts`` failed chains, then a correct solution; within max_completion_chars."""
    cfg = CountdownConfig(num_numbers=4, min_classes=1, attempts=attempts)
    rng = random.Random(seed)
    p = generate(1, "train", seed, num_numbers=4, min_classes=1)[0]
    c = reference_completion(p, rng, attempts=attempts)
    assert verify(p, c).correct and len(c) <= cfg.max_completion_chars
    *failed, solution = c.split(";")
    assert len(failed) <= attempts and "<answer>" not in ";".join(failed)
    for chain in failed:
        assert p.target not in _true_steps(chain)
    assert solution.split("<answer>")[0].split(",")[-1].endswith(f"={p.target}")


def test_search_format_option() -> None:
    """attempts 0 draws exactly the default completions; the bound grows by one chain per attempt; bad values."""
    problems = generate(50, "train", 0, num_numbers=4, min_classes=1)
    a, b = random.Random(3), random.Random(3)
    assert [reference_completion(p, a) for p in problems] == [reference_completion(p, b, attempts=0) for p in problems]
    assert CountdownConfig(num_numbers=4, attempts=2).max_completion_chars == 65 + 2 * 36
    task = get_task("countdown", num_numbers=4, attempts=2)
    rng = random.Random(0)
    assert any(";" in task.reference_completion(p, rng) for p in problems[:10])
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="attempts"):
            CountdownConfig(attempts=bad)


# --------------------------------------------------------------------------------------------------
# Task object and registry


def test_task_protocol_and_registry(tmp_path) -> None:  # type: ignore[no-untyped-def]
    task = get_task("countdown", num_numbers=[3, 4], exact_use=True)
    assert isinstance(task, Task) and isinstance(task, CountdownTask)
    assert task.config.num_numbers == (3, 4) and task.stop == ("</answer>",)
    assert task.name == "countdown"
    p = Problem((3, 3, 5), 2)
    assert task.verify(p, tag("5-3")).reason == "number unused: 3"
    assert task.equivalence_key(p, "x<answer>3+5-3-3</answer>") == task.equivalence_key(p, tag("5-3+3-3"))
    assert task.equivalence_key(p, tag("5-3")) == "5-3"
    assert task.equivalence_key(p, tag("5-")) is None
    assert task.equivalence_key(p, "no tag") is None
    problems = task.problems("test", 4, seed=1)
    assert len(problems) == 4 and all(task.count_solution_classes(q) >= 2 for q in problems)
    path = tmp_path / "held.jsonl"
    write_jsonl(problems, path)
    assert task.problems(str(path), 3) == problems[:3]
    with pytest.raises(UnknownNameError, match="known: .*'countdown'"):
        get_task("nope")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\]"):
        get_task("countdown", bogus=1)
