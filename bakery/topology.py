"""The machines a workshop needs, computed once from its config: single vs swarm is decided here.

A workshop is one of two kinds, and everything else reads the answer from here as data:

- ``servers``: ``openstack.count`` alike hubs ``NAME-1`` .. ``NAME-N``; trainee number i (in the
  order their accounts were made, :func:`deal`) on hub i mod N, every admin on each.
- ``swarm`` (``cluster.engine: swarm``): one hub on ``NAME-manager`` with every account, and
  ``cluster.workers`` workers ``NAME-worker-1`` .. ``NAME-worker-N`` with none (the swarm places
  the trainees' servers on them; their homes are the manager's, over NFS). The manager comes up
  first: the workers join it (the ``waves``).

The providers (local qemu VMs, OpenStack servers) realise a topology with the same verbs; the
workshop-day commands read placement (which hub holds a trainee) from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bakery.config.sections import Users
from bakery.config.workshop import Workshop, load_config
from bakery.errors import UsageError
from bakery.vm.stages import Role
from bakery.workshop import content, sizing
from bakery.workshop.names import hub_name, manager_name, worker_name

Kind = Literal["servers", "swarm"]
# A machine's part: a hub of its own (kind servers), a swarm's manager (the hub) or a worker.
Part = Literal["hub", "manager", "worker"]


@dataclass(frozen=True)
class Machine:
    """One machine of a workshop: its name, its part, and the accounts it holds."""

    name: str
    part: Part
    number: int  # hub N or worker N, from 1; the manager 0
    trainees: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()

    @property
    def serves_hub(self) -> bool:
        """Whether trainees log in here (a hub or a manager): web ports, a floating IP."""
        return self.part != "worker"

    @property
    def role(self) -> Role:
        """The user-data role it boots with (bakery.vm.stages): a worker, else the hub's."""
        return "worker" if self.part == "worker" else "manager"

    @property
    def accounts(self) -> tuple[str, ...]:
        """Every account on it: trainees first, then admins (none on a worker)."""
        return (*self.trainees, *self.admins)

    @property
    def flavor_setting(self) -> str:
        """The config key that names its flavor."""
        return "cluster.worker_flavor" if self.part == "worker" else "openstack.flavor"


@dataclass(frozen=True)
class Topology:
    """The machines of one workshop, in the order they come up."""

    workshop: str
    kind: Kind
    machines: tuple[Machine, ...]

    @property
    def hubs(self) -> tuple[Machine, ...]:
        """The machines trainees log in to (each holds its trainees' accounts and homes)."""
        return tuple(m for m in self.machines if m.serves_hub)

    @property
    def workers(self) -> tuple[Machine, ...]:
        """A swarm's workers (none for kind ``servers``)."""
        return tuple(m for m in self.machines if m.part == "worker")

    @property
    def waves(self) -> tuple[tuple[Machine, ...], ...]:
        """The machines in the groups they come up in: the hubs, then what joins them."""
        return tuple(wave for wave in (self.hubs, self.workers) if wave)

    def machine(self, name: str) -> Machine | None:
        """The machine called ``name`` (None: not one of this topology's)."""
        return next((m for m in self.machines if m.name == name), None)

    def home_of(self, trainee: str) -> Machine | None:
        """The hub that holds ``trainee``'s account and home (None: not a trainee here)."""
        return next((m for m in self.hubs if trainee in m.trainees), None)

    @property
    def placement(self) -> dict[str, str]:
        """Each trainee's hub, by name."""
        return {name: m.name for m in self.hubs for name in m.trainees}


