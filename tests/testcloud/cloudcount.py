"""A workshop's resources counted through the cloud's API, and removed after a test; the flavors
the test-cloud tests use."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path
from typing import Any

from bakery.errors import BakeryError
from bakery.progress import Reporter, quiet
from bakery.providers.openstack import destroy as bakery_destroy

# name, MiB, vCPUs, GB
HUB_FLAVOR = ("bakery.hub", 3072, 2, 10)  # a hub and two trainee servers


def ensure_flavor(admin: Any, flavor: tuple[str, int, int, int]) -> None:
    """Create ``flavor`` (with the admin connection) unless the cloud has it.

    Each module that names a flavor makes it itself: a fresh test cloud has only m1.tiny,
    and modules run alone or in any order.
    """
    name, ram, vcpus, disk = flavor
    if admin.compute.find_flavor(name) is None:
        admin.compute.create_flavor(name=name, ram=ram, vcpus=vcpus, disk=disk)


def counts(conn: Any, name: str) -> dict[str, int]:
    """What exists of workshop ``name``, counted through the API."""
    token = f"bakery:workshop={name}"
    return {
        "servers": sum(
            1
            for s in conn.compute.servers(details=True)
            if (s.metadata or {}).get("bakery_workshop") == name
        ),
        "floating_ips": sum(
            1 for ip in conn.network.ips() if token in (ip.description or "").split()
        ),
        "security_groups": sum(
            1 for g in conn.network.security_groups() if g.name == f"bakery-{name}"
        ),
        "keypairs": sum(1 for k in conn.compute.keypairs() if k.name == f"bakery-{name}"),
    }


def tinyguest_workshop(folder: Path, name: str, cloud: str) -> Path:
    """A workshop on ``cloud`` booting the test cloud's tinyguest (no hub: launch with
    ``wait=False``), with a key pair of its own in ``folder``."""
    key = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = folder / "workshop.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            name: {name}
            users: {{count: 2}}
            openstack:
              cloud: {cloud}
              image: tinyguest
              flavor: m1.tiny
              networks: [private]
              floating_ip_network: public
              public_key: {key}.pub
              hub_timeout: 1m
            """
        )
    )
    return config


def ports_of(conn: Any, server_ids: list[str]) -> int:
    """Neutron ports still bound to any of ``server_ids`` (a deleted server's should be gone)."""
    return sum(1 for p in conn.network.ports() if p.device_id in server_ids)


def project_volumes(conn: Any) -> int:
    """The project's Cinder volumes (0 on a cloud without block storage)."""
    if not conn.has_service("block-storage"):
        return 0
    return sum(1 for _ in conn.block_storage.volumes())


def destroy_leftovers(config: Path, progress: Reporter = quiet) -> None:
    """`bakery destroy` of whatever a test left of ``config``'s workshop, so the next run starts
    clean; a failure is printed, not raised (the test's own error is the one that counts)."""
    try:
        bakery_destroy.destroy(config_path=config, progress=progress)
    except BakeryError as exc:
        print(f"cleanup: {exc}")
