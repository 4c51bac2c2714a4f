"""`bakery try`: the workshop's topology as local qemu VMs, booted with the same documents.

The same steps as a cloud launch (bakery.providers.openstack.launch): the topology (one hub with
every trainee, however many hubs the cloud would run; a swarm's manager and workers), each
machine's user-data from bakery.vm.userdata.machine_documents, the machines up wave by wave, the
hub's login page awaited. A swarm's VMs share a private network (bakery.providers.local.cluster).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bakery.config.workshop import Workshop, load_config
from bakery.errors import LocalVmError, UsageError
from bakery.progress import Reporter, quiet
from bakery.providers.local import health, vm
from bakery.providers.local.cluster import LocalCluster
from bakery.providers.local.kvm import Accel, Accelerator, choose_accel
from bakery.topology import Machine, Topology, topology
from bakery.vm.userdata import machine_documents
from bakery.workshop.accounts import (
    credentials_path,
    ensure_credentials,
    login_line,
    sheet_order,
)
from bakery.workshop.expiry import refuse_if_ended
from bakery.workshop.login import hub_metadata

# A hub VM of its own: the OS, JupyterHub, the proxy, nginx and a few servers. A cluster's VMs
# share this machine: each gets less (the workers run the servers, the manager the hub).
MEMORY = "4G"
CLUSTER_MEMORY = "2560M"


def try_root() -> Path:
    """The folder holding one run directory per workshop: ``$XDG_CACHE_HOME/bakery/try``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "bakery" / "try"


def run_dir_for(name: str) -> Path:
    """The run directory of workshop ``name`` (overlay, seed ISO, serial log, QMP socket)."""
    return try_root() / name


@dataclass(frozen=True)
class TryResult:
    """What `bakery try` prints when the hub is up."""

    url: str
    credentials: Path
    state: vm.VmState
    seconds: float

    def lines(self, config_path: Path) -> list[str]:
        """What `bakery try` prints: the hub's URL, the sheet, how to reach and stop the VMs."""
        login = self.state.extra.get("login_user", "LOGIN_USER")
        ssh = self.state.ssh_port
        out = [
            f"hub ready after {self.seconds:.0f} s: {self.url}",
            login_line(self.credentials, config_path),
            f"ssh: ssh -p {ssh} {login}@127.0.0.1    stop: bakery try {config_path} --stop",
        ]
        out += [
            f"worker {i}: ssh -p {ssh + i} {login}@127.0.0.1"
            for i, _ in enumerate(self.state.workers, start=1)
        ]
        return out


@dataclass(frozen=True)
class Options:
    """How the VMs of one `bakery try` run: ports (a worker's ssh is the hub's plus its
    number), memory per VM, vCPUs, the stage their image takes."""

    image: Path
    stage: Literal["full", "boot"]
    https_port: int
    ssh_port: int
    memory: str
    cpus: int

    def ssh(self, machine: Machine) -> int:
        """``machine``'s local ssh port."""
        return self.ssh_port + (0 if machine.serves_hub else machine.number)


def up(
    config_path: Path,
    *,
    image: Path,
    workers: int | None = None,
    stage: Literal["full", "boot"] = "full",
    https_port: int = 8443,
    ssh_port: int = 2222,
    memory: str | None = None,
    cpus: int = 2,
    accel: Accel = "auto",
    timeout: float | None = None,
    run_dir: Path | None = None,
    progress: Reporter = quiet,
) -> TryResult:
    """Boot the workshop in local VMs and wait until its hub's login page answers.

    ``stage="full"`` installs everything in the VMs (slow without KVM); ``boot`` expects an
    image baked with the bake stage (`bakery bake`). Passwords come from (and are added to) the
    credentials sheet next to the config. A swarm boots its manager and ``workers`` workers
    (default ``cluster.workers``); their secret is made per run, kept in the run directory
    (mode 600) and given to the VMs in their meta-data, never in user-data.

    Args:
        memory: each VM's memory (default 4G; 2560M each for a cluster's VMs).
        timeout: seconds to wait for the hub (default: by stage, accelerator and the guests'
            vCPUs over this machine's cores).

    Raises:
        UsageError: ``workers`` for a workshop that is not a swarm, or VMs that do not fit here.
        BakeryError: the config is invalid, or a VM did not come up (LocalVmError).
    """
    config_path = Path(config_path)
    cfg = load_config(config_path)
    refuse_if_ended(cfg)  # its VMs would refuse every trainee and power off
    creds = credentials_path(config_path).resolve()
    topo = topology(cfg, sheet_order(creds), workers=workers, trial=True)
    opts = Options(image, stage, https_port, ssh_port, memory or default_memory(topo), cpus)
    run = Path(run_dir or run_dir_for(cfg.name))
    _check_fits(opts.memory, len(topo.machines))
    for machine in topo.machines:
        vm.check_free(_run_dir(run, machine), _ports(opts, machine))
    docs = machine_documents(cfg, topo.machines, ensure_credentials(cfg, creds), stage)
    hub_metadata(cfg)  # a client secret's file that cannot be used: before any VM starts
    choice = choose_accel(accel)
    progress(f"accelerator: {choice.reason}")
    state = _boot(cfg, topo, opts, run, docs, choice, progress)
    _remember_all(state, cfg, config_path, creds, stage)
    seconds = health.wait_for_hub(
        state,
        timeout=_hub_timeout(timeout, stage, state, vcpus=cpus * len(topo.machines)),
        progress=progress,
        workshop=cfg.name,
    )
    return TryResult(url=state.url, credentials=creds, state=state, seconds=seconds)


