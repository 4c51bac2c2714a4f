"""`bakery launch`: the workshop's topology as OpenStack servers, the ordered list of its steps.

The same steps whatever the topology's kind: the servers come up wave by wave (a swarm's
manager, ACTIVE with its address, before the workers that join it), the machines trainees log
in to get a floating IP, and the launch returns once their hubs answer (and a swarm's workers
are Ready). A failure removes what the run created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bakery.config.workshop import Workshop
from bakery.progress import Reporter, quiet
from bakery.providers.openstack import swarm
from bakery.providers.openstack.api import connect
from bakery.providers.openstack.check import refuse_failed_checks
from bakery.providers.openstack.resources import Tracked, cleanup_on_failure, workshop_servers
from bakery.providers.openstack.servers import ServerInfo, wait_hub
from bakery.providers.openstack.steps import (
    Recipe,
    Servers,
    bring_up,
    ensure_access,
    ensure_servers,
    image_ref,
    payloads,
    resolve_basis,
    wait_joinable,
    with_timeouts,
)
from bakery.topology import Topology, topology, workshop_config
from bakery.vm.stages import Stage
from bakery.workshop.accounts import (
    credentials_path,
    ensure_credentials,
    login_line,
    sheet_order,
)
from bakery.workshop.expiry import refuse_if_ended
from bakery.workshop.login import hub_metadata

if TYPE_CHECKING:
    from openstack.connection import Connection


@dataclass
class LaunchResult:
    """What `bakery launch` made and where the hub is."""

    servers: list[ServerInfo]
    created: list[Tracked]
    credentials: Path
    workers: list[ServerInfo] = field(default_factory=list)  # a swarm's (no hub, no URL)
    workers_note: str | None = None  # a swarm's workers not all Ready when launch returned: why

    def lines(self, config_path: Path, *, wait: bool = True) -> list[str]:
        """What `bakery launch` prints: each hub's URL, a swarm's workers, the sheet."""
        out = []
        for server in self.servers:
            hub = f"  (hub: {server.hub})" if wait else ""
            out.append(f"{server.name}: {server.url or 'no address yet'}{hub}")
        if self.workers:
            names = ", ".join(w.name for w in self.workers)
            out.append(f"workers: {names}  (the swarm's nodes: bakery status {config_path})")
        out.append(login_line(self.credentials, config_path))
        return out


def launch(
    *,
    config_path: Path,
    image: str | None = None,
    count: int | None = None,
    stage: Stage | None = None,
    wait: bool = True,
    hub_timeout: str | int | None = None,
    active_timeout: str | int | None = None,
    check: bool = False,
    progress: Reporter = quiet,
) -> LaunchResult:
    """Ensure the key pair, security group, servers and floating IPs; wait for the hub(s).

    Idempotent: servers, groups and IPs that exist are reused. A failure removes what this run
    created and raises with the cloud's own message.

    Args:
        count: hubs instead of ``openstack.count`` (not for a swarm).
        hub_timeout: how long to wait for ``/hub/health`` (default ``openstack.hub_timeout``).
        active_timeout: how long a server may take to be ACTIVE (``openstack.active_timeout``).
            Both in seconds or as ``90s``, ``15m``, ``1h``.
        check: run `bakery check`'s pre-flight checks first; refuse (nothing created) when one
            fails.
    """
    cfg = with_timeouts(workshop_config(config_path, count), hub_timeout, active_timeout)
    refuse_if_ended(cfg)  # its VM would refuse every trainee and power itself off
    ref = image_ref(cfg, image)
    sheet = credentials_path(config_path)
    topo = topology(cfg, sheet_order(sheet))  # a count it cannot fill: before the cloud is read
    conn = connect(cfg)
    if check:
        refuse_failed_checks(conn, cfg, ref, progress, Path(config_path).parent)
    parts = [m.part for m in topo.machines]
    basis = resolve_basis(conn, cfg, parts, ref, stage, progress, Path(config_path).parent)
    # Every machine's user-data before anything is created: a size error costs nothing.
    recipe = Recipe(basis, {}, payloads(cfg, topo, ensure_credentials(cfg, sheet), basis.stage))
    recipe.hub_meta = hub_metadata(cfg)
    with cleanup_on_failure(conn, progress) as made:
        recipe.shared = ensure_access(conn, cfg, config_path, made, progress)
        servers = Servers({s.name: s for s in workshop_servers(conn, cfg)})
        _report_others(topo, servers, progress)
        _ensure_waves(conn, cfg, topo, servers, recipe, made, progress)
        infos = bring_up(conn, cfg, topo, servers, basis, made, progress)
        hubs = [infos[m.name] for m in topo.hubs]
        if wait:
            raw = {m.name: servers.ready[m.name] for m in topo.hubs}
            wait_hub(conn, cfg, hubs, raw, cfg.openstack.hub_timeout, progress)
    result = LaunchResult(hubs, list(made), sheet, [infos[m.name] for m in topo.workers])
    if wait and topo.workers:
        # Outside the clean-up: everything is made and the hub answers, whatever happens now.
        result.workers_note = swarm.wait_workers_ready(
            conn, cfg, config_path, hubs[0], cfg.openstack.hub_timeout, progress
        )
    return result


def _ensure_waves(
    conn: Connection,
    cfg: Workshop,
    topo: Topology,
    servers: Servers,
    recipe: Recipe,
    made: list[Tracked],
    progress: Reporter,
) -> None:
    """Get or create the servers wave by wave: a wave that others join is ACTIVE with its
    address before the next one is created (with what joining needs in its metadata)."""
    joined: dict[str, str] = {}
    for i, wave in enumerate(topo.waves):
        for machine in wave:
            found = servers.found.get(machine.name)
            recipe.metadata[machine.name] = swarm.member_metadata(cfg, machine, found, joined)
        ensure_servers(conn, cfg, wave, servers, recipe, made, progress)
        if i < len(topo.waves) - 1:
            wait_joinable(conn, cfg, wave, servers, progress)
            joined = swarm.joining(cfg, [servers.ready[m.name] for m in wave])


def _report_others(topo: Topology, servers: Servers, progress: Reporter) -> None:
    """Say which of the workshop's servers the topology does not name (kept: a launch never
    deletes; `bakery scale` or `bakery destroy` does)."""
    for name, server in servers.found.items():
        if topo.machine(name) is None:
            progress(
                f"server {name}: exists ({server.status}), kept, not part of the workshop as "
                "configured now"
            )
