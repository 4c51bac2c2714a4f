"""Connections to the test cloud of ../shared/testcloud (brought up by its up.sh)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

STATE = Path(os.environ.get("TESTCLOUD_STATE", "/var/tmp/testcloud"))
SHAPES = Path(__file__).resolve().parent / "shapes"
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


@pytest.fixture
def appcred_cloud(
    cloud_connect: Callable[[str], Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Any]]:
    """A clouds.yaml whose one cloud is a fresh application credential of the demo user; its
    name, and the demo user's own connection (to count with)."""
    conn = cloud_connect("testcloud")
    base = yaml.safe_load(Path(os.environ["OS_CLIENT_CONFIG_FILE"]).read_text())["clouds"]
    demo = base["testcloud"]
    cred = conn.identity.create_application_credential(
        user=conn.current_user_id,
        name=f"bakery-test-{os.getpid()}",
        description="bakery's tests: a workshop run without a password",
        unrestricted=False,
    )
    clouds = tmp_path / "clouds.yaml"
    entry = {
        "auth_type": "v3applicationcredential",
        "auth": {
            "auth_url": demo["auth"]["auth_url"],
            "application_credential_id": cred.id,
            "application_credential_secret": cred.secret,
        },
        "region_name": demo.get("region_name", "RegionOne"),
        "identity_api_version": 3,
    }
    clouds.write_text(yaml.safe_dump({"clouds": {"appcred": entry}}))
    clouds.chmod(0o600)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    try:
        yield "appcred", conn
    finally:
        conn.identity.delete_application_credential(conn.current_user_id, cred.id)


@pytest.fixture(scope="session")
def cinder(cloud_connect: Callable[[str], Any]) -> None:
    """Cinder on a one-node Ceph (shapes/cinder.sh, idempotent: seconds once it ran): this
    kernel has no device-mapper, iSCSI or NFS, so RBD through librbd is the backend that works
    here, as on most production clouds."""
    if os.geteuid() != 0:
        pytest.skip("needs root: Cinder and Ceph are set up on the host")
    subprocess.run(["bash", str(SHAPES / "cinder.sh")], check=True, timeout=1800)