def default_memory(topo: Topology) -> str:
    """Each VM's memory when ``--memory`` is not given: a hub of its own, or a cluster's share."""
    return CLUSTER_MEMORY if topo.workers else MEMORY


def _run_dir(run: Path, machine: Machine) -> Path:
    """Where ``machine``'s VM keeps its disk and console: the run directory for the hub, a
    folder in it for worker N."""
    return run if machine.serves_hub else run / f"worker-{machine.number}"


def _ports(opts: Options, machine: Machine) -> dict[str, int]:
    if machine.serves_hub:
        return {"HTTPS": opts.https_port, "HTTP": opts.https_port + 1, "ssh": opts.ssh_port}
    return {f"worker {machine.number} ssh": opts.ssh(machine)}


def _boot(
    cfg: Workshop,
    topo: Topology,
    opts: Options,
    run: Path,
    docs: dict[str, bytes],
    accel: Accelerator,
    progress: Reporter,
) -> vm.VmState:
    """Start every machine's VM, wave by wave (the hub first); returns the hub's state, which
    lists the workers' run directories. A VM that cannot start leaves no half cluster behind."""
    network = LocalCluster.create(run, opts.https_port) if topo.workers else None
    (hub,) = topo.hubs
    state = _start(hub, cfg, opts, run, docs, accel, network, progress)
    try:
        for machine in topo.workers:
            worker = _start(machine, cfg, opts, run, docs, accel, network, progress)
            state.workers.append(worker.run_dir)
            state.save()
    except BaseException:
        with contextlib.suppress(LocalVmError):
            vm.stop_vm(run, timeout=30)
        raise
    return state


def _hub_meta(cfg: Workshop, machine: Machine) -> dict[str, str]:
    """The hub's meta-data for its logins (an OAuth client secret), root-only on the VM."""
    return hub_metadata(cfg) if machine.serves_hub else {}


def _start(
    machine: Machine,
    cfg: Workshop,
    opts: Options,
    run: Path,
    docs: dict[str, bytes],
    accel: Accelerator,
    network: LocalCluster | None,
    progress: Reporter,
) -> vm.VmState:
    """Start ``machine``'s VM: ports forwarded, on the cluster's network when there is one."""
    run_dir = _run_dir(run, machine)
    state = vm.start_vm(
        image=opts.image, user_data=docs[machine.name], run_dir=run_dir,
        https_port=opts.https_port, ssh_port=opts.ssh(machine), memory=opts.memory,
        cpus=opts.cpus, accel=accel, hostname=machine.name, web=machine.serves_hub,
        cluster_nic=network.nic(machine.number) if network else None,
        meta={**(network.meta if network else {}), **_hub_meta(cfg, machine)},
        progress=progress,
    )  # fmt: skip
    progress(
        f"{machine.name}: qemu started (pid {state.pid}), ssh port {opts.ssh(machine)}; serial "
        f"console: {run_dir / 'serial.log'}"
    )
    return state


def _remember_all(
    state: vm.VmState, cfg: Workshop, config_path: Path, creds: Path, stage: str
) -> None:
    """Record in each VM's state what `--status` and failure reports name."""
    for run_dir in [state.run_dir, *state.workers]:
        member = state if run_dir == state.run_dir else vm.VmState.load(Path(run_dir))
        member.config, member.credentials = str(config_path.resolve()), str(creds)
        member.stage = stage
        member.extra["workshop"] = cfg.name  # its final_message marks cloud-init's end
        member.extra["login_user"] = cfg.login_user
        member.save()


def _hub_timeout(timeout: float | None, stage: str, state: vm.VmState, *, vcpus: int) -> float:
    """How long to wait for the hub: ``timeout``, or a default for the stage and accelerator.

    The default grows with the guests' ``vcpus`` (all VMs together) over this machine's cores:
    under software emulation each vCPU is a host thread, and three 2-vCPU VMs on 2 cores took
    900 s to the hub where one took 230 s.
    """
    if timeout is not None:
        return timeout
    base = (900.0 if stage == "boot" else 5400.0) * (1 if state.accel == "tcg" else 0.5)
    return base * max(1.0, vcpus / (os.cpu_count() or 1))


def _check_fits(memory: str, vms: int) -> None:
    """Refuse ``vms`` VMs of ``memory`` each when they need more than this machine has."""
    mb = vm.memory_mb(memory)
    host = vm.host_memory()
    if host is not None and vms * mb * 1024**2 > host:
        raise UsageError(
            f"--memory {memory}: {vms} VMs need {vms * mb / 1024:.1f}G; this machine has only "
            f"{host / 1024**3:.1f}G (fewer --workers or less --memory)"
        )


def status(config_path: Path) -> health.VmStatus:
    """`bakery try --status`: the workshop's local VMs (a cluster's workers too) and its hub."""
    return health.vm_status(run_dir_for(load_config(config_path).name))


def down(config_path: Path, *, keep: bool = False, progress: Reporter = quiet) -> Path:
    """`bakery try --stop`: shut the workshop's local VMs down (workers first); the run
    directory, where ``keep`` leaves the disks."""
    run = run_dir_for(load_config(config_path).name)
    vm.stop_vm(run, keep=keep, progress=progress)
    return run
