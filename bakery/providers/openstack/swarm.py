"""A swarm cluster on OpenStack (``cluster.engine: swarm``): launch, status, scale.

One hub on ``NAME-manager``, the trainees' servers as swarm services on ``NAME-worker-1..N``. The
members find each other through server metadata that only root reads on the VMs: the cluster's
secret (the same on every member; a worker shows it to the manager's token service for the
swarm's join token) and, on workers, the manager's fixed address. The secret lives in the
manager's metadata and nowhere else on this side: a later `bakery scale` reads it back from there,
it is never printed, logged or written to the state file.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bakery.config.workshop import Workshop, load_config
from bakery.errors import BakeryError, CloudError, UsageError
from bakery.layout import CLUSTER_META_MANAGER, CLUSTER_META_SECRET
from bakery.progress import Reporter, quiet
from bakery.providers.openstack.api import (
    api,
    auto_flavor,
    connect,
    find_flavor,
    find_image,
    network_ids,
    wait_active,
)
from bakery.providers.openstack.launch import (
    Basis,
    LaunchResult,
    ServerInfo,
    addresses,
    ensure_access,
    resolve_basis,
    server_attrs,
    server_info,
    split_users,
    wait_hub,
)
from bakery.providers.openstack.resources import (
    Tracked,
    cleanup_on_failure,
    create_server,
    delete_all,
    ensure_floating_ip,
    ensure_keypair,
    ensure_security_group,
    manager_name,
    worker_name,
    worker_number,
    workshop_floating_ips,
    workshop_servers,
)
from bakery.vm.stages import Role, Stage
from bakery.vm.userdata import render_user_data
from bakery.workshop.accounts import Account, credentials_path, ensure_credentials, sheet_order
from bakery.workshop.expiry import refuse_if_ended
from bakery.workshop.sizing import servers_held, worker_estimate

if TYPE_CHECKING:
    from openstack.connection import Connection

SECRET_BYTES = 32
# Swarm's task states that hold (or are about to hold) a container on a node.
LIVE_TASK_STATES = frozenset(
    {"new", "pending", "assigned", "accepted", "ready", "preparing", "starting", "running"}
)
SERVICE_PREFIX = "jupyter-"  # the hub's swarm services: jupyter-NAME (one per trainee's server)
DRAIN_TIMEOUT = 600.0
FIXED_IP_TIMEOUT = 120.0


def refuse_unless_swarm(cfg: Workshop, what: str) -> None:
    """Refuse ``what`` (a command) for a workshop that is not a swarm cluster."""
    if not cfg.cluster.swarm:
        raise UsageError(
            f"{what}: workshop {cfg.name} is not a cluster (cluster.engine: {cfg.cluster.engine});"
            " set cluster.engine: swarm (with spawner.kind: docker) for one hub over workers"
        )


# --- the servers --------------------------------------------------------------------------------


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


def fixed_ip(server: Any, networks: list[str] | None = None) -> str | None:
    """The server's fixed IPv4 address, on the first of ``networks`` (names) when it has one."""
    found: list[tuple[int, str]] = []
    preferred = networks[0] if networks else None
    for net, entries in (server.addresses or {}).items():
        for entry in entries:
            if entry.get("version", 4) != 4 or entry.get("OS-EXT-IPS:type", "fixed") != "fixed":
                continue
            if entry.get("addr"):
                found.append((0 if net == preferred else 1, str(entry["addr"])))
    return min(found)[1] if found else None


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


def role_user_data_b64(
    cfg: Workshop, stage: Stage, role: Role, accounts: list[Account] | None = None
) -> str:
    """Base64 user-data of one member (the manager gets the accounts; a worker none)."""
    data = render_user_data(cfg, stage=stage, accounts=accounts, role=role).data
    return base64.b64encode(data).decode()


def manager_payload(cfg: Workshop, accounts: list[Account], stage: Stage, order: list[str]) -> str:
    """The manager's user-data: the hub, every account (the one part of `split_users`)."""
    (part,) = split_users(cfg, order)
    by_name = {a.username: a for a in accounts}
    mine = [by_name[n] for n in part.users.all_names()]
    return role_user_data_b64(part, stage, "manager", mine)


