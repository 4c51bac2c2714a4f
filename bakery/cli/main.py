"""The `bakery` command line: thin Typer commands over the library, errors handled once.

The app and its error handler live in :mod:`bakery.cli.app`; the commands register on it from
:mod:`bakery.cli.local`, :mod:`bakery.cli.bake`, :mod:`bakery.cli.cloud` and :mod:`bakery.cli.day`.
"""

from __future__ import annotations

import sys

# Importing the command modules registers their commands on `app`; `bakery --help` lists them in
# this order: the first hour's local commands, then images, the cloud, the workshop day.
# isort: off
from bakery.cli import local, bake, cloud, day  # noqa: F401
from bakery.cli.app import app

# isort: on

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point. ``--debug`` may come anywhere on the line: it is moved to
    the front, where the app's option reads it."""
    args = list(sys.argv[1:] if argv is None else argv)
    end = args.index("--") if "--" in args else len(args)
    if "--debug" in args[:end]:
        args.remove("--debug")
        args.insert(0, "--debug")
    app(args=args, prog_name="bakery")


if __name__ == "__main__":  # pragma: no cover
    main()
