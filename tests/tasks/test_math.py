"""Maths task: answer extraction and normalisation, math-verify grading behind the timeout pool, loaders
(JSONL/JSON/CSV/Parquet, field mapping, malformed rows, offline hub), prompts, partitions, Div-Equ, recipes."""

from __future__ import annotations

import ast
import csv
import json
import operator
import os
import re
import sys
import time
import types
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from divrl.config import from_dict, load_yaml
from divrl.core.advantages import ADVANTAGES
from divrl.core.batch import GroupBatch
from divrl.core.losses import LOSSES
from divrl.core.metrics import div_equ
from divrl.core.registry import check_options
from divrl.rewards.math_verify import (
    MathVerifier,
    extract_final_answer,
    has_boxed_format,
    last_boxed,
    normalize_answer,
    parse_number,
)
from divrl.rewards.pool import TimeoutPool
from divrl.tasks import Task, get_task
from divrl.tasks.math import (
    DATASETS,
    PLAIN_TEMPLATE,
    DatasetError,
    MalformedRowWarning,
    MathConfig,
    MathProblem,
    MathTask,
    extract_equations,
    load_problems,
)
from divrl.trainer.config import RLConfig

DATA = Path(__file__).resolve().parents[1] / "data"
GSM8K = DATA / "gsm8k_mini.jsonl"
MATH = DATA / "math_mini.jsonl"
RECIPES = Path(__file__).resolve().parents[2] / "src" / "divrl" / "recipes" / "math"


@pytest.fixture(scope="module")
def verifier():
    """One verifier (one worker pool) for the whole module; generous default timeout."""
    v = MathVerifier(timeout=20.0, workers=2)
    yield v
    v.close()


def make_task(verifier: MathVerifier, **options) -> MathTask:
    return MathTask(MathConfig(**options), verifier=verifier)


def problem(answer: str) -> MathProblem:
    return MathProblem("q", answer, "test")


