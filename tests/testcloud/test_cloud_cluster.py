"""A swarm cluster on the test cloud, on demand (`make test-cloud-cluster`): manager + 1 worker
launched by `bakery launch` from an uploaded golden image, a trainee's server on the worker, and
nothing of the workshop left after `destroy`. This is where the real MTU (VXLAN, 1450) and the
security group's intra-cluster rules are exercised.

The golden image is a chroot bake of this module's docker workshop (the e2e harness, its user
image from ``userimage.py``: no registry), cached like the e2e images; one image serves both roles.
Long under nested TCG: not part of `make test-cloud` (marked slow); `make test-cloud-cluster`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cloudcount import counts, destroy_leftovers, ensure_flavor

from bakery.layout import CLUSTER_PORTS
from bakery.vm import image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
import baseimage
import userimage
from e2e_harness import Workshop, build_golden, e2e_ssh_key, record, require, workshop_for
from test_try import login, open_server, root_sh, run_cell

# slow: `make test-cloud` (CI) runs "testcloud and not slow"; `make test-cloud-cluster` this.
pytestmark = [pytest.mark.testcloud, pytest.mark.slow]

NAME = "bakery-cluster"
# name, MiB, vCPUs, GB: each member holds docker, the user image and (the worker) two servers.
FLAVOR = ("bakery.cluster", 2560, 2, 12)
BAKERY = str(Path(sys.executable).with_name("bakery"))
CONFIG = """\
name: {name}
os: debian-12
users:
  count: 2
  admins: [teacher]
spawner:
  kind: docker
  image: {image}
  mem_limit: 256M
  cpu_limit: 1
  idle_cull_minutes: 0
  image_archive: {archive}
tls:
  mode: self-signed
ssh:
  authorized_keys:
    - {key}
cluster:
  engine: swarm
  workers: 1
  worker_flavor: {flavor}
openstack:
  cloud: testcloud
  flavor: {flavor}
  networks: [private]
  floating_ip_network: public
  public_key: {key_path}.pub
  active_timeout: 15m
  hub_timeout: 40m
"""
NOTHING = dict.fromkeys(("servers", "floating_ips", "security_groups", "keypairs"), 0)


def bakery(*args: str, timeout: float = 5400) -> subprocess.CompletedProcess[str]:
    """Run the bakery CLI; its progress (stderr) goes to the test's output as it comes."""
    proc = subprocess.run(
        [BAKERY, *args], stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout
    )
    print(proc.stdout, end="")
    return proc


def swarm(config: Path) -> dict[str, Any]:
    """`bakery status --json`'s swarm part (the nodes as the manager sees them)."""
    out = bakery("status", str(config), "--json", timeout=300)
    assert out.returncode == 0
    doc: dict[str, Any] = json.loads(out.stdout)["swarm"]
    return doc


@pytest.fixture(scope="module")
def clouds(cloud_connect: Callable[[str], Any]) -> tuple[Any, Any]:
    demo, admin = cloud_connect("testcloud"), cloud_connect("testcloud-admin")
    ensure_flavor(admin, FLAVOR)
    return demo, admin


@pytest.fixture(scope="module")
def workshop(tmp_path_factory: pytest.TempPathFactory) -> Workshop:
    require(os.geteuid() == 0, "needs root: the golden image is baked in a chroot when missing")
    key = e2e_ssh_key()
    archive = userimage.ensure_user_image()
    config = tmp_path_factory.mktemp("cluster") / "workshop.yaml"
    config.write_text(
        CONFIG.format(
            name=NAME,
            image=f"bakery/e2e-notebook:{archive.parent.name[:12]}",
            archive=json.dumps(
                {"path": str(archive), "format": "rootfs", **userimage.IMPORT_SETTINGS}
            ),
            key=key.with_suffix(".pub").read_text().strip(),
            flavor=FLAVOR[0],
            key_path=key,
        )
    )
    return workshop_for(config, key=key, https_port=443, ssh_port=22)


@pytest.fixture(scope="module")
def golden(workshop: Workshop) -> Path:
    given = os.environ.get("BAKERY_TESTCLOUD_GOLDEN")
    path = Path(given) if given else build_golden(baseimage.ensure_base_image(), workshop.config)
    assert image.read_sidecar(path)["record"]["workshop"] == NAME
    return path


@pytest.fixture
def cleanup(clouds: tuple[Any, Any], workshop: Workshop) -> Iterator[list[str]]:
    demo, _ = clouds
    images: list[str] = []
    yield images
    destroy_leftovers(workshop.config)
    for ref in images:
        demo.image.delete_image(ref, ignore_missing=True)


