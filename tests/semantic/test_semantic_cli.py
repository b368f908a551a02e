import json
import re
from pathlib import Path

from typer.testing import CliRunner

from divrl.semantic.cli import classifier_app
from divrl.semantic.train import read_pairs

runner = CliRunner()


def test_pairs_train_agree(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    res = runner.invoke(
        classifier_app,
        ["pairs", "--task", "countdown", "--out", str(pairs), "--source", "reference", "--problems", "30"],
    )
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output
    data = read_pairs(pairs)
    assert sum(p.label for p in data) * 2 == len(data)  # balanced

    ckpt = tmp_path / "ckpt"
    res = runner.invoke(
        classifier_app,
        ["train", "--pairs", str(pairs), "--out", str(ckpt), "--embedder", "char-ngram", "--steps", "60"],
    )
    assert res.exit_code == 0, res.output
    assert "majority" in res.output and "warning" in res.output  # short rule on: it decides every Countdown pair
    report = json.loads((ckpt / "eval.json").read_text())
    ev = report["eval"]
    assert ev["rule_coverage"] == 1.0
    assert ev["n"] + report["train_pairs"] == len(data)
    assert set(ev) >= {"model", "with_rules", "majority", "model_by_threshold", "positive_rate"}
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "eval.json", "head.safetensors"]

    res = runner.invoke(
        classifier_app,
        [
            "agree",
            "--checkpoint",
            str(ckpt),
            "--prompts",
            "3",
            "--group-size",
            "4",
            "--steps",
            "1",
            "--no-short-rule",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "agree.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    agree = json.loads((tmp_path / "agree.json").read_text())
    assert agree["groups"] == 3 and agree["short_rule"] is False
    assert -1.0 <= agree["mean_ari"] <= 1.0 and agree["partition_s"] >= 0.0


def test_train_reports_malformed_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": "x", "b": "y", "label": 1}\n{"a": "x", "label": 0}\n')
    res = runner.invoke(classifier_app, ["train", "--pairs", str(bad), "--out", str(tmp_path / "c")])
    assert res.exit_code == 2
    assert "bad.jsonl:2: missing field 'b'" in res.output.replace("\n", "")
    assert not (tmp_path / "c").exists()


def test_pairs_rejects_unknown_source(tmp_path: Path) -> None:
    res = runner.invoke(classifier_app, ["pairs", "--out", str(tmp_path / "p.jsonl"), "--source", "oracle"])
    assert res.exit_code == 2 and "source must be one of" in res.output


def test_main_cli_mounts_classifier_and_the_old_partition_name(tmp_path: Path) -> None:
    """``divrl classifier`` runs the commands; ``divrl partition`` (the former name, hidden) runs the same ones after
    one line on stderr saying so."""
    from divrl.cli import OLD_CLASSIFIER_NAME_NOTE, app

    args = ["pairs", "--out", str(tmp_path / "p.jsonl"), "--source", "oracle"]
    new = runner.invoke(app, ["classifier", *args])
    assert new.exit_code == 2 and "source must be one of" in new.output
    assert OLD_CLASSIFIER_NAME_NOTE not in new.output
    old = runner.invoke(app, ["partition", *args])
    assert old.exit_code == 2 and "source must be one of" in old.output
    assert old.output.count(OLD_CLASSIFIER_NAME_NOTE) == 1
    top = runner.invoke(app, ["--help"]).output
    assert re.search(r"^\s+classifier\b", top, re.M) and not re.search(r"^\s+partition\b", top, re.M)  # old: hidden
