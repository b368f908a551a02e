"""What every ``divrl`` command shares: bad input ends in one line on stderr and exit code 2, never a traceback.

:func:`fail` prints ``error: <message>`` (the message folded onto one line); :func:`show_warning` prints divrl's own
warnings as one ``warning: ...`` line each; :func:`run_app` runs a Typer app so that a usage error (a missing or
unknown option, a value of the wrong type) is one line too, instead of click's box or its four-line usage text.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, NoReturn, cast

import typer

USAGE_EXIT = 2


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) folded into one space."""
    return " ".join(str(text).split())


def fail(message: str) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with code 2."""
    typer.echo(f"{typer.style('error:', fg='red', bold=True)} {one_line(message)}", err=True)
    raise typer.Exit(USAGE_EXIT)


def _is_divrl_warning(category: type[Warning], filename: str) -> bool:
    return category.__module__.startswith("divrl") or "/divrl/" in filename.replace("\\", "/")


_default_showwarning = warnings.showwarning


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` for the CLI: divrl's warnings as one ``warning: ...`` line; others unchanged."""
    if not _is_divrl_warning(category, filename):
        _default_showwarning(message, category, filename, lineno, file, line)
        return
    typer.echo(f"{typer.style('warning:', fg='yellow', bold=True)} {one_line(str(message))}", err=True)


def _is_click_exception(exc: BaseException) -> bool:
    """A click exception, from click itself or from the copy that typer >= 0.22 vendors (``typer._click``)."""
    return "click" in type(exc).__module__ and callable(getattr(exc, "format_message", None))


def run_app(app: typer.Typer, args: list[str] | None = None) -> NoReturn:
    """Run ``app`` as the ``divrl`` command: usage errors become one ``error:`` line (exit code 2)."""
    warnings.showwarning = show_warning
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="divrl", standalone_mode=False)
    except Exception as exc:
        kind = type(exc).__name__
        if kind == "Abort":  # Ctrl-C at a prompt, or EOF
            typer.echo("aborted", err=True)
            sys.exit(1)
        if not _is_click_exception(exc):
            raise
        ctx: Any = getattr(exc, "ctx", None)
        if kind == "NoArgsIsHelpError":  # `divrl` or `divrl classifier` alone: the help text
            typer.echo(ctx.get_help() if ctx is not None else str(exc))
            sys.exit(getattr(exc, "exit_code", USAGE_EXIT))  # click's code for it
        code = getattr(exc, "exit_code", 1)
        where = f" (see {ctx.command_path} --help)" if ctx is not None and code == USAGE_EXIT else ""
        message = one_line(cast(Any, exc).format_message())
        typer.echo(f"{typer.style('error:', fg='red', bold=True)} {message}{where}", err=True)
        sys.exit(code)
    sys.exit(result if isinstance(result, int) else 0)
