import random
from collections.abc import Sequence

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from divrl.core import GroupBatch, compute_advantages
from divrl.semantic.classifier import ClassifierConfig, EquivalenceClassifier
from divrl.semantic.embedder import CharNgramEmbedder, embed_texts
from divrl.semantic.partition import LearnedPartition, adjusted_rand_index, learned_partition

# ----------------------------------------------------------------------------------------------- ARI


def test_ari_hand_cases() -> None:
    assert adjusted_rand_index([0, 0, 1, 1], [5, 5, 7, 7]) == 1.0  # same partition, other names
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    # contingency [[2,1],[0,2]]: index 2, a-sums 3+1=4... computed by hand: (2 - 4*4/10) / (4 - 1.6) = 0.1667
    assert adjusted_rand_index([0, 0, 0, 1, 1], [0, 0, 1, 1, 1]) == pytest.approx((2 - 4 * 4 / 10) / (4 - 1.6))
    assert adjusted_rand_index([0, 1, 2], [0, 1, 2]) == 1.0  # both all-singletons: sklearn's convention
    assert adjusted_rand_index([0, 0, 0], [0, 0, 0]) == 1.0
    assert adjusted_rand_index([0, 1, 2], [0, 0, 0]) == 0.0
    assert adjusted_rand_index([3], [4]) == 1.0
    with pytest.raises(ValueError, match="equal length"):
        adjusted_rand_index([0, 1], [0])


labelings = st.integers(2, 9).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 3), min_size=n, max_size=n), st.lists(st.integers(0, 3), min_size=n, max_size=n)
    )
)


@given(labelings)
def test_ari_invariants(pair: tuple[list[int], list[int]]) -> None:
    a, b = pair
    ari = adjusted_rand_index(a, b)
    assert ari == pytest.approx(adjusted_rand_index(b, a))
    assert ari <= 1.0 + 1e-12
    assert adjusted_rand_index(a, a) == 1.0
    renamed = [{0: 9, 1: 7, 2: 5, 3: 3}[x] for x in b]
    assert adjusted_rand_index(a, renamed) == pytest.approx(ari)


def test_ari_matches_sklearn() -> None:
    sk = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 12)
        a = [rng.randint(0, 3) for _ in range(n)]
        b = [rng.randint(0, 4) for _ in range(n)]
        assert adjusted_rand_index(a, b) == pytest.approx(sk.adjusted_rand_score(a, b), abs=1e-12)


# ----------------------------------------------------------------------------------------------- partitions


class FirstChar(EquivalenceClassifier):
    """Stub: equivalent iff the first characters match (probability 0.9 / 0.1); counts model calls."""

    def __init__(self, short_rule: bool = False) -> None:
        self.config = ClassifierConfig(short_rule=short_rule)
        self.calls: list[int] = []

    def model_proba(self, a: Sequence[str], b: Sequence[str]) -> torch.Tensor:
        self.calls.append(len(a))
        return torch.tensor([0.9 if x[:1] == y[:1] else 0.1 for x, y in zip(a, b, strict=True)])


class Chain(EquivalenceClassifier):
    """Stub: equivalent iff the integers differ by exactly 1 (not transitive on its own)."""

    def __init__(self) -> None:
        self.config = ClassifierConfig(short_rule=False)

    def model_proba(self, a: Sequence[str], b: Sequence[str]) -> torch.Tensor:
        return torch.tensor([1.0 if abs(int(x) - int(y)) == 1 else 0.0 for x, y in zip(a, b, strict=True)])


def test_labels_one_batched_call_per_step() -> None:
    clf = FirstChar()
    part = LearnedPartition(clf)
    groups = [["apple", "avocado", "banana", "blueberry"], ["cherry", "date", "cranberry", "damson"]]
    labels = part.labels(groups)
    assert labels.tolist() == [[0, 0, 1, 1], [0, 1, 0, 1]]
    assert labels.dtype == torch.long and labels.shape == (2, 4)
    assert clf.calls == [12]  # C(4,2) pairs × 2 groups in one call
    assert part(["x1", "y", "x2"]) == [0, 1, 0]


def test_transitive_closure() -> None:
    part = LearnedPartition(Chain())
    assert part(["1", "2", "3", "7", "9", "8"]) == [0, 0, 0, 1, 1, 1]  # 1~2~3 and 7~8~9 although 1 !~ 3


def test_rules_and_identical_texts_skip_the_model() -> None:
    clf = FirstChar(short_rule=True)
    part = LearnedPartition(clf)
    # all short: the rule decides everything, the model is never called
    assert part(["the cat", "the dog", "a bird"]) == [0, 0, 1]
    assert clf.calls == []
    long_a, long_b = "w1 w2 w3 w4 w5 w6", "w1 w2 w3 w4 w5 w7"
    assert part([long_a, long_a, long_b]) == [0, 0, 0]  # identical: rule; a vs b: model (same first char)
    assert clf.calls == [2]


