import json
from pathlib import Path

import pytest
import torch

from divrl.semantic.classifier import BiEncoderClassifier, ClassifierConfig, PairHead, load_classifier, pair_features
from divrl.semantic.train import (
    Pair,
    TrainOptions,
    binary_metrics,
    class_weights,
    evaluate_classifier,
    read_pairs,
    split_pairs,
    train_classifier,
    write_pairs,
)

# ----------------------------------------------------------------------------------------------- pairs files


def test_read_pairs_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    write_pairs([Pair("a", "b", 1, "g1"), {"a": "c", "b": "d", "label": False}], path)
    path.write_text(path.read_text() + "\n")  # a blank line is skipped
    assert read_pairs(path) == [Pair("a", "b", 1, "g1"), Pair("c", "d", 0, None)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"b": "x", "label": 1}', "missing field 'a'"),
        ('{"a": 3, "b": "x", "label": 1}', "field 'a' must be a string"),
        ('{"a": "x", "b": "y"}', "missing field 'label'"),
        ('{"a": "x", "b": "y", "label": 2}', "field 'label' must be 0 or 1"),
        ('{"a": "x", "b": "y", "label": "1"}', "field 'label' must be 0 or 1"),
        ('{"a": "x", "b": "y", "label": 1, "group": [1]}', "field 'group'"),
    ],
)
def test_read_pairs_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": "x", "b": "y", "label": 1}\n\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"bad\.jsonl:3: .*{message}"):
        read_pairs(path)


