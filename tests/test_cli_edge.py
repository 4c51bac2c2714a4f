"""The CLI's edge: -h, --debug anywhere, validate's summary, --strict and --json, the reporter."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, require_tool

from bakery.progress import Collector, ConsoleReporter
from bakery.vm import validate as checks

BAKERY = shutil.which("bakery", path=str(Path(sys.executable).parent)) or "bakery"
EXAMPLE = REPO / "examples" / "workshop.yaml"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BAKERY, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("args", [["-h"], ["render", "-h"], ["validate", "--help"]])
def test_short_and_long_help(args: list[str], tmp_path: Path) -> None:
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_debug_is_accepted_anywhere_on_the_line(tmp_path: Path) -> None:
    plain = run("render", "missing.yaml", cwd=tmp_path)
    assert plain.returncode == 2
    assert plain.stderr.startswith("bakery: error: missing.yaml: no such file")
    assert "Traceback" not in plain.stderr
    for args in (["--debug", "render", "missing.yaml"], ["render", "missing.yaml", "--debug"]):
        result = run(*args, cwd=tmp_path)
        assert result.returncode != 0
        assert "Traceback" in result.stderr and "ConfigError" in result.stderr, args


def test_exit_codes_are_documented() -> None:
    text = (REPO / "docs" / "commands.md").read_text()
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 70 |"):
        assert code in text


def _without(monkeypatch: pytest.MonkeyPatch, *tools: str) -> None:
    real = checks.find_tool
    monkeypatch.setattr(checks, "find_tool", lambda name: None if name in tools else real(name))


def test_validate_names_a_missing_tool_once_and_strict_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_tool("cloud-init")
    _without(monkeypatch, "shellcheck")
    report = checks.validate_workshop(config_path=EXAMPLE)
    assert report.ok() and not report.ok(strict=True)
    summary = report.lines()[-1]
    assert report.count("missing") > 1
    assert summary.count("shellcheck not installed") == 1, summary
    assert f"{report.count('missing')} skipped" in summary
    assert "apt-get install shellcheck" in summary
    # The per-check lines do not repeat the advice.
    assert sum("apt-get install" in line for line in report.lines()) == 1


def test_validate_strict_and_json_through_the_cli(tmp_path: Path) -> None:
    for tool in ("cloud-init", "shellcheck", "nginx", "systemd-analyze"):
        require_tool(tool)
    shutil.copy(EXAMPLE, tmp_path / "workshop.yaml")
    strict = run("validate", "--strict", "workshop.yaml", cwd=tmp_path)
    assert strict.returncode == 0, strict.stdout + strict.stderr
    assert strict.stdout.splitlines()[-1].endswith("passed, 0 failed")
    data = json.loads(run("validate", "--json", "workshop.yaml", cwd=tmp_path).stdout)
    assert data["ok"] is True and data["failed"] == 0 and data["passed"] == len(data["checks"])
    # The scripts the golden-image builders run are checked too, not only user-data.
    names = " ".join(c["name"] for c in data["checks"])
    for script in ("clean.sh", "wait-cloud-init.sh", "seal.sh"):
        assert f"shellcheck {script}" in names, script
    # validate writes no credentials sheet: it uses throwaway passwords.
    assert not (tmp_path / "workshop.credentials.csv").exists()


def test_reporter_in_a_pipe_prints_plain_lines_once_per_state() -> None:
    out = io.StringIO()
    rep = ConsoleReporter(out, live=False)
    rep("server a: creating")
    rep("cloud-init: final stage", transient=True)
    rep("cloud-init: final stage", transient=True)
    rep("cloud-init: done", transient=True)
    rep.close()
    assert out.getvalue().splitlines() == [
        "bakery: server a: creating",
        "bakery: cloud-init: final stage",
        "bakery: cloud-init: done",
    ]
    # The tests' and the benchmark's logs: the same once-per-state lines, their own tag.
    out = io.StringIO()
    tagged = ConsoleReporter(out, live=False, prefix="[vm] ")
    tagged("booting", transient=True)
    tagged("booting", transient=True)
    tagged("qemu started")
    assert out.getvalue().splitlines() == ["[vm] booting", "[vm] qemu started"]


def test_reporter_on_a_terminal_keeps_one_live_line() -> None:
    out = io.StringIO()
    rep = ConsoleReporter(out, live=True)
    rep("waiting for the hub", transient=True)
    rep("server a: ACTIVE")
    rep.close()
    text = out.getvalue()
    assert "\r\x1b[K  [    0s] waiting for the hub" in text
    # The note is printed on its own line, and the live line is redrawn under it.
    assert "\r\x1b[Kbakery: server a: ACTIVE\n" in text
    assert text.endswith("\r\x1b[K")


def test_collector_keeps_every_message() -> None:
    rep = Collector()
    rep("a")
    rep("b", transient=True)
    assert rep.messages == ["a", "b"]
