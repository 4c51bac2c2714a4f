"""Boot a workshop in a local qemu VM (`bakery try`): overlay, ports, boot, readiness, stop."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from bakery import console, qemu, seed
from bakery.errors import LocalVmError, UsageError
from bakery.files import write_private
from bakery.kvm import Accel, choose_accel
from bakery.progress import Reporter, quiet

# Overlays grow up to this virtual size; qcow2 allocates only what the guest writes.
OVERLAY_SIZE = "20G"
# After cloud-init says it has finished, the hub gets this long to answer before we give up.
AFTER_FINISH_GRACE = 120.0
# Ubuntu/Debian, JupyterHub, the proxy, nginx and one notebook server do not fit in less.
MIN_MEMORY = 1024**3


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
    from bakery.config import parse_size

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
    accel: Accel = "auto",
    hostname: str = "workshop",
    progress: Reporter = quiet,
) -> VmState:
    """Boot ``image`` on a fresh copy-on-write overlay with a NoCloud seed holding ``user_data``.

    The base image is only read. Guest ports 443, 80 and 22 are forwarded to ``127.0.0.1``:
    ``https_port``, ``http_port`` (default ``https_port + 1``) and ``ssh_port``. qemu runs in the
    background; its serial console goes to ``run_dir/serial.log``.

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
    http_port = http_port or https_port + 1
    _check_free(run_dir, {"HTTPS": https_port, "HTTP": http_port, "ssh": ssh_port})
    fmt = qemu.image_format(qemu_img, image)
    accel_name, reason = choose_accel(accel)
    progress(f"accelerator: {reason}")
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("overlay.qcow2", "seed.iso", "serial.log", "qmp.sock", "qemu.pid"):
        (run_dir / stale).unlink(missing_ok=True)
    proc = subprocess.run(
        [qemu_img, "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(image),
         str(run_dir / "overlay.qcow2"), OVERLAY_SIZE],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise LocalVmError(
            f"qemu-img could not create an overlay on {image}: {proc.stderr.strip()}"
        )
    # A new instance-id each start: cloud-init treats the boot as a first boot and runs it all.
    meta = seed.meta_data(f"iid-bakery-{int(time.time())}", hostname)
    seed.write_seed_iso(run_dir / "seed.iso", user_data, meta)
    state = VmState(
        run_dir=str(run_dir), image=str(image), accel=accel_name, accel_reason=reason,
        https_port=https_port, http_port=http_port, ssh_port=ssh_port, memory_mb=mb, cpus=cpus,
    )  # fmt: skip
    boot_vm(state)
    return state


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
    accel = ["-accel", "kvm", "-cpu", "host"] if state.accel == "kvm" else [
        "-accel", "tcg,thread=multi,tb-size=512", "-cpu", "max"]  # fmt: skip
    fwd = (
        f"hostfwd=tcp:127.0.0.1:{state.https_port}-:443,"
        f"hostfwd=tcp:127.0.0.1:{state.http_port}-:80,"
        f"hostfwd=tcp:127.0.0.1:{state.ssh_port}-:22"
    )
    (run / "qmp.sock").unlink(missing_ok=True)
    cmd = [
        exe, "-name", f"bakery-{run.name}", "-machine", "q35", *accel,
        "-smp", str(state.cpus), "-m", str(state.memory_mb),
        "-drive", f"file={run / 'overlay.qcow2'},if=virtio,format=qcow2,discard=unmap,cache=unsafe",
        "-drive", f"file={run / 'seed.iso'},if=virtio,format=raw,readonly=on",
        "-nic", f"user,model=virtio-net-pci,{fwd}",
        "-display", "none", "-serial", f"file:{run / 'serial.log'}", "-monitor", "none",
        "-qmp", f"unix:{run / 'qmp.sock'},server=on,wait=off",
        "-daemonize", "-pidfile", str(run / "qemu.pid"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LocalVmError(f"qemu did not start: {proc.stderr.strip() or 'no message'}")
    state.pid = int((run / "qemu.pid").read_text().strip())
    state.started_at = time.time()
    state.save()


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
    message. The wait ends early when the console shows a failure (see :mod:`bakery.console`).

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
        return "\n".join(lines)


def vm_status(run_dir: Path) -> VmStatus:
    """Report whether the VM of ``run_dir`` runs, what cloud-init did and whether the hub answers.

    Raises:
        LocalVmError: nothing was started from ``run_dir``.
    """
    state = VmState.load(Path(run_dir))
    running = qemu.alive(state.pid)
    scan = console.scan(console_text(Path(run_dir)), workshop=state.extra.get("workshop"))
    hub = _https_status(state.https_port) if running else None
    return VmStatus(running, state, hub, scan)


def stop_vm(
    run_dir: Path, *, keep: bool = False, timeout: float = 120.0, progress: Reporter = quiet
) -> None:
    """Shut the VM of ``run_dir`` down cleanly (ACPI power button via QMP), then clean up.

    Falls back to QMP ``quit`` and then SIGTERM when the guest ignores the power button for
    ``timeout`` seconds. Removes the overlay and seed unless ``keep``.

    Raises:
        LocalVmError: nothing was started from ``run_dir``, or qemu would not exit.
    """
    run = Path(run_dir)
    state = VmState.load(run)
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
    if not keep:
        for name in ("overlay.qcow2", "seed.iso", "state.json"):
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
    from bakery.config import load_config
    from bakery.credentials import credentials_path, ensure_credentials
    from bakery.render import render_user_data

    config_path = Path(config_path)
    cfg = load_config(config_path)
    creds = credentials_path(config_path).resolve()
    accounts = ensure_credentials(cfg, creds)
    user_data = render_user_data(cfg, stage=stage, accounts=accounts).data
    run = run_dir or run_dir_for(cfg.name)
    state = start_vm(
        image=image, user_data=user_data, run_dir=run, https_port=https_port,
        ssh_port=ssh_port, memory=memory, cpus=cpus, accel=accel, hostname=cfg.name,
        progress=progress,
    )  # fmt: skip
    state.config, state.credentials, state.stage = str(config_path.resolve()), str(creds), stage
    state.extra["workshop"] = cfg.name  # its final_message marks cloud-init's end (console.py)
    state.extra["login_user"] = cfg.login_user
    state.save()
    progress(f"qemu started (pid {state.pid}); serial console: {run / 'serial.log'}")
    if timeout is None:
        timeout = (900.0 if stage == "boot" else 5400.0) * (1 if state.accel == "tcg" else 0.5)
    seconds = wait_for_hub(state, timeout=timeout, progress=progress, workshop=cfg.name)
    return TryResult(url=state.url, credentials=creds, state=state, seconds=seconds)