# --------------------------------------------------------------------------------------------------
# Extraction and normalisation (pure, no pool)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{\frac{1}{2}} done", r"\frac{1}{2}"),
        (r"\boxed{a} then \boxed{ b{c} }", "b{c}"),  # last box, nested braces, stripped
        (r"\boxed{7} and finally \boxed{12", None),  # the last box never closes: no fallback to an earlier one
        (r"\fbox{3}", "3"),
        (r"\boxed 5", "5"),
        ("no box", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_extract_final_answer_prefers_box_then_gsm8k_marker():
    assert extract_final_answer("#### 3\n" + r"\boxed{4}") == "4"
    assert extract_final_answer("work\n####  1,234 \nmore") == "1,234"
    assert extract_final_answer("The answer is 7.") is None
    assert extract_final_answer(r"\boxed{}") is None


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", Fraction(42)),
        ("-3", Fraction(-3)),
        ("1,234", Fraction(1234)),
        ("1{,}234", Fraction(1234)),
        (r"\$1,234.", Fraction(1234)),
        ("$18.00$", Fraction(18)),
        ("2.50", Fraction(5, 2)),
        (".5", Fraction(1, 2)),
        ("3/4", Fraction(3, 4)),
        (r"\frac{3}{4}", Fraction(3, 4)),
        (r"\dfrac34", Fraction(3, 4)),
        (r"-\tfrac{1}{2}", Fraction(-1, 2)),
        ("1/0", None),
        (r"\frac{1}{0}", None),
        ("1,23", None),  # not a thousands separator
        (r"50\%", None),  # percentages go to math-verify
        ("x+1", None),
        ("9" * 70, None),  # too long for the in-process reader
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_normalize_answer_gives_one_key_per_number_and_strips_layout():
    assert {normalize_answer(s) for s in ["0.5", "1/2", r"\dfrac12", r"\frac{1}{2}", "$\\frac{2}{4}$"]} == {"1/2"}
    assert normalize_answer("1,234") == normalize_answer("1234") == "1234"
    assert normalize_answer(r"\left( 1, 2 \right]") == "(1,2]"
    assert normalize_answer(r"x^2 + 2x + 1.") == "x^2+2x+1"


def test_has_boxed_format():
    assert has_boxed_format(r"\boxed{3}")
    assert not has_boxed_format(r"\boxed{}")
    assert has_boxed_format(r"thinking </think> so \boxed{3}", think=True)
    assert not has_boxed_format(r"\boxed{3} </think>", think=True)  # the answer must follow the thinking
    assert not has_boxed_format(r"a </think> b </think> \boxed{3}", think=True)


# --------------------------------------------------------------------------------------------------
# Grading


@pytest.mark.parametrize(
    ("gold", "pred", "method"),
    [
        (r"\frac{1}{2}", "0.5", "number"),
        (r"\frac{1}{2}", "1/2", "number"),
        (r"\frac{1}{2}", r"\dfrac12", "number"),
        (r"\frac{1}{2}", r"\frac{2}{4}", "number"),
        (r"\frac{1}{2}", r"50\%", "math-verify"),
        (r"5\sqrt{2}", r"\sqrt{50}", "math-verify"),
        (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", "math-verify"),
        ("x+3", "3+x", "math-verify"),
        (r"9\pi", r"9 \pi", "string"),
        (r"(-\infty, 4)", r"(-\infty,4)", "string"),
        (r"[2, \infty)", r"[2,\infty)", "string"),
        (r"\{-2, -1, 0, 1, 2\}", r"\{2, 1, 0, -1, -2\}", "math-verify"),
        ("2, 3", "3, 2", "math-verify"),
        ("(4, 3)", r"\left(4,3\right)", "string"),
    ],
)
def test_equivalent_forms_are_accepted(verifier, gold, pred, method):
    grade = verifier.grade(gold, pred)
    assert (grade.correct, grade.reason, grade.method) == (True, "ok", method)


@pytest.mark.parametrize(
    ("gold", "pred"),
    [
        (r"\frac{1}{2}", "0.49"),
        (r"\frac{1}{2}", "2"),
        (r"\frac{1}{3}", "0.333"),  # plain numbers compare exactly
        (r"5\sqrt{2}", r"\sqrt{51}"),
        ("x+3", "x-3"),
        (r"(-\infty, 4)", r"(-\infty, 4]"),
        (r"[2, \infty)", r"(2, \infty)"),
        (r"\{-2, -1, 0, 1, 2\}", r"\{-1, 0, 1\}"),
        ("(4, 3)", "(3, 4)"),  # tuples are ordered
        ("42", "hello"),
    ],
)
def test_wrong_answers_are_rejected(verifier, gold, pred):
    grade = verifier.grade(gold, pred)
    assert (grade.correct, grade.reason) == (False, "wrong answer")


def test_gsm8k_thousands_separators(verifier, tmp_path):
    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "1000+234=<<1000+234=1234>>1234\n#### 1,234"}) + "\n")
    task = make_task(verifier, dataset="gsm8k", data=str(path), template="plain")
    (row,) = task.problems("train")
    assert row.answer == "1,234"
    for text in [r"\boxed{1234}", r"\boxed{1,234}", r"\boxed{\$1,234}", r"\boxed{1234.00}", "#### 1234"]:
        verdict = task.verify(row, text)
        assert (verdict.reward, verdict.correct, verdict.answer, verdict.reason) == (1.0, True, "1234", "ok"), text
    wrong = task.verify(row, r"\boxed{1,243}")
    assert (wrong.reward, wrong.correct, wrong.answer) == (0.0, False, "1243")
    assert wrong.reason.split(":")[0] == "wrong answer"
    assert verifier.grade("1,234", "1234").method == "number"  # GSM8K never needs a worker


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\x00\x01garbage",
        r"\boxed{",
        r"\boxed{}",
        r"\boxed{)(}",
        r"\boxed{\frac{}{}}",
        r"\boxed{\sqrt}",
        "#### ",
        "}}}{{{",
    ],
)
def test_garbage_scores_zero_or_none_and_never_raises(verifier, text):
    task = make_task(verifier, dataset="math", template="plain", timeout=5.0)
    verdict = task.verify(problem(r"\frac{1}{2}"), text)
    assert verdict.correct is False
    assert verdict.reward in (0.0, None)
    assert isinstance(verdict.reason, str) and verdict.reason


