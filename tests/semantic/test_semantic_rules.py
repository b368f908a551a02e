"""DARLING's short-answer rule (seed-methods.md §2.1): both <= 5 words -> 2·|shared unigrams| >= longer length."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from divrl.semantic.rules import is_short, short_answer_equivalent


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("42", "42", True),  # 2·1 >= 1
        ("42", "43", False),  # 0 >= 1 fails
        ("The answer is 42", "the ANSWER is 42", True),  # lowercased: 2·4 >= 4
        ("answer 42", "answer 43", True),  # 2·1 >= 2: exactly half shared
        ("the answer is 42", "the answer is 43", True),  # 2·3 >= 4
        ("x is 42", "y was 42", False),  # 2·1 >= 3 fails
        ("a b c d e", "a b c x y", True),  # 2·3 >= 5
        ("a b c d e", "a b x y z", False),  # 2·2 >= 5 fails
        ("a a a a", "a", False),  # lengths count repeats (4), the intersection does not (1): 2 < 4
        ("", "", True),  # 0 >= 0
        ("", "42", False),  # 0 >= 1 fails
        ("  42 \n", "42", True),  # any whitespace splits
    ],
)
def test_hand_cases(a: str, b: str, expected: bool) -> None:
    assert short_answer_equivalent(a, b) is expected


def test_long_responses_are_left_to_the_classifier() -> None:
    six = "one two three four five six"
    assert short_answer_equivalent(six, six) is None
    assert short_answer_equivalent(six, "one") is None  # one long side is enough
    assert short_answer_equivalent("one two three four five", "one two three four five") is True
    assert is_short("one two three four five") and not is_short(six)


def test_countdown_completions_are_one_word() -> None:
    # no whitespace: the rule reduces to string equality (why checkpoints can switch it off)
    a = "7*7=49,10+49=59<answer>10+7*7</answer>"
    b = "7*7=49,49+10=59<answer>7*7+10</answer>"
    assert short_answer_equivalent(a, a) is True
    assert short_answer_equivalent(a, b) is False


words = st.lists(st.sampled_from(["a", "B", "b", "c", "42", "x"]), max_size=7).map(" ".join)


@given(words, words)
def test_symmetric(a: str, b: str) -> None:
    assert short_answer_equivalent(a, b) == short_answer_equivalent(b, a)


@given(words)
def test_self_comparison(a: str) -> None:
    # The literal rule is not reflexive when repeats make up over half the words ("a a a" vs itself: 2 < 3);
    # EquivalenceClassifier decides identical texts before the rule, so partitions never see this.
    u = a.lower().split()
    expected = None if len(u) > 5 else 2 * len(set(u)) >= len(u)
    assert short_answer_equivalent(a, a) is expected


@given(words, words)
def test_matches_formula(a: str, b: str) -> None:
    ua, ub = a.lower().split(), b.lower().split()
    got = short_answer_equivalent(a, b)
    if len(ua) > 5 or len(ub) > 5:
        assert got is None
    else:
        shared = len(set(ua) & set(ub))
        assert got == (shared / max(len(ua), len(ub), 1) >= 0.5 or (not ua and not ub))
