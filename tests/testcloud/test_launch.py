"""`bakery launch/status/destroy` against the real all-in-one OpenStack of ../shared/testcloud.

Run by .ci/run after `up.sh` (marker ``testcloud``). The ``tinyguest`` image is not cloud-init: it
prints the user_data it received on its console and answers plain HTTP on 22/80/443, which proves
what reached the guest. So the hub wait is skipped (``wait=False``), or must time out cleanly.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cloudcount import counts, destroy_leftovers, tinyguest_workshop

from bakery.config.workshop import load_config
from bakery.day.collect import collect_before_destroy
from bakery.errors import BakeryError, CloudError
from bakery.progress import ConsoleReporter
from bakery.providers.openstack import destroy as bakery_destroy
from bakery.providers.openstack import launch as bakery_launch
from bakery.providers.openstack import rules
from bakery.providers.openstack import status as bakery_status
from bakery.vm.userdata import user_data_b64

pytestmark = pytest.mark.testcloud


say = ConsoleReporter(sys.stderr, live=False, prefix="[bakery] ")  # visible with -s


NAME = "bakery-ci"


@pytest.fixture(scope="module")
def conn(cloud_connect: Callable[[str], Any]) -> Any:
    return cloud_connect("testcloud")


@pytest.fixture
def workshop(tmp_path: Path, conn: Any) -> Iterator[Path]:
    config = tinyguest_workshop(tmp_path, NAME, "testcloud")
    yield config
    # Whatever a test left behind goes, so the next run starts clean.
    destroy_leftovers(config)


def console(conn: Any, server_id: str, needle: str, timeout: float = 240) -> str:
    start = time.monotonic()
    while True:
        out = conn.compute.get_server_console_output(server_id).get("output", "")
        if needle in out or time.monotonic() - start > timeout:
            return str(out)
        time.sleep(5)


def test_launch_status_relaunch_destroy(conn: Any, workshop: Path) -> None:
    timings: dict[str, float] = {}
    assert counts(conn, NAME) == dict.fromkeys(
        ("servers", "floating_ips", "security_groups", "keypairs"), 0
    )

    start = time.monotonic()
    # The boot stage, asked for: tinyguest prints the user-data on its console, where a full
    # stage (over 64 KiB plain since the hub's lock and warm start: gzipped) is not readable.
    result = bakery_launch.launch(config_path=workshop, wait=False, progress=say, stage="boot")
    timings["launch"] = time.monotonic() - start
    assert len(result.servers) == 1
    server = result.servers[0]
    assert server.status == "ACTIVE" and server.floating_ip
    assert server.url == f"https://{server.floating_ip}/"
    assert {t.label for t in result.created} == {
        f"security group bakery-{NAME}",
        f"key pair bakery-{NAME}",
        f"server {NAME}-1",
        f"floating IP {server.floating_ip}",
    }
    assert counts(conn, NAME) == {
        "servers": 1,
        "floating_ips": 1,
        "security_groups": 1,
        "keypairs": 1,
    }

    # The floating IP answers on 443 (tinyguest speaks plain HTTP there), through the group.
    start = time.monotonic()
    while True:
        try:
            answer = requests.get(f"http://{server.floating_ip}:443/", timeout=5)
            break
        except requests.RequestException:
            assert time.monotonic() - start < 180, "floating IP never answered on 443"
            time.sleep(3)
    timings["floating IP answers"] = time.monotonic() - start
    assert answer.status_code == 200

    # bakery's user-data reached the guest (printed by tinyguest between markers).
    out = console(conn, server.id, "USER_DATA END")
    assert "USER_DATA BEGIN" in out
    body = out.split("USER_DATA BEGIN", 1)[1]
    assert "#cloud-config" in body and "training01" in body
    assert f"bakery: {NAME} boot stage done" in body

    infos = bakery_status.status(config_path=workshop).servers
    assert [(i.name, i.status, i.floating_ip) for i in infos] == [
        (f"{NAME}-1", "ACTIVE", server.floating_ip)
    ]
    assert infos[0].hub != "ok"  # tinyguest is no hub

    before = counts(conn, NAME)
    again = bakery_launch.launch(config_path=workshop, wait=False, progress=say, stage="boot")
    assert again.created == []
    assert counts(conn, NAME) == before
    assert again.servers[0].id == server.id

    # Issue 26: a hub that exists but cannot be reached (SHUTOFF) stops `destroy --collect`:
    # its trainees are failures, never "never created", and nothing is deleted.
    conn.compute.stop_server(server.id)
    deadline = time.monotonic() + 300
    while conn.compute.get_server(server.id).status != "SHUTOFF":
        assert time.monotonic() < deadline, "the server did not stop"
        time.sleep(3)
    work = workshop.parent / "work"
    with pytest.raises(BakeryError, match="nothing deleted") as refused:
        collect_before_destroy(config_path=workshop, out_dir=work)
    assert "training01" in str(refused.value)
    assert counts(conn, NAME) == before
    cli = subprocess.run(
        [
            str(Path(sys.executable).with_name("bakery")),
            "destroy",
            str(workshop),
            "--collect",
            str(work),
            "--yes",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 1 and "SHUTOFF" in cli.stderr and "Traceback" not in cli.stderr
    assert counts(conn, NAME) == before

    start = time.monotonic()
    plan = bakery_destroy.destroy(config_path=workshop, progress=say)
    timings["destroy"] = time.monotonic() - start
    assert len(plan.items) == 4
    assert counts(conn, NAME) == dict.fromkeys(
        ("servers", "floating_ips", "security_groups", "keypairs"), 0
    )
    assert bakery_destroy.destroy(config_path=workshop).items == []  # safe to re-run
    print("timings:", {k: round(v, 1) for k, v in timings.items()})


def test_hub_wait_times_out_and_cleans_up(conn: Any, workshop: Path) -> None:
    with pytest.raises(CloudError, match="did not answer within 60 s"):
        bakery_launch.launch(config_path=workshop, wait=True, progress=say)
    assert counts(conn, NAME) == dict.fromkeys(
        ("servers", "floating_ips", "security_groups", "keypairs"), 0
    )


def test_failed_boot_is_cleaned_up(conn: Any, workshop: Path, tmp_path: Path) -> None:
    """An image that needs more disk than the flavor has: Nova refuses, nothing stays behind."""
    base = conn.image.find_image("tinyguest")
    data = b"".join(conn.image.download_image(base, stream=True).iter_content(1 << 20))
    image = conn.image.create_image(
        name=f"{NAME}-too-big",
        data=data,
        disk_format=base.disk_format,
        container_format=base.container_format,
        min_disk=50,
    )
    try:
        workshop.write_text(workshop.read_text().replace("image: tinyguest", f"image: {image.id}"))
        with pytest.raises(CloudError, match=r"(?i)disk|too small"):
            bakery_launch.launch(config_path=workshop, wait=False, progress=say)
        assert counts(conn, NAME) == dict.fromkeys(
            ("servers", "floating_ips", "security_groups", "keypairs"), 0
        )
    finally:
        conn.image.delete_image(image, ignore_missing=True)


def test_user_data_arrives_base64_within_nova_limit(conn: Any, workshop: Path) -> None:
    cfg = load_config(workshop)
    from bakery.workshop.accounts import preview_accounts

    big = cfg.model_copy(update={"users": cfg.users.model_copy(update={"count": 300})})
    payload = user_data_b64(big, preview_accounts(big), "full")
    assert len(payload) <= 65535
    assert base64.b64decode(payload)[:2] == b"\x1f\x8b"  # gzipped to fit


def test_dry_runs_read_the_real_apis_and_create_nothing(conn: Any, workshop: Path) -> None:
    from bakery.providers.openstack.plan import plan_launch

    plan = plan_launch(config_path=workshop)

    lines = "\n".join(plan.lines())
    print(lines)
    assert "image: tinyguest" in lines and "stage: full" in lines
    assert f"key pair: bakery-{NAME}: will be created" in lines
    assert f"{NAME}-1: will be created" in lines
    # The real compute limits and network quota APIs answered (no "unavailable").
    assert "instances: needs 1" in lines and "floating IPs: needs 1" in lines
    assert "unavailable" not in lines
    assert bakery_destroy.destroy(config_path=workshop, dry_run=True).items == []
    assert counts(conn, NAME) == dict.fromkeys(
        ("servers", "floating_ips", "security_groups", "keypairs"), 0
    )


def test_security_group_reconciled_and_owned_exactly(conn: Any, workshop: Path) -> None:
    from bakery.providers.openstack.api import connect

    short = load_config(workshop)
    short = short.model_copy(
        update={"openstack": short.openstack.model_copy(update={"admin_cidr": "0.0.0.0/0"})}
    )
    long = short.model_copy(update={"name": f"{NAME}-advanced"})
    bconn = connect(short)
    groups = []
    try:
        for cfg in (short, long):
            group, made = rules.ensure_security_group(bconn, cfg)
            assert made is not None
            groups.append(group)
        # admin_cidr narrows to an IPv6 network: the world-open ssh rule goes, an IPv6 one comes.
        narrowed = short.model_copy(
            update={"openstack": short.openstack.model_copy(update={"admin_cidr": "2001:db8::/48"})}
        )
        group, made = rules.ensure_security_group(bconn, narrowed)
        assert made is None and group.id == groups[0].id
        ssh = [
            (r.ether_type, r.remote_ip_prefix)
            for r in conn.network.security_group_rules(security_group_id=group.id)
            if r.direction == "ingress" and r.port_range_min == 22
        ]
        assert ssh == [("IPv6", "2001:db8::/48")]
        # destroy of the shorter name plans only its own group.
        plan = bakery_destroy.plan_destroy(bconn, short, workshop)
        assert plan.lines() == [f"security group bakery-{NAME}"]
    finally:
        for group in groups:
            conn.network.delete_security_group(group, ignore_missing=True)
