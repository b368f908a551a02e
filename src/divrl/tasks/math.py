"""Maths word problems with verifiable final answers: GSM8K, MATH, MATH-500, AIME, AMC, OlympiadBench, DeepScaleR.

Data
----
Problems come from a local file (``data=``: JSONL, JSON array, Parquet or CSV) or from the Hugging Face
hub through ``datasets.load_dataset`` (``dataset=`` a name of :data:`DATASETS` or any hub id). Each row
gives a question field and an answer field; the answer field is read in one of these formats:

* ``gsm8k``: a worked solution ending in ``#### 42`` (the text after the last ``####``);
* ``boxed``: a worked solution whose last ``\\boxed{...}`` holds the answer (MATH);
* ``raw``: the field *is* the answer (a string, a number, or a list of strings joined with ``", "``);
* ``auto``: ``gsm8k`` if the text has ``####``, else ``boxed`` if it has ``\\boxed``, else ``raw``.

A registry name brings its hub id, config, fields and format, and they apply unchanged to a local copy
(``dataset="gsm8k", data="gsm8k_train.jsonl"``). A malformed row (missing field, empty or unreadable
answer, invalid JSON) is skipped and reported -- one :class:`MalformedRowWarning` per file listing
``file:line: why`` -- and the rest still loads; ``strict=True`` makes the first one a
:class:`DatasetError`. A hub dataset that cannot be loaded (offline, unknown id) raises one
:class:`DatasetError` naming the id and how to pass a local file instead.

Prompts
-------
``template`` picks the prompt: ``r1_zero`` (:data:`R1_ZERO_TEMPLATE`, think-then-``\\boxed{}``; our own
text -- R1-zero-Div's system prompt is only an image in the paper, so this one is modelled on the
DeepSeek-R1-Zero template of arXiv 2501.12948, Table 1, with ``\\boxed{}`` in place of answer tags),
``plain`` (:data:`PLAIN_TEMPLATE`, the question plus Qwen2.5-Math's chain-of-thought instruction) or
``chat`` (the plain user message rendered with the tokenizer's chat template; needs
:meth:`MathTask.bind_tokenizer`, and falls back to ``plain`` when the tokenizer has no chat template).
Completions end at EOS (``stop=()``).

Rewards
-------
``reward = 1[correct] + format_reward * 1[format]`` where correctness is decided by
:class:`divrl.rewards.math_verify.MathVerifier` (exact numbers in-process, math-verify in a timeout
pool otherwise) and the format is a ``\\boxed{}`` answer (after ``</think>`` for ``r1_zero``). A
completion that cannot be graded in time gets ``reward=None`` with a reason; training goes on.

Partitions and Div-Equ
----------------------
:meth:`MathTask.equivalence_key` is the normalised final answer (an answer-level partition: two
solutions with the same final answer are one class); a correct answer gets the reference answer's key,
so ``(x+1)^2`` and ``x^2+2x+1`` are one class when both are right. :func:`extract_equations` gives the
equations of a solution for Div-Equ (our documented rule; the papers do not specify one).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from divrl.rewards.math_verify import (
    Grade,
    MathVerifier,
    extract_final_answer,
    extract_gsm8k_answer,
    has_boxed_format,
    last_boxed,
    normalize_answer,
)
from divrl.tasks.base import Verdict, config_from_options

__all__ = [
    "DATASETS",
    "FILE_SUFFIXES",
    "PLAIN_TEMPLATE",
    "R1_ZERO_TEMPLATE",
    "DatasetError",
    "DatasetSpec",
    "MalformedRowWarning",
    "MathConfig",
    "MathProblem",
    "MathTask",
    "extract_equations",
    "load_problems",
]

AnswerFormat = Literal["auto", "gsm8k", "boxed", "raw"]
Template = Literal["r1_zero", "plain", "chat"]
_ANSWER_FORMATS: tuple[str, ...] = ("auto", "gsm8k", "boxed", "raw")
_TEMPLATES: tuple[str, ...] = ("r1_zero", "plain", "chat")
FILE_SUFFIXES: tuple[str, ...] = (".jsonl", ".ndjson", ".json", ".parquet", ".csv")
"""Local file types :func:`load_problems` reads."""


# --------------------------------------------------------------------------------------------------
# The dataset registry


@dataclass(frozen=True)
class DatasetSpec:
    """Where a named dataset lives on the hub and how its rows read.

    Attributes:
        hub_id: the ``datasets.load_dataset`` path.
        question_field: the field holding the problem statement.
        answer_field: the field holding the answer (see ``answer_format``).
        answer_format: how to read the answer field (module docstring).
        hub_config: the dataset config name, if it has several.
        split_alias: divrl split name -> hub split name, for sets published under one split only
            (``{"test": "train"}``: evaluating on ``test`` reads the hub's only split).
    """

    hub_id: str
    question_field: str
    answer_field: str
    answer_format: AnswerFormat
    hub_config: str | None = None
    split_alias: Mapping[str, str] = field(default_factory=dict)


DATASETS: dict[str, DatasetSpec] = {
    "gsm8k": DatasetSpec("openai/gsm8k", "question", "answer", "gsm8k", hub_config="main"),
    "math": DatasetSpec("DigitalLearningGmbH/MATH-lighteval", "problem", "solution", "boxed", hub_config="default"),
    "math500": DatasetSpec("HuggingFaceH4/MATH-500", "problem", "answer", "raw"),
    "aime24": DatasetSpec("HuggingFaceH4/aime_2024", "problem", "answer", "raw", split_alias={"test": "train"}),
    "aime25": DatasetSpec("MathArena/aime_2025", "problem", "answer", "raw", split_alias={"test": "train"}),
    "amc23": DatasetSpec("math-ai/amc23", "question", "answer", "raw"),
    "olympiadbench": DatasetSpec(
        "Hothan/OlympiadBench",
        "question",
        "final_answer",
        "raw",
        hub_config="OE_TO_maths_en_COMP",
        split_alias={"test": "train"},
    ),
    "deepscaler": DatasetSpec("agentica-org/DeepScaleR-Preview-Dataset", "problem", "answer", "raw"),
}
"""Named datasets. MATH is the lighteval copy of Hendrycks et al.'s set (the original hub id was taken
down); MATH-500 and the competition sets carry a bare ``answer`` field; OlympiadBench is its English,
text-only, open-ended maths subset, whose ``final_answer`` is a list of LaTeX strings."""


class DatasetError(ValueError):
    """A dataset that cannot be read (missing file or package, offline hub, malformed row under ``strict``)."""


class MalformedRowWarning(UserWarning):
    """Rows skipped while loading a dataset; the message lists ``file:line: why`` for each."""


# --------------------------------------------------------------------------------------------------
# Problems and loaders


@dataclass(frozen=True)
class MathProblem:
    """One problem.

    Attributes:
        question: the problem statement shown to the policy.
        answer: the reference final answer (extracted from the answer field, e.g. ``"18"``, ``"\\frac{1}{2}"``).
        source: where it came from, ``file:line`` or ``hub_id:split:row``.
    """

    question: str
    answer: str
    source: str = ""


class _RowError(ValueError):
    pass


def load_problems(
    source: str | Path,
    *,
    split: str = "train",
    question_field: str | None = None,
    answer_field: str | None = None,
    answer_format: AnswerFormat | None = None,
    hub_config: str | None = None,
    strict: bool = False,
) -> list[MathProblem]:
    """Problems from a local file, a :data:`DATASETS` name, or a hub id.

    A path is recognised by its suffix (:data:`FILE_SUFFIXES`) or by being an existing file. Fields and format
    default to the registry entry of a known name (or ``question``/``answer``/``auto``); for a local
    file of a registry layout, pass the fields or use :class:`MathTask` with ``dataset`` and ``data``.

    Raises:
        DatasetError: a missing file or package, an unknown suffix, a hub failure (message names the id
            and how to pass a local file), no usable row at all, or -- with ``strict`` -- the first
            malformed row (``file:line: why``).
    """
    spec = DATASETS.get(str(source))
    qf = question_field or (spec.question_field if spec else "question")
    af = answer_field or (spec.answer_field if spec else "answer")
    fmt = answer_format or (spec.answer_format if spec else "auto")
    if fmt not in _ANSWER_FORMATS:
        raise DatasetError(f"answer_format must be one of {list(_ANSWER_FORMATS)}, got {fmt!r}")
    if spec is None and _looks_like_path(source):
        rows, name = _read_file(Path(source)), str(source)
    else:
        hub_id = spec.hub_id if spec else str(source)
        config = hub_config or (spec.hub_config if spec else None)
        hub_split = spec.split_alias.get(split, split) if spec else split
        rows, name = _read_hub(hub_id, config, hub_split), hub_id
    problems, issues = [], []
    for where, row in rows:
        try:
            problems.append(_problem_from_row(row, qf, af, fmt, where))
        except _RowError as exc:
            if strict:
                raise DatasetError(f"{where}: {exc} (strict=True; set strict=False to skip malformed rows)") from None
            issues.append(f"{where}: {exc}")
    if issues:
        shown = "\n  ".join(issues[:10]) + (f"\n  ... and {len(issues) - 10} more" if len(issues) > 10 else "")
        warnings.warn(f"{name}: skipped {len(issues)} malformed row(s):\n  {shown}", MalformedRowWarning, stacklevel=2)
    if not problems:
        raise DatasetError(f"{name}: no usable problems (question field {qf!r}, answer field {af!r}, format {fmt!r})")
    return problems


def _looks_like_path(source: str | Path) -> bool:
    return isinstance(source, Path) or Path(source).suffix.lower() in FILE_SUFFIXES or Path(source).is_file()


def _read_file(path: Path) -> Iterator[tuple[str, Any]]:
    if not path.is_file():
        raise DatasetError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".parquet":
        return _read_parquet(path)
    raise DatasetError(f"{path}: unsupported file type {suffix!r}; use one of {list(FILE_SUFFIXES)}")


def _read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    yield where, json.loads(line)
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                yield where, _Unreadable(f"invalid JSON: {exc}")


def _read_json(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DatasetError(f"{path}: invalid JSON ({exc}); a .json file must hold one array of objects") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path}: a .json file must hold an array of objects, got {type(data).__name__}")
    for i, row in enumerate(data):
        yield f"{path}:item {i}", row


def _read_csv(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:  # reads the header
            return
        end = reader.line_num
        for row in reader:
            start, end = end + 1, reader.line_num  # a quoted field may span lines: report the first
            yield f"{path}:{start}", row


def _read_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(f"{path}: reading Parquet needs pyarrow (pip install 'divrl[math]')") from None
    for i, row in enumerate(pq.read_table(path).to_pylist(), 1):
        yield f"{path}:row {i}", row


def _read_hub(hub_id: str, config: str | None, split: str) -> Iterator[tuple[str, Any]]:
    what = f"dataset {hub_id!r}" + (f" (config {config!r})" if config else "") + f" split {split!r}"
    local = (
        "or pass a local copy instead: task option data=/path/to/file.jsonl (JSONL, Parquet or CSV; "
        "'{split}' in the path is replaced by the split name)"
    )
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            f"loading {what} from the hub needs the 'datasets' package (pip install 'divrl[math]'), {local}"
        ) from None
    try:
        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # offline, unknown id/split, auth: one clear message
        raise DatasetError(
            f"could not load {what} from the Hugging Face hub: {type(exc).__name__}: {exc}\n"
            f"Offline? Download it once where the hub is reachable (it is then cached; HF_HUB_OFFLINE=1 skips the "
            f"network retries), {local}."
        ) from exc
    return ((f"{hub_id}:{split}:row {i}", row) for i, row in enumerate(ds, 1))


@dataclass(frozen=True)
class _Unreadable:
    why: str


def _problem_from_row(row: Any, qf: str, af: str, fmt: str, where: str) -> MathProblem:
    if isinstance(row, _Unreadable):
        raise _RowError(row.why)
    if not isinstance(row, Mapping):
        raise _RowError(f"expected an object with fields {qf!r} and {af!r}, got {type(row).__name__}")
    for name in (qf, af):
        if name not in row:
            raise _RowError(f"missing field {name!r} (fields: {sorted(map(str, row))})")
    question = row[qf]
    if not isinstance(question, str) or not question.strip():
        raise _RowError(f"field {qf!r} must be non-empty text, got {question!r:.60}")
    return MathProblem(question.strip(), _gold_answer(row[af], af, fmt), where)


def _gold_answer(value: Any, af: str, fmt: str) -> str:
    if isinstance(value, bool) or value is None:
        raise _RowError(f"empty answer (field {af!r} is {value!r})")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _RowError(f"empty answer (field {af!r} is {value!r})")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (list, tuple)):
        parts = [_strip_dollars(v) for v in value if isinstance(v, str) and v.strip()]
        if not parts or len(parts) != len(value):
            raise _RowError(f"field {af!r} must be a non-empty list of non-empty strings, got {value!r:.60}")
        return ", ".join(parts)
    if not isinstance(value, str):
        raise _RowError(f"field {af!r} must be text or a number, got {type(value).__name__}")
    if fmt == "auto":
        fmt = "gsm8k" if "####" in value else "boxed" if ("\\boxed" in value or "\\fbox" in value) else "raw"
    if fmt == "gsm8k":
        answer = extract_gsm8k_answer(value)
        why = "no '#### <answer>' line"
    elif fmt == "boxed":
        answer = last_boxed(value)
        why = "no complete \\boxed{...}"
    else:
        answer = _strip_dollars(value)
        why = "empty answer"
    if not answer:
        raise _RowError(f"{why} in field {af!r}" if value.strip() else f"empty answer (field {af!r})")
    return answer


def _strip_dollars(s: str) -> str:
    s = s.strip()
    while len(s) >= 2 and s.startswith("$") and s.endswith("$"):
        s = s[1:-1].strip()
    return s


# --------------------------------------------------------------------------------------------------
# Div-Equ: equations of a solution

_MATH_SPAN = re.compile(
    r"\$\$(.{1,2000}?)\$\$|(?<!\\)\$(.{1,500}?)(?<!\\)\$|\\\((.{1,500}?)\\\)|\\\[(.{1,2000}?)\\\]"
    r"|\\begin\{(equation|align|aligned|gather|eqnarray|multline)(\*?)\}(.{1,4000}?)\\end\{\5\6\}"
    r"|<<([^<>]{1,300})>>",
    re.S,
)
_INLINE_TOKEN = re.compile(
    r"(\d+(?:,\d{3})*(?:\.\d+)?%?(?:[A-Za-z](?![A-Za-z]))?)|([A-Za-z]+)|([-+*/×÷^])|(=)|([()])|(\s+)|(.)", re.S
)
_PLAIN_OPS = (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"))
_LATEX_NOISE = re.compile(r"\\(?:left|right|displaystyle|!|,|;|:|quad|qquad|nonumber)(?![a-zA-Z])|\\ |&")


def extract_equations(text: str) -> list[str]:
    """The equations of a maths solution, normalised and deduplicated (first occurrence order), for Div-Equ.

    Our documented rule (R1-zero-Div Eq. 5 / Wu et al. 2024 leave extraction unspecified):

    * LaTeX math -- ``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]``, ``equation``/``align``/
      ``gather``/... environments -- is split at ``\\\\`` line breaks; each piece with text on both
      sides of an ``=`` is an equation.
    * GSM8K calculator annotations ``<<48/2=24>>`` are equations.
    * In the remaining plain text, an inline ``a op b = c`` span: numbers (``1,234``, ``2.5``, ``15%``,
      ``2x``) or single-letter variables joined by ``+ - * / × ÷ ^`` (``\\times``, ``\\cdot``, ``\\div``
      too; parentheses and unary minus allowed) and ``=``, with at least one operator, e.g.
      ``12 * 5 = 60``, ``3 + 4 = 7 = 14 / 2`` or ``y = 2x + 1`` (not ``x = 5``).

    Normalisation: all whitespace, ``&``, ``\\left``/``\\right`` and LaTeX spacing removed; ``×``,
    ``\\times``, ``\\cdot`` become ``*``; ``÷``, ``\\div`` become ``/``; ``\\dfrac``/``\\tfrac`` become
    ``\\frac``; trailing ``.,;:`` stripped. So ``3 + 4 = 7`` and ``$3+4=7$`` are one equation.
    """
    if not isinstance(text, str):
        return []
    found: list[str] = []
    rest: list[str] = []
    last = 0
    for m in _MATH_SPAN.finditer(text):
        rest.append(text[last : m.start()])
        last = m.end()
        body = next((g for g in (m.group(1), m.group(2), m.group(3), m.group(4), m.group(7), m.group(8)) if g), "")
        for piece in body.split("\\\\"):
            found.append(piece)
    rest.append(text[last:])
    plain = " ".join(rest)
    for latex, op in _PLAIN_OPS:
        plain = plain.replace(latex, op)
    found.extend(_inline_equations(plain))
    out: dict[str, None] = {}
    for eq in found:
        norm = _normalize_equation(eq)
        if norm is not None:
            out.setdefault(norm, None)
    return list(out)


def _inline_equations(text: str) -> list[str]:
    """Inline ``a op b = c`` spans by one left-to-right scan over tokens (linear time; a regex with nested
    repetition backtracks quadratically on a long ``1+1+1+...`` run, which a looping policy does write).

    A span alternates terms (a number, a number with one attached letter as in ``2x``, a single letter)
    and connectors (an operator or ``=``), with parentheses and unary minus allowed; anything else (a word,
    punctuation, two terms in a row) ends it. A span is an equation when it has at least one operator and
    at least one ``=`` with a term after it; it is cut after its last term.
    """
    out: list[str] = []
    start: int | None = None
    end = ops = closed_eqs = 0
    expect_term, pending_eq = True, False

    def flush() -> None:
        nonlocal start, ops, closed_eqs, expect_term, pending_eq
        if start is not None and ops and closed_eqs:
            out.append(text[start:end])
        start, ops, closed_eqs, expect_term, pending_eq = None, 0, 0, True, False

    for m in _INLINE_TOKEN.finditer(text):
        term, word, op, eq, paren, space, _ = m.groups()
        if space:
            continue
        if term or (word and len(word) == 1):
            if not expect_term:  # two terms in a row: a new span starts here
                flush()
            start = m.start() if start is None else start
            end, expect_term = m.end(), False
            if pending_eq:
                closed_eqs, pending_eq = closed_eqs + 1, False
        elif (op or eq) and not expect_term:
            ops, pending_eq, expect_term = ops + bool(op), bool(eq) or pending_eq, True
        elif op == "-":  # unary minus where a term is expected
            start = m.start() if start is None else start
        elif paren == "(":
            if not expect_term:
                flush()
            start = m.start() if start is None else start
        elif paren == ")" and not expect_term:
            end = m.end()
        else:
            flush()
    flush()
    return out


def _normalize_equation(eq: str) -> str | None:
    s = _LATEX_NOISE.sub("", eq)
    s = s.replace("\\times", "*").replace("\\cdot", "*").replace("×", "*").replace("\\div", "/").replace("÷", "/")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = "".join(s.split()).rstrip(".,;:")
    left, sep, right = s.partition("=")
    if not sep or not left or not right.strip("="):
        return None
    return s


# --------------------------------------------------------------------------------------------------
# Prompts

R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The User asks a math question and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process step by step and then gives the final answer. "
    "The reasoning is enclosed within <think> </think> tags and the final answer is written after them "
    "as \\boxed{answer}, i.e., <think> reasoning process here </think> The answer is \\boxed{answer}.\n"
    "User: {question}\n"
    "Assistant: <think>"
)
"""divrl's R1-zero prompt (ours; see the module docstring). ``{question}`` is replaced verbatim."""

