"""Which running machines the workshop-day commands reach over ssh: the hubs, and where."""

from __future__ import annotations

from dataclasses import dataclass, field

from bakery.config.workshop import Workshop
from bakery.errors import UsageError
from bakery.providers.openstack.api import connect
from bakery.providers.openstack.resources import workshop_floating_ips, workshop_servers
from bakery.providers.openstack.servers import addresses
from bakery.ssh import Target, parse_host
from bakery.workshop.names import worker_number


@dataclass
class Hubs:
    """The workshop's hubs as ssh finds them: the ones it can reach, and the others with why."""

    reachable: list[Target] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)  # server name -> why


@dataclass
class Servers:
    """Every server of a workshop (hubs and a swarm's workers) as ssh reaches them, the others
    with why, and every name the cloud has (for counting)."""

    reachable: list[Target] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    all_names: list[str] = field(default_factory=list)


def _cloud_scan(cfg: Workshop) -> tuple[Hubs, Hubs, list[str]]:
    """The workshop's servers in the cloud, each ACTIVE one with an address or else why not: its
    hubs (by the floating IP when there is one), a swarm's workers (by their own address), and
    every server's name."""
    conn = connect(cfg)
    fips = {
        (ip.port_details or {}).get("device_id"): str(ip.floating_ip_address)
        for ip in workshop_floating_ips(conn, cfg)
    }
    hubs, workers, names = Hubs(), Hubs(), []
    for server in workshop_servers(conn, cfg):
        names.append(server.name)
        own = next(iter(addresses(server)), None)
        worker = worker_number(cfg, server.name) is not None
        ip = own if worker else fips.get(server.id) or own
        part = workers if worker else hubs
        if server.status == "ACTIVE" and ip:
            part.reachable.append(Target(server.name, ip))
        else:
            part.unreachable[server.name] = (
                f"{server.status}" if server.status != "ACTIVE" else "ACTIVE without an address"
            )
    return hubs, workers, names


def every_server(cfg: Workshop, hosts: list[str] | None = None) -> Servers:
    """``--host`` targets when given, else every server of the workshop in the cloud: a hub by
    its floating IP, a swarm's worker by its own address through the manager (ssh's jump).

    Raises:
        UsageError: no server to reach.
    """
    if hosts:
        return Servers([parse_host(h) for h in hosts], {}, list(hosts))
    hubs, workers, names = _cloud_scan(cfg)
    found = Servers(list(hubs.reachable), {**hubs.unreachable, **workers.unreachable}, names)
    manager = next(iter(hubs.reachable), None)
    for w in workers.reachable:
        if manager is None:
            found.unreachable[w.name] = "reached through the manager, which is not running"
        else:
            found.reachable.append(Target(w.name, w.host, w.port, via=manager))
    if not found.reachable and not found.unreachable:
        raise UsageError(
            f"no running server of workshop {cfg.name} (see `bakery status`); for a VM "
            "elsewhere pass --host HOST[:PORT] (a `bakery try` VM: 127.0.0.1:SSH_PORT)"
        )
    return found


def cloud_hubs(cfg: Workshop) -> Hubs:
    """The workshop's servers that hold accounts (the hubs; a swarm's workers hold none): the
    ACTIVE ones with an address (the floating IP when there is one), and the others.

    Every hub the cloud has counts, also one a smaller ``openstack.count`` no longer names: its
    trainees' homes are still there.
    """
    return _cloud_scan(cfg)[0]


def cloud_targets(cfg: Workshop) -> list[Target]:
    """The workshop's reachable hubs (see :func:`cloud_hubs`)."""
    return cloud_hubs(cfg).reachable


def hubs(cfg: Workshop, hosts: list[str] | None = None) -> Hubs:
    """``--host`` targets when given (all reachable as far as bakery knows), else the workshop's
    hubs in the cloud."""
    return Hubs([parse_host(h) for h in hosts]) if hosts else cloud_hubs(cfg)


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
