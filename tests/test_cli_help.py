"""Every ``divrl`` command's help: no ``<bool>`` for flags, a help text for every option, eval's rows explained."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from divrl.cli import app
from divrl.eval.columns import METRIC_NOTES, metric_note


def _commands(command, path=()):
    subs = getattr(command, "commands", None)
    if subs is None:
        yield path, command
        return
    yield path, command
    for name, sub in subs.items():
        yield from _commands(sub, (*path, name))


def test_every_help_is_plain_and_every_option_documented():
    commands = list(_commands(typer.main.get_command(app)))
    assert len(commands) >= 8  # divrl, 5 commands, partition and its commands
    for path, command in commands:
        result = CliRunner().invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, path
        assert "--help" in result.output
        for param in command.params:
            if isinstance(param, typer.core.TyperOption):
                assert param.help, f"divrl {' '.join(path)} {param.opts[0]} has no help text"


def test_eval_help_explains_every_row():
    out = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "200"}).output
    for key in METRIC_NOTES:
        assert f"{key}:" in out
    assert "potential@1 = 0 beside pass@1 > 0 is expected" in " ".join(out.split())  # the case a user asked about
    assert metric_note("pass@16") == METRIC_NOTES["pass@k"]
    assert metric_note("potential@2") == METRIC_NOTES["potential@k"]
    assert metric_note("greedy_pass@1") == METRIC_NOTES["greedy_pass@1"]
    assert metric_note("no_such_metric") is None


def _readme_commands() -> list[str]:
    """Every ``divrl ...`` line of the README's bash blocks, comments cut (``#`` after two spaces)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = re.split(r"\s{2,}#", line)[0].strip()
            if line.startswith("divrl "):
                lines.append(line)
    return lines


def test_readme_commands_name_real_commands_and_options():
    """A README command line with a renamed or removed subcommand or option fails here, not in a user's shell."""
    import shlex

    root = typer.main.get_command(app)
    lines = _readme_commands()
    assert len(lines) >= 15, lines
    for line in lines:
        words = shlex.split(line)[1:]
        command, path = root, []
        while getattr(command, "commands", None) and words and words[0] in command.commands:
            command = command.commands[words[0]]
            path.append(words.pop(0))
        assert path and not getattr(command, "commands", None), f"README: {line!r} names no divrl command"
        known = {opt for p in command.params for opt in [*p.opts, *getattr(p, "secondary_opts", [])]}
        used = [w.split("=", 1)[0] for w in words if w.startswith("--")]
        unknown = [o for o in used if o not in known]
        assert not unknown, f"README: {line!r} uses {unknown}, not options of divrl {' '.join(path)}"
