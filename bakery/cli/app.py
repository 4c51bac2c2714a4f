"""The CLI's shared parts: the Typer app, common arguments, the reporter, the one error handler."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from bakery.errors import BakeryError, RenderError
from bakery.progress import ConsoleReporter
from bakery.version import __version__

# -h as well as --help, on every command.
CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="bakery",
    help="Turn one workshop.yaml into a running JupyterHub on a cloud VM.\n\n"
    "Exit codes: 0 ok, 1 an operation failed, 2 bad input, config or a missing tool, "
    "70 internal error (a bug), 130 interrupted.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
)

F = TypeVar("F", bound=Callable[..., Any])
# Set by the app's --debug option (main() moves it to the front wherever it was given).
_state = {"debug": False}

ConfigArg = Annotated[
    Path,
    typer.Argument(
        help="The workshop file (see `bakery init`).", show_default=False, metavar="CONFIG"
    ),
]


class StageChoice(str, Enum):
    """The user-data stages (see bakery.vm.userdata)."""

    full = "full"
    bake = "bake"
    boot = "boot"


StageOpt = Annotated[
    StageChoice,
    typer.Option(
        "--stage",
        help="full: stock image to working hub; bake: the golden-image part; "
        "boot: what a VM booted from a golden image still needs.",
    ),
]


class RoleChoice(str, Enum):
    """A swarm cluster's VM roles (see bakery.vm.userdata)."""

    manager = "manager"
    worker = "worker"


RoleOpt = Annotated[
    RoleChoice,
    typer.Option(
        "--role",
        help="With cluster.engine swarm: manager (the hub; the default) or worker (trainees' "
        "servers). The bake stage is the same for both.",
    ),
]


def _err(message: str) -> None:
    typer.echo(message, err=True)


_reporter: ConsoleReporter | None = None


def progress() -> ConsoleReporter:
    """The reporter library calls get: notes as lines, a live status line on a terminal."""
    global _reporter
    if _reporter is None:
        _reporter = ConsoleReporter()
    return _reporter


def _close_progress() -> None:
    # A new reporter per command: it holds the stderr of its own invocation (tests run many).
    global _reporter
    if _reporter is not None:
        _reporter.close()
        _reporter = None


def handle_errors(func: F) -> F:
    """Turn BakeryError into a message on stderr and its exit code (traceback only with --debug)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        finally:
            _close_progress()  # end a live status line before any message below

    @wraps(func)
    def handled(*args: Any, **kwargs: Any) -> Any:
        try:
            return wrapper(*args, **kwargs)
        except BakeryError as exc:
            if _state["debug"]:
                raise
            _err(f"bakery: error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _err("bakery: interrupted")
            raise typer.Exit(130) from None
        except OSError as exc:
            if _state["debug"]:
                raise
            _err(f"bakery: error: {exc}")
            raise typer.Exit(1) from None
        except Exception as exc:
            # typer.Exit, Abort and BadParameter are click's own control flow: let them through.
            if _state["debug"] or type(exc).__module__.split(".")[0] in ("click", "typer"):
                raise
            _err(f"bakery: internal error: {type(exc).__name__}: {exc}")
            _err("bakery: this is a bug; rerun with --debug for the traceback and report it")
            raise typer.Exit(70) from None

    return handled  # type: ignore[return-value]


def command(name: str | None = None, *, group: typer.Typer | None = None) -> Callable[[F], F]:
    """Register the decorated function as a command of ``group`` (the app by default), its
    errors handled once (:func:`handle_errors`)."""

    def register(func: F) -> F:
        (group or app).command(name)(handle_errors(func))
        return func

    return register


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bakery {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks on errors (anywhere on the line).")
    ] = False,
) -> None:
    """bakery: one YAML file describes a workshop; bakery turns it into a running JupyterHub."""
    _state["debug"] = debug


def write_stdout(data: bytes, *, binary: bool = False) -> None:
    """Write ``data`` to standard output as it is (``binary``: refused on a terminal)."""
    if binary and sys.stdout.isatty():
        raise RenderError("gzipped user-data is binary: redirect it or use -o FILE")
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
