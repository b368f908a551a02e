import pytest

from divrl.config import ConfigError, apply_overrides, from_dict, load_yaml, save_yaml, to_dict
from divrl.trainer.config import OptimConfig, RLConfig


def test_defaults_round_trip(tmp_path):
    cfg = RLConfig()
    save_yaml(cfg, tmp_path / "c.yaml")
    again = from_dict(RLConfig, load_yaml(tmp_path / "c.yaml"))
    assert again == cfg


def test_nested_values_and_lists():
    cfg = from_dict(
        RLConfig,
        {
            "rollout": {"group_size": 8, "temperature": 1},
            "advantage": {"name": "darling", "options": {"scale": "group"}},
            "loss": [{"name": "ppo"}, {"name": "positive_entropy", "options": {"lam": 0.1}}],
            "optim": {"betas": [0.9, 0.95]},
        },
    )
    assert cfg.rollout.group_size == 8 and cfg.rollout.temperature == 1.0
    assert cfg.loss[1].options == {"lam": 0.1}
    assert cfg.optim.betas == (0.9, 0.95)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"rollout": {"group_sise": 8}}, "rollout.group_sise: unknown field"),
        ({"rollout": {"group_size": "8"}}, "rollout.group_size: expected an integer"),
        ({"rollout": {"group_size": True}}, "rollout.group_size: expected an integer"),
        ({"optim": {"schedule": "linear"}}, "optim.schedule: 'linear' is not one of ['constant', 'cosine']"),
        ({"loss": [{"name": "ppo", "opts": {}}]}, "loss[0].opts: unknown field"),
        ({"steps": 1.5}, "steps: expected an integer"),
        ([1, 2], "RLConfig: expected a mapping, got list"),
    ],
)
def test_errors_name_the_field(data, needle):
    with pytest.raises(ConfigError) as err:
        from_dict(RLConfig, data)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (
            {"embed_rows": "correct"},
            "embed_rows: removed: the embedder embeds the rollouts the estimator and loss terms declare they read "
            "(only the correct ones for setpo with advantage.options.members: correct); drop it",
        ),
        (
            {"partition": {"source": "exact", "only_correct": True}},
            "partition.only_correct: renamed partition.members (all | correct): "
            "only_correct: true is members: correct",
        ),
        (  # named even when the new spelling is there too
            {"partition": {"members": "correct", "only_correct": True}},
            "partition.only_correct: renamed partition.members (all | correct): "
            "only_correct: true is members: correct",
        ),
    ],
)
def test_retired_fields_say_what_to_write_instead(data, line):
    """A removed or renamed field is one line naming it and what replaced it (the class's RETIRED table), from a
    YAML file and from --set alike; not "unknown field"."""
    with pytest.raises(ConfigError) as err:
        from_dict(RLConfig, data)
    assert str(err.value) == line
    key = "embed_rows" if "embed_rows" in data else "partition.only_correct"
    with pytest.raises(ConfigError) as err:
        from_dict(RLConfig, apply_overrides({}, [f"{key}=true"]))
    assert str(err.value) == line


def test_a_config_saved_before_the_fields_went_still_loads():
    """Every config.yaml a run wrote before embed_rows and partition.only_correct went holds their defaults, which mean
    what the current defaults mean: such a file loads (resume, eval of a run), as if the keys were absent."""
    old = {"embed_rows": "all", "partition": {"source": "exact", "only_correct": False}, "steps": 3}
    assert from_dict(RLConfig, old) == from_dict(RLConfig, {"partition": {"source": "exact"}, "steps": 3})
    with pytest.raises(ConfigError, match=r"^partition.only_correct: renamed"):  # a non-default value still says so
        from_dict(RLConfig, {"partition": {"only_correct": True}})


def test_partition_members_replaces_only_correct():
    assert from_dict(RLConfig, {}).partition.members == "all"
    assert from_dict(RLConfig, {"partition": {"members": "correct"}}).partition.members == "correct"
    with pytest.raises(ConfigError, match=r"^partition.members: 'yes' is not one of \['all', 'correct'\]$"):
        from_dict(RLConfig, {"partition": {"members": "yes"}})


def test_overrides_parse_yaml_scalars():
    data = apply_overrides({"rollout": {"group_size": 4}}, ["rollout.group_size=16", "optim.lr=1e-4", "name=x"])
    cfg = from_dict(RLConfig, data)
    assert cfg.rollout.group_size == 16 and cfg.optim.lr == 1e-4 and cfg.name == "x"
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_overrides({}, ["novalue"])


def test_overrides_index_lists():
    data = {"loss": [{"name": "ppo"}, {"name": "positive_entropy", "options": {"lam": 0.01}}]}
    out = apply_overrides(data, ["loss.1.options.lam=0.1", "loss.0.options.beta=0.05"])
    assert out["loss"][1]["options"]["lam"] == 0.1 and out["loss"][0]["options"] == {"beta": 0.05}
    assert data["loss"][1]["options"]["lam"] == 0.01  # the input is not modified
    with pytest.raises(ConfigError, match="'2' is not an index of the 2-item list"):
        apply_overrides(data, ["loss.2.name=x"])
    with pytest.raises(ConfigError, match="steps is not a section"):
        apply_overrides({"steps": 3}, ["steps.x=1"])


def test_load_yaml_errors_name_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML") as info:
        load_yaml(bad)
    message = str(info.value)
    assert message == (
        f"{bad}: invalid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence started at line 1, column 4)"
    )
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_yaml(tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(ConfigError, match="binary.yaml: not a UTF-8 text file"):
        load_yaml(binary)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("steps: 3\nrollout: group_size: 4\n", "line 2, column 20: mapping values are not allowed here"),
        ('steps: 3\nname: "grpo\n', "line 3, column 1: found unexpected end of stream"),
        ("a: &x 1\nb: *y\n", "line 2, column 4: found undefined alias 'y'"),
    ],
)
def test_yaml_syntax_errors_are_one_line_with_the_place(tmp_path, text, where):
    """The file, line and column of a syntax error, 1-based, in one line (PyYAML's own message names
    "<unicode string>" and spans several lines)."""
    bad = tmp_path / "recipe.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_yaml(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: invalid YAML at {where}")
    assert "\n" not in message and "unicode string" not in message


def test_override_syntax_error_names_the_set_value():
    with pytest.raises(ConfigError) as info:
        apply_overrides({}, ["loss.0.options={lam: 0.1"])
    assert str(info.value) == (
        "--set 'loss.0.options={lam: 0.1': invalid YAML value '{lam: 0.1' at line 1, column 10: "
        "expected ',' or '}', but got '<stream end>' (while parsing a flow mapping started at line 1, column 1)"
    )


def test_to_dict_plain():
    assert to_dict(OptimConfig())["betas"] == [0.9, 0.999]
