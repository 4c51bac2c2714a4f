"""Shared fixtures: workshop files in a temporary folder, and tools that CI must have."""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from bakery.config import Workshop, load_config
from bakery.credentials import Account, credentials_path, ensure_credentials

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def require_tool(name: str) -> str:
    """The tool's path; in CI a missing validator fails the test, elsewhere it skips it."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if Path(p).exists()), None
    )
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/run must install it")
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write dedented YAML to tmp_path/workshop.yaml and return its path."""

    def write(text: str, name: str = "workshop.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def make_workshop(
    write_config: Callable[[str], Path],
) -> Callable[[str], tuple[Workshop, list[Account]]]:
    """Load YAML as a workshop and make its credentials sheet beside it."""

    def make(text: str) -> tuple[Workshop, list[Account]]:
        path = write_config(text)
        cfg = load_config(path)
        return cfg, ensure_credentials(cfg, credentials_path(path))

    return make
