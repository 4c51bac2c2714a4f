"""A swarm cluster on OpenStack (``cluster.engine: swarm``): its members' metadata, its state.

One hub on ``NAME-manager``, the trainees' servers as swarm services on ``NAME-worker-1..N``
(bakery.topology). The members find each other through server metadata that only root reads on
the VMs: the cluster's secret (the same on every member; a worker shows it to the manager's
token service for the swarm's join token) and, on workers, the manager's fixed address. The
secret lives in the manager's metadata and nowhere else on this side: a later launch or `bakery
scale` reads it back from there; it is never printed, logged or written to the state file.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bakery.config.workshop import Workshop
from bakery.errors import BakeryError, CloudError
from bakery.layout import CLUSTER_META_MANAGER, CLUSTER_META_SECRET
from bakery.progress import Reporter, quiet
from bakery.providers.openstack.resources import workshop_floating_ips, workshop_servers
from bakery.providers.openstack.servers import ServerInfo, addresses, fixed_ip
from bakery.ssh import Ssh, Target
from bakery.topology import Machine
from bakery.workshop.names import manager_name, worker_number
from bakery.workshop.sizing import per_server_mib, servers_held

if TYPE_CHECKING:
    from openstack.connection import Connection

SECRET_BYTES = 32
SERVICE_PREFIX = "jupyter-"  # the hub's swarm services: jupyter-NAME (one per trainee's server)


# --- the members ----------------------------------------------------------------------------------


def new_secret() -> str:
    """A fresh cluster secret (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def read_secret(manager: Any) -> str:
    """The cluster's secret from the manager's metadata.

    Raises:
        CloudError: the manager has none (it was not made by a cluster launch).
    """
    secret = (manager.metadata or {}).get(CLUSTER_META_SECRET)
    if not secret:
        raise CloudError(
            f"server {manager.name} has no {CLUSTER_META_SECRET} metadata: it was not made by "
            "`bakery launch` for a cluster; `bakery destroy` it and launch again"
        )
    return str(secret)


def cluster_servers(conn: Connection, cfg: Workshop) -> tuple[Any | None, dict[int, Any]]:
    """(the manager or None, the workers by number)."""
    manager, workers = None, {}
    for server in workshop_servers(conn, cfg):
        number = worker_number(cfg, server.name)
        if server.name == manager_name(cfg):
            manager = server
        elif number is not None:
            workers[number] = server
    return manager, dict(sorted(workers.items()))


def member_metadata(
    cfg: Workshop, machine: Machine, found: Any | None, joined: dict[str, str]
) -> dict[str, str]:
    """The cluster's metadata ``machine``'s server is created with (none outside a swarm).

    The manager gets the cluster's secret (a new one, or its own back when it exists: a relaunch
    keeps the cluster); a worker, what :func:`joining` read off the manager once it was up.
    """
    if machine.part == "manager":
        return {CLUSTER_META_SECRET: read_secret(found) if found is not None else new_secret()}
    if machine.part == "worker":
        return joined
    return {}


def joining(cfg: Workshop, servers: list[Any]) -> dict[str, str]:
    """What a worker joins with, read off the manager among ``servers`` (ACTIVE, with a fixed
    address): the cluster's secret and the manager's address. Empty without a manager."""
    manager = next((s for s in servers if s.name == manager_name(cfg)), None)
    if manager is None:
        return {}
    address = fixed_ip(manager, cfg.openstack.networks)
    if address is None:
        raise CloudError(f"{manager.name} has no fixed address: is it running? (bakery status)")
    return {CLUSTER_META_SECRET: read_secret(manager), CLUSTER_META_MANAGER: address}


# --- the swarm, seen from the manager -------------------------------------------------------------

# Runs as root on the manager (`python3 -c`): every node with its running tasks and the manager's
# load, as one JSON document (one ssh round trip, whatever the number of workers).
SWARM_PROGRAM = r"""
import json, subprocess

def docker(*args):
    done = subprocess.run(["docker", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit("docker " + args[0] + " " + args[1] + ": " + done.stderr.strip())
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

ids = [n["ID"] for n in docker("node", "ls", "--format", "{{json .}}")]
nodes = docker("node", "inspect", "--format", "{{json .}}", *ids) if ids else []
tasks = {
    i: docker("node", "ps", i, "--filter", "desired-state=running", "--no-trunc",
              "--format", "{{json .}}")
    for i in ids
}
with open("/proc/loadavg") as f:
    load = [float(x) for x in f.read().split()[:3]]
print(json.dumps({"nodes": nodes, "tasks": tasks, "load": load}))
"""

# Runs a command as root on the manager; its stdout (raises BakeryError when it fails).
Shell = Callable[[list[str]], str]


def manager_shell(
    cfg: Workshop, config_path: Path, name: str, host: str, identity: Path | None = None
) -> Shell:
    """A Shell over ssh to the manager at ``host``, as the login user with sudo (bakery.ssh)."""
    ssh = Ssh.for_workshop(cfg, config_path, identity)
    target = Target(name, host)

    def run(argv: list[str]) -> str:
        done = ssh.run(target, ["sudo", "-n", *argv], timeout=120)
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
            what = shlex.join(argv[:4]) + (" ..." if len(argv) > 4 else "")
            raise BakeryError(f"{name}: {what}: exit {done.returncode}: {lines[-1]}")
        return done.stdout.decode(errors="replace")

    return run


@dataclass
class SwarmNode:
    """One node of the swarm as the manager sees it."""

    id: str
    hostname: str
    address: str
    state: str  # ready, down, unknown, disconnected
    availability: str  # active, pause, drain
    role: str  # manager, worker
    memory_mib: int = 0
    cpus: float = 0.0
    trainees: list[str] = field(default_factory=list)  # whose servers run here
    server: str | None = None  # the cloud server it is (matched by address)


def _node(doc: dict[str, Any], tasks: list[dict[str, Any]]) -> SwarmNode:
    status, spec = doc.get("Status") or {}, doc.get("Spec") or {}
    desc = doc.get("Description") or {}
    resources = desc.get("Resources") or {}
    address = str(status.get("Addr") or "")
    manager_addr = str((doc.get("ManagerStatus") or {}).get("Addr") or "")
    # docker reports a manager's own address as 0.0.0.0 at times: its ManagerStatus has it.
    if address in ("", "0.0.0.0") and manager_addr:  # noqa: S104 (compared, not bound)
        address = manager_addr.rsplit(":", 1)[0]
    trainees = sorted(
        str(t["Name"]).removeprefix(SERVICE_PREFIX).rsplit(".", 1)[0]
        for t in tasks
        if str(t.get("Name", "")).startswith(SERVICE_PREFIX)
        and str(t.get("CurrentState", "")).lower().startswith("running")
    )
    return SwarmNode(
        id=str(doc.get("ID", "")),
        hostname=str(desc.get("Hostname", "")),
        address=address,
        state=str(status.get("State", "unknown")),
        availability=str(spec.get("Availability", "unknown")),
        role=str(spec.get("Role", "worker")),
        memory_mib=int(resources.get("MemoryBytes") or 0) // 2**20,
        cpus=int(resources.get("NanoCPUs") or 0) / 1e9,
        trainees=trainees,
    )


def swarm_state(shell: Shell) -> tuple[list[SwarmNode], list[float]]:
    """The swarm's nodes with their trainees, and the manager's load averages (1, 5, 15 min).

    Raises:
        BakeryError: ssh or docker failed, or the answer is not what the program prints.
    """
    out = shell(["python3", "-c", SWARM_PROGRAM])
    try:
        doc = json.loads(out)
        nodes = [_node(n, doc["tasks"].get(n["ID"], [])) for n in doc["nodes"]]
        load = [float(x) for x in doc["load"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BakeryError(f"unexpected answer from the manager: {out[:200]!r}") from None
    return nodes, load


def match_servers(nodes: list[SwarmNode], servers: list[Any], networks: list[str]) -> None:
    """Set each node's ``server``: the cloud server whose fixed address it advertises."""
    by_address = {}
    for server in servers:
        for address in addresses(server):
            by_address[address] = server.name
        ip = fixed_ip(server, networks)
        if ip:
            by_address[ip] = server.name
    for node in nodes:
        node.server = by_address.get(node.address)


def node_of(nodes: list[SwarmNode], server: Any, networks: list[str]) -> SwarmNode | None:
    """The swarm node of a cloud server (by its advertised address), or None."""
    match_servers(nodes, [server], networks)
    return next((n for n in nodes if n.server == server.name), None)


# --- status ---------------------------------------------------------------------------------------


@dataclass
class ClusterStatus:
    """`bakery status` of a swarm: the servers as the cloud sees them, the swarm as the manager
    does (or why it could not be asked)."""

    servers: list[ServerInfo]
    nodes: list[SwarmNode] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    per_server_mib: int = 0
    swarm_error: str | None = None
    workers: int = 0  # worker servers in the cloud
    manager_runs_servers: bool = False

    def node_line(self, node: SwarmNode) -> str:
        """``intro-worker-1 (10.0.0.6) worker Ready active: 3 of 20 servers: ada, ...``."""
        held = servers_held(node.memory_mib, self.per_server_mib) if node.memory_mib else 0
        room = f"{len(node.trainees)} of {held} servers" if held else f"{len(node.trainees)}"
        if node.role == "manager" and not self.manager_runs_servers and not node.trainees:
            room = "the hub (no trainees' servers)"
        who = f": {', '.join(node.trainees)}" if node.trainees else ""
        name = node.server or f"{node.hostname} (no server of this workshop)"
        return (
            f"  {name} ({node.address or '?'})  {node.role}  {node.state.capitalize()}  "
            f"{node.availability}  {room}{who}"
        )

    @property
    def ready_workers(self) -> int:
        """Workers the swarm lists Ready (and so given servers unless drained)."""
        return sum(1 for n in self.nodes if n.role == "worker" and n.state == "ready")

    def lines(self) -> list[str]:
        """The swarm part of `bakery status` (the servers are printed as for one VM)."""
        if self.swarm_error is not None:
            return [f"swarm: not asked ({self.swarm_error}); the cloud's view only, above"]
        load = " ".join(f"{x:.2f}" for x in self.load)
        out = [f"swarm: {len(self.nodes)} nodes (the manager's load: {load})"]
        out += [self.node_line(n) for n in self.nodes]
        if self.ready_workers < self.workers:
            out.append(f"  {self.workers - self.ready_workers} of {self.workers} workers not Ready")
        return out

    def as_dict(self) -> dict[str, Any]:
        """The swarm part of `bakery status --json`."""
        return {
            "nodes": [dataclasses.asdict(n) for n in self.nodes],
            "manager_load": self.load,
            "error": self.swarm_error,
        }


def manager_address(conn: Connection, cfg: Workshop, manager: Any) -> str | None:
    """Where ssh reaches the manager: its floating IP, else its fixed address."""
    for ip in workshop_floating_ips(conn, cfg):
        if (ip.port_details or {}).get("device_id") == manager.id:
            return str(ip.floating_ip_address)
    return fixed_ip(manager, cfg.openstack.networks)


def swarm_status(
    conn: Connection,
    cfg: Workshop,
    config_path: Path,
    infos: list[ServerInfo],
    identity: Path | None = None,
) -> ClusterStatus:
    """The swarm's nodes and trainees through ssh to the manager; on failure, the reason."""
    result = ClusterStatus(infos, per_server_mib=per_server_mib(cfg))
    manager, workers = cluster_servers(conn, cfg)
    result.workers = len(workers)
    result.manager_runs_servers = cfg.cluster.manager_runs_servers
    if manager is None:
        result.swarm_error = f"no server {manager_name(cfg)}"
        return result
    if manager.status != "ACTIVE":
        result.swarm_error = f"{manager.name} is {manager.status}"
        return result
    host = manager_address(conn, cfg, manager)
    if host is None:
        result.swarm_error = f"{manager.name} has no address"
        return result
    try:
        shell = manager_shell(cfg, config_path, manager.name, host, identity)
        result.nodes, result.load = swarm_state(shell)
    except BakeryError as exc:
        result.swarm_error = f"ssh to the manager: {exc}"
        return result
    match_servers(result.nodes, [manager, *workers.values()], cfg.openstack.networks)
    return result


# How often `bakery launch` asks the manager for the swarm's nodes once the hub answers, and how
# many asks in a row may fail (ssh) before it stops waiting.
READY_POLL_SECONDS = 15.0
READY_FAILED_ASKS = 4


def wait_workers_ready(
    conn: Connection,
    cfg: Workshop,
    config_path: Path,
    manager: ServerInfo,
    timeout: float,
    progress: Reporter = quiet,
) -> str | None:
    """After the hub answers: wait until ``cluster.workers`` workers are Ready in the swarm. A
    worker joins once its copy of the trainees' image is loaded, minutes after the manager (which
    loads none) can answer; a trainee who logs in before that waits for a worker to start on.

    Returns None once they are Ready, else why the wait stopped (the manager could not be asked
    over ssh, or the time ran out). Never raises: the hub works and everything made stays.
    """
    want = cfg.cluster.workers
    deadline = time.monotonic() + timeout
    failed = 0
    while True:
        try:
            status = swarm_status(conn, cfg, config_path, [manager])
        except BakeryError as exc:  # the cloud's API, between two asks
            status = ClusterStatus([manager], swarm_error=str(exc))
        if status.swarm_error is None:
            failed = 0
            if status.ready_workers >= want:
                progress(f"swarm: {status.ready_workers} of {want} workers Ready")
                return None
            progress(
                f"swarm: {status.ready_workers} of {want} workers Ready (a worker joins once "
                "it has booted and has the trainees' image)",
                transient=True,
            )
        else:
            failed += 1
            if failed >= READY_FAILED_ASKS:
                return f"the swarm could not be asked ({status.swarm_error})"
        if time.monotonic() >= deadline:
            return f"{status.ready_workers} of {want} workers Ready after {timeout:.0f} s"
        time.sleep(READY_POLL_SECONDS)
