"""Which flavor each machine gets: the configured one, or the smallest that holds its estimate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bakery.config.workshop import Workshop, load_config
from bakery.errors import NotFoundError
from bakery.providers.openstack.api import api, connect, find_flavor
from bakery.topology import Part, estimate, topology
from bakery.workshop.sizing import Estimate, smallest_flavor, with_overrides, workers_for

if TYPE_CHECKING:
    from openstack.connection import Connection


def configured(cfg: Workshop, part: Part) -> tuple[str, str]:
    """(the flavor the config names for ``part``, or ``auto``; the config key that names it)."""
    if part == "worker":
        return cfg.cluster.worker_flavor, "cluster.worker_flavor"
    return cfg.openstack.flavor, "openstack.flavor"


def choose_flavor(
    conn: Connection, cfg: Workshop, part: Part | None = None, config_dir: Path | None = None
) -> Any:
    """The flavor of a ``part`` machine (None: the one trainees log in to, a hub or a swarm's
    manager): the configured one, or with ``auto`` the smallest that holds its estimate
    (`bakery size`; with ``config_dir``, the content folders on its disk)."""
    part = part or topology(cfg).hubs[0].part
    name, key = configured(cfg, part)
    if name != "auto":
        return find_flavor(conn, name, key)
    return auto_flavor(conn, cfg, estimate(cfg, part, config_dir))


def auto_flavor(conn: Connection, cfg: Workshop, need: Estimate) -> Any:
    """The smallest flavor that holds ``need``."""
    flavors = api("list flavors", lambda: list(conn.compute.flavors(details=True)))
    table = [
        {"name": f.name, "ram": f.ram, "vcpus": f.vcpus, "disk": f.disk, "obj": f} for f in flavors
    ]
    volume = cfg.openstack.boot_volume
    # A flavor with a root disk first; one without (it boots from a volume) when none fits,
    # as on a cloud whose flavors all have disk 0.
    best = smallest_flavor(
        [f for f in table if volume or f["disk"]], need, boot_volume=volume
    ) or smallest_flavor([f for f in table if not f["disk"]], need, boot_volume=True)
    if best is None:
        raise NotFoundError(
            f"no flavor fits {need.memory_mib} MiB, {need.vcpus} vCPUs, {need.disk_gb} GB; "
            "raise openstack.count to split the trainees, or name a flavor"
        )
    return best["obj"]


def explain_flavor(
    conn: Connection, cfg: Workshop, part: Part, config_dir: Path
) -> tuple[Any, str]:
    """A hub's (or manager's) flavor and the plan's line for it: which one, and why."""
    name, key = configured(cfg, part)
    if name != "auto":
        flavor = find_flavor(conn, name, key)
        why = key
    else:
        need = estimate(cfg, part, config_dir)
        flavor = auto_flavor(conn, cfg, need)
        content = f", {need.content_mb:,} MB of it content" if need.content_mb else ""
        why = (
            f"auto: the smallest that holds the estimate for {need.users} accounts "
            f"({need.memory_mib} MiB, {need.vcpus} vCPUs, {need.disk_gb} GB{content}; "
            "`bakery size`)"
        )
    text = f"{flavor.name} ({flavor.vcpus} vCPUs, {flavor.ram} MiB, {flavor.disk} GB): {why}"
    return flavor, text


def worker_flavor_lines(conn: Connection, cfg: Workshop, config_dir: Path) -> tuple[Any, list[str]]:
    """The workers' flavor and the plan's cluster lines (`launch --dry-run`, `size --flavors`):
    which flavor, why, and a warning when the class needs more workers of it."""
    need = estimate(cfg, "worker", config_dir)
    name, key = configured(cfg, "worker")
    if name != "auto":
        flavor = find_flavor(conn, name, key)
        why = key
    else:
        flavor = auto_flavor(conn, cfg, need)
        why = (
            f"auto: the smallest that holds a worker's share, {need.trainees} trainees' and "
            f"{need.admins} admins' servers ({need.memory_mib} MiB, {need.vcpus} vCPUs, "
            f"{need.disk_gb} GB; `bakery size`)"
        )
    on = " and the manager" if cfg.cluster.manager_runs_servers else ""
    lines = [
        f"cluster: swarm, one hub on {topology(cfg).hubs[0].name}, the trainees' servers on "
        f"{cfg.cluster.workers} workers{on}",
        f"worker flavor: {flavor.name} ({flavor.vcpus} vCPUs, {flavor.ram} MiB, "
        f"{flavor.disk} GB): {why}",
    ]
    needed = workers_for(cfg, int(flavor.ram))
    if needed > cfg.cluster.workers:
        lines.append(
            f"  warning: {flavor.name} holds fewer servers than a worker's share: the class "
            f"needs {needed} workers of it (cluster.workers is {cfg.cluster.workers})"
        )
    return flavor, lines


def size_flavor_lines(conn: Connection, cfg: Workshop, config_dir: Path) -> list[str]:
    """`bakery size --flavors`: the smallest fitting flavor of each part of the workshop (a
    swarm: the manager's, then the workers' and how many of them the class needs)."""
    topo = topology(cfg)
    hub = topo.hubs[0]
    flavor = auto_flavor(conn, cfg, estimate(cfg, hub.part))
    role = "the manager's " if hub.part == "manager" else ""
    lines = [
        f"{role}smallest fitting flavor: {flavor.name} ({flavor.vcpus} vCPUs, "
        f"{flavor.ram} MiB, {flavor.disk} GB)"
    ]
    if topo.workers:
        lines += [line.strip() for line in worker_flavor_lines(conn, cfg, config_dir)[1][1:]]
    return lines


def size_flavors(
    *,
    config_path: Path,
    data_gb: float | None = None,
    concurrency: float | None = None,
    mem_limit: str | None = None,
) -> list[str]:
    """`bakery size CONFIG --flavors`: :func:`size_flavor_lines` of the config's cloud, with the
    options given replacing the config's values."""
    cfg = with_overrides(
        load_config(config_path), data_gb=data_gb, concurrency=concurrency, mem_limit=mem_limit
    )
    return size_flavor_lines(connect(cfg), cfg, Path(config_path).parent)
