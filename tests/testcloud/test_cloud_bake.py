"""The real bakes on the test cloud (`make test-cloud-bake`, slow, not in CI): the whole bake stage
through `bakery bake --builder openstacksdk` and through Packer's `openstack` source, each image
then launched and a trainee logging in and running a cell through the floating IP.

Nested TCG makes each bake long (apt, pip and npm in an emulated guest); timings are recorded.

The test cloud keeps its guests in (br-ex forwards nowhere, the private subnet's DNS server is the
router, which answers no DNS): the builders' apt and pip need a way out, so ``guest_egress`` opens
one for this module and closes it after: IP forwarding and NAT from br-ex's network through the
host, and the host's resolver as the private subnet's DNS server. The guests trust this host's CAs
(the base image of ../shared/vmimage copies them in), so a TLS-inspecting egress works for pip/npm.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cloudcount import HUB_FLAVOR, destroy_leftovers, ensure_flavor
from test_golden_hub import NOTHING, bakery, counts, trainee_cell

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
import baseimage
from e2e_harness import e2e_ssh_key, record, require, workshop_for, write_config

pytestmark = pytest.mark.slow

NAME = "bakery-cloud-bake"
SSH_GROUP = f"{NAME}-ssh"  # Packer reaches its builder over ssh through the floating IP
EXTERNAL = "172.24.4.0/24"  # the test cloud's external network, on the host's bridge br-ex
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def egress_rules(uplink: str) -> list[tuple[str, str, list[str]]]:
    """(table, chain, rule) added for the test's duration and deleted after.

    br-ex's network goes out of ``uplink`` (the test cloud's own rule drops it) with its source
    NATed to the host's address, and TCP's MSS is clamped to the path MTU (the uplink may be
    narrower than the guests' 1450). Only br-ex -> uplink: traffic the host bridges between the
    cloud's own ports (the host reaching a floating IP) must not be touched.
    """
    out, back = ["-i", "br-ex", "-o", uplink], ["-i", uplink, "-o", "br-ex"]
    return [
        ("filter", "FORWARD", [*out, "-s", EXTERNAL, "-j", "ACCEPT"]),
        ("filter", "FORWARD", [*back, "-d", EXTERNAL, "-m", "conntrack",
                               "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]),
        ("nat", "POSTROUTING", ["-o", uplink, "-s", EXTERNAL, "-j", "MASQUERADE"]),
        ("mangle", "FORWARD", [*out, "-p", "tcp", "--tcp-flags", "SYN,RST", "SYN",
                               "-j", "TCPMSS", "--clamp-mss-to-pmtu"]),
    ]  # fmt: skip


def uplink() -> str:
    """The interface of the host's default route."""
    routes = json.loads(
        subprocess.run(["ip", "-j", "route", "show", "default"], capture_output=True, text=True,
                       check=True).stdout
    )  # fmt: skip
    assert routes, "the host has no default route: its guests cannot get out"
    return str(routes[0]["dev"])


def host_resolvers() -> list[str]:
    """The host's IPv4 DNS servers that a guest can reach through NAT (not loopback)."""
    found = []
    for line in Path("/etc/resolv.conf").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(parts[1])
            except ValueError:
                continue
            if addr.version == 4 and not addr.is_loopback:
                found.append(str(addr))
    return found


def iptables(table: str, action: str, chain: str, rule: list[str]) -> int:
    return subprocess.run(
        ["iptables", "-w", "-t", table, action, chain, *rule], capture_output=True, check=False
    ).returncode


@pytest.fixture(scope="module")
def guest_egress(cloud_connect: Callable[[str], Any]) -> Iterator[list[str]]:
    """A way out for the test cloud's guests while the module runs; the DNS servers it gives."""
    require(os.geteuid() == 0, "needs root: IP forwarding and NAT for the test cloud's guests")
    resolvers = host_resolvers()
    assert resolvers, "/etc/resolv.conf names no IPv4 DNS server a guest could reach through NAT"
    admin = cloud_connect("testcloud-admin")
    subnet = admin.network.find_subnet("private-subnet")
    assert subnet is not None, "the test cloud has no private-subnet"
    old_dns, old_forward = list(subnet.dns_nameservers), IP_FORWARD.read_text().strip()
    added: list[tuple[str, str, list[str]]] = []
    try:
        for table, chain, rule in egress_rules(uplink()):
            if iptables(table, "-C", chain, rule) != 0:
                assert iptables(table, "-I", chain, ["1", *rule]) == 0, (table, chain, rule)
                added.append((table, chain, rule))
        IP_FORWARD.write_text("1\n")
        admin.network.update_subnet(subnet, dns_nameservers=resolvers)
        yield resolvers
    finally:
        admin.network.update_subnet(subnet, dns_nameservers=old_dns)
        IP_FORWARD.write_text(old_forward + "\n")
        for table, chain, rule in added:
            iptables(table, "-D", chain, rule)


@pytest.fixture(scope="module")
def clouds(cloud_connect: Callable[[str], Any]) -> Iterator[tuple[Any, Any, Any]]:
    """(demo, admin, the Debian 12 base image in Glance); the base image and group go after."""
    demo, admin = cloud_connect("testcloud"), cloud_connect("testcloud-admin")
    ensure_flavor(admin, HUB_FLAVOR)
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
            f"openstack:\n  cloud: testcloud\n  flavor: {HUB_FLAVOR[0]}\n  networks: [private]\n"
            f"  floating_ip_network: public\n  public_key: {key}.pub\n  hub_timeout: 30m\n"
            f"bake:\n  source_image: {base.id}\n  flavor: {HUB_FLAVOR[0]}\n"
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
        trainee_cell(dataclasses.replace(w, host=fip, http_port=80), f"cloud bake: {label}")
    finally:
        destroy_leftovers(config)


@pytest.mark.parametrize(
    ("label", "args"),
    [("openstacksdk", ["--builder", "openstacksdk"]), ("packer", ["--only", "openstack"])],
)
def test_bake_on_the_cloud_then_launch(
    clouds: tuple[Any, Any, Any],
    guest_egress: list[str],
    tmp_path: Path,
    label: str,
    args: list[str],
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
