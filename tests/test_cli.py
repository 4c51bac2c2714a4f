"""The installed `bakery` command: exit codes, messages without tracebacks, output files."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, require_tool

BAKERY = shutil.which("bakery", path=str(Path(sys.executable).parent)) or "bakery"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BAKERY, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_version(tmp_path: Path) -> None:
    result = run("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("bakery 0.")


def test_init_render_credentials_validate(tmp_path: Path) -> None:
    require_tool("cloud-init")
    assert run("init", cwd=tmp_path).returncode == 0
    config = tmp_path / "workshop.yaml"
    again = run("init", cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert "traceback" not in again.stderr.lower()

    rendered = run("render", "workshop.yaml", "--stage", "boot", cwd=tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.startswith("#cloud-config\n")
    sheet = tmp_path / "workshop.credentials.csv"
    assert stat.S_IMODE(sheet.stat().st_mode) == 0o600
    assert "made passwords for 31 accounts" in rendered.stderr

    # Same config and sheet: byte-identical output.
    again_boot = run("render", "workshop.yaml", "--stage", "boot", cwd=tmp_path)
    assert again_boot.stdout == rendered.stdout
    # The full stage of 31 accounts and the hub's lock is over Nova's limit as text: gzipped.
    full = tmp_path / "user-data.full"
    assert run("render", "workshop.yaml", "-o", str(full), cwd=tmp_path).returncode == 0
    assert yaml.safe_load(gzip.decompress(full.read_bytes()))["users"][1]["name"] == "training01"

    out = tmp_path / "user-data"
    result = run("render", str(config), "--stage", "boot", "--gzip", "-o", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(gzip.decompress(out.read_bytes()))
    assert doc["users"][1]["name"] == "training01"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600

    creds = run("credentials", "workshop.yaml", cwd=tmp_path)
    first = sheet.read_text().splitlines()[1].split(",")
    assert f"{first[0]}  {first[1]}" in creds.stdout
    as_csv = run("credentials", "workshop.yaml", "--csv", cwd=tmp_path).stdout.splitlines()
    assert as_csv[0] == "username,password" and as_csv[1] == f"{first[0]},{first[1]}"

    validated = run("validate", "workshop.yaml", cwd=tmp_path)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "ok   full stage: cloud-init schema" in validated.stdout


def test_render_refuses_to_clobber_foreign_files(tmp_path: Path) -> None:
    run("init", cwd=tmp_path)
    precious = tmp_path / "notes.txt"
    precious.write_text("my notes")
    result = run("render", "workshop.yaml", "-o", str(precious), cwd=tmp_path)
    assert result.returncode == 1 and "--force" in result.stderr
    assert precious.read_text() == "my notes"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "missing.yaml: no such file"),
        ("name: ok\nuserz: 1\n", "bad.yaml:2: userz: unknown key; did you mean 'users'?"),
        ("name: ok\n  bad: [\n", "bad.yaml:2: invalid YAML"),
        ("name: ok\nusers: {count: 0}\n", "bad.yaml:2: users.count"),
    ],
)
def test_bad_config_exit_2_no_traceback(tmp_path: Path, content: str | None, message: str) -> None:
    name = "missing.yaml" if content is None else "bad.yaml"
    if content is not None:
        (tmp_path / name).write_text(content)
    for command in ("render", "validate", "credentials"):
        result = run(command, name, cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
    assert not (tmp_path / "bad.credentials.csv").exists()


def test_render_does_not_import_cloud_libraries(tmp_path: Path) -> None:
    """`bakery render` stays fast: no openstacksdk (nor other cloud SDK) import."""
    run("init", cwd=tmp_path)
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from bakery.cli.main import app\n"
        "result = CliRunner().invoke(app, ['render', 'workshop.yaml'])\n"
        "assert result.exit_code == 0, result.output\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('openstack', 'keystoneauth1', "
        "'requests', 'packer')]\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_quick_start_commands_exist() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    makefile = (REPO / "Makefile").read_text()
    assert "\ndemo:" in makefile and "\ntest:" in makefile
    assert os.access(REPO / ".ci" / "run", os.X_OK)


def test_validate_reports_a_failed_check_with_exit_1(tmp_path: Path) -> None:
    require_tool("shellcheck")
    (tmp_path / "w.yaml").write_text(
        "name: ok\nfiles:\n  - {path: /usr/local/bin/broken.sh, content: 'if then fi', "
        "permissions: '0755'}\n"
    )
    result = run("validate", "w.yaml", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL boot stage: bash -n broken.sh" in result.stdout
    assert "internal error" not in result.stderr


def test_size_needs_a_config_or_users(tmp_path: Path) -> None:
    result = run("size", cwd=tmp_path)
    assert result.returncode == 2 and "give a CONFIG or --users N" in result.stderr
    ok = run("size", "--users", "30", cwd=tmp_path)
    assert ok.returncode == 0 and "vCPUs: 8" in ok.stdout
