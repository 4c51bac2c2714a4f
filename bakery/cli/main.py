"""The `bakery` command line: thin Typer commands over the library, errors handled once.

The app and its error handler live in :mod:`bakery.cli.app`; the commands register on it from
:mod:`bakery.cli.local`, :mod:`bakery.cli.bake`, :mod:`bakery.cli.cloud` and :mod:`bakery.cli.day`.
"""

from __future__ import annotations

import sys

from bakery.cli.app import _state, app

# Importing the command modules registers their commands on `app`; `bakery --help` lists them in
# this order: the first hour's local commands, then images, the cloud, the workshop day.
# isort: off
from bakery.cli import local as cli_local
from bakery.cli import bake as cli_bake
from bakery.cli import cloud as cli_cloud
from bakery.cli import day as cli_day

# isort: on

__all__ = ["app", "main"]
_COMMANDS = (cli_local, cli_bake, cli_cloud, cli_day)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[: args.index("--") if "--" in args else len(args)]:
        args.remove("--debug")
        _state["debug"] = True
    app(args=args, prog_name="bakery")


if __name__ == "__main__":  # pragma: no cover
    main()
