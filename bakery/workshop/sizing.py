"""`bakery size`: memory, CPU and disk a workshop VM needs, and the smallest fitting flavor.

The rules (the 2016 recipe's, held against measurements on the e2e VM here; docs/architecture.md):

- Base: the OS, Docker, nginx, configurable-http-proxy and the hub take about 1 GiB of memory
  (measured: hub 144 MiB, proxy 90 MiB, the whole guest ~420 MiB before any trainee server).
- Each *active* trainee: :data:`PER_USER_MEMORY` (160 MiB, measured) for an idle notebook server
  and kernel, plus 5x the data they load (pandas and friends keep several copies of a data set in
  memory). ``concurrency`` is the share of trainees active at once (1.0 for a hands-on class).
- The per-trainee ``mem_limit`` caps what one trainee can take; the estimate never assumes more.
- CPU: one core per four active trainees, at least two.
- Disk: 20 GB for the system and the user image, plus 0.5 GB and their data per trainee (homes).

A swarm cluster (``cluster.engine: swarm``) splits the same rules over its VMs: the manager runs
the system, hub, proxy and NFS (the base) and holds every home on its disk; each worker runs its
share of the servers (the class spread evenly over the workers, and the manager too with
``manager_runs_servers``) with the base for its system and Docker, and no homes (they are the
manager's, over NFS).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from bakery.config.units import canonical_mem_limit, parse_size
from bakery.config.workshop import Workshop
from bakery.errors import UsageError

GIB = 1024**3
MIB = 1024**2
BASE_MEMORY = 1 * GIB
# Measured 2026-11-27 (issue 15): memory.current of each trainee's systemd unit cgroup
# (jupyter-NAME-singleuser.service: JupyterLab 4.3.5 + one idle python3 kernel), servers idle 60 s
# after `bench/class_bench.py` on the e2e golden VM (Debian 12, 2 vCPU, TCG): twenty servers
# 137-154 MiB, mean 141, memory.peak 156; ten 137-150, six 141-150. The docker spawner's
# containers (docker-ID.scope, the e2e user image): four 141-149 MiB, mean 144. Rounded up past
# the peak to 160 MiB (2016 rule: 200).
PER_USER_MEMORY = 160 * MIB
# The share of a VM's memory its kernel keeps (page structures, its own code and data): the guest
# sees the rest as MemTotal, and the hub's active_server_limit counts from that. Measured
# 2026-12-06: an 18,080 MiB guest (Debian 12) saw 17,648 MiB (2.4 %), and so held 39 servers of
# 416 MiB where the estimate had counted 41 (40 trainees and the admin). Rounded up to 3 %.
KERNEL_SHARE = 0.03
DATA_FACTOR = 5
USERS_PER_CORE = 4
# JupyterHub's own limits (rendered into jupyterhub_config.py, which applies them to the VM it
# runs on). Starting a server is the CPU-heavy moment (JupyterLab's imports and extension scan):
# ten at once on 2 vCPUs left four past a 180 s http_timeout (issue 15). Over the limit a trainee
# gets the hub's "Too many users trying to log in right now, try again" page (HTTP 429), not a hang.
SPAWNS_PER_CPU = 2
# A first start under load answers HTTP well after 180 s on a slow VM; the start itself (docker
# creating the container, or systemd the unit) gets the longer start_timeout.
SPAWN_HTTP_TIMEOUT = 300
SPAWN_START_TIMEOUT = 600
BASE_DISK_GB = 20
PER_USER_DISK_GB = 0.5
MAX_DATA_GB = 1000


@dataclass(frozen=True)
class Estimate:
    """What one VM needs: ``users`` accounts (``trainees`` and ``admins``, on every server)."""

    users: int
    memory_mib: int
    vcpus: int
    disk_gb: int
    worst_case_memory_mib: int  # every active account at their mem_limit
    trainees: int = 0
    admins: int = 0
    active: int = 0  # servers running at once (the share ``concurrency`` of trainees, + admins)
    per_server_mib: int = 0  # memory counted per active server
    content_mb: int = 0  # shared data + course material (a copy per account), in disk_gb

    def lines(self) -> list[str]:
        """A readable summary."""
        return [
            f"trainees per server: {self.trainees}",
            f"admins per server: {self.admins}",
            f"memory: {self.memory_mib / 1024:.1f} GiB "
            f"(worst case, everyone at mem_limit: {self.worst_case_memory_mib / 1024:.1f} GiB)",
            f"vCPUs: {self.vcpus}",
            f"disk: {self.disk_gb} GB"
            + (
                f" (with {self.content_mb:,} MB of shared data and course material: the course "
                "once in the image and once per home)"
                if self.content_mb
                else ""
            ),
        ]

    def as_dict(self) -> dict[str, int]:
        """The estimate for ``bakery size --json``."""
        return {
            "trainees_per_server": self.trainees,
            "admins_per_server": self.admins,
            "memory_mib": self.memory_mib,
            "worst_case_memory_mib": self.worst_case_memory_mib,
            "vcpus": self.vcpus,
            "disk_gb": self.disk_gb,
            "content_mb": self.content_mb,
        }


def _check_inputs(users: int, admins: int, data_gb: float, concurrency: float) -> None:
    if users < 0 or admins < 0 or users + admins < 1:
        raise UsageError("size: give at least one trainee or admin")
    if not math.isfinite(data_gb) or not 0 <= data_gb <= MAX_DATA_GB:
        raise UsageError(f"--data-gb {data_gb}: give GB per trainee from 0 to {MAX_DATA_GB}")
    if not math.isfinite(concurrency) or not 0 < concurrency <= 1:
        raise UsageError(f"--concurrency {concurrency}: give a share above 0, at most 1")


def mem_limit_bytes(mem_limit: str | int) -> int:
    """Bytes of a per-trainee memory limit, or a UsageError saying how to write one."""
    try:
        return parse_size(canonical_mem_limit(mem_limit))
    except ValueError as exc:
        raise UsageError(f"--mem-limit: {exc}") from None


def estimate(
    users: int,
    *,
    data_gb: float = 0.05,
    concurrency: float = 1.0,
    mem_limit: str | int = "2G",
    admins: int = 0,
    home_gb: float | None = None,
) -> Estimate:
    """The resources one VM needs for ``users`` trainees and ``admins`` (see the module's rules).

    ``home_gb``: each home's disk (``spawner.disk_limit``); None: 0.5 GB plus ``data_gb``.

    Raises:
        UsageError: a value that is not finite, out of range, or not a size.
    """
    _check_inputs(users, admins, data_gb, concurrency)
    limit = mem_limit_bytes(mem_limit)
    # Admins are counted active: they are in the room, and they demo.
    active = max(1, math.ceil(users * concurrency)) + admins if users else admins
    per_user = min(PER_USER_MEMORY + DATA_FACTOR * data_gb * GIB, limit)
    memory = (BASE_MEMORY + active * per_user) / (1 - KERNEL_SHARE)
    worst = (BASE_MEMORY + active * limit) / (1 - KERNEL_SHARE)
    disk = BASE_DISK_GB + (users + admins) * (home_gb or PER_USER_DISK_GB + data_gb)
    return Estimate(
        users=users + admins,
        trainees=users,
        admins=admins,
        memory_mib=math.ceil(memory / MIB),
        vcpus=max(2, math.ceil(active / USERS_PER_CORE)),
        disk_gb=math.ceil(disk),
        worst_case_memory_mib=math.ceil(worst / MIB),
        active=active,
        per_server_mib=math.ceil(per_user / MIB),
    )


def servers_held(memory_mib: int, per_server_mib: int) -> int:
    """Active servers a VM of ``memory_mib`` holds by the rule of :func:`estimate` (at least 1).

    The inverse of the estimate; jupyterhub_config.py computes the same from the memory the VM's
    kernel leaves (``memory_mib`` less :data:`KERNEL_SHARE`) for ``active_server_limit``, so a
    bigger flavor than the estimate's holds more.
    """
    seen = math.floor(memory_mib * (1 - KERNEL_SHARE))
    return max(1, (seen - BASE_MEMORY // MIB) // max(1, per_server_mib))


def home_bytes(cfg: Workshop) -> int | None:
    """A trainee's disk quota: ``spawner.disk_limit``, with ``auto`` what the estimate counts per
    home (0.5 GB plus the data each trainee loads); None with ``none`` (no quota)."""
    if cfg.spawner.disk_limit == "none":
        return None
    if cfg.spawner.disk_limit != "auto":
        return parse_size(cfg.spawner.disk_limit)
    return math.ceil((PER_USER_DISK_GB + cfg.openstack.data_gb_per_user) * 1e9)


def _home_gb(cfg: Workshop) -> float | None:
    """Each home's disk for the estimate: an explicit disk_limit; None (the rule) otherwise."""
    limit = None if cfg.spawner.disk_limit == "auto" else home_bytes(cfg)
    return None if limit is None else limit / 1e9


def per_server_mib(cfg: Workshop) -> int:
    """Memory counted per active server: an idle server and kernel plus 5x the data, at most
    ``mem_limit`` (the same on every machine of a workshop)."""
    per_user = min(
        PER_USER_MEMORY + DATA_FACTOR * cfg.openstack.data_gb_per_user * GIB,
        mem_limit_bytes(str(cfg.spawner.mem_limit)),
    )
    return math.ceil(per_user / MIB)


def hub_limits(cfg: Workshop) -> dict[str, int]:
    """The numbers jupyterhub_config.py turns into the hub's spawn limits on the VM it runs on."""
    return {
        "base_mib": BASE_MEMORY // MIB,
        "per_server_mib": per_server_mib(cfg),
        "spawns_per_cpu": SPAWNS_PER_CPU,
        "http_timeout": SPAWN_HTTP_TIMEOUT,
        "start_timeout": SPAWN_START_TIMEOUT,
    }


def hub_estimate(cfg: Workshop, *, users: int | None = None) -> Estimate:
    """The estimate for one hub of ``cfg``: its trainees (split over ``openstack.count``, or
    ``users``) and every admin."""
    trainees = math.ceil(len(cfg.users.trainees()) / cfg.openstack.count)
    return estimate(
        trainees if users is None else users,
        admins=len(cfg.users.admins),
        data_gb=cfg.openstack.data_gb_per_user,
        concurrency=cfg.openstack.concurrency,
        mem_limit=str(cfg.spawner.mem_limit),
        home_gb=_home_gb(cfg),
    )


def with_content(need: Estimate, shared_bytes: int, course_bytes: int, homes: int) -> Estimate:
    """``need`` with the disk of the shared data (once) and the course (once in the image, and
    a copy in each of ``homes`` homes) added."""
    total = shared_bytes + course_bytes * (1 + homes)
    if not total:
        return need
    disk = math.ceil(need.disk_gb + total / 1e9)
    return dataclasses.replace(need, disk_gb=disk, content_mb=math.ceil(total / 1e6))


def with_overrides(
    cfg: Workshop,
    *,
    data_gb: float | None = None,
    concurrency: float | None = None,
    mem_limit: str | None = None,
) -> Workshop:
    """``cfg`` with the sizing options given on the command line in place of its own values."""
    if data_gb is None and concurrency is None and mem_limit is None:
        return cfg
    _check_inputs(1, 0, 0.0 if data_gb is None else data_gb, concurrency or 1.0)
    openstack = cfg.openstack.model_copy(
        update={
            k: v
            for k, v in (("data_gb_per_user", data_gb), ("concurrency", concurrency))
            if v is not None
        }
    )
    spawner = cfg.spawner
    if mem_limit is not None:
        mem_limit_bytes(mem_limit)
        spawner = spawner.model_copy(update={"mem_limit": canonical_mem_limit(mem_limit)})
    return cfg.model_copy(update={"openstack": openstack, "spawner": spawner})


def smallest_flavor(
    flavors: list[dict[str, Any]], need: Estimate, *, boot_volume: bool = False
) -> dict[str, Any] | None:
    """The cheapest flavor (fewest vCPUs, then RAM, then disk) that fits ``need``.

    ``flavors`` are dicts with ``name``, ``ram`` (MiB), ``vcpus`` and ``disk`` (GB). With
    ``boot_volume`` the root disk is a volume, so the flavor's disk does not matter.
    """
    fitting = [
        f
        for f in flavors
        if f["ram"] >= need.memory_mib
        and f["vcpus"] >= need.vcpus
        and (boot_volume or f["disk"] >= need.disk_gb)
    ]
    if not fitting:
        return None
    return min(fitting, key=lambda f: (f["vcpus"], f["ram"], f["disk"], f["name"]))


# --- a swarm cluster ------------------------------------------------------------------------------


def _server_nodes(cfg: Workshop) -> int:
    """The VMs a swarm places trainees' servers on: the workers, and the manager if it runs some."""
    return cfg.cluster.workers + (1 if cfg.cluster.manager_runs_servers else 0)


def _share(cfg: Workshop) -> tuple[int, int]:
    """(trainees, admins) whose servers one node holds: the class spread evenly over the nodes."""
    nodes = _server_nodes(cfg)
    trainees = math.ceil(len(cfg.users.trainees()) / nodes)
    return trainees, math.ceil(len(cfg.users.admins) / nodes)


def _node_estimate(cfg: Workshop) -> Estimate:
    """One server node's share of the servers by :func:`estimate`, its disk without homes."""
    trainees, admins = _share(cfg)
    need = estimate(
        trainees,
        admins=admins,
        data_gb=cfg.openstack.data_gb_per_user,
        concurrency=cfg.openstack.concurrency,
        mem_limit=str(cfg.spawner.mem_limit),
    )
    # The homes are the manager's (NFS): a node's disk is the system and the user image.
    return dataclasses.replace(need, disk_gb=BASE_DISK_GB)


def worker_estimate(cfg: Workshop) -> Estimate:
    """What each worker of a swarm needs: its share of the servers, no homes."""
    return _node_estimate(cfg)


def manager_estimate(cfg: Workshop) -> Estimate:
    """What a swarm's manager needs: the base (system, hub, proxy, NFS), every home on its disk,
    and a node's share of the servers with ``manager_runs_servers``."""
    accounts = len(cfg.users.trainees()) + len(cfg.users.admins)
    homes_gb = accounts * (_home_gb(cfg) or PER_USER_DISK_GB + cfg.openstack.data_gb_per_user)
    if cfg.cluster.manager_runs_servers:
        share = _node_estimate(cfg)
    else:
        share = Estimate(
            users=0,
            memory_mib=BASE_MEMORY // MIB,
            vcpus=2,
            disk_gb=BASE_DISK_GB,
            worst_case_memory_mib=BASE_MEMORY // MIB,
            per_server_mib=per_server_mib(cfg),
        )
    return dataclasses.replace(share, users=accounts, disk_gb=math.ceil(share.disk_gb + homes_gb))


def workers_for(cfg: Workshop, memory_mib: int) -> int:
    """Workers of ``memory_mib`` a swarm needs so that every active server fits, by the rule
    of :func:`estimate` (:func:`servers_held` per worker)."""
    trainees, admins = len(cfg.users.trainees()), len(cfg.users.admins)
    active = (max(1, math.ceil(trainees * cfg.openstack.concurrency)) if trainees else 0) + admins
    per_server = _node_estimate(cfg).per_server_mib
    held = servers_held(memory_mib, per_server)
    on_manager = 0
    if cfg.cluster.manager_runs_servers:
        on_manager = _node_estimate(cfg).active
    return max(1, math.ceil(max(0, active - on_manager) / held))


@dataclass(frozen=True)
class ClusterEstimate:
    """What a swarm needs: the manager, each of ``workers`` workers."""

    manager: Estimate
    worker: Estimate
    workers: int
    trainees: int
    admins: int
    manager_runs_servers: bool = False

    def lines(self) -> list[str]:
        """A readable summary (`bakery size`)."""
        w, m = self.worker, self.manager
        servers = "its share of the servers, " if self.manager_runs_servers else ""
        return [
            f"swarm cluster: {self.trainees} trainees and {self.admins} admins, one hub, "
            f"servers spread over {self.workers} workers"
            + (" and the manager" if self.manager_runs_servers else ""),
            f"manager (hub, proxy, NFS, {servers}every home): {m.memory_mib / 1024:.1f} GiB, "
            f"{m.vcpus} vCPUs, {m.disk_gb} GB disk",
            f"each worker ({w.trainees} trainees' and {w.admins} admins' servers): "
            f"{w.memory_mib / 1024:.1f} GiB (worst case, everyone at mem_limit: "
            f"{w.worst_case_memory_mib / 1024:.1f} GiB), {w.vcpus} vCPUs, {w.disk_gb} GB disk",
            f"workers: {self.workers} (cluster.workers; `bakery scale CONFIG --workers N`)",
        ]

    def as_dict(self) -> dict[str, Any]:
        """The estimate for ``bakery size --json``."""
        return {
            "cluster": "swarm",
            "workers": self.workers,
            "manager": self.manager.as_dict(),
            "worker": self.worker.as_dict(),
        }
