"""Boot a workshop in a local qemu VM (`bakery try`): overlay, ports, boot, readiness, stop."""

from __future__ import annotations

import contextlib
import functools
import http.client
import ipaddress
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bakery.errors import LocalVmError, UsageError
from bakery.files import write_private
from bakery.progress import Reporter, quiet
from bakery.providers.local import qemu, seed
from bakery.providers.local.kvm import Accel, Accelerator, accel_args, choose_accel
from bakery.vm import console

if TYPE_CHECKING:
    from bakery.config.workshop import Workshop
    from bakery.workshop.accounts import Account

# Overlays grow up to this virtual size; qcow2 allocates only what the guest writes.
OVERLAY_SIZE = "20G"
# After cloud-init says it has finished, the hub gets this long to answer before we give up.
AFTER_FINISH_GRACE = 120.0
# Ubuntu/Debian, JupyterHub, the proxy, nginx and one notebook server do not fit in less.
MIN_MEMORY = 1024**3
# Under KVM the kernel must print its first line this soon, or the VM boots again under TCG (the
# watchdog behind the probe, see kvm.py). Measured here under TCG (Debian 12, 2 vCPUs): GRUB
# hands over 2 s after qemu starts and the kernel's first line follows 4-5 s later; a working KVM
# is faster at both. On a nested host whose KVM passed a protected-mode probe, GRUB's menu came
# after 41 s, its hand-over after 44 s, and no kernel line ever.
KERNEL_AFTER_HANDOVER = 15.0
KERNEL_AFTER_START = 30.0

# `bakery try --workers N` (cluster.engine swarm): the VMs' second NICs share one private network,
# a qemu multicast socket on the loopback interface (no root, no bridge, nothing on the host's
# real network). The manager is .10, worker i is .(10+i); MTU 1450 as on an OpenStack VXLAN
# tenant network, so the swarm's overlay MTU is exercised as it will be there.
CLUSTER_NET = "10.77.0.0/24"
CLUSTER_FIRST_HOST = 10
CLUSTER_MTU = 1450
CLUSTER_GROUP = "230.0.0.1"
# The cluster's secret (the workers show it to the manager for the swarm join token), mode 600.
CLUSTER_SECRET_FILE = "cluster-secret"  # noqa: S105 (a file name)
# Guest NIC names the seed's network-config gives (by MAC): the user-mode NIC, the cluster NIC.
LAN_NIC, CLUSTER_NIC = "lan0", "cluster0"


# --- where things live --------------------------------------------------------------------------


def try_root() -> Path:
    """The folder holding one run directory per workshop: ``$XDG_CACHE_HOME/bakery/try``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "bakery" / "try"


def run_dir_for(name: str) -> Path:
    """The run directory of workshop ``name`` (overlay, seed ISO, serial log, QMP socket)."""
    return try_root() / name


@dataclass
class VmState:
    """What `bakery try` started, saved as ``state.json`` in the run directory."""

    run_dir: str
    image: str
    accel: str
    accel_reason: str
    https_port: int
    http_port: int
    ssh_port: int
    memory_mb: int
    cpus: int
    pid: int = 0
    started_at: float = 0.0
    config: str = ""
    credentials: str = ""
    stage: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # A cluster VM: its place on the private network (0 manager, i worker i) and the multicast
    # port of the network (0: no cluster NIC); the manager lists its workers' run directories.
    cluster_index: int = 0
    cluster_port: int = 0
    workers: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The hub's URL on this machine."""
        return f"https://127.0.0.1:{self.https_port}/"

    def path(self, name: str) -> Path:
        """A file in the run directory."""
        return Path(self.run_dir) / name

    def save(self) -> None:
        """Write ``state.json`` (atomically)."""
        write_private(self.path("state.json"), json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: Path) -> VmState:
        """Read ``run_dir/state.json``; a LocalVmError when there is none."""
        try:
            data = json.loads((run_dir / "state.json").read_text(encoding="utf-8"))
            return cls(**data)
        except FileNotFoundError:
            raise LocalVmError(f"no local VM was started from {run_dir}") from None
        except (OSError, ValueError, TypeError) as exc:
            raise LocalVmError(f"{run_dir}/state.json is unreadable ({exc}); remove it") from None

    @property
    def cluster_nic(self) -> ClusterNic | None:
        """The VM's NIC on the cluster network; None for a VM outside a cluster."""
        return ClusterNic(self.cluster_index, self.cluster_port) if self.cluster_port else None