def topology(
    cfg: Workshop,
    order: Sequence[str] = (),
    *,
    count: int | None = None,
    workers: int | None = None,
    trial: bool = False,
) -> Topology:
    """The machines ``cfg`` needs.

    Args:
        cfg: the workshop.
        order: the credentials sheet's order of accounts (`sheet_order`): trainees in it are
            dealt in the order their accounts were made, so a late trainee lands on a hub
            without moving anyone already placed.
        count: hubs instead of ``openstack.count`` (kind ``servers`` only).
        workers: workers instead of ``cluster.workers`` (a swarm only).
        trial: as `bakery try` boots it on one machine: one hub with every trainee, however many
            hubs the cloud would run (a swarm keeps its manager and workers).

    Raises:
        UsageError: ``count`` for a swarm, ``workers`` for a workshop that is not one, or more
            hubs than trainees.
    """
    if cfg.cluster.swarm:
        if count is not None:
            raise UsageError(
                f"--count {count}: workshop {cfg.name} is a swarm cluster (cluster.engine: "
                "swarm), one hub over its workers; --count makes separate hubs. Size the cluster "
                "with cluster.workers or `bakery scale CONFIG --workers N`"
            )
        size = cfg.cluster.workers if workers is None else workers
        return _swarm(cfg, deal(cfg, order, 1)[0], size)
    if workers is not None:
        refuse_unless_swarm(cfg, "--workers needs a cluster")
    hubs = 1 if trial else cfg.openstack.count if count is None else count
    admins = tuple(cfg.users.admins)
    return Topology(
        cfg.name,
        "servers",
        tuple(
            Machine(hub_name(cfg, i), "hub", i, tuple(group), admins)
            for i, group in enumerate(deal(cfg, order, hubs), start=1)
        ),
    )


def _swarm(cfg: Workshop, trainees: list[str], workers: int) -> Topology:
    if workers < 1:
        raise UsageError(f"--workers {workers}: a cluster needs at least one worker")
    manager = Machine(manager_name(cfg), "manager", 0, tuple(trainees), tuple(cfg.users.admins))
    members = [Machine(worker_name(cfg, n), "worker", n) for n in range(1, workers + 1)]
    return Topology(cfg.name, "swarm", (manager, *members))


def deal(cfg: Workshop, order: Sequence[str], hubs: int) -> list[list[str]]:
    """The trainees of each of ``hubs`` hubs: number i on hub i mod N, ``order``'s first.

    Raises:
        UsageError: more hubs than trainees (a hub with no trainee is a wasted server).
    """
    listed = cfg.users.trainees()
    if hubs > len(listed):
        raise UsageError(f"openstack.count {hubs} is more than the {len(listed)} trainees")
    known = set(listed)
    made = [n for n in dict.fromkeys(order) if n in known]
    placed = set(made)
    trainees = [*made, *(n for n in listed if n not in placed)]
    return [trainees[i::hubs] for i in range(hubs)]


def machine_config(cfg: Workshop, machine: Machine) -> Workshop:
    """The config as ``machine`` renders it: a hub's own host name and its trainees only.

    A worker's is the workshop's as it is: a worker holds no account and keeps the name its
    cloud (or `bakery try`'s seed) gives it, so every worker boots from the same document.
    """
    if not machine.serves_hub:
        return cfg
    users = Users.model_validate(
        {
            **cfg.users.model_dump(),
            "names": list(machine.trainees),
            "count": None,
            "prefix": cfg.users.prefix,
        }
    )
    return cfg.model_copy(update={"users": users, "hostname": machine.name})


def split_users(cfg: Workshop, order: Sequence[str] = ()) -> list[Workshop]:
    """One config per hub (each with its own trainees and host name), as :func:`topology` deals
    them."""
    return [machine_config(cfg, m) for m in topology(cfg, order).hubs]


def with_count(cfg: Workshop, count: int | None) -> Workshop:
    """``cfg`` with ``openstack.count`` set to ``count`` (None: unchanged).

    Raises:
        UsageError: a count for a swarm cluster (see :func:`topology`).
    """
    if count is None:
        return cfg
    topology(cfg, count=count)  # refuses a swarm's, and more hubs than trainees
    return cfg.model_copy(update={"openstack": cfg.openstack.model_copy(update={"count": count})})