def test_learned_partition_overrides(tmp_path) -> None:
    from divrl.semantic.classifier import BiEncoderClassifier

    torch.manual_seed(0)
    clf = BiEncoderClassifier.new("char-ngram:3:32", hidden=8, short_rule=True)
    clf.save(tmp_path / "ck")
    part = learned_partition(tmp_path / "ck", short_rule=False, threshold=0.999)
    assert part.classifier.config.short_rule is False and part.classifier.threshold == 0.999
    assert learned_partition(tmp_path / "ck").classifier.config.short_rule is True  # the loaded one is untouched
    # threshold 0.999 on an untrained head: only identical texts are merged
    assert part(["ab", "ab", "cd", "ef"]) == [0, 0, 1, 2]


def test_learned_labels_feed_darling_end_to_end() -> None:
    part = LearnedPartition(FirstChar())
    groups = [["a1", "a2", "b1", "c1"], ["x", "y", "z", "w"]]
    labels = part.labels(groups)  # [[0,0,1,2], [0,1,2,3]]
    rewards = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    adv = compute_advantages("darling", GroupBatch(rewards, partition=labels), scale="none", floor=0.1)
    # div = (G - |C(i)|)/(G - 1): group 0 -> [2/3, 2/3, 1, 1]; group 1 -> all 1
    r0 = torch.tensor([2 / 3, 2 / 3, 1.0, 0.0])
    r1 = torch.tensor([1.0, 0.0, 0.0, 1.0])
    expected = torch.stack([r0 - r0.mean(), r1 - r1.mean()])
    assert torch.allclose(adv, expected)


def test_embed_texts_feeds_setpo() -> None:
    emb = CharNgramEmbedder(dim=64)
    groups = [["7*7=49", "7*7=49", "10+3=13"], ["1+1", "2*2", "3-1"]]
    e = embed_texts(groups, emb)
    assert e.shape == (2, 3, 64)
    assert torch.equal(e[0, 0], e[0, 1])
    assert torch.allclose(e.norm(dim=-1), torch.ones(2, 3))
    rewards = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    adv = compute_advantages("setpo", GroupBatch(rewards, embeddings=e), kernel="cosine")
    assert adv.shape == (2, 3) and torch.isfinite(adv).all()
    # the duplicated pair gets the same (lower) bonus than the unique rollout in group 0
    assert adv[0, 0] == pytest.approx(float(adv[0, 1]))
    assert adv[0, 2] > adv[0, 0]
    with pytest.raises(ValueError, match="same size"):
        embed_texts([["a"], ["b", "c"]], emb)


def test_embed_texts_only_embeds_the_masked_rows() -> None:
    """only=mask: those rows equal the full embedding, the others are zero, and only the masked texts reach the
    embedder (so the cost scales with the mask)."""
    emb = CharNgramEmbedder(dim=64, cache_size=0)
    groups = [["7*7=49", "10+3=13", "1+1"], ["2*2", "3-1", "5*5"]]
    full = embed_texts(groups, emb)
    seen: list[str] = []
    encode = emb.encode
    emb.encode = lambda texts: seen.extend(texts) or encode(texts)  # type: ignore[method-assign]
    only = torch.tensor([[True, False, True], [False, False, False]])
    got = embed_texts(groups, emb, only)
    assert seen == ["7*7=49", "1+1"]
    assert torch.equal(got[only], full[only]) and torch.equal(got[~only], torch.zeros(4, 64))
    assert torch.equal(embed_texts(groups, emb, torch.zeros(2, 3, dtype=torch.bool)), torch.zeros(2, 3, 64))
    with pytest.raises(ValueError, match="bool mask"):
        embed_texts(groups, emb, torch.ones(3, 2, dtype=torch.bool))


def test_minilm_partition_beats_string_identity_on_countdown(minilm, countdown_pairs) -> None:
    """A head trained on reference pairs (train problems) partitions groups of reference completions of *val*
    problems closer to the exact canonical classes than string identity does (pooled ARI)."""
    from divrl.core.diversity import partition_by_key
    from divrl.semantic.train import TrainOptions, train_classifier
    from divrl.tasks.countdown import CountdownTask, equivalence_key

    pairs, _ = countdown_pairs
    clf = train_classifier(pairs, TrainOptions(steps=200, short_rule=False, seed=0), embedder=minilm)
    task = CountdownTask()
    rng = random.Random(0)
    groups = [[task.reference_completion(p, rng) for _ in range(8)] for p in task.problems("val", n=12, seed=1)]
    learned = LearnedPartition(clf).groups(groups)
    exact = [partition_by_key([equivalence_key(t) for t in g]) for g in groups]
    identity = [partition_by_key(g) for g in groups]

    def pooled(parts: list[list[int]]) -> list[int]:
        return [8 * p + x for p, row in enumerate(parts) for x in row]

    ari_learned = adjusted_rand_index(pooled(exact), pooled(learned))
    ari_identity = adjusted_rand_index(pooled(exact), pooled(identity))
    assert ari_learned > ari_identity + 0.1
