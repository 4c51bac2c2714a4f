"""How a server boots on clouds of other shapes (issue 30): a flavor with no root disk boots from a
volume sized by `bakery size`, and a network without a router gets the user-data on a config
drive; `check`, `launch --dry-run` and `launch` say which and why."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests_mock as rm
from fakecloud import FakeCloud, use_fake_cloud, write_workshop
from typer.testing import CliRunner

from bakery.cli.main import app
from bakery.config.workshop import load_config
from bakery.errors import CloudError
from bakery.progress import Collector
from bakery.providers.openstack import launch as launch_mod
from bakery.providers.openstack import servers as servers_mod
from bakery.topology import estimate

PROVIDER_NET = "b1f1c0de-0000-4000-8000-0000000000b2"


@pytest.fixture
def fake(requests_mock: rm.Mocker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCloud:
    monkeypatch.setattr(time, "sleep", lambda s: None)
    monkeypatch.setattr(servers_mod, "hub_health", lambda ip, timeout=5: "ok")
    cloud = use_fake_cloud(requests_mock, tmp_path, monkeypatch)
    # A provider network as a site shares it: not external, not the project's, no router leg.
    cloud.add_network("provider", PROVIDER_NET, shared=True, project="admin-project")
    return cloud


def created(fake: FakeCloud) -> dict[str, Any]:
    (create,) = fake.calls("POST", r":8774/v2\.1/servers$")
    return dict(create.json()["server"])


def launch(config: Path) -> list[str]:
    said = Collector()
    launch_mod.launch(config_path=config, wait=False, progress=said)
    return said.messages


def test_a_flavor_without_a_root_disk_boots_from_a_volume_sized_by_bakery_size(
    fake: FakeCloud, tmp_path: Path
) -> None:
    config = write_workshop(tmp_path, flavor="v1.large")  # disk 0; boot_volume not set
    said = launch(config)

    sent = created(fake)
    need = estimate(load_config(config), "hub", tmp_path).disk_gb
    assert "imageRef" not in sent
    assert sent["block_device_mapping_v2"] == [
        {
            "boot_index": 0,
            "uuid": sent["block_device_mapping_v2"][0]["uuid"],
            "source_type": "image",
            "destination_type": "volume",
            "volume_size": need,
            "delete_on_termination": True,
        }
    ]
    assert (
        f"hub root disk: a new {need} GB volume (`bakery size`; deleted with the server): "
        "v1.large has no root disk: Nova boots it only from a volume"
    ) in said


def test_a_flavor_with_a_disk_boots_from_it(fake: FakeCloud, tmp_path: Path) -> None:
    launch(write_workshop(tmp_path))
    assert "imageRef" in created(fake) and "block_device_mapping_v2" not in created(fake)


def test_boot_volume_asks_for_a_volume_on_any_flavor(fake: FakeCloud, tmp_path: Path) -> None:
    launch(write_workshop(tmp_path, boot_volume=True, volume_size=30))
    (volume,) = created(fake)["block_device_mapping_v2"]
    assert volume["volume_size"] == 30 and volume["delete_on_termination"] is True


def test_auto_on_a_cloud_whose_flavors_all_lack_a_disk_picks_one_and_a_volume(
    fake: FakeCloud, tmp_path: Path
) -> None:
    fake.flavors.clear()
    fake.add_flavor("v1.small", 2048, 1, 0)
    fake.add_flavor("v1.medium", 4096, 2, 0)
    fake.add_flavor("v1.large", 8192, 4, 0)
    config = write_workshop(tmp_path, flavor="auto")

    out = invoke("launch", str(config), "--dry-run").stdout
    assert "flavor: v1.medium (2 vCPUs, 4096 MiB, 0 GB): auto" in out
    assert "boot: a new " in out and "v1.medium has no root disk" in out
    assert "quota volumes: needs 1, 9 free of 10: fits" in out

    launch(config)
    assert created(fake)["block_device_mapping_v2"][0]["destination_type"] == "volume"


def test_auto_prefers_a_flavor_with_a_disk_where_one_fits(fake: FakeCloud, tmp_path: Path) -> None:
    out = invoke("launch", str(write_workshop(tmp_path, flavor="auto")), "--dry-run").stdout
    assert "flavor: m1.medium (2 vCPUs, 4096 MiB, 40 GB): auto" in out
    assert "boot: the flavor's 40 GB disk" in out


def test_check_counts_the_volume_against_cinder_quota(fake: FakeCloud, tmp_path: Path) -> None:
    fake.volume_limits["gigabytes"] = (30, 20)  # 10 GB free, the volume needs more
    result = invoke("check", str(write_workshop(tmp_path, flavor="v1.large", volume_size=40)))
    assert result.exit_code == 1, result.output
    assert "volume GB: needs 40, 10 free of 30: DOES NOT FIT" in result.stdout
    assert "root disk: a new 40 GB volume (openstack.volume_size" in result.stdout


@pytest.mark.parametrize(
    ("network", "drive", "why"),
    [
        ("provider", True, "config drive: provider has no router this project can see"),
        ("private", None, "metadata service, the cloud's default (a router serves private)"),
    ],
)
def test_without_a_floating_ip_the_network_decides_the_config_drive(
    fake: FakeCloud, tmp_path: Path, network: str, drive: bool | None, why: str
) -> None:
    config = write_workshop(tmp_path, networks=[network], floating_ip_network=None)

    checked = invoke("check", str(config)).stdout
    assert why in checked
    assert "no floating IP (openstack.floating_ip_network unset): trainees use the server's " in (
        checked
    )
    assert f"user-data by {why}" in invoke("launch", str(config), "--dry-run").stdout

    result = launch_mod.launch(config_path=config, wait=False)
    assert created(fake).get("config_drive") is drive
    assert fake.calls("POST", r"/floatingips$") == []
    assert result.servers[0].ip is not None and result.servers[0].ip.startswith("10.0.0.")


def test_a_floating_ip_means_a_router_and_the_cloud_default(
    fake: FakeCloud, tmp_path: Path
) -> None:
    launch(write_workshop(tmp_path))
    assert "config_drive" not in created(fake)
    # No network's ports were asked about: the floating IP settles it.
    assert fake.calls("GET", r"/v2\.0/ports\?.*device_owner") == []


@pytest.mark.parametrize("asked", [True, False])
def test_config_drive_set_in_the_file_wins(fake: FakeCloud, tmp_path: Path, asked: bool) -> None:
    config = write_workshop(
        tmp_path, networks=["provider"], floating_ip_network=None, config_drive=asked
    )
    said = launch(config)
    assert created(fake)["config_drive"] is asked
    assert any("(openstack.config_drive" in line for line in said), said


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("status", ["available", "error"])
def test_destroy_deletes_a_boot_volume_its_server_left(
    fake: FakeCloud, tmp_path: Path, status: str
) -> None:
    """Nova deletes a delete_on_termination volume with its server; one it left (a volume in
    error after a failed build, a compute host that lost the call) is deleted by destroy."""
    config = write_workshop(tmp_path, flavor="v1.large")
    launch(config)
    (server_id,) = fake.servers
    volume = fake.boot_volume(server_id, status)

    result = invoke("destroy", str(config), "--yes")
    assert result.exit_code == 0, result.output
    assert fake.volumes == {}
    assert f"volume {volume}: left by its server ({status}), deleting" in result.output


def test_a_failed_launch_takes_its_boot_volume_with_it(fake: FakeCloud, tmp_path: Path) -> None:
    config = write_workshop(tmp_path, flavor="v1.large")
    fake.boot_outcome = "ERROR"
    original = fake._create_server

    def create_with_volume(**kwargs: Any) -> tuple[int, Any]:
        status, body = original(**kwargs)
        fake.boot_volume(body["server"]["id"], "error")
        return status, body

    fake._create_server = create_with_volume  # type: ignore[method-assign]
    fake.routes = [(m, u, create_with_volume if h == original else h) for m, u, h in fake.routes]
    with pytest.raises(CloudError, match="failed to build"):
        launch(config)
    assert fake.servers == {} and fake.volumes == {}


def test_destroy_waits_for_the_volume_nova_is_deleting(fake: FakeCloud, tmp_path: Path) -> None:
    config = write_workshop(tmp_path, flavor="v1.large")
    launch(config)
    (server_id,) = fake.servers
    volume = fake.boot_volume(server_id, "deleting")
    polls = iter([True, False])  # Cinder finishes on the second look

    original = fake._get_volume

    def get_volume(ident: str, **kwargs: Any) -> tuple[int, Any]:
        if ident == volume and not next(polls, False):
            fake.volumes.pop(volume, None)
        return original(ident, **kwargs)

    fake.routes = [(m, u, get_volume if h == original else h) for m, u, h in fake.routes]
    result = invoke("destroy", str(config), "--yes")
    assert result.exit_code == 0, result.output
    assert not any(c.method == "DELETE" for c in fake.calls("DELETE", "/volumes/"))
    assert fake.volumes == {} and "left by its server" not in result.output


def test_check_and_launch_size_the_volume_alike_with_a_content_folder(
    fake: FakeCloud, tmp_path: Path
) -> None:
    """The content folders count in the disk estimate: for check as for launch."""
    config = write_workshop(tmp_path, flavor="v1.large", image="bakery-intro-20240501-0900")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data.csv").write_text("a,b\n1,2\n")
    config.write_text(config.read_text() + "shared_data:\n  from: ./shared\n")
    checked = invoke("check", str(config)).stdout
    said = checked.split("root disk: a new ", 1)[1].split()[0]
    launch(config)
    assert created(fake)["block_device_mapping_v2"][0]["volume_size"] == int(said)
    assert int(said) == estimate(load_config(config), "hub", tmp_path).disk_gb
    assert int(said) > estimate(load_config(config), "hub").disk_gb  # the folder's share


def test_floating_ip_network_none_means_no_floating_ip(fake: FakeCloud, tmp_path: Path) -> None:
    """`floating_ip_network: none` as people write it (YAML reads a string, not null)."""
    config = write_workshop(tmp_path, networks=["provider"], floating_ip_network="none")
    assert load_config(config).openstack.floating_ip_network is None
    out = invoke("launch", str(config), "--dry-run").stdout
    assert "config drive: provider has no router" in out
    launch(config)
    assert fake.calls("POST", r"/floatingips$") == []
    assert created(fake)["config_drive"] is True
