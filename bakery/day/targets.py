"""Which running machines the workshop-day commands reach over ssh: the hubs, and where."""

from __future__ import annotations

from bakery.config.workshop import Workshop
from bakery.errors import UsageError
from bakery.providers.openstack.api import connect
from bakery.providers.openstack.resources import workshop_floating_ips, workshop_servers
from bakery.providers.openstack.servers import addresses
from bakery.ssh import Target, parse_host
from bakery.workshop.names import worker_number


def cloud_targets(cfg: Workshop) -> list[Target]:
    """The workshop's ACTIVE servers that hold accounts (the hubs; a swarm's workers hold none),
    each with an address (the floating IP when there is one).

    Every hub the cloud has counts, also one a smaller ``openstack.count`` no longer names: its
    trainees' homes are still there.
    """
    conn = connect(cfg)
    fips = {
        (ip.port_details or {}).get("device_id"): str(ip.floating_ip_address)
        for ip in workshop_floating_ips(conn, cfg)
    }
    out = []
    for server in workshop_servers(conn, cfg):
        if worker_number(cfg, server.name) is not None:
            continue
        ip = fips.get(server.id) or next(iter(addresses(server)), None)
        if server.status == "ACTIVE" and ip:
            out.append(Target(server.name, ip))
    return out


def targets(cfg: Workshop, hosts: list[str] | None = None) -> list[Target]:
    """``--host`` targets when given, else the workshop's running hubs in the cloud.

    Raises:
        UsageError: no server to reach.
    """
    found = [parse_host(h) for h in hosts] if hosts else cloud_targets(cfg)
    if not found:
        raise UsageError(
            f"no running server of workshop {cfg.name} (see `bakery status`); for a VM "
            "elsewhere pass --host HOST[:PORT] (a `bakery try` VM: 127.0.0.1:SSH_PORT)"
        )
    return found
