"""The workshop.yaml reference, `bakery schema` and `bakery config show` follow the model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import EXAMPLES, REPO, require_tool
from pydantic import BaseModel
from typer.testing import CliRunner

from bakery.cli.main import app
from bakery.config.infra import Bake, OpenStack
from bakery.config.reference import _models, markdown
from bakery.config.workshop import Workshop, load_config

REFERENCE = REPO / "docs" / "reference.md"


def test_docs_reference_is_generated_from_the_model() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == markdown(), (
        "docs/reference.md is stale: regenerate it with "
        "`bakery schema --markdown > docs/reference.md`"
    )


@pytest.mark.parametrize("model", [m for m, _ in _models()], ids=lambda m: m.__name__)
def test_every_field_is_described(model: type[BaseModel]) -> None:
    missing = [name for name, f in model.model_fields.items() if not f.description]
    assert missing == []


def test_bake_and_openstack_are_in_the_reference() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    keys = [*Bake.model_fields, *OpenStack.model_fields]
    assert len(keys) >= 33  # the 33 keys of bakery 0.1.0 and any added since
    for section in ("## `bake`: Bake", "## `openstack`: OpenStack"):
        assert section in text
    for key in keys:
        assert f"| `{key}` |" in text


def _schema_python() -> str:
    """cloud-init's interpreter: it has jsonschema (a cloud-init dependency)."""
    cloud_init = require_tool("cloud-init")
    first = Path(cloud_init).read_text(encoding="utf-8", errors="replace").splitlines()[0]
    return first.removeprefix("#!").split()[0]


def test_schema_command_prints_a_schema_the_examples_pass(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["required"] == ["name"]
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(result.output)
    docs = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
    bad = [
        {"name": "ok", "userz": {}},
        {"name": "Bad_Name"},
        {"name": "ok", "users": {"names": ["root\n"]}},
        {"name": "ok", "users": {"names": ["users"]}},
        {"name": "ok", "files": [{"path": "/etc/m", "content": "x", "permissions": 420}]},
    ]
    code = (
        "import json, sys, jsonschema\n"
        "schema = json.load(open(sys.argv[1]))\n"
        "v = jsonschema.Draft202012Validator(schema)\n"
        "good, bad = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))\n"
        "print(json.dumps([[not list(v.iter_errors(d)) for d in good],"
        " [not list(v.iter_errors(d)) for d in bad]]))\n"
    )
    (tmp_path / "good.json").write_text(json.dumps(docs))
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    run = subprocess.run(
        [
            _schema_python(),
            "-c",
            code,
            str(schema_file),
            str(tmp_path / "good.json"),
            str(tmp_path / "bad.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    good_ok, bad_ok = json.loads(run.stdout)
    assert good_ok == [True] * len(docs)
    assert bad_ok == [False] * len(bad)


def test_schema_markdown_is_the_reference() -> None:
    result = CliRunner().invoke(app, ["schema", "--markdown"])
    assert result.exit_code == 0 and result.output == markdown()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_config_show_prints_every_default_and_reloads(example: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["config", "show", str(example)])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert set(shown) == set(Workshop.model_fields)
    assert set(shown["bake"]) == set(Bake.model_fields)
    assert set(shown["openstack"]) == set(OpenStack.model_fields)
    again = tmp_path / "shown.yaml"
    again.write_text(result.output)
    assert load_config(again).model_dump() == load_config(example).model_dump()


def test_config_show_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "w.yaml"
    bad.write_text("name: ok\nusers: {names: [no]}\n")
    result = CliRunner().invoke(app, ["config", "show", str(bad)])
    assert result.exit_code == 2
    assert "quote it: 'no'" in result.output


def test_credentials_json(tmp_path: Path) -> None:
    config = tmp_path / "w.yaml"
    config.write_text("name: ok\nusers: {count: 2, admins: [boss]}\n")
    result = CliRunner().invoke(app, ["credentials", str(config), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["username"], r["admin"]) for r in rows] == [
        ("training01", False),
        ("training02", False),
        ("boss", True),
    ]
    assert all(len(r["password"]) == 12 for r in rows)
    both = CliRunner().invoke(app, ["credentials", str(config), "--json", "--csv"])
    assert both.exit_code == 2
