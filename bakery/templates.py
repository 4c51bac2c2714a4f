"""The one strict Jinja2 environment, loading the templates bakery ships.

Templates live in the repository's top-level ``cloudinit/``, ``packer/`` and ``print/`` folders
and are installed as ``bakery/templates/{cloudinit,packer,print}`` (see pyproject.toml), read with
``importlib.resources``. An editable install (``pip install -e .``) has no such package data: there
the templates are read from the source tree beside the package, still never imported as packages.
"""

from __future__ import annotations

import html
import json
import re
import shlex
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from bakery.errors import RenderError, TemplateMissing

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


class Quoted(str):
    """Text a filter made safe for the language of the file it goes into (shell, Python, JSON).

    Only a ``Quoted`` value, a number, or a string in :data:`PLAIN` may be printed by ``{{ }}``:
    the environment's ``finalize`` refuses everything else, so a template that forgets to quote a
    free string cannot render, whatever the config model happens to allow.
    """


# Characters that mean nothing special to a shell, Python, nginx, systemd, HCL or a Dockerfile
# when printed bare: paths, versions, host names, ports, image references.
PLAIN = re.compile(r"[A-Za-z0-9_./:,=@%+-]*")


def _finalize(value: Any) -> Any:
    """Let through what is safe to print bare; refuse free strings (see :class:`Quoted`)."""
    if isinstance(value, Quoted) or (
        isinstance(value, (int, float)) and not isinstance(value, bool)
    ):
        return value
    if isinstance(value, str) and PLAIN.fullmatch(value):
        return value
    raise RenderError(
        f"the value {value!r} would reach a rendered file unquoted; quote it with the filter for "
        "the file's language (|sh, |shwords, |py, |pyset, |json, |html)"
    )


def _pystr(value: Any) -> Quoted:
    """A Python literal of ``value`` (str, int, float, bool, None, lists/dicts of them)."""
    if isinstance(value, (set, frozenset)):
        raise TypeError("sets have no stable order; pass a sorted list to |pyset")
    return Quoted(repr(value))


def _pyset(values: Any) -> Quoted:
    """A Python set literal with a stable order (``set()`` when empty)."""
    items = sorted(values)
    return Quoted("{" + ", ".join(repr(v) for v in items) + "}" if items else "set()")


def _shell(value: Any) -> Quoted:
    """One shell word, single-quoted when needed."""
    return Quoted(shlex.quote(str(value)))


def _shell_words(values: Any) -> Quoted:
    """Shell words separated by spaces, each quoted when needed."""
    return Quoted(" ".join(shlex.quote(str(v)) for v in values))


def _json(value: Any) -> Quoted:
    return Quoted(json.dumps(value, sort_keys=True))


def _html(value: Any) -> Quoted:
    """HTML text or a quoted attribute value: ``& < > " '`` escaped."""
    return Quoted(html.escape(str(value), quote=True))


FOLDERS = ("cloudinit", "packer", "print")


def template_root() -> Traversable:
    """Where the template folders are: the installed package data, else the source tree."""
    installed = resources.files("bakery").joinpath("templates")
    if installed.is_dir():
        return installed
    source = Path(__file__).resolve().parent.parent
    if all((source / folder).is_dir() for folder in FOLDERS):
        return source
    raise TemplateMissing(
        f"bakery's templates are missing: neither {installed} (a built install) nor "
        f"{source}/cloudinit (a source checkout) exists; reinstall bakery"
    )


class _Loader(jinja2.BaseLoader):
    """Loads ``<folder>/<name>`` from :func:`template_root`."""

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Any]:
        ref = template_root().joinpath(*template.split("/"))
        if not ref.is_file():
            raise TemplateMissing(
                f"template {template} is missing from {template_root()}: a broken install or a "
                "bug; reinstall bakery"
            )
        return ref.read_text(encoding="utf-8"), None, lambda: True


@cache
def environment() -> jinja2.Environment:
    """The shared environment: StrictUndefined, ``.j2`` templates, no autoescape (HTML: |html)."""
    env = jinja2.Environment(
        loader=_Loader(),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701
        finalize=_finalize,
    )
    env.filters.update(
        py=_pystr, pyset=_pyset, sh=_shell, shwords=_shell_words, json=_json, html=_html
    )
    return env


def render(template: str, /, **context: Any) -> str:
    """Render ``template`` (e.g. ``cloudinit/nginx.conf.j2``) with ``context``."""
    if not template.endswith(".j2"):
        raise ValueError(f"template names end in .j2: {template}")
    try:
        return environment().get_template(template).render(**context)
    except RenderError as exc:
        raise RenderError(f"{template}: {exc}") from None


def read_text(name: str, /) -> str:
    """A template folder's file as it is, no Jinja (``cloudinit/bakery_swarmspawner.py``)."""
    ref = template_root().joinpath(*name.split("/"))
    if not ref.is_file():
        raise TemplateMissing(
            f"{name} is missing from {template_root()}: a broken install or a bug; reinstall bakery"
        )
    return ref.read_text(encoding="utf-8")
