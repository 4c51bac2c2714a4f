"""`bakery scale`: add workers to a swarm, or drain and remove the highest-numbered ones."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bakery.config.workshop import Workshop, load_config
from bakery.errors import BakeryError, CloudError, UsageError
from bakery.layout import META_STAGE
from bakery.progress import Reporter, quiet
from bakery.providers.openstack import swarm
from bakery.providers.openstack.api import connect, find_image
from bakery.providers.openstack.flavors import choose_flavor
from bakery.providers.openstack.resources import Tracked, cleanup_on_failure, delete_all
from bakery.providers.openstack.steps import (
    Basis,
    Recipe,
    Servers,
    boot_basis,
    bring_up,
    ensure_access,
    ensure_servers,
)
from bakery.topology import Part, Topology, machine_config, refuse_unless_swarm, topology
from bakery.vm.stages import Stage
from bakery.vm.userdata import user_data_b64
from bakery.workshop.names import manager_name

if TYPE_CHECKING:
    from openstack.connection import Connection

# Swarm's task states that hold (or are about to hold) a container on a node.
LIVE_TASK_STATES = frozenset(
    {"new", "pending", "assigned", "accepted", "ready", "preparing", "starting", "running"}
)
DRAIN_TIMEOUT = 600.0
# cluster.workers' own bound (bakery.config.sections.Cluster).
MAX_WORKERS = 50


@dataclass
class ScalePlan:
    """What `bakery scale` adds and removes (a dry run: would add and remove)."""

    workshop: str
    workers: int  # the size asked for
    current: list[str]
    add: list[str]
    remove: list[str]
    flavor: str = ""

    def lines(self) -> list[str]:
        """One line per change."""
        now = ", ".join(self.current) or "none"
        out = [f"workshop {self.workshop}: {len(self.current)} workers now ({now})"]
        out += [f"  add {name} ({self.flavor})" for name in self.add]
        out += [f"  drain and remove {name}" for name in self.remove]
        if not self.add and not self.remove:
            out.append(f"  nothing to do: {self.workers} workers already")
        return out

    @property
    def warning(self) -> str | None:
        """What removing workers costs the trainees (None: nothing is removed)."""
        if not self.remove:
            return None
        return (
            "the trainees' servers running on the removed workers are stopped (their files stay "
            "in /home on the manager); they start a new server from the hub's home page"
        )


def scale(
    *,
    config_path: Path,
    workers: int,
    image: str | None = None,
    identity: Path | None = None,
    dry_run: bool = False,
    confirm: Callable[[ScalePlan], bool] = lambda plan: True,
    progress: Reporter = quiet,
) -> ScalePlan:
    """`bakery scale CONFIG --workers N`: add workers up to N, or drain and remove the
    highest-numbered ones down to N. A dry run only plans.

    Raises:
        UsageError: not a cluster, N below 1, or no manager to scale.
    """
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(
            f"--workers {workers}: a cluster keeps at least 1 worker and at most {MAX_WORKERS} "
            "(cluster.workers' range)"
        )
    cfg = load_config(config_path)
    refuse_unless_swarm(cfg, "scale")
    conn = connect(cfg)
    manager, existing = swarm.cluster_servers(conn, cfg)
    if manager is None:
        raise UsageError(f"no server {manager_name(cfg)}: `bakery launch {config_path}` first")
    going = [existing[n] for n in sorted(existing) if n > workers][::-1]
    wanted = topology(cfg, workers=workers)
    new = [m for m in wanted.workers if m.number not in existing]
    plan = ScalePlan(
        cfg.name,
        workers,
        [s.name for s in existing.values()],
        [m.name for m in new],
        [s.name for s in going],
    )
    if new:
        plan.flavor = str(choose_flavor(conn, cfg, "worker").name)
    if dry_run or not (new or going):
        return plan
    if going and not confirm(plan):
        raise BakeryError("not confirmed; nothing removed")
    if new:
        adding = Topology(wanted.workshop, wanted.kind, tuple(new))
        _add_workers(conn, cfg, config_path, manager, adding, image, progress)
    if going:
        _remove_workers(conn, cfg, config_path, manager, going, identity, progress)
    if workers != cfg.cluster.workers:
        progress(
            f"cluster.workers in {config_path} is {cfg.cluster.workers}: set it to {workers} so "
            "that a later `bakery launch` keeps this size"
        )
    return plan


def _scale_basis(conn: Connection, cfg: Workshop, manager: Any, image: str | None) -> Basis:
    """How new workers are made (looked up, nothing created): the manager's image and stage,
    the workers' flavor and networks, no floating IP."""
    ref = image or (manager.image or {}).get("id") or cfg.openstack.image
    if not ref:
        raise UsageError(
            f"{manager.name} boots from a volume: pass --image (the golden image it came from)"
        )
    img = find_image(conn, str(ref))
    stage: Stage = "boot" if (manager.metadata or {}).get(META_STAGE) == "boot" else "full"
    flavors: dict[Part, Any] = {"worker": choose_flavor(conn, cfg, "worker")}
    return boot_basis(conn, cfg, img, stage, flavors, None)


