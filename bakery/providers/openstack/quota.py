"""What a launch adds to the project's usage, against the compute, network and volume quotas."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bakery.config.workshop import Workshop
from bakery.errors import BakeryError
from bakery.providers.openstack.api import api, find_network
from bakery.providers.openstack.boot import root_disk
from bakery.providers.openstack.resources import (
    existing_keypair,
    workshop_floating_ips,
    workshop_servers,
)
from bakery.topology import Part, Topology, estimate
from bakery.workshop.names import key_name

if TYPE_CHECKING:
    from openstack.connection import Connection


@dataclass
class Need:
    """What the launch adds to the project's usage."""

    servers: int = 0
    vcpus: int = 0
    ram_mib: int = 0
    floating_ips: int = 0
    security_groups: int = 0
    rules: int = 0
    keypairs: int = 0
    volumes: int = 0  # boot volumes (openstack.boot_volume)
    volume_gb: int = 0


@dataclass(frozen=True)
class Headroom:
    """One quota against what a launch needs: ``free`` and ``limit`` are None without a limit."""

    label: str
    need: int
    free: int | None = None
    limit: int | None = None
    error: str | None = None  # the limits could not be read

    @property
    def fits(self) -> bool:
        """Whether the need fits (an unreadable or absent limit counts as fitting)."""
        return self.free is None or self.need <= self.free

    def line(self) -> str:
        """``instances: needs 1, 9 free of 10: fits``."""
        if self.error is not None:
            return f"{self.label}: unavailable ({self.error})"
        if self.free is None:
            return f"{self.label}: needs {self.need}, no limit"
        verdict = "fits" if self.fits else "DOES NOT FIT"
        return f"{self.label}: needs {self.need}, {self.free} free of {self.limit}: {verdict}"


def _headroom(label: str, limit: Any, used: Any, need: int) -> Headroom:
    if limit is None or int(limit) < 0:
        return Headroom(label, need)
    return Headroom(label, need, int(limit) - int(used or 0), int(limit))


def headroom(conn: Connection, need: Need) -> list[Headroom]:
    """The compute limits and the network quota against ``need``."""
    out = []
    try:
        limits = api("read compute limits", conn.compute.get_limits).absolute
        keypairs = len(api("list key pairs", lambda: list(conn.compute.keypairs())))
        out += [
            _headroom("instances", limits.instances, limits.instances_used, need.servers),
            _headroom("vCPUs", limits.total_cores, limits.total_cores_used, need.vcpus),
            _headroom("RAM MiB", limits.total_ram, limits.total_ram_used, need.ram_mib),
            _headroom("key pairs", limits.keypairs, keypairs, need.keypairs),
        ]
    except BakeryError as exc:
        out.append(Headroom("compute limits", 0, error=str(exc)))
    try:
        project = conn.current_project_id
        quota = api("read network quota", conn.network.get_quota, project, details=True)
        for label, detail, n in [
            ("floating IPs", quota.floating_ips, need.floating_ips),
            ("security groups", quota.security_groups, need.security_groups),
            ("security group rules", quota.security_group_rules, need.rules),
        ]:
            detail = detail or {}
            used = int(detail.get("used") or 0) + int(detail.get("reserved") or 0)
            out.append(_headroom(label, detail.get("limit"), used, n))
    except BakeryError as exc:
        out.append(Headroom("network quota", 0, error=str(exc)))
    if need.volumes:
        try:
            vol = api("read volume limits", conn.block_storage.get_limits).absolute
            out += [
                _headroom("volumes", vol.max_total_volumes, vol.total_volumes_used, need.volumes),
                _headroom(
                    "volume GB",
                    vol.max_total_volume_gigabytes,
                    vol.total_gigabytes_used,
                    need.volume_gb,
                ),
            ]
        except BakeryError as exc:
            out.append(Headroom("volume limits", 0, error=str(exc)))
    return out


def quota_lines(conn: Connection, need: Need) -> list[str]:
    """The headroom of the compute limits and the network quota for ``need``."""
    return [h.line() for h in headroom(conn, need)]


def floating_ips(
    conn: Connection, cfg: Workshop, topo: Topology, existing: dict[str, Any]
) -> tuple[str, int]:
    """(the plan's floating-IP line, how many a launch allocates): one per machine trainees
    log in to that has none yet."""
    name = cfg.openstack.floating_ip_network
    if name is None:
        return "none (openstack.floating_ip_network unset: servers keep their fixed addresses)", 0
    net = find_network(conn, name, "openstack.floating_ip_network")
    attached = {(ip.port_details or {}).get("device_id") for ip in workshop_floating_ips(conn, cfg)}
    need = sum(
        1 for m in topo.hubs if m.name not in existing or existing[m.name].id not in attached
    )
    return f"from {net.name} ({net.id}); {need} to allocate", need


def launch_need(
    conn: Connection,
    cfg: Workshop,
    topo: Topology,
    flavors: dict[Part, Any],
    *,
    rules: int,
    new_group: bool,
    config_dir: Path | None = None,
) -> Need:
    """What a launch of ``topo`` adds to the project (what exists is reused): each new
    machine with its part's flavor, the floating IPs, the group and its ``rules``, the key."""
    existing = {s.name: s for s in workshop_servers(conn, cfg)}
    new = [m for m in topo.machines if m.name not in existing]
    _, fip_need = floating_ips(conn, cfg, topo, existing)
    name = key_name(cfg)
    new_key = name is not None and cfg.openstack.public_key is not None
    disks = [
        root_disk(cfg, flavors[m.part], estimate(cfg, m.part, config_dir).disk_gb).volume_gb
        for m in new
    ]
    volumes = [gb for gb in disks if gb is not None]
    return Need(
        servers=len(new),
        vcpus=sum(int(flavors[m.part].vcpus) for m in new),
        ram_mib=sum(int(flavors[m.part].ram) for m in new),
        floating_ips=fip_need,
        security_groups=int(new_group),
        rules=rules,
        keypairs=int(new_key and existing_keypair(conn, cfg) is None),
        volumes=len(volumes),
        volume_gb=sum(volumes),
    )