@dataclass(frozen=True)
class ClusterNic:
    """A VM's place on a local cluster's private network (see :data:`CLUSTER_NET`).

    Attributes:
        index: 0 for the manager, ``i`` for worker ``i``.
        port: the UDP port of the network's multicast group, one per cluster: two clusters on
            one machine with different ports do not see each other's frames.
    """

    index: int
    port: int

    @property
    def address(self) -> str:
        """The VM's address on the cluster network, e.g. ``10.77.0.10``."""
        net = ipaddress.IPv4Network(CLUSTER_NET)
        return str(net.network_address + CLUSTER_FIRST_HOST + self.index)

    @property
    def mac(self) -> str:
        """The cluster NIC's fixed MAC (qemu's 52:54:00 prefix, the host byte last)."""
        return f"52:54:00:77:00:{CLUSTER_FIRST_HOST + self.index:02x}"

    @property
    def lan_mac(self) -> str:
        """The user-mode NIC's fixed MAC (the network-config finds each NIC by its MAC)."""
        return f"52:54:00:12:34:{CLUSTER_FIRST_HOST + self.index:02x}"

    def network_config(self) -> str:
        """The seed's ``network-config``: DHCP on the user-mode NIC, the static cluster address."""
        prefix = ipaddress.IPv4Network(CLUSTER_NET).prefixlen
        return seed.network_config(
            [
                seed.Nic(LAN_NIC, self.lan_mac),
                seed.Nic(CLUSTER_NIC, self.mac, f"{self.address}/{prefix}", CLUSTER_MTU),
            ]
        )

    def netdev(self) -> str:
        """qemu's ``-netdev`` of the cluster network: a multicast group on the loopback."""
        return f"socket,id=cluster,mcast={CLUSTER_GROUP}:{self.port},localaddr=127.0.0.1"


# --- serial console -----------------------------------------------------------------------------


def console_text(run_dir: Path) -> str:
    """The serial console log so far (empty when there is none)."""
    try:
        return (run_dir / "serial.log").read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


# --- lifecycle ----------------------------------------------------------------------------------


_UNIT_RE = re.compile(r"[0-9.]\s*[KMGT](?:i?B)?$", re.IGNORECASE)


def _host_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return None


def memory_mb(memory: str) -> int:
    """Guest memory in MiB from a size with a unit: ``4G``, ``3072M``, ``2.5GiB``.

    Raises:
        UsageError: no unit (qemu would read MiB, bakery's sizes mean bytes: ambiguous), not a
            size, below :data:`MIN_MEMORY`, or more than this machine has; the message names
            ``--memory``.
    """
    from bakery.config.fields import parse_size

    text = str(memory).strip()
    if not _UNIT_RE.search(text):
        raise UsageError(
            f"--memory {memory}: give a unit, e.g. 4G or 3072M (K, M, G, T; KiB, MiB, GiB too)"
        )
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise UsageError(f"--memory: {exc}") from None
    if size < MIN_MEMORY:
        raise UsageError(
            f"--memory {memory}: a hub VM needs at least 1G (the OS, JupyterHub, nginx and one "
            "notebook server); the default is 4G"
        )
    host = _host_memory()
    if host is not None and size > host:
        raise UsageError(
            f"--memory {memory}: this machine has only {host / 1024**3:.1f}G of memory"
        )
    return size // 1024**2


