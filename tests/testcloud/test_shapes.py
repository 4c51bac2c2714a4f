"""Issue 30, on demand (`make test-cloud-shapes`): the e2e golden image on clouds shaped unlike
devstack, each run with an application credential instead of a password, from bakery's own upload
to `destroy`, with a trainee's cell through the URL `launch` printed.

- A provider network (shapes/provider-net.sh): shared, no router, no floating IP, no DHCP and so
  no metadata service. bakery sees no router leg on it and puts the user-data on a config drive
  (which also carries the static address); the URL is the server's own address.
- A flavor with no root disk (disk 0) on Cinder over Ceph RBD (shapes/cinder.sh): bakery boots
  the server from a volume made from the image, sized by `bakery size`, deleted with it.

The counts after `destroy` are taken through the API as the demo user: servers, floating IPs,
security groups, key pairs, the servers' ports and the project's volumes.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from cloudcount import (
    HUB_FLAVOR,
    counts,
    ensure_flavor,
    ports_of,
    project_volumes,
    tinyguest_workshop,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
from e2e_harness import Workshop, record, require, workshop_for
from test_golden_hub import (  # noqa: F401
    NAME,
    NOTHING,
    archive_files,
    bakery,
    golden,
    trainee_cell,
    workshop,
)
from test_try import login

from bakery.config.workshop import load_config
from bakery.errors import CloudError
from bakery.providers.openstack import launch as bakery_launch
from bakery.workshop.accounts import credentials_path, ensure_credentials

pytestmark = [pytest.mark.testcloud, pytest.mark.slow]

SHAPES = Path(__file__).resolve().parent / "shapes"


@pytest.fixture(scope="module")
def provider_net(cloud_connect: Any) -> Iterator[None]:
    """The test cloud's provider network (made once; kept for the next run)."""
    require(os.geteuid() == 0, "needs root: the provider network's bridge is the host's")
    subprocess.run(["bash", str(SHAPES / "provider-net.sh")], check=True, timeout=600)
    ensure_flavor(cloud_connect("testcloud-admin"), HUB_FLAVOR)
    yield


def on_cloud(w: Workshop, cloud: str, **openstack: Any) -> Workshop:
    """``w``'s workshop on ``cloud`` with ``openstack`` settings replacing the e2e ones."""
    settings = yaml.safe_load(w.config.read_text())
    settings["openstack"] = {**settings["openstack"], "cloud": cloud, **openstack}
    settings["openstack"] = {k: v for k, v in settings["openstack"].items() if v is not None}
    w.config.write_text(yaml.safe_dump(settings, sort_keys=False))
    return workshop_for(w.config, key=w.ssh_key, https_port=443, ssh_port=22)


@contextmanager
def launched(
    w: Workshop,
    demo: Any,
    golden: Path,  # noqa: F811
    label: str,
) -> Iterator[tuple[Workshop, Any]]:
    """``w``'s workshop from bakery's own upload of the golden image: launched, a trainee's cell
    through the URL `launch` printed; yields (``w`` at that address, the server). Afterwards
    `destroy`, and nothing of it is left: servers, floating IPs, groups, key pairs, the
    server's ports and the project's volumes, counted through the API."""
    assert counts(demo, NAME) == NOTHING, "leftovers of an earlier run"
    volumes = project_volumes(demo)
    image_id, server_ids = None, []
    try:
        up = bakery("image", "upload", str(w.config), str(golden))
        assert up.returncode == 0
        name, image_id = up.stdout.split()
        start = time.monotonic()
        out = bakery("launch", str(w.config), "--image", name)
        assert out.returncode == 0
        record(f"{label}: launch -> hub health", time.monotonic() - start)
        address = out.stdout.splitlines()[0].split("https://", 1)[1].split("/", 1)[0]
        (server,) = [s for s in demo.compute.servers() if s.name == f"{NAME}-1"]
        server_ids.append(server.id)
        w = dataclasses.replace(w, host=address, http_port=80)
        trainee_cell(w, label)
        yield w, server
    finally:
        destroyed = bakery("destroy", str(w.config), "--yes")
        if image_id:
            demo.image.delete_image(image_id, ignore_missing=True)
    assert destroyed.returncode == 0
    assert counts(demo, NAME) == NOTHING
    assert ports_of(demo, server_ids) == 0
    assert project_volumes(demo) == volumes


