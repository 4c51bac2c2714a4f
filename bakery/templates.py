"""The one strict Jinja2 environment, loading templates shipped inside the installed package.

Templates live in the repository's top-level ``cloudinit/`` and ``packer/`` folders and are
installed as ``bakery/templates/{cloudinit,packer}`` (see pyproject.toml); they are read with
``importlib.resources``, never from the checkout.
"""

from __future__ import annotations

import json
import shlex
from functools import cache
from importlib import resources
from typing import Any

import jinja2


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


class _Loader(jinja2.BaseLoader):
    """Loads ``<folder>/<name>`` from the installed ``bakery/templates`` package data."""

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Any]:
        ref = resources.files("bakery").joinpath("templates", *template.split("/"))
        if not ref.is_file():
            raise jinja2.TemplateNotFound(template)
        return ref.read_text(encoding="utf-8"), None, lambda: True

    def list_templates(self) -> list[str]:
        root = resources.files("bakery").joinpath("templates")
        found: list[str] = []
        for folder in root.iterdir():
            if folder.is_dir():
                found += [f"{folder.name}/{f.name}" for f in folder.iterdir() if f.is_file()]
        return sorted(found)


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


def template_names(folder: str) -> list[str]:
    """The templates shipped in ``folder`` (``cloudinit`` or ``packer``)."""
    return [n for n in environment().list_templates() if n.startswith(folder + "/")]