def test_manager_and_a_worker_one_url_a_trainee_on_the_worker_and_back(
    clouds: tuple[Any, Any], workshop: Workshop, golden: Path, cleanup: list[str]
) -> None:
    demo, _ = clouds
    assert counts(demo, NAME) == NOTHING, "leftovers of an earlier run"
    up = bakery("image", "upload", str(workshop.config), str(golden))
    assert up.returncode == 0
    image_name, image_id = up.stdout.split()
    cleanup.append(image_id)

    # 1. launch: manager, then the worker; one URL, once the hub answers through the FIP and the
    # worker is Ready (its progress says when the hub answered).
    start = time.monotonic()
    out = bakery("launch", str(workshop.config), "--image", image_name)
    assert out.returncode == 0
    record("testcloud cluster: launch -> hub answers and worker Ready", time.monotonic() - start)
    assert out.stdout.count("https://") == 1
    first = out.stdout.splitlines()[0]
    assert first.startswith(f"{NAME}-manager: https://") and first.endswith("(hub: ok)")
    fip = first.split("https://", 1)[1].split("/", 1)[0]
    assert counts(demo, NAME) == {
        "servers": 2,
        "floating_ips": 1,
        "security_groups": 1,
        "keypairs": 1,
    }
    group = demo.network.find_security_group(f"bakery-{NAME}")
    intra = [
        r
        for r in demo.network.security_group_rules(security_group_id=group.id)
        if r.remote_group_id
    ]
    assert sorted((r.port_range_min, r.protocol) for r in intra) == sorted(CLUSTER_PORTS)
    assert all(r.remote_group_id == group.id and not r.remote_ip_prefix for r in intra)

    # 2. The worker joined before launch returned: Ready in the swarm (`bakery status`).
    nodes = swarm(workshop.config)["nodes"]
    assert any(n["server"] == f"{NAME}-worker-1" and n["state"] == "ready" for n in nodes), nodes

    # 3. A trainee's server runs on the worker; a cell answers; the file is in the manager's /home.
    w = dataclasses.replace(workshop, host=fip, http_port=80)
    trainee = w.trainees[0]
    start = time.monotonic()
    s, resp = login(w, trainee, w.passwords[trainee])
    assert resp.status_code == 302, f"login: {resp.status_code} {resp.text[:300]}"
    open_server(w, s, trainee, timeout=1800)
    # A kernel started through the REST API without a path runs in the server's own folder, "/"
    # in a cluster (docs/cluster.md); JupyterLab always gives one. So the home is named here.
    code = (
        "import getpass, pathlib\n"
        "(pathlib.Path.home() / 'on-worker.txt').write_text('42')\n"
        "getpass.getuser()"
    )
    assert run_cell(w, s, trainee, code, 600) == f"'{trainee}'"
    record("testcloud cluster: login -> cell answer on the worker", time.monotonic() - start)
    nodes = {n["server"]: n for n in swarm(workshop.config)["nodes"]}
    assert trainee in nodes[f"{NAME}-worker-1"]["trainees"], nodes
    assert trainee not in nodes[f"{NAME}-manager"]["trainees"], nodes
    assert root_sh(w, f"cat /home/{trainee}/on-worker.txt").strip() == "42"

    # 4. `bakery update` (issue 29) reaches both: the manager by its floating IP, the worker
    # through it; the class gets an end, which both keep (each powers itself off after it).
    workshop.config.write_text(workshop.config.read_text() + "ends: 2099-01-01T00:00:00Z\n")
    plan = bakery("update", str(workshop.config), "--dry-run")
    assert plan.returncode == 0
    for name in (f"{NAME}-manager", f"{NAME}-worker-1"):
        assert f"{name}:\n" in plan.stdout and "new /etc/bakery/expiry.json" in plan.stdout
    start = time.monotonic()
    done = bakery("update", str(workshop.config))
    assert done.returncode == 0
    record("testcloud cluster: update (manager and worker)", time.monotonic() - start)
    assert "2099-01-01" in root_sh(w, "cat /etc/bakery/expiry.json")
    again = bakery("update", str(workshop.config))
    assert again.returncode == 0
    for name in (f"{NAME}-manager", f"{NAME}-worker-1"):
        assert f"{name}: matches the workshop file; nothing to do" in again.stdout
    assert run_cell(w, s, trainee, "6 * 7", 600) == "42"  # the trainee's server lived on

    # 5. destroy leaves nothing of the workshop.
    assert bakery("destroy", str(workshop.config), "--yes").returncode == 0
    assert counts(demo, NAME) == NOTHING