def start_vm(
    *,
    image: Path,
    user_data: bytes,
    run_dir: Path,
    https_port: int = 8443,
    http_port: int | None = None,
    ssh_port: int = 2222,
    memory: str = "4G",
    cpus: int = 2,
    accel: Accel | Accelerator = "auto",
    hostname: str = "workshop",
    web: bool = True,
    cluster_nic: ClusterNic | None = None,
    meta: dict[str, str] | None = None,
    progress: Reporter = quiet,
) -> VmState:
    """Boot ``image`` on a fresh copy-on-write overlay with a NoCloud seed holding ``user_data``.

    The base image is only read. Guest ports 443, 80 and 22 are forwarded to ``127.0.0.1``:
    ``https_port``, ``http_port`` (default ``https_port + 1``) and ``ssh_port``; without ``web``
    only ssh (a cluster's worker). qemu runs in the background; its serial console goes to
    ``run_dir/serial.log``.

    With ``cluster_nic`` the VM gets a second NIC on the cluster's private network and the seed a
    ``network-config`` (both NICs by MAC: DHCP on the first, the static cluster address with MTU
    1450 on the second). ``meta`` adds keys to the seed's meta-data (root-only on the VM).

    Raises:
        UsageError: ``memory`` is not a sensible size (see :func:`memory_mb`).
        ToolMissing: qemu or qemu-img is not installed.
        LocalVmError: a port is taken, a VM already runs there, or qemu fails.
    """
    mb = memory_mb(memory)
    qemu.need("qemu-system-x86_64", "qemu-system-x86")
    qemu_img = qemu.need("qemu-img", "qemu-utils")
    image = Path(image).resolve()
    if not image.is_file():
        raise LocalVmError(f"{image}: no such image file")
    run_dir = Path(run_dir)
    http_port = (http_port or https_port + 1) if web else 0
    https_port = https_port if web else 0
    ports = {"HTTPS": https_port, "HTTP": http_port, "ssh": ssh_port}
    _check_free(run_dir, {name: port for name, port in ports.items() if port})
    fmt = qemu.image_format(qemu_img, image)
    if isinstance(accel, str):
        accel = choose_accel(accel)
        progress(f"accelerator: {accel.reason}")
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("overlay.qcow2", "seed.iso", "serial.log", "qmp.sock", "qemu.pid"):
        (run_dir / stale).unlink(missing_ok=True)
    _create_overlay(qemu_img, image, fmt, run_dir)
    # A new instance-id each start: cloud-init treats the boot as a first boot and runs it all.
    meta_data = seed.meta_data(f"iid-bakery-{int(time.time())}", hostname, meta)
    network = cluster_nic.network_config() if cluster_nic else None
    seed.write_seed_iso(run_dir / "seed.iso", user_data, meta_data, network)
    state = VmState(
        run_dir=str(run_dir), image=str(image), accel=accel.accel, accel_reason=accel.reason,
        https_port=https_port, http_port=http_port, ssh_port=ssh_port, memory_mb=mb, cpus=cpus,
        cluster_index=cluster_nic.index if cluster_nic else 0,
        cluster_port=cluster_nic.port if cluster_nic else 0,
    )  # fmt: skip
    boot_vm(state)
    if state.accel == "kvm":
        why = watch_kernel(state)
        if why is not None:
            kill_vm(state)
            progress(accel.fall_back(why))  # raises under --accel kvm
            state.accel, state.accel_reason = accel.accel, accel.reason
            (run_dir / "serial.log").unlink(missing_ok=True)
            _create_overlay(qemu_img, image, fmt, run_dir)
            boot_vm(state)
    return state