def test_a_provider_network_without_metadata_service_through_an_application_credential(
    provider_net: None,
    appcred_cloud: tuple[str, Any],
    workshop: Workshop,  # noqa: F811
    golden: Path,  # noqa: F811
) -> None:
    cloud, demo = appcred_cloud
    w = on_cloud(workshop, cloud, networks=["provider"], floating_ip_network=None)
    checked = bakery("check", str(w.config))
    assert "config drive: provider has no router this project can see" in checked.stdout
    assert "no floating IP (openstack.floating_ip_network unset)" in checked.stdout

    with launched(w, demo, golden, "testcloud provider net") as (w, server):
        assert w.host.startswith("172.25.0."), w.host  # its own address: no floating IP
        assert server.has_config_drive in (True, "True")
        assert counts(demo, NAME) == {**NOTHING, "servers": 1, "security_groups": 1, "keypairs": 1}
        # The day's commands on the application credential: users, status, collect.
        other = w.trainees[1]
        assert bakery("users", "reset", str(w.config), other).returncode == 0
        sheet = {a.username: a.password for a in sheet_of(w)}
        assert sheet[other] != w.passwords[other]
        _, resp = login(w, other, sheet[other])
        assert resp.status_code == 302, "the new password does not log in"
        status = bakery("status", str(w.config), "--json")
        assert status.returncode == 0 and w.host in status.stdout
        work = w.config.parent / "work"
        assert bakery("collect", str(w.config), "-o", str(work)).returncode == 0
        assert archive_files(work / f"{w.trainees[0]}.tar.gz") is not None


def sheet_of(w: Workshop) -> Any:
    """The sheet's accounts as they are now (after `users reset`)."""
    return ensure_credentials(load_config(w.config), credentials_path(w.config))


VOLUME_FLAVOR = ("bakery.hub.volume", 3072, 2, 0)  # HUB_FLAVOR without a root disk


@pytest.fixture(scope="module")
def volume_flavor(cinder: None, cloud_connect: Any) -> None:
    ensure_flavor(cloud_connect("testcloud-admin"), VOLUME_FLAVOR)


def test_a_volume_only_flavor_boots_from_a_volume_through_an_application_credential(
    volume_flavor: None,
    appcred_cloud: tuple[str, Any],
    workshop: Workshop,  # noqa: F811
    golden: Path,  # noqa: F811
) -> None:
    cloud, demo = appcred_cloud
    w = on_cloud(
        workshop, cloud, flavor=VOLUME_FLAVOR[0], networks=["private"], floating_ip_network="public"
    )
    checked = bakery("check", str(w.config)).stdout
    assert f"{VOLUME_FLAVOR[0]} has no root disk: Nova boots it only from a volume" in checked
    assert "quota volumes: needs 1" in checked
    volumes = project_volumes(demo)

    with launched(w, demo, golden, "testcloud volume boot") as (w, server):
        (attached,) = server.attached_volumes
        volume = demo.block_storage.get_volume(attached["id"])
        assert volume.is_bootable and volume.status == "in-use"
        print(f"boot volume: {volume.size} GB ({volume.volume_type})")
        assert project_volumes(demo) == volumes + 1


def test_a_failed_launch_on_a_volume_leaves_no_volume(
    volume_flavor: None, appcred_cloud: tuple[str, Any], tmp_path: Path
) -> None:
    """tinyguest never answers /hub/health: the launch fails after its server went ACTIVE on a
    volume, and removes the server, its volume and everything else it made."""
    cloud, demo = appcred_cloud
    name = "bakery-failed-volume"
    config = tinyguest_workshop(tmp_path, name, cloud)
    config.write_text(config.read_text().replace("m1.tiny", VOLUME_FLAVOR[0]))
    volumes = project_volumes(demo)
    seen: list[str] = []

    def watch(message: str, *, transient: bool = False) -> None:
        print(f"[bakery] {message}")
        if "ACTIVE after" in message:  # the volume exists now: note it
            (server,) = [s for s in demo.compute.servers() if s.name == f"{name}-1"]
            seen.extend(v["id"] for v in server.attached_volumes)

    with pytest.raises(CloudError, match="did not answer within"):
        bakery_launch.launch(config_path=config, stage="boot", progress=watch)
    assert len(seen) == 1, seen
    assert demo.block_storage.find_volume(seen[0], ignore_missing=True) is None
    assert counts(demo, name) == NOTHING
    assert project_volumes(demo) == volumes