def worker_payload(cfg: Workshop, number: int, stage: Stage) -> str:
    """Worker ``number``'s user-data (its host name is its server's name)."""
    return role_user_data_b64(
        cfg.model_copy(update={"hostname": worker_name(cfg, number)}), stage, "worker"
    )


def choose_worker_flavor(conn: Connection, cfg: Workshop, config_dir: Path | None = None) -> Any:
    """``cluster.worker_flavor``, or with ``auto`` the smallest that holds a worker's estimate."""
    if cfg.cluster.worker_flavor != "auto":
        return find_flavor(conn, cfg.cluster.worker_flavor, "cluster.worker_flavor")
    return auto_flavor(conn, cfg, worker_estimate(cfg, config_dir))


def with_metadata(attrs: dict[str, Any], extra: dict[str, str]) -> dict[str, Any]:
    """``attrs`` (of `server_attrs`) with ``extra`` added to the server's metadata."""
    return {**attrs, "metadata": {**attrs["metadata"], **extra}}


def wait_fixed_ip(conn: Connection, cfg: Workshop, server: Any, progress: Reporter) -> Any:
    """Wait until ``server`` is ACTIVE with a fixed address; returns it fresh.

    Raises:
        CloudError: it went to ERROR, or has no fixed IPv4 address in time.
    """
    server = wait_active(conn, server, cfg.openstack.active_timeout, progress)
    deadline = time.monotonic() + FIXED_IP_TIMEOUT
    while fixed_ip(server, cfg.openstack.networks) is None:
        if time.monotonic() > deadline:
            raise CloudError(
                f"server {server.name} is ACTIVE but has no fixed IPv4 address after "
                f"{FIXED_IP_TIMEOUT:.0f} s: the workers need one to reach it"
            )
        time.sleep(2)
        server = api(f"get server {server.name}", conn.compute.get_server, server.id)
    return server


@dataclass
class Members:
    """What the workers of a launch or a scale share: how to create them."""

    basis: Basis  # the workers' (their flavor, no floating IP)
    shared: dict[str, Any]  # key pair and security group attributes
    metadata: dict[str, str]  # the secret and the manager's address


def create_workers(
    conn: Connection,
    cfg: Workshop,
    payloads: dict[int, str],
    members: Members,
    made: list[Tracked],
    progress: Reporter,
) -> list[Any]:
    """Create the workers numbered as ``payloads``' keys, without waiting for any (they boot
    side by side); returns them as created."""
    out = []
    for number, payload in payloads.items():
        name = worker_name(cfg, number)
        attrs = server_attrs(cfg, name, payload, members.basis, **members.shared)
        server = create_server(conn, cfg, with_metadata(attrs, members.metadata))
        made.append(Tracked("server", str(server.id), name))
        progress(f"server {name}: creating ({members.basis.flavor.name})")
        out.append(server)
    return out


def wait_workers(
    conn: Connection, cfg: Workshop, workers: list[Any], progress: Reporter
) -> list[ServerInfo]:
    """Wait until every worker is ACTIVE (they were all created before: they boot together)."""
    return [
        server_info(wait_active(conn, s, cfg.openstack.active_timeout, progress), None)
        for s in workers
    ]


# --- launch ---------------------------------------------------------------------------------------


def ensure_manager(
    conn: Connection,
    cfg: Workshop,
    existing: Any | None,
    payload: str,
    basis: Basis,
    shared: dict[str, Any],
    made: list[Tracked],
    progress: Reporter,
) -> tuple[Any, str]:
    """The manager (reused, or created with a new secret), ACTIVE with a fixed address, and the
    cluster's secret."""
    name = manager_name(cfg)
    if existing is not None:
        secret = read_secret(existing)
        progress(f"server {name}: exists ({existing.status}), reused")
        server = existing
    else:
        secret = new_secret()
        attrs = server_attrs(cfg, name, payload, basis, **shared)
        server = create_server(conn, cfg, with_metadata(attrs, {CLUSTER_META_SECRET: secret}))
        made.append(Tracked("server", str(server.id), name))
        progress(f"server {name}: creating ({basis.flavor.name})")
    return wait_fixed_ip(conn, cfg, server, progress), secret