def test_pathological_answer_times_out_and_the_pool_survives(verifier):
    task = make_task(verifier, dataset="math", template="plain", timeout=1.0)
    restarts = verifier.pool.restarts
    start = time.monotonic()
    verdict = task.verify(problem("1"), r"\boxed{9^{9^{9}}}")  # sympy would spin for minutes on this power tower
    elapsed = time.monotonic() - start
    assert verdict.reward is None and verdict.correct is False
    assert verdict.reason.startswith("timeout:"), verdict.reason
    assert verdict.answer == "9^{9^{9}}"
    assert 0.9 <= elapsed < 10.0
    assert verifier.pool.restarts == restarts + 1  # the stuck worker was killed
    # the key comes from the cache: no second timeout
    start = time.monotonic()
    assert task.equivalence_key(problem("1"), r"\boxed{9^{9^{9}}}") == "9^{9^{9}}"
    assert time.monotonic() - start < 0.5
    # the next call goes through a fresh pool and works
    again = task.verify(problem(r"5\sqrt{2}"), r"\boxed{\sqrt{50}}")
    assert (again.reward, again.correct) == (1.0, True)


SLEEPY_MODULE = """
import time


def sleepy_equal(gold, pred):
    time.sleep(float(gold))  # an injectable equal_fn: sleeps `gold` seconds, then says whether pred == "yes"
    return pred == "yes"
"""