PLAIN_TEMPLATE = "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."
"""The question and Qwen2.5-Math's chain-of-thought instruction. ``{question}`` is replaced verbatim."""


# --------------------------------------------------------------------------------------------------
# Config and task


@dataclass(frozen=True)
class MathConfig:
    """Options of the ``math`` task (YAML ``task.options``)."""

    dataset: str | None = "gsm8k"
    """A :data:`DATASETS` name (brings its hub id, fields and format) or any hub id ``owner/name``; may be
    ``None`` when ``data`` is given."""
    data: str | None = None
    """A local file (JSONL/JSON/Parquet/CSV) to read instead of the hub; ``{split}`` in it is replaced by the split."""
    split: str | None = None
    """Split to read whatever split the trainer/evaluator asks for (default: the asked one, via the
    dataset's ``split_alias``)."""
    hub_config: str | None = None
    """Hub config name (default: the registry's, e.g. ``main`` for gsm8k)."""
    question_field: str | None = None
    """Field of the problem statement (default: the registry's, else ``question``)."""
    answer_field: str | None = None
    """Field of the answer (default: the registry's, else ``answer``)."""
    answer_format: AnswerFormat | None = None
    """How the answer field reads: ``gsm8k`` | ``boxed`` | ``raw`` | ``auto`` (default: the registry's, else
    ``auto``)."""
    template: Template = "r1_zero"
    """Prompt: ``r1_zero`` (think, then ``\\boxed{}``; ours), ``plain``, or ``chat`` (tokenizer's chat template)."""
    format_reward: float = 0.0
    """Added to the reward when the completion has the template's format (0 = accuracy only)."""
    timeout: float = 5.0
    """Seconds per math-verify call; a slower one is scored ``None`` (unscorable) and training goes on."""
    workers: int = 2
    """Verifier worker processes (started only when an answer needs math-verify)."""
    strict: bool = False
    """Raise on the first malformed row instead of skipping and reporting it."""

    def __post_init__(self) -> None:
        if self.dataset is None and self.data is None:
            raise ValueError("math task: set dataset (a name or hub id) or data (a local file)")
        if self.dataset is not None and self.dataset not in DATASETS and "/" not in self.dataset:
            raise ValueError(
                f"math task: unknown dataset {self.dataset!r}; known: {sorted(DATASETS)} or a hub id owner/name"
            )
        if self.answer_format is not None and self.answer_format not in _ANSWER_FORMATS:
            raise ValueError(
                f"math task: answer_format must be one of {list(_ANSWER_FORMATS)}, got {self.answer_format!r}"
            )
        if self.template not in _TEMPLATES:
            raise ValueError(f"math task: template must be one of {list(_TEMPLATES)}, got {self.template!r}")
        if (
            isinstance(self.format_reward, bool)
            or not isinstance(self.format_reward, (int, float))
            or not math.isfinite(self.format_reward)
        ):
            raise ValueError(f"math task: format_reward must be a finite number, got {self.format_reward!r}")
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or not self.timeout > 0:
            raise ValueError(f"math task: timeout must be a number of seconds > 0, got {self.timeout!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"math task: workers must be an int >= 1, got {self.workers!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MathConfig:
        """Build from keyword options (e.g. a YAML mapping); an unknown name raises ``ValueError``."""
        return config_from_options(cls, options, "math")

    @property
    def spec(self) -> DatasetSpec | None:
        """The registry entry of ``dataset``, if it is a registry name."""
        return DATASETS.get(self.dataset) if self.dataset is not None else None


_CACHE_SIZE = 8192


class MathTask:
    """Maths problems as a :class:`~divrl.tasks.base.Task` (data, prompts and rewards in the module docstring).

    Args:
        config: the task options.
        verifier: a :class:`~divrl.rewards.math_verify.MathVerifier` to share (default: a new one with
            ``config.workers`` workers); ``config.timeout`` is passed on every call either way.
    """

    name = "math"
    stop: tuple[str, ...] = ()

    def __init__(self, config: MathConfig | None = None, *, verifier: MathVerifier | None = None) -> None:
        self.config = config if config is not None else MathConfig()
        self.verifier = verifier if verifier is not None else MathVerifier(self.config.timeout, self.config.workers)
        self.tokenizer: Any = None
        self._problems: dict[str, list[MathProblem]] = {}
        self._judged: OrderedDict[tuple[str, str], tuple[Verdict, str | None]] = OrderedDict()
        self._warned_no_chat_template = False

    def __repr__(self) -> str:
        return f"MathTask({self.config})"

    def close(self) -> None:
        """Stop the verifier's worker processes."""
        self.verifier.close()

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """Give the task the policy's tokenizer (needed by ``template="chat"``)."""
        self.tokenizer = tokenizer

    # ----------------------------------------------------------------------------------------------
    def problems(self, split: str, n: int | None = None, seed: int = 0) -> list[MathProblem]:
        """Problems of ``split`` in file/hub order, the first ``n`` if given (``seed`` is unused: the order
        is the dataset's). ``split`` may also be a path to a data file."""
        if split not in self._problems:
            self._problems[split] = self._load(split)
        problems = self._problems[split]
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ValueError(f"n must be a non-negative int or None, got {n!r}")
        return list(problems if n is None else problems[:n])

    def _load(self, split: str) -> list[MathProblem]:
        cfg, spec = self.config, self.config.spec
        load = functools.partial(
            load_problems,
            question_field=cfg.question_field or (spec.question_field if spec else None),
            answer_field=cfg.answer_field or (spec.answer_field if spec else None),
            answer_format=cfg.answer_format or (spec.answer_format if spec else None),
            strict=cfg.strict,
        )
        if Path(split).suffix.lower() in FILE_SUFFIXES:
            return load(Path(split))
        effective = cfg.split or split
        if cfg.data is not None:
            return load(Path(cfg.data.replace("{split}", effective)))
        assert cfg.dataset is not None
        if spec is not None:
            effective = spec.split_alias.get(effective, effective)
        hub_config = cfg.hub_config or (spec.hub_config if spec else None)
        return load(spec.hub_id if spec else cfg.dataset, split=effective, hub_config=hub_config)

    def prompt(self, problem: MathProblem) -> str:
        template = self.config.template
        if template == "r1_zero":
            return R1_ZERO_TEMPLATE.replace("{question}", problem.question)
        user = PLAIN_TEMPLATE.replace("{question}", problem.question)
        if template == "plain":
            return user
        if self.tokenizer is None:
            raise ValueError(
                "math task: template 'chat' needs the tokenizer; call MathTask.bind_tokenizer(tokenizer) first"
            )
        if not getattr(self.tokenizer, "chat_template", None):
            if not self._warned_no_chat_template:
                warnings.warn("math task: the tokenizer has no chat template; using the plain prompt", stacklevel=2)
                self._warned_no_chat_template = True
            return user
        text: str = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
        return text

    # ----------------------------------------------------------------------------------------------
    def verify(self, problem: MathProblem, completion: str) -> Verdict:
        verdict, key = self._judge([problem], [completion])[0]
        return dataclasses.replace(verdict, key=key, keyed=True)

    def verify_batch(self, problems: Sequence[MathProblem], completions: Sequence[str]) -> list[Verdict]:
        """:meth:`verify` for many pairs at once; the math-verify calls run concurrently in the pool. Each verdict
        carries its :meth:`equivalence_key` (``keyed=True``) from the same judgement."""
        if len(problems) != len(completions):
            raise ValueError(f"verify_batch got {len(problems)} problems and {len(completions)} completions")
        return [dataclasses.replace(v, key=k, keyed=True) for v, k in self._judge(problems, completions)]

    def equivalence_key(self, problem: MathProblem, completion: str) -> str | None:
        """The normalised final answer (the reference's key when correct); ``None`` without a final answer."""
        return self._judge([problem], [completion])[0][1]

    def _judge(self, problems: Sequence[MathProblem], completions: Sequence[str]) -> list[tuple[Verdict, str | None]]:
        out: list[tuple[Verdict, str | None] | None] = []
        todo: list[tuple[int, str, str]] = []  # (index, gold, predicted answer)
        for i, (problem, completion) in enumerate(zip(problems, completions, strict=True)):
            try:
                hit = self._judged.get((problem.answer, completion))
                if hit is not None:
                    out.append(hit)
                    continue
                pred = extract_final_answer(completion)
                if pred is None:
                    out.append(self._remember(problem, completion, Verdict(0.0, False, None, "no final answer"), None))
                    continue
                out.append(None)
                todo.append((i, problem.answer, pred))
            except Exception as exc:  # a reward never raises on model output
                out.append((Verdict(None, False, None, f"verifier error: {type(exc).__name__}: {exc}"), None))
        if todo:
            timeout = self.config.timeout
            try:
                if len(todo) == 1:
                    grades = [self.verifier.grade(todo[0][1], todo[0][2], timeout=timeout)]
                else:
                    grades = self.verifier.grade_many([(g, p) for _, g, p in todo], timeout=timeout)
            except Exception as exc:  # the verifier itself failed: every pending completion is unscorable
                grades = [Grade(None, f"verifier error: {type(exc).__name__}: {exc}", "math-verify")] * len(todo)
            for (i, gold, pred), grade in zip(todo, grades, strict=True):
                answer = normalize_answer(pred)
                if grade.correct is None:
                    verdict = Verdict(None, False, answer, grade.reason)
                else:
                    fmt = has_boxed_format(completions[i], think=self.config.template == "r1_zero")
                    reward = float(grade.correct) + self.config.format_reward * float(fmt)
                    reason = (
                        "ok" if grade.correct else f"wrong answer: {answer[:40]!r} vs {normalize_answer(gold)[:40]!r}"
                    )
                    verdict = Verdict(reward, grade.correct, answer, reason)
                key = normalize_answer(gold) if grade.correct else answer
                out[i] = self._remember(problems[i], completions[i], verdict, key)
        return [o if o is not None else (Verdict(None, False, None, "verifier error: not graded"), None) for o in out]

    def _remember(
        self, problem: MathProblem, completion: str, verdict: Verdict, key: str | None
    ) -> tuple[Verdict, str | None]:
        # Unscorable verdicts are cached too: ``equivalence_key`` right after a timed-out ``verify`` must not
        # wait out a second timeout.
        self._judged[(problem.answer, completion)] = (verdict, key)
        if len(self._judged) > _CACHE_SIZE:
            self._judged.popitem(last=False)
        return verdict, key
