import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divrl.core.metrics import (
    answer_entropy,
    distinct_n,
    div_equ,
    mean_pairwise_cosine_distance,
    mean_pass_at_k,
    num_classes,
    pass_at_k,
    pass_at_k_array,
    potential_at_k,
    self_bleu,
)


def exact_pass_at_k(n, c, k):
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


# --- pass@k -----------------------------------------------------------------------------------


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # n - c = 2 < k: every k-subset has a correct sample
    assert pass_at_k(4, 4, 4) == 1.0


def test_pass_at_k_matches_exact_binomial_form():
    for n in (1, 2, 7, 20, 64):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(exact_pass_at_k(n, c, k)), rel=1e-12, abs=1e-13)


def test_pass_at_k_stable_for_large_n():
    for c, k in [(1, 1), (3, 10), (50, 100), (10, 1000), (4000, 64), (1, 4999)]:
        value = pass_at_k(5000, c, k)
        assert math.isfinite(value)
        assert value == pytest.approx(float(exact_pass_at_k(5000, c, k)), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((5, 2, 6), "k <= n"),
        ((5, 6, 2), "c <= n"),
        ((-1, 0, 1), "n >= 0"),
        ((5, -1, 1), "c >= 0"),
        ((5, 2, 0), "k >= 1"),
        ((5.0, 2, 1), "n must be an integer"),
        ((5, True, 1), "c must be an integer"),
    ],
)
def test_pass_at_k_errors(args, needle):
    with pytest.raises(ValueError, match=needle):
        pass_at_k(*args)


counts = st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n)))


@settings(max_examples=200, deadline=None)
@given(counts)
def test_pass_at_k_properties(nck):
    n, c, k = nck
    value = pass_at_k(n, c, k)
    assert 0.0 <= value <= 1.0
    assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)
    if k < n:
        assert pass_at_k(n, c, k + 1) >= value - 1e-12
    if c < n:
        assert pass_at_k(n, c + 1, k) >= value - 1e-12
    assert pass_at_k_array([n], [c], k)[0] == pytest.approx(value, rel=1e-9, abs=1e-12)


def test_pass_at_k_array_ragged_and_broadcast():
    n = np.array([5, 10, 3, 5000])
    c = np.array([2, 0, 3, 7])
    got = pass_at_k_array(n, c, 2)
    assert got.shape == (4,)
    np.testing.assert_allclose(
        got, [pass_at_k(int(a), int(b), 2) for a, b in zip(n, c, strict=True)], rtol=1e-10, atol=1e-13
    )
    np.testing.assert_allclose(pass_at_k_array(8, [0, 4, 8], 3), [pass_at_k(8, c, 3) for c in (0, 4, 8)])
    assert pass_at_k_array([], [], 1).shape == (0,)
    with pytest.raises(ValueError, match="problem 1 has n=3, c=1, k=4"):
        pass_at_k_array([5, 3], [1, 1], 4)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k_array([5], [6], 1)
    with pytest.raises(ValueError, match="n must hold integers"):
        pass_at_k_array([5.5], [1], 1)


def test_mean_pass_at_k():
    correct = np.array([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=bool)
    assert mean_pass_at_k(correct, 2) == pytest.approx((0.7 + 0.0) / 2)
    assert mean_pass_at_k(torch.tensor(correct), 1) == pytest.approx((0.4 + 0.0) / 2)
    with pytest.raises(ValueError, match=r"shape \(P, n\)"):
        mean_pass_at_k(np.ones(5, dtype=bool), 1)
    with pytest.raises(ValueError, match="boolean"):
        mean_pass_at_k(np.full((2, 2), 0.5), 1)


# --- Potential@k ------------------------------------------------------------------------------


def test_potential_at_k_hand_cases():
    # three greedy failures, two of them solved by sampling
    assert potential_at_k([1, 0, 0, 0], [1, 1, 0, 1]) == pytest.approx(2 / 3)
    # greedy successes do not count, even when sampling fails on them
    assert potential_at_k([1, 0], [0, 1]) == 1.0
    assert potential_at_k(np.array([False, False]), np.array([False, False])) == 0.0


def test_potential_at_k_undefined_without_greedy_failures():
    assert math.isnan(potential_at_k([1, 1, 1], [1, 0, 1]))
    assert math.isnan(potential_at_k([], []))


def test_potential_at_k_errors():
    with pytest.raises(ValueError, match="same length"):
        potential_at_k([0, 1], [1])
    with pytest.raises(ValueError, match=r"passk values must lie in \[0, 1\]"):
        potential_at_k([0], [2])


# --- diversity metrics ------------------------------------------------------------------------


def test_div_equ():
    problems = [["a", "b", "a"], ["x", "x"], []]
    assert div_equ(problems) == pytest.approx((2 / 3 + 1 / 2) / 2)  # the empty problem is skipped
    assert div_equ([["1+2=3", " 1+2=3 ", "2+1=3"]], key=str.strip) == pytest.approx(2 / 3)
    assert div_equ([[1, 2, 3, 4]]) == 1.0
    assert math.isnan(div_equ([]))
    assert math.isnan(div_equ([[], []]))
    with pytest.raises(ValueError, match=r"solutions_per_problem\[0\] must be a sequence of solutions"):
        div_equ(["abc"])


def test_distinct_n():
    texts = ["a b c", "a b d"]
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)  # ab, bc, ab, bd (no n-gram spans two texts)
    assert distinct_n(["c a", "b"], 2) == 1.0
    assert distinct_n(["aab"], 1, unit="char") == pytest.approx(2 / 3)
    assert distinct_n(["12+12"], 2, unit="char") == pytest.approx(3 / 4)  # 12, 2+, +1, 12
    assert math.isnan(distinct_n(["a", "b"], 2))
    with pytest.raises(ValueError, match="n >= 1"):
        distinct_n(texts, 0)
    with pytest.raises(ValueError, match="unit"):
        distinct_n(texts, 1, unit="word")
    with pytest.raises(ValueError, match="single str"):
        distinct_n("a b c", 1)


