"""Connections to the test cloud of ../shared/testcloud (brought up by its up.sh)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

STATE = Path(os.environ.get("TESTCLOUD_STATE", "/var/tmp/testcloud"))
CLOUDS = STATE / "clouds.yaml"


@pytest.fixture(scope="session")
def cloud_connect() -> Iterator[Callable[[str], Any]]:
    """``connect(name)``: an openstacksdk connection to a cloud of the test cloud's clouds.yaml.

    Fails in CI (skips elsewhere) when the test cloud is not up.
    """
    if not CLOUDS.exists():
        message = f"{CLOUDS} missing: run ../shared/testcloud/up.sh first"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(CLOUDS)
    import openstack

    opened: list[Any] = []

    def connect(name: str) -> Any:
        opened.append(openstack.connect(cloud=name))
        return opened[-1]

    yield connect
    for conn in opened:
        conn.close()
