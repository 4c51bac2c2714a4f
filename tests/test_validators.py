"""Every example renders, in every stage, to documents the real validators accept."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import EXAMPLES, require_tool

from bakery.config.workshop import load_config
from bakery.vm.validate import Check, check_nginx, check_units, check_workshop
from bakery.workshop.accounts import preview_accounts


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool in ("cloud-init", "shellcheck", "nginx", "systemd-analyze", "openssl"):
        require_tool(tool)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_passes_every_validator(example: Path) -> None:
    cfg = load_config(example)
    report = check_workshop(cfg, preview_accounts(cfg))
    names = " ".join(c.name for c in report.checks)
    for needed in ("cloud-init schema", "nginx -t", "py_compile", "shellcheck", "systemd-analyze"):
        assert needed in names
    failed = [c for c in report.checks if c.status != "ok"]
    assert not failed, "\n".join(report.lines())


def test_validators_catch_broken_output(tmp_path: Path) -> None:
    """The checks are real: broken nginx and unit files fail them."""
    broken_nginx = check_nginx("server { listen 443 ssl; bogus_directive on; }\n", tmp_path / "n")
    assert broken_nginx.status == "failed" and "bogus_directive" in broken_nginx.detail
    unit = "[Unit]\nDescription=x\n[Service]\nExecStart=/usr/bin/x\nBogusKey=1\n"
    broken_unit = check_units({"x.service": unit}, tmp_path / "u")
    assert broken_unit.status == "failed" and "BogusKey" in broken_unit.detail


def test_cloud_init_schema_rejects_bad_documents(tmp_path: Path) -> None:
    from bakery.vm.validate import check_cloud_init_schema

    bad = tmp_path / "bad"
    bad.write_text("#cloud-config\nusers: 3\npackages: {a: 1}\n")
    result: Check = check_cloud_init_schema(bad)
    assert result.status == "failed"