def _create_overlay(qemu_img: str, image: Path, fmt: str, run_dir: Path) -> None:
    """A fresh copy-on-write overlay of ``image`` at ``run_dir/overlay.qcow2``."""
    proc = subprocess.run(
        [qemu_img, "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(image),
         str(run_dir / "overlay.qcow2"), OVERLAY_SIZE],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise LocalVmError(
            f"qemu-img could not create an overlay on {image}: {proc.stderr.strip()}"
        )


def watch_kernel(
    state: VmState,
    *,
    after_start: float | None = None,
    after_handover: float | None = None,
    poll: float = 0.25,
) -> str | None:
    """Wait until the VM's kernel prints its first line; why not, when it does not.

    The second line of defence behind the probe (:func:`bakery.providers.local.kvm.kvm_usable`):
    a KVM that runs the probe may still not run a kernel. Gives up when the boot loader handed over
    ``after_handover`` seconds ago, or qemu started ``after_start`` seconds ago, with no kernel
    line on the console; at once when qemu exits or KVM stops the guest with an internal error.

    Returns:
        None once the kernel printed; else the reason, one short clause.
    """
    after_start = KERNEL_AFTER_START if after_start is None else after_start
    after_handover = KERNEL_AFTER_HANDOVER if after_handover is None else after_handover
    run = Path(state.run_dir)
    start = time.monotonic()
    handover: float | None = None
    while True:
        scan = console.scan(console_text(run))
        if scan.kernel_started:
            return None
        now = time.monotonic()
        if scan.loader_handed_over and handover is None:
            handover = now
        if not qemu.alive(state.pid):
            return "qemu exited before the kernel printed anything"
        if _internal_error(run):
            return "KVM stopped the guest with an internal error"
        if handover is not None and now - handover > after_handover:
            return f"the boot loader handed over; no kernel output within {after_handover:g} s"
        if now - start > after_start:
            return f"no kernel output {after_start:g} s after qemu started"
        time.sleep(poll)


def _internal_error(run: Path) -> bool:
    """Whether qemu paused the guest for a KVM internal error (QMP ``query-status``)."""
    try:
        status = qemu.qmp(run, "query-status")
    except (LocalVmError, OSError, ValueError):
        return False
    return isinstance(status, dict) and status.get("status") == "internal-error"


def kill_vm(state: VmState) -> None:
    """Stop qemu at once (no guest shutdown: for a VM that never got going)."""
    run = Path(state.run_dir)
    try:
        qemu.qmp(run, "quit")
        quit_sent = True
    except (LocalVmError, OSError, ValueError):
        quit_sent = False
    if not (quit_sent and qemu.wait_exit(state.pid, 5)) and qemu.alive(state.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGKILL)
        qemu.wait_exit(state.pid, 5)
    for name in ("qmp.sock", "qemu.pid"):
        (run / name).unlink(missing_ok=True)


def _check_free(run_dir: Path, ports: dict[str, int]) -> None:
    """Refuse to start a second VM from ``run_dir`` or on a local port that is taken."""
    if (run_dir / "state.json").exists():
        old = VmState.load(run_dir)
        if qemu.alive(old.pid):
            raise LocalVmError(
                f"a VM from {run_dir} is already running (pid {old.pid}, {old.url}); "
                "stop it first (bakery try --stop)"
            )
    for name, port in ports.items():
        if not qemu.port_free(port):
            raise LocalVmError(f"127.0.0.1:{port} ({name}) is already in use; pick another port")


def boot_vm(state: VmState) -> None:
    """Start qemu for ``state`` (overlay and seed must exist) and record its pid.

    Raises:
        LocalVmError: qemu refused to start.
    """
    exe = qemu.need("qemu-system-x86_64", "qemu-system-x86")
    run = Path(state.run_dir)
    (run / "qmp.sock").unlink(missing_ok=True)
    proc = subprocess.run(qemu_command(state, exe), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LocalVmError(f"qemu did not start: {proc.stderr.strip() or 'no message'}")
    state.pid = int((run / "qemu.pid").read_text().strip())
    state.started_at = time.time()
    state.save()


def qemu_command(state: VmState, exe: str = "qemu-system-x86_64") -> list[str]:
    """The qemu command line that boots ``state``'s overlay and seed in the background."""
    run = Path(state.run_dir)
    accel = accel_args(state.accel)
    guest_ports = {state.https_port: 443, state.http_port: 80, state.ssh_port: 22}
    fwd = ",".join(
        f"hostfwd=tcp:127.0.0.1:{host}-:{guest}" for host, guest in guest_ports.items() if host
    )
    nic = ["-nic", f"user,model=virtio-net-pci,{fwd}"]
    cluster = state.cluster_nic
    if cluster is not None:
        nic = [
            "-nic", f"user,model=virtio-net-pci,mac={cluster.lan_mac},{fwd}",
            "-netdev", cluster.netdev(),
            "-device", f"virtio-net-pci,netdev=cluster,mac={cluster.mac}",
        ]  # fmt: skip
    return [
        exe, "-name", f"bakery-{run.name}", "-machine", "q35", *accel,
        "-smp", str(state.cpus), "-m", str(state.memory_mb),
        "-drive", f"file={run / 'overlay.qcow2'},if=virtio,format=qcow2,discard=unmap,cache=unsafe",
        "-drive", f"file={run / 'seed.iso'},if=virtio,format=raw,readonly=on",
        *nic,
        "-display", "none", "-serial", f"file:{run / 'serial.log'}", "-monitor", "none",
        "-qmp", f"unix:{run / 'qmp.sock'},server=on,wait=off",
        "-daemonize", "-pidfile", str(run / "qemu.pid"),
    ]  # fmt: skip


def _https_status(port: int, path: str = "/hub/login", timeout: float = 5.0) -> int | None:
    """The status of ``https://127.0.0.1:PORT/PATH`` (self-signed accepted); None: no answer."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
    )
    try:
        with opener.open(f"https://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, http.client.HTTPException):  # includes ssl.SSLError and timeouts
        return None


def wait_for_hub(
    state: VmState,
    *,
    timeout: float = 1200.0,
    progress: Reporter = quiet,
    poll: float = 3.0,
    workshop: str | None = None,
) -> float:
    """Wait until the hub's login page answers 200, reporting cloud-init's stage as it goes.

    The current stage (read from the serial console) is reported as a transient progress
    message. The wait ends early when the console shows a failure (see :mod:`bakery.vm.console`).

    Args:
        state: the started VM.
        timeout: seconds to wait in all.
        progress: the reporter.
        poll: seconds between looks.
        workshop: the workshop whose ``final_message`` marks cloud-init's end.

    Returns:
        Seconds from qemu's start to the login page answering.

    Raises:
        LocalVmError: cloud-init or one of bakery's units failed (the message carries the console
            lines), qemu exited, cloud-init finished without the hub coming up, or ``timeout``
            passed.
    """
    wait = _Wait(timeout)
    while True:
        scan = console.scan(console_text(Path(state.run_dir)), workshop=workshop)
        if scan.finished and wait.finished_at is None:
            wait.finished_at = time.monotonic()
            progress("cloud-init finished; waiting for the hub")
        status = _https_status(state.https_port)
        if status == 200:
            return time.time() - state.started_at
        progress(_live_line(state, scan, status), transient=True)
        _give_up_if_hopeless(state, scan, status, wait)
        time.sleep(poll)


@dataclass
class _Wait:
    timeout: float
    start: float = field(default_factory=time.monotonic)
    finished_at: float | None = None


def _live_line(state: VmState, scan: console.ConsoleScan, status: int | None) -> str:
    if scan.finished:
        answer = "no answer" if status is None else f"HTTP {status}"
        return f"waiting for {state.url}hub/login ({answer})"
    return scan.stage or "waiting for the VM's console"


def _give_up_if_hopeless(
    state: VmState,
    scan: console.ConsoleScan,
    status: int | None,
    wait: _Wait,
) -> None:
    """Raise when the hub will not come up: a console failure, qemu gone, or time is up."""
    if scan.failures:
        raise LocalVmError(
            _failure_report(state, scan, "cloud-init reported a failure on the serial console")
        )
    if not qemu.alive(state.pid):
        raise LocalVmError(
            "qemu exited before the hub came up; the serial console ended with:\n"
            + _tail(console_text(Path(state.run_dir)))
        )
    now = time.monotonic()
    if wait.finished_at is not None and now - wait.finished_at > AFTER_FINISH_GRACE:
        headline = (
            f"cloud-init finished but {state.url}hub/login did not answer 200 (last: {status})"
        )
        raise LocalVmError(_failure_report(state, scan, headline))
    if now - wait.start > wait.timeout:
        headline = f"the hub did not come up within {wait.timeout:.0f} s"
        raise LocalVmError(_failure_report(state, scan, headline))


def _failure_report(state: VmState, scan: console.ConsoleScan, headline: str) -> str:
    run = Path(state.run_dir)
    parts = [headline + "."]
    if scan.failures:
        parts.append(
            "Problems reported on the serial console:\n" + _tail("\n".join(scan.failures), 30)
        )
    else:
        parts.append("Last serial console lines:\n" + _tail(console_text(run)))
    parts.append(
        f"Full console log: {run / 'serial.log'}; inside the VM: "
        "/var/log/cloud-init-output.log, journalctl -u jupyterhub "
        f"(ssh -p {state.ssh_port} {state.extra.get('login_user', 'LOGIN_USER')}@127.0.0.1). "
        "Stop it with bakery try --stop."
    )
    return "\n".join(parts)


@dataclass(frozen=True)
class VmStatus:
    """The state of a local VM as `bakery try --status` shows it."""

    running: bool
    state: VmState
    hub_status: int | None
    console: console.ConsoleScan
    workers: tuple[VmStatus, ...] = ()

    def describe(self) -> str:
        """Human-readable lines."""
        st = self.state
        lines = [
            f"VM: {'running' if self.running else 'not running'} (pid {st.pid}, {st.accel}, "
            f"{st.memory_mb} MB, {st.cpus} CPUs), run dir {st.run_dir}",
            f"hub: {st.url} -> {self.hub_status if self.hub_status is not None else 'no answer'}",
            f"ssh: ssh -p {st.ssh_port} {st.extra.get('login_user', 'LOGIN_USER')}@127.0.0.1",
            f"cloud-init: {', '.join(dict.fromkeys(self.console.stages)) or 'not started'}"
            + (" (finished)" if self.console.finished else ""),
        ]
        if st.credentials:
            lines.append(f"credentials: {st.credentials}")
        if self.console.failures:
            lines.append("console problems:\n" + _tail("\n".join(self.console.failures), 10))
        for worker in self.workers:
            lines.append(worker.describe_worker())
        return "\n".join(lines)

    def describe_worker(self) -> str:
        """One line for a cluster's worker (it has no hub of its own)."""
        st = self.state
        nic = st.cluster_nic
        stages = ", ".join(dict.fromkeys(self.console.stages)) or "not started"
        return (
            f"worker {nic.index if nic else '?'}: {'running' if self.running else 'not running'} "
            f"(pid {st.pid}, {nic.address if nic else 'no cluster NIC'}), "
            f"ssh -p {st.ssh_port} {st.extra.get('login_user', 'LOGIN_USER')}@127.0.0.1, "
            f"cloud-init: {stages}{' (finished)' if self.console.finished else ''}"
            + (f", console problems: {len(self.console.failures)}" if self.console.failures else "")
        )


def vm_status(run_dir: Path) -> VmStatus:
    """Report whether the VM of ``run_dir`` runs, what cloud-init did and whether the hub answers
    (and the same for a cluster's workers).

    Raises:
        LocalVmError: nothing was started from ``run_dir``.
    """
    state = VmState.load(Path(run_dir))
    running = qemu.alive(state.pid)
    scan = console.scan(console_text(Path(run_dir)), workshop=state.extra.get("workshop"))
    hub = _https_status(state.https_port) if running and state.https_port else None
    workers = tuple(vm_status(Path(worker)) for worker in state.workers)
    return VmStatus(running, state, hub, scan, workers)


def stop_vm(
    run_dir: Path, *, keep: bool = False, timeout: float = 120.0, progress: Reporter = quiet
) -> None:
    """Shut the VM of ``run_dir`` down cleanly (ACPI power button via QMP), then clean up.

    Falls back to QMP ``quit`` and then SIGTERM when the guest ignores the power button for
    ``timeout`` seconds. Removes the overlay and seed unless ``keep``. A cluster's manager stops
    its workers first (each as its own VM); a worker that fails to stop does not keep the others
    running.

    Raises:
        LocalVmError: nothing was started from ``run_dir``, or a qemu would not exit.
    """
    run = Path(run_dir)
    state = VmState.load(run)
    # Workers first: they mount the manager's /home over NFS and would hang on it at shutdown.
    failures = []
    for worker in state.workers:
        try:
            progress(f"stopping the worker in {worker}")
            stop_vm(Path(worker), keep=keep, timeout=timeout, progress=progress)
        except LocalVmError as exc:
            failures.append(str(exc))
    _stop_one(run, state, timeout, progress)
    if not keep:
        for name in ("overlay.qcow2", "seed.iso", "state.json", CLUSTER_SECRET_FILE):
            (run / name).unlink(missing_ok=True)
    if failures:
        raise LocalVmError("; ".join(failures))


def _stop_one(run: Path, state: VmState, timeout: float, progress: Reporter) -> None:
    """Power the VM of ``state`` off (ACPI, then QMP quit, then SIGTERM)."""
    if qemu.alive(state.pid):
        progress("asking the guest to power off (ACPI)")
        with contextlib.suppress(LocalVmError):
            qemu.qmp(run, "system_powerdown")
        if not qemu.wait_exit(state.pid, timeout):
            progress(f"the guest did not power off within {timeout:.0f} s; stopping qemu")
            with contextlib.suppress(LocalVmError, OSError):
                qemu.qmp(run, "quit")
            if not qemu.wait_exit(state.pid, 10):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(state.pid, signal.SIGTERM)
                if not qemu.wait_exit(state.pid, 10):
                    raise LocalVmError(f"qemu (pid {state.pid}) would not exit")
    for name in ("qmp.sock", "qemu.pid"):
        (run / name).unlink(missing_ok=True)


# --- the `bakery try` orchestration -------------------------------------------------------------


@dataclass(frozen=True)
class TryResult:
    """What `bakery try` prints when the hub is up."""

    url: str
    credentials: Path
    state: VmState
    seconds: float


def try_workshop(
    config_path: Path,
    *,
    image: Path,
    stage: Literal["full", "boot"] = "full",
    https_port: int = 8443,
    ssh_port: int = 2222,
    memory: str = "4G",
    cpus: int = 2,
    accel: Accel = "auto",
    timeout: float | None = None,
    run_dir: Path | None = None,
    progress: Reporter = quiet,
) -> TryResult:
    """Render the workshop's user-data, boot it in a local VM and wait for the hub's login page.

    ``stage="full"`` installs everything in the VM (slow without KVM); ``stage="boot"`` expects
    an image baked with the bake stage (`bakery bake`). Passwords come from (and are added to)
    the credentials sheet next to the config.

    Raises:
        BakeryError: the config is invalid, or the VM did not come up (LocalVmError).
    """
    from bakery.vm.userdata import render_user_data

    config_path = Path(config_path)
    cfg, creds, accounts = _workshop(config_path)
    user_data = render_user_data(cfg, stage=stage, accounts=accounts).data
    run = run_dir or run_dir_for(cfg.name)
    state = start_vm(
        image=image, user_data=user_data, run_dir=run, https_port=https_port,
        ssh_port=ssh_port, memory=memory, cpus=cpus, accel=accel, hostname=cfg.name,
        progress=progress,
    )  # fmt: skip
    _remember(state, cfg, config_path, creds, stage)
    progress(f"qemu started (pid {state.pid}); serial console: {run / 'serial.log'}")
    seconds = wait_for_hub(
        state,
        timeout=_hub_timeout(timeout, stage, state, vcpus=cpus),
        progress=progress,
        workshop=cfg.name,
    )
    return TryResult(url=state.url, credentials=creds, state=state, seconds=seconds)


def _workshop(config_path: Path) -> tuple[Workshop, Path, list[Account]]:
    """The config, its credentials sheet and the accounts in it (made now where missing)."""
    from bakery.config.workshop import load_config
    from bakery.workshop.accounts import credentials_path, ensure_credentials

    cfg = load_config(config_path)
    creds = credentials_path(config_path).resolve()
    return cfg, creds, ensure_credentials(cfg, creds)


def _remember(state: VmState, cfg: Workshop, config_path: Path, creds: Path, stage: str) -> None:
    """Record in ``state`` what `--status` and failure reports name: config, sheet, workshop."""
    state.config, state.credentials, state.stage = str(config_path.resolve()), str(creds), stage
    state.extra["workshop"] = cfg.name  # its final_message marks cloud-init's end (console.py)
    state.extra["login_user"] = cfg.login_user
    state.save()


def _hub_timeout(timeout: float | None, stage: str, state: VmState, *, vcpus: int) -> float:
    """How long to wait for the hub: ``timeout``, or a default for the stage and accelerator.

    The default grows with the guests' ``vcpus`` (all VMs together) over this machine's cores:
    under software emulation each vCPU is a host thread, and three 2-vCPU VMs on 2 cores took
    900 s to the hub where one took 230 s.
    """
    if timeout is not None:
        return timeout
    base = (900.0 if stage == "boot" else 5400.0) * (1 if state.accel == "tcg" else 0.5)
    return base * max(1.0, vcpus / (os.cpu_count() or 1))


def try_cluster(
    config_path: Path,
    *,
    image: Path,
    workers: int | None = None,
    stage: Literal["full", "boot"] = "boot",
    https_port: int = 8443,
    ssh_port: int = 2222,
    memory: str = "2560M",
    cpus: int = 2,
    accel: Accel = "auto",
    timeout: float | None = None,
    run_dir: Path | None = None,
    progress: Reporter = quiet,
) -> TryResult:
    """Boot a swarm workshop (``cluster.engine: swarm``) as a manager VM and ``workers`` workers.

    The VMs share a private network (:data:`CLUSTER_NET`, MTU 1450): the manager at .10, worker
    ``i`` at .(10+i). One random secret per cluster goes into every VM's meta-data (never into
    user-data) with the manager's address; it is kept in the run directory (mode 600) and
    nowhere else. The manager forwards HTTPS, HTTP and ssh as `bakery try` does; worker ``i``
    forwards only ssh, on ``ssh_port + i``. Workers' run directories are ``RUN/worker-I``; the
    manager's state lists them, so `--status` and `--stop` cover them.

    Args:
        workers: worker VMs (default: the config's ``cluster.workers``).
        memory: each VM's memory.

    Returns:
        The manager's result once its hub's login page answers (the workers may still be
        joining the swarm).

    Raises:
        UsageError: the config is not a swarm cluster, or the VMs do not fit in this machine.
        BakeryError: the config is invalid, or a VM did not come up (LocalVmError).
    """
    from bakery.layout import CLUSTER_META_MANAGER, CLUSTER_META_SECRET
    from bakery.vm.userdata import render_user_data

    config_path = Path(config_path)
    cfg, creds, accounts = _workshop(config_path)
    if not cfg.cluster.swarm:
        raise UsageError(
            f"--workers: {config_path} is not a cluster; set cluster.engine: swarm in it"
        )
    count = cfg.cluster.workers if workers is None else workers
    if count < 1:
        raise UsageError(f"--workers {count}: a cluster needs at least one worker")
    run = Path(run_dir or run_dir_for(cfg.name))
    _check_cluster_fits(memory, count + 1)
    _check_free(run, {"HTTPS": https_port, "HTTP": https_port + 1, "ssh": ssh_port})
    for i in range(1, count + 1):
        _check_free(run / f"worker-{i}", {f"worker {i} ssh": ssh_port + i})
    run.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    write_private(run / CLUSTER_SECRET_FILE, secret + "\n")
    # The multicast port: one per cluster, so two clusters on this machine stay apart.
    port = https_port
    manager = ClusterNic(0, port)
    meta = {CLUSTER_META_SECRET: secret, CLUSTER_META_MANAGER: manager.address}
    # One choice for every VM: printed once, and a fallback on the manager holds for the workers.
    choice = choose_accel(accel)
    progress(f"accelerator: {choice.reason}")
    boot = functools.partial(
        start_vm, image=image, memory=memory, cpus=cpus, accel=choice, meta=meta
    )
    docs = {
        role: render_user_data(cfg, stage=stage, accounts=accounts, role=role).data
        for role in ("manager", "worker")
    }
    state = boot(
        user_data=docs["manager"], run_dir=run, https_port=https_port, ssh_port=ssh_port,
        hostname=f"{cfg.name}-manager", cluster_nic=manager, progress=progress,
    )  # fmt: skip
    _remember(state, cfg, config_path, creds, stage)
    progress(f"manager: qemu started (pid {state.pid}); serial console: {run / 'serial.log'}")
    try:
        for i in range(1, count + 1):
            worker = boot(
                user_data=docs["worker"], run_dir=run / f"worker-{i}", ssh_port=ssh_port + i,
                hostname=f"{cfg.name}-worker-{i}", web=False, cluster_nic=ClusterNic(i, port),
            )  # fmt: skip
            _remember(worker, cfg, config_path, creds, stage)
            state.workers.append(worker.run_dir)
            state.save()
            progress(f"worker {i}: qemu started (pid {worker.pid}), ssh port {ssh_port + i}")
    except BaseException:
        # A worker that cannot start leaves no half cluster behind (the error says why).
        with contextlib.suppress(LocalVmError):
            stop_vm(run, timeout=30)
        raise
    seconds = wait_for_hub(
        state,
        timeout=_hub_timeout(timeout, stage, state, vcpus=cpus * (count + 1)),
        progress=progress,
        workshop=cfg.name,
    )
    return TryResult(url=state.url, credentials=creds, state=state, seconds=seconds)


def _check_cluster_fits(memory: str, vms: int) -> None:
    """Refuse ``vms`` VMs of ``memory`` each when they need more than this machine has."""
    mb = memory_mb(memory)
    host = _host_memory()
    if host is not None and vms * mb * 1024**2 > host:
        raise UsageError(
            f"--memory {memory}: {vms} VMs need {vms * mb / 1024:.1f}G; this machine has only "
            f"{host / 1024**3:.1f}G (fewer --workers or less --memory)"
        )