def launch_cluster(
    cfg: Workshop,
    *,
    config_path: Path,
    image: str,
    stage: Stage | None,
    wait: bool,
    progress: Reporter = quiet,
) -> LaunchResult:
    """`bakery launch` of a swarm: the manager first (ACTIVE, a fixed address), then the workers
    side by side with the manager's address, the floating IP for the manager only, and the hub.

    Idempotent as the single-VM launch: what exists is reused (workers beyond
    ``cluster.workers`` are kept: `bakery scale` removes them).
    """
    refuse_if_ended(cfg)
    conn = connect(cfg)
    basis = resolve_basis(conn, cfg, image, stage, progress)
    worker_flavor = choose_worker_flavor(conn, cfg)
    sheet = credentials_path(config_path)
    accounts = ensure_credentials(cfg, sheet)
    # Every member's user-data before anything is created: a size error costs nothing.
    numbers = range(1, cfg.cluster.workers + 1)
    top = manager_payload(cfg, accounts, basis.stage, sheet_order(sheet))
    payloads = {n: worker_payload(cfg, n, basis.stage) for n in numbers}
    with cleanup_on_failure(conn, progress) as made:
        shared = ensure_access(conn, cfg, config_path, made, progress)
        found, existing = cluster_servers(conn, cfg)
        manager, secret = ensure_manager(conn, cfg, found, top, basis, shared, made, progress)
        address = fixed_ip(manager, cfg.openstack.networks)
        assert address is not None  # wait_fixed_ip saw it
        members = Members(
            dataclasses.replace(basis, flavor=worker_flavor, floating_network=None),
            shared,
            {CLUSTER_META_SECRET: secret, CLUSTER_META_MANAGER: address},
        )
        for n, server in existing.items():
            extra = "" if n in numbers else f" (beyond cluster.workers {cfg.cluster.workers})"
            progress(f"server {server.name}: exists ({server.status}), reused{extra}")
        new = create_workers(
            conn, cfg, {n: p for n, p in payloads.items() if n not in existing}, members, made,
            progress,
        )  # fmt: skip
        fip, tracked = ensure_floating_ip(conn, cfg, manager, basis.floating_network, progress)
        made += [tracked] if tracked else []
        workers = wait_workers(conn, cfg, [*existing.values(), *new], progress)
        info = server_info(manager, fip)
        if wait:
            wait_hub(
                conn, cfg, [info], {manager.name: manager}, cfg.openstack.hub_timeout, progress
            )
    result = LaunchResult([info], list(made), sheet, workers=workers)
    if wait:
        # Outside the clean-up: everything is made and the hub answers, whatever happens now.
        result.workers_note = wait_workers_ready(
            conn, cfg, config_path, info, cfg.openstack.hub_timeout, progress
        )
    return result


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
    """A Shell over ssh to the manager at ``host``, as the login user with sudo (vmssh)."""
    from bakery.ssh import Ssh, Target

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
    from bakery.workshop.sizing import estimate_workshop

    result = ClusterStatus(infos, per_server_mib=estimate_workshop(cfg).per_server_mib)
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


# --- scale ----------------------------------------------------------------------------------------


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