def test_self_bleu():
    same = ["the cat sat on the mat today"] * 3
    assert self_bleu(same) == pytest.approx(100.0)
    assert self_bleu(["a b c d", "e f g h", "i j k l"]) == pytest.approx(0.0, abs=1e-9)
    partial = self_bleu(["the cat sat on the mat", "the cat sat on a rug", "dogs run fast in parks"])
    assert 0.0 < partial < 100.0
    assert self_bleu(["12+7=19", "12+7=19"], tokenize="char") == pytest.approx(100.0)
    assert math.isnan(self_bleu(["only one"]))
    assert math.isnan(self_bleu([]))


def sentence_score_loop(texts, tokenize="13a", max_ngram_order=4):
    """Self-BLEU the obvious way: sacrebleu's sentence_score of each text against all the others."""
    from sacrebleu.metrics.bleu import BLEU

    bleu = BLEU(effective_order=True, tokenize=tokenize, max_ngram_order=max_ngram_order)
    return float(np.mean([bleu.sentence_score(h, texts[:i] + texts[i + 1 :]).score for i, h in enumerate(texts)]))


# Short texts over a small alphabet, so that n-grams repeat within and across texts, counts tie, and lengths tie.
_WORDS = st.sampled_from(["a", "b", "c", "7*7=49", "+", "(", ".", ""])
_TEXTS = st.lists(st.lists(_WORDS, max_size=9).map(" ".join), min_size=2, max_size=7)


@settings(max_examples=300, deadline=None)
@given(_TEXTS, st.sampled_from(["13a", "char", "none"]), st.integers(1, 4))
def test_self_bleu_equals_the_sentence_score_loop(texts, tokenize, order):
    fast, loop = (
        self_bleu(texts, tokenize=tokenize, max_ngram_order=order),
        sentence_score_loop(texts, tokenize, order),
    )
    assert fast == pytest.approx(loop, rel=1e-12, abs=1e-12)


def test_self_bleu_reference_count_is_the_largest_among_the_others():
    # "a a" occurs twice in text 0, once in text 1: text 0's clipped count uses 1 (the others' largest), text 1's
    # uses 2; a count held by two texts is the reference for both. Hand-checkable against the loop.
    texts = ["a a a", "a a b", "a a a", "c"]
    assert self_bleu(texts) == pytest.approx(sentence_score_loop(texts), rel=1e-12)
    texts = ["x y", "x y z w", "x", "x y z"]  # closest reference lengths with ties (toward the shorter)
    assert self_bleu(texts) == pytest.approx(sentence_score_loop(texts), rel=1e-12)


def test_num_classes_and_answer_entropy():
    assert num_classes(["3", "3", "4", None]) == 3
    assert num_classes(torch.tensor([0, 1, 1, 2, 0])) == 3  # values, not tensor identities
    assert num_classes(np.array([[1, 1], [2, 2]])) == 2
    assert answer_entropy(["a", "a", "b", "b"]) == pytest.approx(math.log(2))
    assert answer_entropy(["a", "b", "c"]) == pytest.approx(math.log(3))
    assert answer_entropy(["a", "a", "a", "b"]) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert answer_entropy(torch.tensor([7, 7])) == 0.0
    assert math.isnan(answer_entropy([]))


def test_mean_pairwise_cosine_distance():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    expected = (1.0 + 2 * (1 - 1 / math.sqrt(2))) / 3
    assert mean_pairwise_cosine_distance(e) == pytest.approx(expected)
    assert mean_pairwise_cosine_distance(e * torch.tensor([[3.0], [0.5], [7.0]])) == pytest.approx(expected)
    assert mean_pairwise_cosine_distance(torch.tensor([[1.0, 2.0], [-1.0, -2.0]])) == pytest.approx(2.0)
    assert math.isnan(mean_pairwise_cosine_distance(torch.ones(1, 4)))
    with pytest.raises(ValueError, match=r"rows \[1\] have zero norm"):
        mean_pairwise_cosine_distance(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\(G, D\)"):
        mean_pairwise_cosine_distance(torch.ones(2, 3, 4))
