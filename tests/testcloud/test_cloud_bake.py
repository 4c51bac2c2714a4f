"""The real bakes on the test cloud (`make test-cloud-bake`, slow, not in CI): the whole bake stage
through `bakery bake --builder openstacksdk` and through Packer's `openstack` source, each image
then launched and a trainee logging in and running a cell through the floating IP.

Nested TCG makes each bake long (apt, pip and npm in an emulated guest); timings are recorded.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_golden_hub import FLAVOR, NOTHING, bakery, counts

from bakery import launch as bakery_launch
from bakery.errors import BakeryError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
import baseimage
from e2e_harness import e2e_ssh_key, record, workshop_for, write_config
from test_try import login, open_server, run_cell

pytestmark = pytest.mark.slow

NAME = "bakery-cloud-bake"
SSH_GROUP = f"{NAME}-ssh"  # Packer reaches its builder over ssh through the floating IP


@pytest.fixture(scope="module")
def clouds(cloud_connect: Callable[[str], Any]) -> Iterator[tuple[Any, Any, Any]]:
    """(demo, admin, the Debian 12 base image in Glance); the base image and group go after."""
    demo, admin = cloud_connect("testcloud"), cloud_connect("testcloud-admin")
    name, ram, vcpus, disk = FLAVOR
    if admin.compute.find_flavor(name) is None:
        admin.compute.create_flavor(name=name, ram=ram, vcpus=vcpus, disk=disk)
    path = baseimage.ensure_base_image()
    start = time.monotonic()
    with path.open("rb") as fh:
        base = demo.image.create_image(
            name=f"{NAME}-base", data=fh, disk_format="qcow2", container_format="bare"
        )
    record("cloud bake: base image upload", time.monotonic() - start)
    group = demo.network.find_security_group(SSH_GROUP) or demo.network.create_security_group(
        name=SSH_GROUP, description="bakery test-cloud-bake: ssh for Packer"
    )
    if not [r for r in demo.network.security_group_rules(security_group_id=group.id)
            if r.direction == "ingress" and r.port_range_min == 22]:  # fmt: skip
        demo.network.create_security_group_rule(
            security_group_id=group.id, direction="ingress", ethertype="IPv4",
            protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="0.0.0.0/0",
        )  # fmt: skip
    yield demo, admin, base
    demo.image.delete_image(base, ignore_missing=True)
    demo.network.delete_security_group(group, ignore_missing=True)


def config_for(tmp: Path, demo: Any, base: Any) -> Path:
    key = e2e_ssh_key()
    config = tmp / "workshop.yaml"
    write_config(config, NAME, key.with_suffix(".pub").read_text().strip())
    private = demo.network.find_network("private")
    with config.open("a") as fh:
        fh.write(
            f"openstack:\n  cloud: testcloud\n  flavor: {FLAVOR[0]}\n  networks: [private]\n"
            f"  floating_ip_network: public\n  public_key: {key}.pub\n  hub_timeout: 30m\n"
            f"bake:\n  source_image: {base.id}\n  flavor: {FLAVOR[0]}\n"
            f"  networks: [{private.id}]\n  floating_ip_network: public\n"
            f"  security_groups: [{SSH_GROUP}]\n  image_suffix: none\n"
        )
    return config


def launch_and_log_in(config: Path, image_name: str, label: str) -> None:
    """Launch ``image_name``, a trainee runs a cell through the floating IP, destroy."""
    w = workshop_for(config, key=e2e_ssh_key(), https_port=443, ssh_port=22)
    try:
        start = time.monotonic()
        out = bakery("launch", str(config), "--image", image_name)
        assert out.returncode == 0
        record(f"cloud bake: {label}: launch -> hub health", time.monotonic() - start)
        fip = out.stdout.split("https://", 1)[1].split("/", 1)[0]
        w = dataclasses.replace(w, host=fip, http_port=80)
        trainee = w.trainees[0]
        start = time.monotonic()
        s, resp = login(w, trainee, w.passwords[trainee])
        assert resp.status_code == 302, resp.status_code
        open_server(w, s, trainee, timeout=900)
        assert run_cell(w, s, trainee, "6 * 7", 300) == "42"
        record(f"cloud bake: {label}: login -> cell answer", time.monotonic() - start)
    finally:
        try:
            bakery_launch.destroy(config_path=config)
        except BakeryError as exc:
            print(f"cleanup: {exc}")


@pytest.mark.parametrize(
    ("label", "args"),
    [("openstacksdk", ["--builder", "openstacksdk"]), ("packer", ["--only", "openstack"])],
)
def test_bake_on_the_cloud_then_launch(
    clouds: tuple[Any, Any, Any], tmp_path: Path, label: str, args: list[str]
) -> None:
    demo, _, base = clouds
    config = config_for(tmp_path, demo, base)
    image_name = f"bakery-{NAME}"
    for old in list(demo.image.images(name=image_name)):
        demo.image.delete_image(old)
    start = time.monotonic()
    try:
        out = bakery("bake", str(config), *args, timeout=4 * 3600)
        record(f"cloud bake: {label}: bake", time.monotonic() - start)
        assert out.returncode == 0
        (baked,) = demo.image.images(name=image_name)
        assert baked.status == "active"
        launch_and_log_in(config, image_name, label)
        assert counts(demo, NAME) == NOTHING
    finally:
        for img in list(demo.image.images(name=image_name)):
            demo.image.delete_image(img)