def test_injected_sleeping_verifier_times_out_deterministically(tmp_path, monkeypatch):
    # a tiny importable module, so the workers need not import this (torch-heavy) test module
    (tmp_path / "divrl_test_sleepy.py").write_text(SLEEPY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    from divrl_test_sleepy import sleepy_equal

    sleepy = MathVerifier(timeout=1.0, workers=1, equal_fn=sleepy_equal)
    try:
        assert sleepy.grade("0", "yes").correct is True
        start = time.monotonic()
        grade = sleepy.grade("30", "yes")
        assert (grade.correct, grade.method, grade.reason) == (None, "math-verify", "timeout: no result within 1s")
        assert time.monotonic() - start < 5.0
        assert sleepy.pool.restarts == 1
        assert sleepy.grade("0", "no").correct is False  # the pool was replaced and works
        # a batch with one stuck call on a single worker: the call queued behind it is not blamed
        grades = sleepy.grade_many([("0", "yes"), ("30", "yes"), ("0", "no")])
        assert [g.correct for g in grades] == [True, None, False]
        assert grades[1].reason.startswith("timeout")
    finally:
        sleepy.close()


def test_a_failing_verifier_gives_unscorable_verdicts():
    class Broken:
        def grade(self, gold, pred, timeout=None):
            raise RuntimeError("pool exploded")

    task = MathTask(MathConfig(dataset="math"), verifier=Broken())  # type: ignore[arg-type]
    verdict = task.verify(problem("x+3"), r"\boxed{3+x}")
    assert (verdict.reward, verdict.correct, verdict.answer) == (None, False, "3+x")
    assert verdict.reason == "verifier error: RuntimeError: pool exploded"


def test_timeout_pool_errors_and_crashes_are_outcomes_not_exceptions():
    with TimeoutPool(workers=1) as pool:
        assert pool.call(operator.add, 2, 3, timeout=30).value == 5
        boom = pool.call(operator.truediv, 1, 0, timeout=30)
        assert (boom.ok, boom.reason) == (False, "error: ZeroDivisionError: division by zero")
        crash = pool.call(os._exit, 3, timeout=30)
        assert (crash.ok, crash.reason) == (False, "worker crashed")
        assert pool.call(operator.mul, 6, 7, timeout=30).value == 42  # a new pool after the crash
        assert pool.call(time.sleep, 30, timeout=0.5).reason == "timeout: no result within 0.5s"
        assert pool.map(operator.add, [(1, 2), (3, 4)], timeout=30)[1].value == 7
    with pytest.raises(ValueError, match="timeout"):
        TimeoutPool(workers=1).call(operator.add, 1, 2, timeout=0)
    with pytest.raises(ValueError, match="fork"):
        TimeoutPool(start_method="fork")


# --------------------------------------------------------------------------------------------------
# Task: rewards, keys, prompts


def test_math_task_is_a_registered_task():
    task = get_task("math", dataset="gsm8k", data=str(GSM8K))
    assert isinstance(task, MathTask) and isinstance(task, Task)
    assert task.name == "math" and task.stop == ()
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['nope'\]"):
        get_task("math", nope=1)
    with pytest.raises(ValueError, match="unknown dataset 'gsm9k'"):
        MathConfig(dataset="gsm9k")
    with pytest.raises(ValueError, match="template"):
        MathConfig(template="fancy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        MathConfig(timeout=0)
    with pytest.raises(ValueError, match="dataset"):
        MathConfig(dataset=None)


def test_format_reward_and_keys(verifier):
    task = make_task(verifier, dataset="gsm8k", template="r1_zero", format_reward=0.5)
    p = problem("27")
    good = task.verify(p, r"3*12=36, 36-9=27 </think> The answer is \boxed{27}.")
    assert (good.reward, good.correct, good.answer, good.reason) == (1.5, True, "27", "ok")
    assert task.verify(p, r"\boxed{27}").reward == 1.0  # right, but not think-then-answer
    assert task.verify(p, r"oops </think> \boxed{26}").reward == 0.5  # wrong, well formatted
    none = task.verify(p, "I think it is 27")
    assert (none.reward, none.answer, none.reason) == (0.0, None, "no final answer")
    assert task.equivalence_key(p, "I think it is 27") is None


def test_equivalence_key_is_the_normalised_answer_and_correct_answers_share_the_reference_key(verifier):
    task = make_task(verifier, dataset="math", template="plain")
    half, poly = problem(r"\frac{1}{2}"), problem("x+3")
    keys = [task.equivalence_key(half, rf"\boxed{{{a}}}") for a in ["0.5", r"\dfrac12", "1/2", "0.25", r"\frac{1}{4}"]]
    assert keys == ["1/2", "1/2", "1/2", "1/4", "1/4"]
    assert task.equivalence_key(poly, r"\boxed{3 + x}") == "x+3"  # correct: the reference's key
    assert task.verify(poly, r"\boxed{3 + x}").answer == "3+x"  # the answer itself stays the policy's
    assert task.equivalence_key(poly, r"\boxed{x - 3}") == "x-3"


def test_verdicts_feed_group_batch_answers(verifier):
    task = make_task(verifier, dataset="gsm8k", template="plain")
    p = problem("27")
    texts = [r"\boxed{27}", r"\boxed{26}", "no idea", "#### 27"]
    verdicts = task.verify_batch([p] * 4, texts)
    assert verdicts == [task.verify(p, t) for t in texts]
    batch = GroupBatch(
        rewards=torch.tensor([[v.reward for v in verdicts]]),
        correct=torch.tensor([[v.correct for v in verdicts]]),
        answers=[[v.answer for v in verdicts]],
    )
    assert batch.answers == [["27", "26", None, "27"]]
    assert batch.rewards.tolist() == [[1.0, 0.0, 0.0, 1.0]]


def test_prompts():
    q = MathProblem("What is {x} when $x^{2}=4$?", "2")
    r1 = MathTask(MathConfig(template="r1_zero")).prompt(q)
    assert q.question in r1 and r1.endswith("Assistant: <think>") and "\\boxed{" in r1
    plain = MathTask(MathConfig(template="plain")).prompt(q)
    assert plain == PLAIN_TEMPLATE.replace("{question}", q.question)
    assert plain.endswith("Please reason step by step, and put your final answer within \\boxed{}.")

    chat = MathTask(MathConfig(template="chat"))
    with pytest.raises(ValueError, match="bind_tokenizer"):
        chat.prompt(q)

    class ChatTokenizer:
        chat_template = "{{ messages }}"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert tokenize is False and add_generation_prompt is True
            return "<|user|>" + messages[0]["content"] + "<|assistant|>"

    chat.bind_tokenizer(ChatTokenizer())
    assert chat.prompt(q) == "<|user|>" + plain + "<|assistant|>"
    plain_only = MathTask(MathConfig(template="chat"))
    plain_only.bind_tokenizer(types.SimpleNamespace(chat_template=None))
    with pytest.warns(UserWarning, match="no chat template"):
        assert plain_only.prompt(q) == plain


# --------------------------------------------------------------------------------------------------
# Loaders


def _safe_arith(expr: str) -> Fraction:
    """Evaluate + - * / and parentheses over number literals by walking the AST (no eval)."""

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(f"unexpected {ast.dump(node)}")

    return walk(ast.parse(expr, mode="eval"))


def test_gsm8k_mini_loads_and_its_arithmetic_is_right():
    problems = MathTask(MathConfig(dataset="gsm8k", data=str(GSM8K))).problems("train")
    assert len(problems) == 30
    raw = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    for p, row in zip(problems, raw, strict=True):
        steps = re.findall(r"<<([^=>]+)=([^>]+)>>", row["answer"])
        assert steps, p.source
        for expr, result in steps:
            assert _safe_arith(expr) == Fraction(result), (p.source, expr)
        assert parse_number(p.answer) == Fraction(steps[-1][1]), p.source
    assert problems[12].answer == "6,250" and problems[12].source == f"{GSM8K}:13"


def test_math_mini_loads_with_the_registry_layout(verifier):
    task = make_task(verifier, dataset="math", data=str(MATH), template="plain")
    problems = task.problems("test")
    assert len(problems) == 26
    assert problems[0].answer == r"\frac{1}{2}" and problems[4].answer == r"(-\infty, 4)"
    # every reference solution grades as correct against its own extracted answer
    verdicts = task.verify_batch(problems, [json.loads(line)["solution"] for line in MATH.read_text().splitlines()])
    assert all(v.correct for v in verdicts)
    assert task.problems("test", n=3) == problems[:3]


def test_csv_and_parquet_copies_with_field_mapping(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    reference = MathTask(MathConfig(dataset="gsm8k", data=str(GSM8K))).problems("train")
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    renamed = [{"prompt": r["question"], "target": r["answer"], "extra": i} for i, r in enumerate(rows)]
    csv_path = tmp_path / "gsm.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "target", "extra"])
        writer.writeheader()
        writer.writerows(renamed)
    pq_path = tmp_path / "gsm.parquet"
    pq.write_table(pa.Table.from_pylist(renamed), pq_path)
    for path in (csv_path, pq_path):
        loaded = load_problems(path, question_field="prompt", answer_field="target", answer_format="gsm8k")
        assert [(p.question, p.answer) for p in loaded] == [(p.question, p.answer) for p in reference]
        also = MathTask(MathConfig(dataset=None, data=str(path), question_field="prompt", answer_field="target"))
        assert [p.answer for p in also.problems("train")] == [p.answer for p in reference]  # format "auto"
    # CSV rows report the line they start on (answers span several lines)
    assert loaded[0].source.endswith(":row 1")
    csv_loaded = load_problems(csv_path, question_field="prompt", answer_field="target")
    assert csv_loaded[0].source == f"{csv_path}:2"
    assert csv_loaded[1].source == f"{csv_path}:{2 + rows[0]['answer'].count(chr(10)) + 1}"


def test_json_array_and_split_placeholder(tmp_path):
    rows = [
        {"problem": "1+1?", "answer": 2},
        {"problem": "half?", "answer": "$\\frac{1}{2}$"},
        {"problem": "p", "answer": ["$1$", "$2$"]},
    ]
    (tmp_path / "set_test.json").write_text(json.dumps(rows))
    task = MathTask(MathConfig(dataset="math500", data=str(tmp_path / "set_{split}.json")))
    assert [p.answer for p in task.problems("test")] == ["2", r"\frac{1}{2}", "1, 2"]
    assert task.problems("test")[1].source == f"{tmp_path / 'set_test.json'}:item 1"
    with pytest.raises(DatasetError, match="data file not found"):
        task.problems("train")
    # like countdown, a split may be a file path
    assert [p.answer for p in MathTask(MathConfig(dataset="gsm8k")).problems(str(GSM8K), n=2)] == ["27", "15"]


MALFORMED = [
    '{"question": "ok one", "answer": "so 2 #### 2"}',
    '{"question": "no answer field"}',
    '{"question": "empty answer", "answer": ""}',
    "{not json",
    '{"question": "no marker", "answer": "it is 5"}',
    "",
    '["a", "list"]',
    '{"question": "", "answer": "#### 3"}',
    '{"question": "ok two", "answer": "#### 7"}',
]


def test_malformed_rows_are_reported_with_file_and_line_and_the_rest_loads(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(MALFORMED) + "\n")
    with pytest.warns(MalformedRowWarning) as record:
        problems = load_problems(path, answer_format="gsm8k")
    assert [(p.question, p.answer) for p in problems] == [("ok one", "2"), ("ok two", "7")]
    (message,) = [str(w.message) for w in record]
    assert "skipped 6 malformed row(s)" in message
    assert f"{path}:2: missing field 'answer'" in message
    assert f"{path}:3: empty answer (field 'answer')" in message
    assert f"{path}:4: invalid JSON" in message
    assert f"{path}:5: no '#### <answer>' line in field 'answer'" in message
    assert f"{path}:7: expected an object" in message
    assert f"{path}:8: field 'question' must be non-empty text" in message
    with pytest.raises(DatasetError, match=re.escape(f"{path}:2: missing field 'answer'")):
        load_problems(path, answer_format="gsm8k", strict=True)
    with pytest.raises(DatasetError, match=re.escape(f"{path}:2:")):
        MathTask(MathConfig(dataset="gsm8k", data=str(path), strict=True)).problems("train")


def test_malformed_csv_row_reports_its_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('question,answer\n"two\nlines","#### 1"\nq2,\nq3,#### 3\n')
    with pytest.warns(MalformedRowWarning, match=re.escape(f"{path}:4: empty answer")):
        problems = load_problems(path)
    assert [p.answer for p in problems] == ["1", "3"]


def test_offline_hub_gives_one_clear_error(monkeypatch):
    fake = types.ModuleType("datasets")

    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    fake.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(DatasetError) as info:
        MathTask(MathConfig(dataset="gsm8k")).problems("train")
    message = str(info.value)
    assert "'openai/gsm8k' (config 'main') split 'train'" in message
    assert "data=/path/to/file.jsonl" in message and "ConnectionError" in message

    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(DatasetError, match=r"needs the 'datasets' package.*data=/path/to/file.jsonl"):
        load_problems("HuggingFaceH4/aime_2024", split="train")


def test_registry_entries_and_split_aliases(monkeypatch):
    calls = []
    fake = types.ModuleType("datasets")

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return [{"problem": "p", "answer": 7, "question": "q", "final_answer": ["$7$"]}]

    fake.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    for name in ("aime24", "olympiadbench", "math500", "amc23"):
        (p,) = MathTask(MathConfig(dataset=name)).problems("test")
        assert p.answer == "7", name
    assert calls == [
        ("HuggingFaceH4/aime_2024", None, "train"),
        ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"),
        ("HuggingFaceH4/MATH-500", None, "test"),
        ("math-ai/amc23", None, "test"),
    ]
    assert set(DATASETS) == {"gsm8k", "math", "math500", "aime24", "aime25", "amc23", "olympiadbench", "deepscaler"}
    assert all("/" in spec.hub_id for spec in DATASETS.values())


# --------------------------------------------------------------------------------------------------
# Div-Equ


def test_extract_equations():
    text = (
        "First 3 + 4 = 7, so $3+4=7$ again. Then 12 × 5 = 60 and <<60/2=30>>30.\n"
        r"\begin{align} x &= 2 \\ y &= 3 \times x \end{align} and $a \cdot b$ and x = 5 and 3 + 4 <= 8."
    )
    assert extract_equations(text) == ["3+4=7", "60/2=30", "x=2", "y=3*x", "12*5=60"]
    assert extract_equations("no maths here, just a + b.") == []
    assert extract_equations(r"so 2x + 3 = 7 hence $x = 2$.") == ["x=2", "2x+3=7"]
    inline = "Also -4+15=11, 3 * -2 = -6, (3 + 4) * 2 = 14, y = 2x + 1 and 5 \\div 5 = 1 but not x = 5 or 3 4 = 7."
    assert extract_equations(inline) == ["-4+15=11", "3*-2=-6", "(3+4)*2=14", "y=2x+1", "5/5=1"]


def test_extract_equations_is_linear_on_degenerate_text():
    start = time.monotonic()
    for text in ["1+" * 20000, "( " * 20000, "1 = " * 20000, "$" * 20000, "<<" * 20000]:
        assert extract_equations(text) == []
    assert extract_equations("1+" * 20000 + "1=20001") == ["1+" * 20000 + "1=20001"]
    assert time.monotonic() - start < 10.0  # about 0.1 s alone; a backtracking regex took minutes


def test_div_equ_over_extracted_equations():
    responses = ["3 + 4 = 7 and 7 * 2 = 14", "$3+4=7$ then 14 - 1 = 13"]
    equations = [eq for r in responses for eq in extract_equations(r)]
    assert equations == ["3+4=7", "7*2=14", "3+4=7", "14-1=13"]
    assert div_equ([equations]) == pytest.approx(3 / 4)


# --------------------------------------------------------------------------------------------------
# Recipes


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        (
            "r1_zero_div_gsm8k.yaml",
            {"group_size": 6, "temperature": 0.9, "lr": 3e-6, "beta": 1e-4, "lam": 0.01, "dataset": "gsm8k"},
        ),
        (
            "darling_deepscaler.yaml",
            {"group_size": 8, "temperature": 1.0, "lr": 1e-6, "beta": 0.0, "lam": None, "dataset": "deepscaler"},
        ),
    ],
)
def test_recipes_validate(file, expected):
    path = RECIPES / file
    assert "GPU" in path.read_text()
    cfg = from_dict(RLConfig, load_yaml(path))
    assert cfg.task.name == "math"
    MathConfig.from_options(cfg.task.options)  # the task options are valid (no data is read)
    check_options(ADVANTAGES.get(cfg.advantage.name), cfg.advantage.options, cfg.advantage.name)
    for term in cfg.loss:
        check_options(LOSSES.get(term.name), term.options, term.name)
    got = {
        "group_size": cfg.rollout.group_size,
        "temperature": cfg.rollout.temperature,
        "lr": cfg.optim.lr,
        "beta": cfg.loss[0].options.get("beta", 0.0),
        "lam": next((t.options["lam"] for t in cfg.loss if t.name == "positive_entropy"), None),
        "dataset": cfg.task.options["dataset"],
    }
    assert got == expected
    if file.startswith("darling"):
        assert cfg.advantage.name == "darling" and cfg.advantage.options["scale"] == "none"
        assert cfg.loss[0].options["agg"] == "token-mean"


# --------------------------------------------------------------------------------------------------
# Property tests: never raise

_LATEXISH = st.text(alphabet=list("0123456789+-*/^_{}()[]\\,. xyzabcfrqtdsi$%=<>!|"), max_size=24)
_COMPLETIONS = st.one_of(
    st.text(max_size=200),
    st.builds(lambda pre, body: pre + "\\boxed{" + body + "}", st.text(max_size=40), _LATEXISH),
    st.builds(lambda body: "#### " + body, _LATEXISH),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(text=_COMPLETIONS, gold=st.sampled_from([r"\frac{1}{2}", "x+3", r"(-\infty, 4)", "1,234"]))
def test_reward_never_raises_on_arbitrary_text(verifier, text, gold):
    task = make_task(verifier, dataset="math", template="r1_zero", timeout=3.0, format_reward=0.1)
    verdict = task.verify(problem(gold), text)
    assert verdict.reward is None or verdict.reward in (0.0, 0.1, 1.0, 1.1)
    assert isinstance(verdict.correct, bool) and isinstance(verdict.reason, str)
    key = task.equivalence_key(problem(gold), text)
    assert key is None or isinstance(key, str)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_pure_helpers_never_raise(text):
    assert all(isinstance(e, str) and "=" in e for e in extract_equations(text))
    parse_number(text)
    normalize_answer(text)
    extract_final_answer(text)