def _scale_basis(
    conn: Connection, cfg: Workshop, manager: Any, image: str | None
) -> tuple[Basis, dict[str, str]]:
    """How new workers are made (looked up, nothing created): the manager's image and stage,
    the workers' flavor and networks; and their metadata, the secret read back from the
    manager's."""
    ref = image or (manager.image or {}).get("id") or cfg.openstack.image
    if not ref:
        raise UsageError(
            f"{manager.name} boots from a volume: pass --image (the golden image it came from)"
        )
    img = find_image(conn, str(ref))
    stage: Stage = "boot" if (manager.metadata or {}).get("bakery_stage") == "boot" else "full"
    address = fixed_ip(manager, cfg.openstack.networks)
    if address is None:
        raise CloudError(f"{manager.name} has no fixed address: is it running? (bakery status)")
    basis = Basis(img, stage, choose_worker_flavor(conn, cfg), network_ids(conn, cfg), None)
    return basis, {CLUSTER_META_SECRET: read_secret(manager), CLUSTER_META_MANAGER: address}


def drain_and_remove(
    shell: Shell,
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
    nodes, _ = swarm_state(shell)
    found = [(s, node_of(nodes, s, cfg.openstack.networks)) for s in going]
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
    shell: Shell, name: str, node_id: str, timeout: float, progress: Reporter
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
    if workers < 1:
        raise UsageError(f"--workers {workers}: a cluster keeps at least 1 worker")
    cfg = load_config(config_path)
    refuse_unless_swarm(cfg, "scale")
    conn = connect(cfg)
    manager, existing = cluster_servers(conn, cfg)
    if manager is None:
        raise UsageError(f"no server {manager_name(cfg)}: `bakery launch {config_path}` first")
    going = [existing[n] for n in sorted(existing) if n > workers][::-1]
    new = [n for n in range(1, workers + 1) if n not in existing]
    plan = ScalePlan(
        cfg.name,
        workers,
        [s.name for s in existing.values()],
        [worker_name(cfg, n) for n in new],
        [s.name for s in going],
    )
    if new:
        plan.flavor = str(choose_worker_flavor(conn, cfg).name)
    if dry_run or not (new or going):
        return plan
    if going and not confirm(plan):
        raise BakeryError("not confirmed; nothing removed")
    if new:
        _add_workers(conn, cfg, manager, new, image, progress)
    if going:
        host = manager_address(conn, cfg, manager)
        if host is None:
            raise CloudError(f"{manager.name} has no address to reach it by ssh")
        shell = manager_shell(cfg, config_path, manager.name, host, identity)
        drain_and_remove(shell, cfg, going, progress)
        items = [Tracked("server", str(s.id), s.name) for s in going]
        errors = delete_all(conn, items, progress)
        if errors:
            raise CloudError("deleting the drained workers failed:\n  " + "\n  ".join(errors))
    if workers != cfg.cluster.workers:
        progress(
            f"cluster.workers in {config_path} is {cfg.cluster.workers}: set it to {workers} so "
            "that a later `bakery launch` keeps this size"
        )
    return plan


def _add_workers(
    conn: Connection,
    cfg: Workshop,
    manager: Any,
    numbers: list[int],
    image: str | None,
    progress: Reporter,
) -> None:
    basis, metadata = _scale_basis(conn, cfg, manager, image)
    payloads = {n: worker_payload(cfg, n, basis.stage) for n in numbers}
    with cleanup_on_failure(conn, progress) as made:
        keyname, key = ensure_keypair(conn, cfg, progress)
        made += [key] if key else []
        group, sg = ensure_security_group(conn, cfg, progress)
        made += [sg] if sg else []
        shared: dict[str, Any] = {"security_groups": [{"name": group.name}]}
        if keyname:
            shared["key_name"] = keyname
        new = create_workers(conn, cfg, payloads, Members(basis, shared, metadata), made, progress)
        wait_workers(conn, cfg, new, progress)


def cluster_status(*, config_path: Path, identity: Path | None = None) -> ClusterStatus:
    """`bakery status` of a swarm: every member as the cloud sees it, and the swarm's nodes and
    trainees as the manager does (over ssh; the reason when that is not possible)."""
    from bakery.providers.openstack.launch import server_infos

    cfg = load_config(config_path)
    refuse_unless_swarm(cfg, "cluster status")
    conn = connect(cfg)
    return swarm_status(conn, cfg, config_path, server_infos(conn, cfg), identity)
