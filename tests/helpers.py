"""Helpers the tests import (kept out of conftest.py: tests/e2e has a conftest of its own)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bakery.checks import find_tool

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def require_tool(name: str) -> str:
    """The tool's path; in CI a missing validator fails the test, elsewhere it skips it."""
    path = find_tool(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/run must install it")
        pytest.skip(f"{name} is not installed")
    return path
