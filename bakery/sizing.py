"""`bakery size`: memory, CPU and disk a workshop VM needs, and the smallest fitting flavor.

The rules (from the 2016 recipe's experience, measured again on a test VM here):

- Base: the OS, Docker, nginx, configurable-http-proxy and the hub take about 1 GiB of memory
  (measured in a guest here: hub + nginx + one trainee server ~540 MiB).
- Each *active* trainee: 200 MiB for an idle notebook server and kernel, plus 5x the data they load
  (pandas and friends keep several copies of a data set in memory). ``concurrency`` is the share
  of trainees active at once (1.0 for a hands-on class).
- The per-trainee ``mem_limit`` caps what one trainee can take; the estimate never assumes more.
- CPU: one core per four active trainees, at least two.
- Disk: 20 GB for the system and the user image, plus 0.5 GB and their data per trainee (homes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bakery.config import Workshop, parse_size

GIB = 1024**3
MIB = 1024**2
BASE_MEMORY = 1 * GIB
PER_USER_MEMORY = 200 * MIB
DATA_FACTOR = 5
USERS_PER_CORE = 4
BASE_DISK_GB = 20
PER_USER_DISK_GB = 0.5


@dataclass(frozen=True)
class Estimate:
    """What one VM needs for ``users`` trainees."""

    users: int
    memory_mib: int
    vcpus: int
    disk_gb: int
    worst_case_memory_mib: int  # every active trainee at their mem_limit

    def lines(self) -> list[str]:
        """A readable summary."""
        return [
            f"trainees per server: {self.users}",
            f"memory: {self.memory_mib / 1024:.1f} GiB "
            f"(worst case, everyone at mem_limit: {self.worst_case_memory_mib / 1024:.1f} GiB)",
            f"vCPUs: {self.vcpus}",
            f"disk: {self.disk_gb} GB",
        ]


def estimate(
    users: int, *, data_gb: float = 0.05, concurrency: float = 1.0, mem_limit: str = "2G"
) -> Estimate:
    """The resources one VM needs for ``users`` trainees (see the module's rules)."""
    active = max(1, math.ceil(users * concurrency))
    per_user = PER_USER_MEMORY + DATA_FACTOR * data_gb * GIB
    limit = parse_size(mem_limit)
    per_user = min(per_user, limit)
    memory = BASE_MEMORY + active * per_user
    worst = BASE_MEMORY + active * limit
    disk = BASE_DISK_GB + users * (PER_USER_DISK_GB + data_gb)
    return Estimate(
        users=users,
        memory_mib=math.ceil(memory / MIB),
        vcpus=max(2, math.ceil(active / USERS_PER_CORE)),
        disk_gb=math.ceil(disk),
        worst_case_memory_mib=math.ceil(worst / MIB),
    )


def estimate_workshop(cfg: Workshop) -> Estimate:
    """The estimate for one server of ``cfg`` (trainees are split over ``openstack.count``)."""
    per_server = math.ceil(len(cfg.users.trainees()) / cfg.openstack.count) + len(cfg.users.admins)
    return estimate(
        per_server,
        data_gb=cfg.openstack.data_gb_per_user,
        concurrency=cfg.openstack.concurrency,
        mem_limit=str(cfg.spawner.mem_limit),
    )


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