def test_read_pairs_empty_and_missing(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no pairs"):
        read_pairs(tmp_path / "e.jsonl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_pairs(tmp_path / "missing.jsonl")


def test_split_by_group_keeps_groups_whole() -> None:
    pairs = [Pair(f"a{i}", f"b{i}", i % 2, f"g{i % 10}") for i in range(100)]
    train, held = split_pairs(pairs, 0.2, seed=1)
    assert len(train) + len(held) == 100
    assert {p.group for p in held} & {p.group for p in train} == set()
    assert len({p.group for p in held}) == 2
    ungrouped = [Pair(f"a{i}", "b", 0) for i in range(10)]
    tr, ho = split_pairs(ungrouped, 0.3)
    assert len(ho) == 3 and len(tr) == 7
    with pytest.raises(ValueError, match="single group"):
        split_pairs([Pair("a", "b", 0, "g")] * 3, 0.2)


# ----------------------------------------------------------------------------------------------- metrics


def test_class_weights_inverse_frequency() -> None:
    w = class_weights(torch.tensor([0, 0, 0, 1]))
    assert torch.allclose(w, torch.tensor([4 / 6, 4 / 2]))  # N / (2 N_c)
    assert torch.allclose(class_weights(torch.tensor([0, 1])), torch.ones(2))
    with pytest.raises(ValueError, match="both labels"):
        class_weights(torch.tensor([1, 1]))


def test_binary_metrics_hand_case() -> None:
    m = binary_metrics([1, 1, 1, 0, 0], [1, 0, 1, 1, 0])
    assert m["confusion"] == [[1, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert binary_metrics([0, 0], [0, 0])["f1"] == 0.0  # undefined -> 0


# ----------------------------------------------------------------------------------------------- classifier


def _char_classifier(short_rule: bool = False) -> BiEncoderClassifier:
    torch.manual_seed(0)
    return BiEncoderClassifier.new("char-ngram:3:64", hidden=16, short_rule=short_rule)


def test_pair_features_and_head_are_symmetric() -> None:
    ea, eb = torch.randn(5, 8), torch.randn(5, 8)
    assert torch.equal(pair_features(ea, eb), pair_features(eb, ea))
    head = PairHead(8, 4).eval()
    assert torch.equal(head(ea, eb), head(eb, ea))
    clf = _char_classifier()
    a, b = ["x+y=3", "10-2", "abc def"], ["y+x=3", "2*5", "abc"]
    assert torch.allclose(clf.proba(a, b), clf.proba(b, a))


def test_rules_come_before_the_model() -> None:
    clf = _char_classifier(short_rule=True)
    p = clf.proba(
        ["same text", "the answer is 42", "one two three four five six", "x"],
        ["same text", "answer is 42", "one two three four five seven", "y"],
    )
    assert p[0] == 1.0  # identical
    assert p[1] == 1.0  # short rule: 2·3 >= 4
    assert 0.0 < float(p[2]) < 1.0  # long: the model decides
    assert p[3] == 0.0  # short rule: nothing shared
    assert clf.rule_decisions(["a", "b c d e f g"], ["a", "b c d e f h"]) == [True, None]
    off = _char_classifier(short_rule=False)
    assert off.rule_decisions(["x", "x"], ["y", "x"]) == [None, True]  # identical still decided
    assert torch.equal(clf.equivalent(["x"], ["x"]), torch.tensor([True]))
    with pytest.raises(ValueError, match="same length"):
        clf.proba(["a"], ["b", "c"])


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        ClassifierConfig(kind="tri")
    with pytest.raises(ValueError, match="threshold"):
        ClassifierConfig(threshold=1.5)
    (tmp_path / "config.json").write_text(json.dumps({"format": "divrl-equivalence-classifier/1", "colour": 1}))
    with pytest.raises(ValueError, match=r"config\.json: unknown field\(s\) \['colour'\]"):
        load_classifier(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_classifier(tmp_path / "nothing")


def test_save_load_round_trip(tmp_path: Path) -> None:
    clf = _char_classifier()
    clf.save(tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert cfg["kind"] == "bi" and cfg["embedder"] == "char-ngram:3:64" and cfg["threshold"] == 0.5
    again = load_classifier(tmp_path / "ck")
    a, b = ["1+2", "3*4=12"], ["2+1", "4*3=12"]
    assert torch.allclose(again.model_proba(a, b), clf.model_proba(a, b))
    assert load_classifier(tmp_path / "ck") is again  # reused from memory


def test_countdown_pairs_are_labelled_by_canonical_form(countdown_pairs) -> None:
    from divrl.tasks.countdown import equivalence_key

    pairs, stats = countdown_pairs
    assert stats.kept_positives == stats.kept_negatives > 50
    assert len(pairs) == stats.kept_positives + stats.kept_negatives
    for p in pairs:
        assert p.a != p.b
        assert p.label == int(equivalence_key(p.a) == equivalence_key(p.b))
        assert p.group is not None and p.group.startswith("nums ")


def test_minilm_classifier_beats_majority_baseline(minilm, countdown_pairs) -> None:
    pairs, _ = countdown_pairs
    train, held = split_pairs(pairs, 0.25, seed=0)
    clf = train_classifier(train, TrainOptions(steps=150, short_rule=False, seed=0), embedder=minilm)
    majority = int(2 * sum(p.label for p in train) >= len(train))
    report = evaluate_classifier(clf, held, majority_label=majority)
    assert report["majority"]["accuracy"] <= 0.6  # balanced pairs
    assert report["best_constant"]["accuracy"] == max(report["positive_rate"], 1 - report["positive_rate"])
    assert report["model"]["accuracy"] >= report["majority"]["accuracy"] + 0.2
    assert report["model"]["f1"] > report["majority"]["f1"]
    assert report["rule_coverage"] == 0.0
    assert sum(map(sum, report["model"]["confusion"])) == len(held)
    assert next(row["threshold"] for row in report["model_by_threshold"]) == 0.5


def test_cross_encoder_smoke(minilm, tmp_path: Path) -> None:
    """Two optimizer steps of the MiniLM cross-encoder; symmetric probabilities; save/load round trip."""
    from divrl.semantic.classifier import CrossEncoderClassifier

    pairs = [Pair("1+2", "2+1", 1), Pair("3*4", "4+3", 0), Pair("5-1", "5-1+0", 0), Pair("2*3", "3*2", 1)]
    clf = train_classifier(pairs, TrainOptions(kind="cross", steps=2, batch_size=4, short_rule=False, max_length=32))
    assert isinstance(clf, CrossEncoderClassifier)
    a, b = ["1+2", "7*7=49"], ["2+1", "49=7*7"]
    p = clf.model_proba(a, b)
    assert p.shape == (2,) and bool(((p > 0) & (p < 1)).all())
    assert torch.allclose(p, clf.model_proba(b, a))  # both orders averaged
    clf.save(tmp_path / "cross")
    assert json.loads((tmp_path / "cross" / "config.json").read_text())["kind"] == "cross"
    again = load_classifier(tmp_path / "cross")
    assert torch.allclose(again.model_proba(a, b), p, atol=1e-5)
