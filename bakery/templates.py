"""The one strict Jinja2 environment, loading the templates bakery ships.

Templates live in the repository's top-level ``cloudinit/`` and ``packer/`` folders and are
installed as ``bakery/templates/{cloudinit,packer}`` (see pyproject.toml), read with
``importlib.resources``. An editable install (``pip install -e .``) has no such package data: there
the templates are read from the source tree beside the package, still never imported as packages.
"""

from __future__ import annotations

import json
import shlex
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from bakery.errors import TemplateMissing

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


def _pystr(value: Any) -> str:
    """A Python literal of ``value`` (str, int, float, bool, None, lists/dicts of them)."""
    if isinstance(value, (set, frozenset)):
        raise TypeError("sets have no stable order; pass a sorted list to |pyset")
    return repr(value)


def _pyset(values: Any) -> str:
    """A Python set literal with a stable order (``set()`` when empty)."""
    items = sorted(values)
    return "{" + ", ".join(repr(v) for v in items) + "}" if items else "set()"


def _shell(value: Any) -> str:
    """One shell word, single-quoted when needed."""
    return shlex.quote(str(value))


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


FOLDERS = ("cloudinit", "packer")


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
    """The shared environment: StrictUndefined, ``.j2`` templates, no autoescape (not HTML)."""
    env = jinja2.Environment(
        loader=_Loader(),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701
    )
    env.filters.update(py=_pystr, pyset=_pyset, sh=_shell, json=_json)
    return env


def render(template: str, /, **context: Any) -> str:
    """Render ``template`` (e.g. ``cloudinit/nginx.conf.j2``) with ``context``."""
    if not template.endswith(".j2"):
        raise ValueError(f"template names end in .j2: {template}")
    return environment().get_template(template).render(**context)


