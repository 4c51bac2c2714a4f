"""`bakery status`: the workshop's servers as the cloud shows them, and a swarm's nodes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bakery.config.workshop import Workshop, load_config
from bakery.providers.openstack import servers, swarm
from bakery.providers.openstack.api import connect
from bakery.providers.openstack.resources import workshop_floating_ips, workshop_servers
from bakery.providers.openstack.servers import ServerInfo, server_fault, server_info
from bakery.topology import Topology, topology
from bakery.workshop import expiry

if TYPE_CHECKING:
    from openstack.connection import Connection


@dataclass
class WorkshopStatus:
    """`bakery status`: every server, and a swarm's nodes as its manager sees them."""

    workshop: Workshop
    servers: list[ServerInfo]
    swarm: swarm.ClusterStatus | None = None

    def lines(self) -> list[str]:
        """`bakery status` as text: the workshop's end, a line per server, a swarm's nodes."""
        out = []
        ends = expiry.describe(self.workshop, servers=len(self.servers))
        if ends:
            out.append(ends)
        if not self.servers:
            return [*out, "no servers"]
        for s in self.servers:
            where = s.floating_ip or ", ".join(s.addresses) or "-"
            fault = f"  fault: {s.fault}" if s.fault else ""
            config = f"  config: {s.config}" if s.config else ""
            out.append(
                f"{s.name}  {s.status}  {where}  hub: {s.hub}  cloud-init: {s.cloud_init}"
                f"{config}{fault}"
            )
        return out + (self.swarm.lines() if self.swarm else [])

    def show_config(self, states: dict[str, str]) -> None:
        """Each server that is up: whether it matches the workshop file (``states``, by name;
        ``"*"`` for all: bakery.day.update.config_states)."""
        for info in self.servers:
            if info.status == "ACTIVE" and info.cloud_init == "done":
                info.config = states.get(info.name) or states.get("*")

    @property
    def any_up(self) -> bool:
        return any(i.hub == "ok" for i in self.servers)

    def as_json(self) -> str:
        """`bakery status --json`: the workshop, its servers, its expiry (`expiry.state`) and a
        swarm's nodes under ``swarm``."""
        return status_json(
            self.workshop, self.servers, self.swarm.as_dict() if self.swarm else None
        )


def status(*, config_path: Path, identity: Path | None = None) -> WorkshopStatus:
    """The workshop's servers with state, addresses, hub health and cloud-init progress; a
    swarm's nodes and trainees too, asked over ssh from the manager (``identity``: its key)."""
    cfg = load_config(config_path)
    topo = topology(cfg)
    conn = connect(cfg)
    infos = server_infos(conn, cfg, topo)
    result = WorkshopStatus(cfg, infos)
    if topo.workers:
        result.swarm = swarm.swarm_status(conn, cfg, config_path, infos, identity)
    return result


def server_infos(conn: Connection, cfg: Workshop, topo: Topology) -> list[ServerInfo]:
    """Each of the workshop's servers as `status` shows it (a swarm's workers: no hub)."""
    fips = {
        ip.port_details.get("device_id") if ip.port_details else None: ip
        for ip in workshop_floating_ips(conn, cfg)
    }
    infos = []
    for server in workshop_servers(conn, cfg):
        fip = fips.get(server.id)
        info = server_info(server, str(fip.floating_ip_address) if fip else None)
        if server.status == "ERROR":
            info.fault = server_fault(server)
        machine = topo.machine(server.name)
        if machine is not None and not machine.serves_hub:
            info.url, info.hub = None, "none (a swarm worker)"
            if server.status == "ACTIVE":
                info.cloud_init, _ = servers.console_state(conn, server, cfg)
        elif info.ip and server.status == "ACTIVE":
            info.hub = servers.hub_health(info.ip)
            info.cloud_init, _ = servers.console_state(conn, server, cfg)
        infos.append(info)
    return infos


def status_json(cfg: Workshop, infos: list[ServerInfo], swarm: dict[str, Any] | None = None) -> str:
    """`bakery status --json`: the workshop, its servers and its expiry (see `expiry.state`);
    a swarm's nodes as the manager sees them under ``swarm``."""
    doc = {"workshop": cfg.name, "servers": [asdict(i) for i in infos], "expiry": expiry.state(cfg)}
    if swarm is not None:
        doc["swarm"] = swarm
    return json.dumps(doc, indent=2, sort_keys=True)
