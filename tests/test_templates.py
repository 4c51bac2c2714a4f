"""The Jinja environment: quoting is enforced by type, templates are found in every install."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from bakery import templates
from bakery.errors import RenderError, TemplateMissing

HOSTILE = [
    "a b",
    "$(reboot)",
    "`id`",
    "x; rm -rf /",
    "it's",
    'say "hi"',
    "line\nbreak",
    "trailing\n",
    "tab\there",
    "{{ 7*7 }}",
    "${HOME}",
    "a|b",
    "a&b",
    "*",
    "~root",
    "",  # an empty value is fine bare, but keep it in the quoted checks below
]


def _render(source: str, **context: object) -> str:
    return templates.environment().from_string(source).render(**context)


@pytest.mark.parametrize("value", [v for v in HOSTILE if v])
def test_an_unquoted_free_string_cannot_render(value: str) -> None:
    with pytest.raises(RenderError, match="unquoted"):
        _render("echo {{ value }}\n", value=value)


@pytest.mark.parametrize("value", HOSTILE)
def test_the_shell_filter_makes_any_value_one_word(value: str) -> None:
    out = _render("echo {{ value | sh }}", value=value)
    assert shlex.split(out) == ["echo", value]


def test_shwords_quotes_each_word() -> None:
    out = _render("rm -f {{ paths | shwords }}", paths=["/etc/a b", "/etc/$(x)", "/etc/ok"])
    assert shlex.split(out) == ["rm", "-f", "/etc/a b", "/etc/$(x)", "/etc/ok"]


@pytest.mark.parametrize("value", ["a b", "x'); import os; os.system('id", "\n", "\\"])
def test_the_python_filter_round_trips(value: str) -> None:
    import ast

    assert ast.literal_eval(_render("{{ value | py }}", value=value)) == value


@pytest.mark.parametrize(
    "value", ["/usr/local/lib/bakery", "5.2.1", "quay.io/jupyter/x:2025-03-14", "hub.example.org"]
)
def test_plain_values_and_numbers_print_bare(value: str) -> None:
    assert _render("{{ value }} {{ port }} {{ cpu }}", value=value, port=8081, cpu=1.5) == (
        f"{value} 8081 1.5"
    )


@pytest.mark.parametrize("value", [None, True, ["a"], {"a": 1}])
def test_non_strings_do_not_print_bare(value: object) -> None:
    with pytest.raises(RenderError):
        _render("{{ value }}", value=value)


def test_a_shipped_template_names_itself_in_the_error() -> None:
    with pytest.raises(RenderError, match=r"cloudinit/sshd\.conf\.j2: .*unquoted"):
        templates.render("cloudinit/sshd.conf.j2", bakery_version="0", login_user="a b")


def test_templates_are_found_from_the_source_tree() -> None:
    # The test venv is an editable install: no bakery/templates package data, the checkout's
    # folders are used. A wheel install has the package data instead (checked by the fresh-clone
    # `make demo`, which renders every stage).
    root = templates.template_root()
    assert root.joinpath("cloudinit", "nginx.conf.j2").is_file()
    assert root.joinpath("packer", "clean.sh.j2").is_file()


def test_a_missing_template_is_named() -> None:
    with pytest.raises(TemplateMissing, match=r"cloudinit/nope\.sh\.j2"):
        templates.render("cloudinit/nope.sh.j2")


def test_no_template_folder_is_a_python_package() -> None:
    # A top-level `cloudinit` package would shadow cloud-init's own wherever both are installed.
    repo = Path(__file__).resolve().parent.parent
    for folder in templates.FOLDERS:
        assert not (repo / folder / "__init__.py").exists()
