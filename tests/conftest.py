"""Shared fixtures: workshop files in a temporary folder."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from bakery.config.workshop import Workshop, load_config
from bakery.workshop.accounts import Account, credentials_path, ensure_credentials


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