def workshop_config(config_path: Path, count: int | None = None) -> Workshop:
    """The workshop file's config, with ``openstack.count`` overridden by ``count``.

    Raises:
        ConfigError: the file is not a valid workshop.
        UsageError: ``count`` for a swarm cluster (one hub: `bakery scale` sizes it).
    """
    return with_count(load_config(config_path), count)


def refuse_unless_swarm(cfg: Workshop, what: str) -> None:
    """Refuse ``what`` (a command or option) for a workshop that is not a swarm cluster."""
    if not cfg.cluster.swarm:
        raise UsageError(
            f"{what}: workshop {cfg.name} is not a cluster; set cluster.engine: swarm (with "
            "spawner.kind: docker) for one hub over workers"
        )


def estimate(cfg: Workshop, part: Part, config_dir: Path | None = None) -> sizing.Estimate:
    """What one machine of ``part`` needs (bakery.workshop.sizing's rules for that part).

    With ``config_dir`` (workshop.yaml's folder) the disk also holds the shared data and the
    course folders: once in the image, and the course once more in every home the machine keeps
    (a worker keeps none: the homes are the manager's).
    """
    if part == "manager":
        need = sizing.manager_estimate(cfg)
    elif part == "worker":
        need = sizing.worker_estimate(cfg)
    else:
        need = sizing.hub_estimate(cfg)
    return _with_content(need, cfg, config_dir, 0 if part == "worker" else need.users)


def _with_content(
    need: sizing.Estimate, cfg: Workshop, config_dir: Path | None, homes: int
) -> sizing.Estimate:
    if config_dir is None:
        return need
    sizes = content.folder_bytes(cfg, config_dir)
    shared, course = sizes.get("shared_data.from", 0), sizes.get("course.from", 0)
    return sizing.with_content(need, shared, course, homes)


def estimate_workshop(cfg: Workshop, config_dir: Path | None = None) -> sizing.Estimate:
    """What the machine trainees log in to needs (a hub, or a swarm's manager): the VM
    ``openstack.flavor`` names."""
    return estimate(cfg, topology(cfg).hubs[0].part, config_dir)


def cluster_estimate(cfg: Workshop, config_dir: Path | None = None) -> sizing.ClusterEstimate:
    """A swarm's manager and each of its workers (`bakery size` of a swarm)."""
    return sizing.ClusterEstimate(
        manager=estimate(cfg, "manager", config_dir),
        worker=estimate(cfg, "worker", config_dir),
        workers=cfg.cluster.workers,
        trainees=len(cfg.users.trainees()),
        admins=len(cfg.users.admins),
        manager_runs_servers=cfg.cluster.manager_runs_servers,
    )


def size_estimate(
    cfg: Workshop | None,
    *,
    users: int | None = None,
    data_gb: float | None = None,
    concurrency: float | None = None,
    mem_limit: str | None = None,
    config_dir: Path | None = None,
) -> sizing.Estimate | sizing.ClusterEstimate:
    """What `bakery size` reports: one server's estimate, or a swarm's manager and workers.

    The options replace the config's values; ``users`` asks for one hub of that many trainees
    (whatever the kind); ``config_dir`` adds the shared data and course folders to the disk.
    """
    if cfg is None:
        return sizing.estimate(
            1 if users is None else users,
            data_gb=0.05 if data_gb is None else data_gb,
            concurrency=1.0 if concurrency is None else concurrency,
            mem_limit=mem_limit or "2G",
        )
    cfg = sizing.with_overrides(cfg, data_gb=data_gb, concurrency=concurrency, mem_limit=mem_limit)
    if users is not None:
        need = sizing.hub_estimate(cfg, users=users)
        return _with_content(need, cfg, config_dir, need.users)
    topo = topology(cfg)
    if topo.workers:
        return cluster_estimate(cfg, config_dir)
    return estimate(cfg, topo.hubs[0].part, config_dir)
