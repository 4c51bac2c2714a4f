"""The `bakery` command line: thin Typer commands over the library, errors handled once here."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from bakery import __version__
from bakery.errors import BakeryError

app = typer.Typer(
    name="bakery",
    help="Turn one workshop.yaml into a running JupyterHub on a cloud VM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])
_state = {"debug": False}

ConfigArg = Annotated[
    Path,
    typer.Argument(
        help="The workshop file (see `bakery init`).", show_default=False, metavar="CONFIG"
    ),
]


class StageChoice(str, Enum):
    """The user-data stages (see bakery.render)."""

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


def _err(message: str) -> None:
    typer.echo(message, err=True)


def handle_errors(func: F) -> F:
    """Turn BakeryError into a message on stderr and its exit code (traceback only with --debug)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
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
            if _state["debug"]:
                raise
            _err(f"bakery: internal error: {type(exc).__name__}: {exc}")
            _err("bakery: this is a bug; rerun with --debug for the traceback and report it")
            raise typer.Exit(70) from None

    return wrapper  # type: ignore[return-value]


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
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """bakery: one YAML file describes a workshop; bakery turns it into a running JupyterHub."""
    _state["debug"] = debug


@app.command()
@handle_errors
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the starter.")] = Path(
        "workshop.yaml"
    ),
    name: Annotated[str | None, typer.Option(help="Workshop name (default: from PATH).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter workshop.yaml."""
    from bakery.starter import write_starter

    written = write_starter(path, name=name, force=force)
    _err(f"bakery: wrote {written}; edit it, then: bakery validate {written}")


@app.command()
@handle_errors
def validate(config: ConfigArg) -> None:
    """Check the config and every rendered document with the real validators found here."""
    from bakery.checks import validate_workshop

    report = validate_workshop(config_path=config)
    for line in report.lines():
        typer.echo(line)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
@handle_errors
def render(
    config: ConfigArg,
    stage: StageOpt = StageChoice.full,
    gzip: Annotated[
        bool | None,
        typer.Option(
            "--gzip/--no-gzip",
            help="Gzip the user-data (default: only when needed to fit Nova's 64 KiB limit).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write to FILE instead of standard output."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite a file that is not bakery's.")
    ] = False,
) -> None:
    """Render the cloud-init user-data (to stdout: `bakery render workshop.yaml > user-data`)."""
    from bakery.workflow import render_to

    render_to(config_path=config, stage=stage.value, gzip_data=gzip, output=output, force=force)


@app.command()
@handle_errors
def credentials(
    config: ConfigArg,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV (username,password).")] = False,
) -> None:
    """Print the trainees' login sheet, making passwords for accounts that have none yet."""
    from bakery.workflow import credentials_sheet

    typer.echo(credentials_sheet(config_path=config, as_csv=csv), nl=False)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="bakery")


if __name__ == "__main__":  # pragma: no cover
    main()
