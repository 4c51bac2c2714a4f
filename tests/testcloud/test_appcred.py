"""Application credentials (issue 30): what a careful site hands out instead of a password; and,
on that credential, a flavor with no root disk booting from a Cinder volume.

The demo user makes a restricted application credential (its project role only; it can make no
other credential or trust) and writes a clouds.yaml entry of its own with
``auth_type: v3applicationcredential`` (mode 600, as bakery asks of any file with a secret);
`bakery launch`, `status` and `destroy` then run on it alone, and nothing of the workshop stays.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from cloudcount import counts, destroy_leftovers, ensure_flavor, project_volumes, tinyguest_workshop

from bakery.progress import ConsoleReporter
from bakery.providers.openstack import check as bakery_check
from bakery.providers.openstack import launch as bakery_launch
from bakery.providers.openstack import status as bakery_status

pytestmark = pytest.mark.testcloud

say = ConsoleReporter(sys.stderr, live=False, prefix="[bakery] ")
NAME = "bakery-ci-appcred"
NOTHING = dict.fromkeys(("servers", "floating_ips", "security_groups", "keypairs"), 0)


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
        destroy_leftovers(config, say)
    assert counts(demo, NAME) == NOTHING


TINY_VOLUME_FLAVOR = ("bakery.tiny.volume", 128, 1, 0)  # m1.tiny without a root disk


@pytest.fixture(scope="module")
def tiny_volume_flavor(cinder: None, cloud_connect: Any) -> str:
    """A disk-0 flavor, made as the admin (before the clouds.yaml holds only the credential)."""
    ensure_flavor(cloud_connect("testcloud-admin"), TINY_VOLUME_FLAVOR)
    return TINY_VOLUME_FLAVOR[0]


def test_a_flavor_without_a_root_disk_boots_from_a_volume(
    tiny_volume_flavor: str, appcred_cloud: tuple[str, Any], tmp_path: Path
) -> None:
    """Nova refuses an image boot on a disk-0 flavor; bakery asks for a volume by itself (made
    from the image, sized by `bakery size`, deleted with the server), and destroy leaves none."""
    cloud, demo = appcred_cloud
    name = f"{NAME}-volume"
    config = tinyguest_workshop(tmp_path, name, cloud)
    config.write_text(config.read_text().replace("m1.tiny", tiny_volume_flavor))
    assert counts(demo, name) == NOTHING
    volumes = project_volumes(demo)
    checks = {c.name: c for c in bakery_check.check(config_path=config).checks}
    assert "has no root disk: Nova boots it only from a volume" in checks["root disk"].detail
    assert checks["quota volumes"].status == "ok", checks["quota volumes"]
    try:
        result = bakery_launch.launch(config_path=config, wait=False, progress=say, stage="boot")
        (server,) = result.servers
        assert server.status == "ACTIVE"
        found = demo.compute.get_server(server.id)
        assert not (found.image or {}).get("id"), found.image  # booted from a volume
        (attached,) = found.attached_volumes
        volume = demo.block_storage.get_volume(attached["id"])
        assert volume.is_bootable and volume.status == "in-use"
        sized = checks["root disk"].detail.split("a new ", 1)[1].split()[0]  # "a new 21 GB volume"
        assert volume.size == int(sized)
        assert project_volumes(demo) == volumes + 1
    finally:
        destroy_leftovers(config, say)
    assert counts(demo, name) == NOTHING
    assert project_volumes(demo) == volumes
