"""Boot a workshop in a local qemu VM (`bakery try`): overlay, ports, boot, readiness, stop."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bakery.errors import LocalVmError, UsageError
from bakery.files import write_private
from bakery.progress import Reporter, quiet
from bakery.providers.local import qemu, seed
from bakery.providers.local.cluster import CLUSTER_SECRET_FILE, ClusterNic
from bakery.providers.local.kvm import Accel, Accelerator, accel_args, choose_accel
from bakery.vm import console

if TYPE_CHECKING:
    pass

# Overlays grow up to this virtual size; qcow2 allocates only what the guest writes.
OVERLAY_SIZE = "20G"
# Ubuntu/Debian, JupyterHub, the proxy, nginx and one notebook server do not fit in less.
MIN_MEMORY = 1024**3
# Under KVM the kernel must print its first line this soon, or the VM boots again under TCG (the
# watchdog behind the probe, see kvm.py). Measured here under TCG (Debian 12, 2 vCPUs): GRUB
# hands over 2 s after qemu starts and the kernel's first line follows 4-5 s later; a working KVM
# is faster at both. On a nested host whose KVM passed a protected-mode probe, GRUB's menu came
# after 41 s, its hand-over after 44 s, and no kernel line ever.
KERNEL_AFTER_HANDOVER = 15.0
KERNEL_AFTER_START = 30.0


# --- where things live --------------------------------------------------------------------------


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


# --- serial console -----------------------------------------------------------------------------


def console_text(run_dir: Path) -> str:
    """The serial console log so far (empty when there is none)."""
    try:
        return (run_dir / "serial.log").read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


# --- lifecycle ----------------------------------------------------------------------------------


_UNIT_RE = re.compile(r"[0-9.]\s*[KMGT](?:i?B)?$", re.IGNORECASE)


def host_memory() -> int | None:
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
    from bakery.config.units import parse_size

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
    host = host_memory()
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
    disk = _Disk.of(image)
    run_dir = Path(run_dir)
    https_port, http_port = (https_port, http_port or https_port + 1) if web else (0, 0)
    ports = {"HTTPS": https_port, "HTTP": http_port, "ssh": ssh_port}
    check_free(run_dir, {name: port for name, port in ports.items() if port})
    if isinstance(accel, str):
        accel = choose_accel(accel)
        progress(f"accelerator: {accel.reason}")
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("overlay.qcow2", "seed.iso", "serial.log", "qmp.sock", "qemu.pid"):
        (run_dir / stale).unlink(missing_ok=True)
    disk.overlay(run_dir)
    # A new instance-id each start: cloud-init treats the boot as a first boot and runs it all.
    meta_data = seed.meta_data(f"iid-bakery-{int(time.time())}", hostname, meta)
    network = cluster_nic.network_config() if cluster_nic else None
    seed.write_seed_iso(run_dir / "seed.iso", user_data, meta_data, network)
    state = VmState(
        run_dir=str(run_dir), image=str(disk.image), accel=accel.accel,
        accel_reason=accel.reason, https_port=https_port, http_port=http_port,
        ssh_port=ssh_port, memory_mb=mb, cpus=cpus,
        cluster_index=cluster_nic.index if cluster_nic else 0,
        cluster_port=cluster_nic.port if cluster_nic else 0,
    )  # fmt: skip
    _boot_watched(state, disk, accel, progress)
    return state


@dataclass(frozen=True)
class _Disk:
    """The base image a VM boots from (only ever read) and how to lay an overlay on it."""

    image: Path
    fmt: str
    qemu_img: str

    @classmethod
    def of(cls, image: Path) -> _Disk:
        """The base image ``image``, checked to exist and be a disk image qemu reads."""
        qemu_img = qemu.need("qemu-img", "qemu-utils")
        image = Path(image).resolve()
        if not image.is_file():
            raise LocalVmError(f"{image}: no such image file")
        return cls(image, qemu.image_format(qemu_img, image), qemu_img)

    def overlay(self, run_dir: Path) -> None:
        """A fresh copy-on-write overlay of the image at ``run_dir/overlay.qcow2``."""
        _create_overlay(self.qemu_img, self.image, self.fmt, run_dir)


def _boot_watched(state: VmState, disk: _Disk, accel: Accelerator, progress: Reporter) -> None:
    """Boot ``state``; under KVM, watch the kernel start (:func:`watch_kernel`), and where it
    does not, stop that VM and boot it again under TCG on a fresh overlay (``--accel kvm``:
    the error instead)."""
    boot_vm(state)
    if state.accel != "kvm":
        return
    why = watch_kernel(state)
    if why is None:
        return
    kill_vm(state)
    progress(accel.fall_back(why))  # raises under --accel kvm
    state.accel, state.accel_reason = accel.accel, accel.reason
    run_dir = Path(state.run_dir)
    (run_dir / "serial.log").unlink(missing_ok=True)
    disk.overlay(run_dir)
    boot_vm(state)


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


def check_free(run_dir: Path, ports: dict[str, int]) -> None:
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
