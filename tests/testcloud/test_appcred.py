"""Application credentials (issue 30): what a careful site hands out instead of a password.

The demo user makes a restricted application credential (its project role only; it can make no
other credential or trust) and writes a clouds.yaml entry of its own with
``auth_type: v3applicationcredential`` (mode 600, as bakery asks of any file with a secret);
`bakery launch`, `status` and `destroy` then run on it alone, and nothing of the workshop stays.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cloudcount import counts, tinyguest_workshop

from bakery.errors import BakeryError
from bakery.progress import ConsoleReporter
from bakery.providers.openstack import check as bakery_check
from bakery.providers.openstack import destroy as bakery_destroy
from bakery.providers.openstack import launch as bakery_launch
from bakery.providers.openstack import status as bakery_status

pytestmark = pytest.mark.testcloud

say = ConsoleReporter(sys.stderr, live=False, prefix="[bakery] ")
NAME = "bakery-ci-appcred"
NOTHING = dict.fromkeys(("servers", "floating_ips", "security_groups", "keypairs"), 0)


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
        name=f"{NAME}-{os.getpid()}",
        description="bakery's test: launch, status, destroy without a password",
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


def test_launch_status_destroy_with_an_application_credential(
    appcred_cloud: tuple[str, Any], tmp_path: Path
) -> None:
    cloud, demo = appcred_cloud
    config = tinyguest_workshop(tmp_path, NAME, cloud)
    assert counts(demo, NAME) == NOTHING
    report = bakery_check.check(config_path=config)
    # All but the flavor, which is tinyguest's (far below a hub's estimate) on purpose.
    failed = [(c.name, c.detail) for c in report.checks if c.status == "fail"]
    assert [name for name, _ in failed] == ["flavor"], failed
    assert {"credentials", "image", "key pair"} <= {c.name for c in report.checks}
    assert f"project {demo.current_project_id}" in report.checks[1].detail
    try:
        result = bakery_launch.launch(config_path=config, wait=False, progress=say, stage="boot")
        (server,) = result.servers
        assert server.status == "ACTIVE" and server.floating_ip
        assert counts(demo, NAME) == dict.fromkeys(NOTHING, 1)
        infos = bakery_status.status(config_path=config).servers
        assert [(i.name, i.floating_ip) for i in infos] == [(f"{NAME}-1", server.floating_ip)]
    finally:
        try:
            bakery_destroy.destroy(config_path=config, progress=say)
        except BakeryError as exc:
            print(f"cleanup: {exc}")
    assert counts(demo, NAME) == NOTHING