def _add_workers(
    conn: Connection,
    cfg: Workshop,
    config_path: Path,
    manager: Any,
    adding: Topology,
    image: str | None,
    progress: Reporter,
) -> None:
    """Boot the workers of ``adding`` as a launch boots them: the manager's secret and address
    in their metadata (read back from the manager), its image and stage."""
    basis = _scale_basis(conn, cfg, manager, image)
    joined = swarm.joining(cfg, [manager])
    payloads = {
        m.name: user_data_b64(machine_config(cfg, m), None, basis.stage, m.role)
        for m in adding.machines
    }
    with cleanup_on_failure(conn, progress) as made:
        shared = ensure_access(conn, cfg, config_path, made, progress)
        recipe = Recipe(basis, shared, payloads, {m.name: joined for m in adding.machines})
        servers = Servers({})
        ensure_servers(conn, cfg, adding.machines, servers, recipe, made, progress)
        bring_up(conn, cfg, adding, servers, basis, made, progress)


def _remove_workers(
    conn: Connection,
    cfg: Workshop,
    config_path: Path,
    manager: Any,
    going: list[Any],
    identity: Path | None,
    progress: Reporter,
) -> None:
    """Drain ``going`` (worker servers) out of the swarm, then delete them."""
    host = swarm.manager_address(conn, cfg, manager)
    if host is None:
        raise CloudError(f"{manager.name} has no address to reach it by ssh")
    shell = swarm.manager_shell(cfg, config_path, manager.name, host, identity)
    drain_and_remove(shell, cfg, going, progress)
    items = [Tracked("server", str(s.id), s.name) for s in going]
    errors = delete_all(conn, items, progress)
    if errors:
        raise CloudError("deleting the drained workers failed:\n  " + "\n  ".join(errors))


def drain_and_remove(
    shell: swarm.Shell,
    cfg: Workshop,
    going: list[Any],
    progress: Reporter,
    timeout: float = DRAIN_TIMEOUT,
) -> None:
    """Drain the swarm nodes of ``going`` (servers), wait until none runs a task, remove them
    from the swarm. A server that never joined has no node and is skipped.

    Raises:
        BakeryError: ssh or docker failed, or a node still runs tasks after ``timeout``.
    """
    nodes, _ = swarm.swarm_state(shell)
    found = [(s, swarm.node_of(nodes, s, cfg.openstack.networks)) for s in going]
    for server, node in found:
        if node is None:
            progress(f"{server.name}: no swarm node (it never joined): nothing to drain")
        else:
            shell(["docker", "node", "update", "--availability", "drain", node.id])
            progress(f"{server.name}: draining its swarm node ({len(node.trainees)} servers)")
    for server, node in found:
        if node is None:
            continue
        _wait_drained(shell, server.name, node.id, timeout, progress)
        shell(["docker", "node", "rm", "--force", node.id])
        progress(f"{server.name}: removed from the swarm")


def _wait_drained(
    shell: swarm.Shell, name: str, node_id: str, timeout: float, progress: Reporter
) -> None:
    start = time.monotonic()
    while True:
        out = shell(["docker", "node", "ps", node_id, "--format", "{{.CurrentState}}"])
        live = [
            s
            for s in out.splitlines()
            if s.split()[:1] and s.split()[0].lower() in LIVE_TASK_STATES
        ]
        if not live:
            return
        if time.monotonic() - start > timeout:
            raise BakeryError(
                f"{name}: {len(live)} tasks still run {timeout:.0f} s after the drain; nothing "
                "was deleted: see `docker node ps` on the manager, then run scale again"
            )
        progress(f"{name}: {len(live)} tasks still stopping", transient=True)
        time.sleep(5)
