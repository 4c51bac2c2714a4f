"""Boot a workshop in a local qemu VM (`bakery try`): overlay, NoCloud seed, ports, readiness."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from bakery.errors import BakeryError

Accel = Literal["auto", "kvm", "tcg"]
Progress = Callable[[str], None]

# Overlays grow up to this virtual size; qcow2 allocates only what the guest writes.
OVERLAY_SIZE = "20G"
# After cloud-init says it has finished, the hub gets this long to answer before we give up.
AFTER_FINISH_GRACE = 120.0


class LocalVmError(BakeryError):
    """A local VM could not be started, did not come up, or could not be stopped."""


class TryUsageError(LocalVmError):
    """`bakery try` was called with options that do not fit together."""

    exit_code = 2


class LocalVmToolMissing(LocalVmError):
    """qemu, qemu-img or an ISO writer is not installed."""

    exit_code = 3


def _quiet(_msg: str) -> None:
    return None


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
        tmp = self.path("state.json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path("state.json"))

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


# --- tools and acceleration ---------------------------------------------------------------------


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise LocalVmToolMissing(
            f"{tool} not found: install it (Debian/Ubuntu: apt-get install {package})"
        )
    return path


def _kvm_usable() -> tuple[bool, str]:
    """Whether KVM really runs a guest: /dev/kvm must open *and* a tiny real-mode guest must run.

    Some hosts (nested virtualisation) expose a /dev/kvm that opens but cannot run stock guests,
    so the check boots a 512-byte boot sector that writes to the serial port and powers off.
    """
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not accessible to this user (add yourself to group kvm)"
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return False, "qemu-system-x86_64 not found"
    with tempfile.TemporaryDirectory(prefix="bakery-kvm-") as tmp:
        disk, out = Path(tmp) / "probe.img", Path(tmp) / "serial.out"
        disk.write_bytes(_probe_boot_sector())
        os.truncate(disk, 1024 * 1024)  # SeaBIOS ignores a disk of a single sector
        proc = subprocess.Popen(
            [qemu, "-accel", "kvm", "-cpu", "host", "-machine", "q35", "-m", "64",
             "-display", "none", "-no-reboot", "-monitor", "none", "-serial", f"file:{out}",
             "-drive", f"file={disk},format=raw,if=ide"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and proc.poll() is None:
                if out.exists() and b"BAKERY-KVM-OK" in out.read_bytes():
                    return True, "KVM works"
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, stderr = proc.communicate()
        if out.exists() and b"BAKERY-KVM-OK" in out.read_bytes():
            return True, "KVM works"
        err = stderr.decode(errors="replace").strip().splitlines()
        why = err[-1] if err else "it printed nothing within 15 s"
        return False, f"a protected-mode probe guest does not run under KVM here ({why})"


def _probe_boot_sector() -> bytes:
    """A boot sector that switches to 32-bit protected mode, prints a marker on COM1 and halts.

    Protected mode matters: the KVM failure seen on nested hosts shows only once the guest leaves
    real mode, which is what every kernel does first.
    """
    msg = b"BAKERY-KVM-OK\r\n"
    code = bytearray()
    code += bytes.fromhex("fa")  # cli
    code += bytes.fromhex("31c08ed8")  # xor ax,ax; mov ds,ax
    # lgdt [gdtr] (address patched below)
    code += bytes.fromhex("0f0116") + b"\x00\x00"
    lgdt_at = len(code) - 2
    code += bytes.fromhex("0f20c06683c8010f22c0")  # mov eax,cr0; or eax,1; mov cr0,eax
    code += bytes.fromhex("ea") + b"\x00\x00" + bytes.fromhex("0800")  # jmp 0x08:pm
    jmp_at = len(code) - 4
    pm = len(code)
    code += bytes.fromhex("66b810008ed8")  # mov ax,0x10; mov ds,ax (32-bit code: 66 = 16-bit op)
    code += bytes.fromhex("be") + b"\x00\x00\x00\x00"  # mov esi, msg
    msg_at = len(code) - 4
    code += bytes.fromhex("66baf803")  # mov dx,0x3f8
    loop = len(code)
    code += bytes.fromhex("ac84c07403eeeb")  # lodsb; test al,al; jz +3; out dx,al; jmp
    code += bytes([(loop - (len(code) + 1)) & 0xFF])
    code += bytes.fromhex("f4ebfd")  # hlt; jmp hlt
    gdt = len(code)
    code += bytes(8)  # null descriptor
    code += bytes.fromhex("ffff0000009acf00")  # code: base 0, limit 4G, 32-bit
    code += bytes.fromhex("ffff00000092cf00")  # data
    gdtr = len(code)
    code += (24 - 1).to_bytes(2, "little") + (0x7C00 + gdt).to_bytes(4, "little")
    text = len(code)
    code += msg + b"\x00"
    code[lgdt_at : lgdt_at + 2] = (0x7C00 + gdtr).to_bytes(2, "little")
    code[jmp_at : jmp_at + 2] = (0x7C00 + pm).to_bytes(2, "little")
    code[msg_at : msg_at + 4] = (0x7C00 + text).to_bytes(4, "little")
    if len(code) > 510:
        raise AssertionError("probe boot sector too large")
    return bytes(code) + bytes(510 - len(code)) + b"\x55\xaa"


def choose_accel(requested: Accel) -> tuple[str, str]:
    """Pick ``kvm`` or ``tcg`` for ``requested`` and say why.

    Returns:
        ``(accel, reason)``; ``auto`` uses KVM only when a probe guest really runs under it.

    Raises:
        LocalVmError: ``kvm`` was requested but does not work here.
    """
    if requested == "tcg":
        return "tcg", "TCG (software emulation) as requested: slow, expect minutes per boot"
    ok, why = _kvm_usable()
    if requested == "kvm":
        if not ok:
            raise LocalVmError(f"--accel kvm: {why}; use --accel tcg (slow) or auto")
        return "kvm", "KVM (hardware virtualisation) as requested"
    if ok:
        return "kvm", "KVM (hardware virtualisation): the probe guest ran"
    return "tcg", f"TCG (software emulation, slow) because {why}"


# --- seed ISO -----------------------------------------------------------------------------------


def make_seed_iso(path: Path, user_data: bytes, meta_data: str) -> Path:
    """Write a NoCloud seed ISO (volume label ``cidata``) holding user-data and meta-data.

    Uses genisoimage (or xorriso/mkisofs) when installed, else pycdlib if importable.
    """
    with tempfile.TemporaryDirectory(prefix="bakery-seed-") as tmp:
        (Path(tmp) / "user-data").write_bytes(user_data)
        (Path(tmp) / "meta-data").write_text(meta_data, encoding="utf-8")
        files = [str(Path(tmp) / "user-data"), str(Path(tmp) / "meta-data")]
        for tool, prefix in (
            ("genisoimage", []),
            ("mkisofs", []),
            ("xorriso", ["-as", "mkisofs"]),
        ):
            exe = shutil.which(tool)
            if exe is None:
                continue
            cmd = [exe, *prefix, "-quiet", "-output", str(path), "-volid", "cidata", "-joliet",
                   "-rock", *files]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise LocalVmError(f"{tool} failed to write {path}: {proc.stderr.strip()}")
            return path
    try:
        import pycdlib  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise LocalVmToolMissing(
            "no ISO writer for the NoCloud seed: install genisoimage (apt-get install genisoimage) "
            "or pycdlib (pip install pycdlib)"
        ) from None
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, blob in (("user-data", user_data), ("meta-data", meta_data.encode())):
        iso_name = "/" + name.replace("-", "_").upper() + ".;1"
        iso.add_fp(io.BytesIO(blob), len(blob), iso_name, rr_name=name, joliet_path="/" + name)
    iso.write(str(path))
    iso.close()
    return path


# --- process and QMP helpers --------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running qemu (a recycled pid of another program does not count)."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"qemu-system" in cmdline.split(b"\0", 1)[0]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def qmp(run_dir: Path, command: str, arguments: dict[str, Any] | None = None) -> Any:
    """Send one QMP command to the VM of ``run_dir`` and return its ``return`` value."""
    sock_path = str(run_dir / "qmp.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        try:
            sock.connect(sock_path)
        except OSError as exc:
            raise LocalVmError(f"cannot reach the VM's QMP socket {sock_path}: {exc}") from None
        reader = sock.makefile("rb")

        def call(cmd: str, args: dict[str, Any] | None) -> Any:
            msg: dict[str, Any] = {"execute": cmd}
            if args:
                msg["arguments"] = args
            sock.sendall(json.dumps(msg).encode() + b"\n")
            while True:
                line = reader.readline()
                if not line:
                    raise LocalVmError(f"QMP {cmd}: connection closed")
                reply = json.loads(line)
                if "return" in reply:
                    return reply["return"]
                if "error" in reply:
                    raise LocalVmError(f"QMP {cmd}: {reply['error'].get('desc', reply)}")

        json.loads(reader.readline())  # greeting
        call("qmp_capabilities", None)
        return call(command, arguments)


# --- serial console -----------------------------------------------------------------------------

_STAGE_RE = re.compile(r"Cloud-init v\. \S+ running '([^']+)'")
_FINISHED_RE = re.compile(r"Cloud-init v\. \S+ finished at|cloud-init.*finished", re.IGNORECASE)
_FAILURE_RE = re.compile(
    r"\[FAILED\]|Failed to run module|\[WARNING\]|\[ERROR\]|\bERROR\b|Traceback|"
    r"failed with exit code|returned non-zero|Kernel panic|end Kernel panic",
)
_STAGE_NAMES = {
    "init-local": "cloud-init: local stage (finding the NoCloud seed)",
    "init": "cloud-init: network stage (users, files, ssh)",
    "modules:config": "cloud-init: config stage",
    "modules:final": "cloud-init: final stage (packages, runcmd)",
}


@dataclass
class ConsoleScan:
    """What the serial console has said so far."""

    stages: list[str] = field(default_factory=list)
    finished: bool = False
    failures: list[str] = field(default_factory=list)
    kernel_started: bool = False
    login_prompt: bool = False


def scan_console(text: str, final_markers: tuple[str, ...] = ()) -> ConsoleScan:
    """Find cloud-init's stages, its final message and failure lines in serial console text.

    Args:
        text: the serial console so far.
        final_markers: fixed text of the user-data's own ``final_message`` (it replaces
            cloud-init's default "Cloud-init v. N finished at ..." line).
    """
    scan = ConsoleScan()
    for raw in text.splitlines():
        line = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", raw).strip()
        if not line:
            continue
        if "Linux version" in line:
            scan.kernel_started = True
        if " login:" in line:
            scan.login_prompt = True
        stage = _STAGE_RE.search(line)
        if stage:
            scan.stages.append(stage.group(1))
        if (_FINISHED_RE.search(line) and "running" not in line) or any(
            marker in line for marker in final_markers if marker
        ):
            scan.finished = True
        if _FAILURE_RE.search(line):
            scan.failures.append(line)
    return scan


def console_text(run_dir: Path) -> str:
    """The serial console log so far (empty when there is none)."""
    try:
        return (run_dir / "serial.log").read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


# --- lifecycle ----------------------------------------------------------------------------------


def _memory_mb(memory: str | int) -> int:
    from bakery.config import parse_size

    try:
        size = parse_size(memory)
    except ValueError as exc:
        raise LocalVmError(f"--memory: {exc}") from None
    mb = size // (1024 * 1024) if size >= 1024 * 1024 else size  # a bare number means MB
    if mb < 512:
        raise LocalVmError(f"--memory {memory}: at least 512M is needed (a hub wants ~1G)")
    return mb


def start_vm(
    *,
    image: Path,
    user_data: bytes,
    run_dir: Path,
    https_port: int = 8443,
    http_port: int | None = None,
    ssh_port: int = 2222,
    memory: str | int = "4G",
    cpus: int = 2,
    accel: Accel = "auto",
    hostname: str = "workshop",
    progress: Progress = _quiet,
) -> VmState:
    """Boot ``image`` on a fresh copy-on-write overlay with a NoCloud seed holding ``user_data``.

    The base image is only read. Guest ports 443, 80 and 22 are forwarded to ``127.0.0.1``:
    ``https_port``, ``http_port`` (default ``https_port + 1``) and ``ssh_port``. qemu runs in the
    background; its serial console goes to ``run_dir/serial.log``.

    Raises:
        LocalVmError: a tool is missing, a port is taken, a VM already runs there, or qemu fails.
    """
    _need("qemu-system-x86_64", "qemu-system-x86")
    qemu_img = _need("qemu-img", "qemu-utils")
    image = Path(image).resolve()
    if not image.is_file():
        raise LocalVmError(f"{image}: no such image file")
    run_dir = Path(run_dir)
    if (run_dir / "state.json").exists():
        old = VmState.load(run_dir)
        if _alive(old.pid):
            raise LocalVmError(
                f"a VM from {run_dir} is already running (pid {old.pid}, {old.url}); "
                "stop it first (bakery try --stop)"
            )
    http_port = http_port or https_port + 1
    for name, port in (("HTTPS", https_port), ("HTTP", http_port), ("ssh", ssh_port)):
        if not _port_free(port):
            raise LocalVmError(f"127.0.0.1:{port} ({name}) is already in use; pick another port")
    fmt = _image_format(qemu_img, image)
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
    meta = f"instance-id: iid-bakery-{int(time.time())}\nlocal-hostname: {hostname}\n"
    make_seed_iso(run_dir / "seed.iso", user_data, meta)
    state = VmState(
        run_dir=str(run_dir), image=str(image), accel=accel_name, accel_reason=reason,
        https_port=https_port, http_port=http_port, ssh_port=ssh_port,
        memory_mb=_memory_mb(memory), cpus=cpus,
    )  # fmt: skip
    boot_vm(state)
    return state


def _image_format(qemu_img: str, image: Path) -> str:
    proc = subprocess.run(
        [qemu_img, "info", "--output=json", str(image)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise LocalVmError(f"{image}: not a disk image qemu can read: {proc.stderr.strip()}")
    return str(json.loads(proc.stdout).get("format", "raw"))


def boot_vm(state: VmState) -> None:
    """Start qemu for ``state`` (overlay and seed must exist) and record its pid.

    Raises:
        LocalVmError: qemu refused to start.
    """
    qemu = _need("qemu-system-x86_64", "qemu-system-x86")
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
        qemu, "-name", f"bakery-{run.name}", "-machine", "q35", *accel,
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
    progress: Progress = _quiet,
    poll: float = 3.0,
    final_marker: str = "",
) -> float:
    """Wait until the hub's login page answers 200, reporting cloud-init stages as they pass.

    Returns:
        Seconds from qemu's start to the login page answering.

    Raises:
        LocalVmError: qemu exited, cloud-init finished (or reported failures) without the hub
            coming up, or ``timeout`` passed; the message carries the relevant console lines.
    """
    run = Path(state.run_dir)
    deadline = time.monotonic() + timeout
    said: set[str] = set()
    finished_at: float | None = None
    while True:
        scan = scan_console(console_text(run), (final_marker,))
        if scan.kernel_started and "kernel" not in said:
            said.add("kernel")
            progress("kernel booting")
        for stage in scan.stages:
            if stage not in said:
                said.add(stage)
                progress(_STAGE_NAMES.get(stage, f"cloud-init: {stage}"))
        if scan.finished and finished_at is None:
            finished_at = time.monotonic()
            progress("cloud-init finished; waiting for the hub")
        status = _https_status(state.https_port)
        if status == 200:
            return time.time() - state.started_at
        if status is not None and f"http{status}" not in said:
            said.add(f"http{status}")
            progress(f"{state.url}hub/login answers {status}")
        if not _alive(state.pid):
            raise LocalVmError(
                "qemu exited before the hub came up; the serial console ended with:\n"
                + _tail(console_text(run))
            )
        now = time.monotonic()
        if finished_at is not None and now - finished_at > AFTER_FINISH_GRACE:
            headline = (
                f"cloud-init finished but {state.url}hub/login did not answer 200 (last: {status})"
            )
            raise LocalVmError(_failure_report(state, scan, headline))
        if now > deadline:
            raise LocalVmError(
                _failure_report(state, scan, f"the hub did not come up within {timeout:.0f} s")
            )
        time.sleep(poll)


def _failure_report(state: VmState, scan: ConsoleScan, headline: str) -> str:
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
    stages: list[str]
    finished: bool
    failures: list[str]

    def describe(self) -> str:
        """Human-readable lines."""
        st = self.state
        lines = [
            f"VM: {'running' if self.running else 'not running'} (pid {st.pid}, {st.accel}, "
            f"{st.memory_mb} MB, {st.cpus} CPUs), run dir {st.run_dir}",
            f"hub: {st.url} -> {self.hub_status if self.hub_status is not None else 'no answer'}",
            f"ssh: ssh -p {st.ssh_port} {st.extra.get('login_user', 'LOGIN_USER')}@127.0.0.1",
            f"cloud-init: {', '.join(dict.fromkeys(self.stages)) or 'not started'}"
            + (" (finished)" if self.finished else ""),
        ]
        if st.credentials:
            lines.append(f"credentials: {st.credentials}")
        if self.failures:
            lines.append("console problems:\n" + _tail("\n".join(self.failures), 10))
        return "\n".join(lines)


def vm_status(run_dir: Path) -> VmStatus:
    """Report whether the VM of ``run_dir`` runs, what cloud-init did and whether the hub answers.

    Raises:
        LocalVmError: nothing was started from ``run_dir``.
    """
    state = VmState.load(Path(run_dir))
    running = _alive(state.pid)
    scan = scan_console(console_text(Path(run_dir)), (state.extra.get("final_marker", ""),))
    hub = _https_status(state.https_port) if running else None
    return VmStatus(running, state, hub, scan.stages, scan.finished, scan.failures)


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.5)
    return not _alive(pid)


def stop_vm(
    run_dir: Path, *, keep: bool = False, timeout: float = 120.0, progress: Progress = _quiet
) -> None:
    """Shut the VM of ``run_dir`` down cleanly (ACPI power button via QMP), then clean up.

    Falls back to QMP ``quit`` and then SIGTERM when the guest ignores the power button for
    ``timeout`` seconds. Removes the overlay and seed unless ``keep``.

    Raises:
        LocalVmError: nothing was started from ``run_dir``, or qemu would not exit.
    """
    run = Path(run_dir)
    state = VmState.load(run)
    if _alive(state.pid):
        progress("asking the guest to power off (ACPI)")
        with contextlib.suppress(LocalVmError):
            qmp(run, "system_powerdown")
        if not _wait_exit(state.pid, timeout):
            progress(f"the guest did not power off within {timeout:.0f} s; stopping qemu")
            with contextlib.suppress(LocalVmError, OSError):
                qmp(run, "quit")
            if not _wait_exit(state.pid, 10):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(state.pid, signal.SIGTERM)
                if not _wait_exit(state.pid, 10):
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
    memory: str | int = "4G",
    cpus: int = 2,
    accel: Accel = "auto",
    timeout: float | None = None,
    run_dir: Path | None = None,
    progress: Progress = _quiet,
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
    from bakery.render import build_cloud_config, render_user_data

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
    state.save()
    progress(f"qemu started (pid {state.pid}); serial console: {run / 'serial.log'}")
    if timeout is None:
        timeout = (900.0 if stage == "boot" else 5400.0) * (1 if state.accel == "tcg" else 0.5)
    # The document's final_message (up to its first $VARIABLE) marks cloud-init's end.
    final = str(build_cloud_config(cfg, stage=stage, accounts=accounts).get("final_message", ""))
    marker = final.split("$", 1)[0].strip()
    state.extra["final_marker"] = marker
    state.extra["login_user"] = cfg.login_user
    state.save()
    seconds = wait_for_hub(state, timeout=timeout, progress=progress, final_marker=marker)
    return TryResult(url=state.url, credentials=creds, state=state, seconds=seconds)
