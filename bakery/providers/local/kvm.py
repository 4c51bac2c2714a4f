"""Which qemu accelerator runs a Linux kernel here: a long-mode probe guest, its verdict cached."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bakery.errors import BakeryError, LocalVmError
from bakery.files import write_private

Accel = Literal["auto", "kvm", "tcg"]
# The probe guest prints this on its serial port once it has done a kernel's first work.
PROBE_MARKER = b"BAKERY-KVM-OK"
# Bumped whenever the probe changes what it proves: a cached verdict of an older probe is redone.
PROBE_VERSION = 2
# A working KVM prints the marker well inside this: qemu's start, SeaBIOS and the probe take
# 0.1-0.2 s under TCG here. On a nested host whose KVM emulates the guest's memory accesses,
# SeaBIOS alone took 3.3 s to reach the boot sector, the probe's 8 MiB of writes 0.6 s more, and a
# Debian kernel's decompressor 60 s: such a KVM is slower than software emulation anyway.
PROBE_DEADLINE = 2.0
# What the probe writes, like a kernel's decompressor writing its image, through 2 MiB pages.
PROBE_WRITE_MIB = 8
# qemu's line when KVM cannot run (or emulate) an instruction; the guest is then paused for good.
KVM_INTERNAL_ERROR = "KVM internal error"


def accel_args(accel: str) -> list[str]:
    """qemu's accelerator and CPU options for ``kvm`` or ``tcg``: the probe and the VMs share them.

    Under KVM the guest sees the host's CPU; under TCG ``max`` (every feature TCG emulates, so
    the guest's kernel and Python take their fast paths), with multi-threaded translation.
    """
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    if accel == "tcg":
        return ["-accel", "tcg,thread=multi,tb-size=512", "-cpu", "max"]
    raise ValueError(f"unknown accelerator {accel!r} (kvm or tcg)")


@dataclass(frozen=True)
class ProbeResult:
    """What one probe guest did: whether it printed its marker, why not, and how long it took."""

    ok: bool
    reason: str
    seconds: float


def run_probe(
    qemu: str, accel: str, timeout: float = PROBE_DEADLINE, *, cpu: str | None = None
) -> ProbeResult:
    """Boot :func:`probe_boot_sector` under ``accel`` and wait up to ``timeout`` for its marker.

    The wait ends early when qemu exits (the guest faulted: ``-no-reboot``) or reports a KVM
    internal error (the guest is then paused for good: waiting longer proves nothing).

    Args:
        qemu: the qemu-system-x86_64 binary.
        accel: ``kvm`` or ``tcg``, with the VMs' CPU options (:func:`accel_args`).
        timeout: seconds for the marker to arrive.
        cpu: another ``-cpu`` model than the VMs' (e.g. one without long mode).

    Returns:
        ``ok`` when the marker arrived in time; else ``reason`` says what qemu said or did.
    """
    with tempfile.TemporaryDirectory(prefix="bakery-kvm-") as tmp:
        disk, out, err = Path(tmp) / "probe.img", Path(tmp) / "serial.out", Path(tmp) / "err"
        disk.write_bytes(probe_boot_sector())
        os.truncate(disk, 1024 * 1024)  # SeaBIOS ignores a disk of a single sector
        args = accel_args(accel) + (["-cpu", cpu] if cpu else [])  # the last -cpu counts
        start = time.monotonic()
        with err.open("wb") as stderr:
            proc = subprocess.Popen(
                [qemu, *args, "-machine", "q35", "-m", "64", "-display", "none",
                 "-no-reboot", "-monitor", "none", "-serial", f"file:{out}",
                 "-drive", f"file={disk},format=raw,if=ide"],
                stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
            try:
                outcome = _wait_for_marker(proc, out, err, start + timeout)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
        seconds = time.monotonic() - start
        if outcome == "printed":
            return ProbeResult(True, "", seconds)
        return ProbeResult(False, _probe_failure(outcome, err, timeout), seconds)


def _wait_for_marker(proc: subprocess.Popen[bytes], out: Path, err: Path, deadline: float) -> str:
    """``printed``, ``exited``, ``internal-error`` or ``timeout``."""
    while True:
        if out.exists() and PROBE_MARKER in out.read_bytes():
            return "printed"
        if KVM_INTERNAL_ERROR.encode() in err.read_bytes():
            return "internal-error"
        if proc.poll() is not None:
            return "exited"
        if time.monotonic() >= deadline:
            return "timeout"
        time.sleep(0.02)


def _probe_failure(outcome: str, err: Path, timeout: float) -> str:
    lines = [
        line.strip()
        for line in err.read_text(errors="replace").splitlines()
        # qemu warns about CPU features the host lacks; that alone is no failure
        if line.strip() and "warning:" not in line
    ]
    if outcome == "internal-error":
        line = next(line for line in lines if KVM_INTERNAL_ERROR in line)
        return f"{line}: KVM could not run the guest's instructions"
    if outcome == "timeout":
        return f"it printed nothing within {timeout:g} s; a working KVM takes well under 1 s"
    if lines:
        return lines[-1]
    return "the guest stopped before printing (a CPU fault: qemu exits on a reset)"


def probe_boot_sector() -> bytes:
    """A boot sector that does a kernel's first work under the accelerator, then prints a marker.

    Real mode to 64-bit long mode with 4-level paging (1 GiB identity-mapped in 2 MiB pages), as
    a kernel's decompressor does before its first console line; then it writes
    :data:`PROBE_WRITE_MIB` MiB of memory and, where the CPU has it, runs the ``lock
    cmpxchg16b`` that a Debian kernel's allocator runs early. On a nested host whose KVM passed a
    protected-mode probe, a kernel stalled in exactly these steps: its memory writes crawled
    (60 s to the first kernel line) and KVM then stopped on that instruction with "emulation
    failure". The marker goes to COM1 and the guest halts.
    """
    asm = _Asm()
    asm.code("fa 31c0 8ed8 8ec0 8ed0 bc007c")  # cli; ds = es = ss = 0; sp = 0x7c00
    asm.code("bf0010 b90018 31c0 f3ab")  # zero 0x1000-0x3fff (PML4, PDPT, PD): rep stosw
    asm.code("66c706 0010 03200000")  # PML4[0] = PDPT | present | writable
    asm.code("66c706 0020 03300000")  # PDPT[0] = PD | present | writable
    asm.code("bf0030 66b883000000 b90002")  # di = PD; eax = 2 MiB page flags; cx = 512
    fill = asm.here()
    asm.code("66ab 83c704 660500002000")  # stosd; di += 4 (high half stays 0); eax += 2 MiB
    asm.jump_back("e2", fill)  # loop
    asm.code("66b820000000 0f22e0")  # cr4 = PAE
    asm.code("66b800100000 0f22d8")  # cr3 = PML4
    asm.code("66b9800000c0 0f32 660d00010000 0f30")  # EFER.LME: rdmsr, or 0x100, wrmsr
    asm.code("0f0116")  # lgdt [gdtr]
    asm.address("gdtr", 2)
    asm.code("0f20c0 660d01000080 0f22c0")  # cr0 |= PG | PE: long mode from real mode
    asm.code("ea")  # jmp 0x08:long
    asm.address("long", 2)
    asm.code("0800")
    asm.label("long")  # 64-bit code from here
    asm.code("66b81000 8ed8 8ec0 8ed0")  # ds = es = ss = the data selector
    asm.code("bf00000001 b9" + (PROBE_WRITE_MIB * 1024 * 1024 // 8).to_bytes(4, "little").hex())
    asm.code("48b8efbeaddeefbeadde f348ab")  # rep stosq a pattern at 16 MiB
    asm.code("b801000000 0fa2 0fbae10d")  # cpuid(1); bt ecx, 13 (CX16)
    asm.code("73")  # jnc print
    asm.offset8("print")
    asm.code("31c0 31d2 31db 31c9 bf00500000 f0480fc70f")  # lock cmpxchg16b [0x5000]
    asm.label("print")
    asm.code("be")  # mov esi, message
    asm.address("message", 4)
    asm.code("66baf803")  # mov dx, COM1
    put = asm.here()
    asm.code("ac 84c0 7403 ee")  # lodsb; test al, al; jz +3; out dx, al
    asm.jump_back("eb", put)
    asm.code("f4 ebfd")  # hlt; jmp hlt
    asm.label("gdt")
    asm.code("0000000000000000 ffff0000009aaf00 ffff00000092cf00")  # null, 64-bit code, data
    asm.label("gdtr")
    asm.raw((24 - 1).to_bytes(2, "little"))
    asm.address("gdt", 4)
    asm.label("message")
    asm.raw(PROBE_MARKER + b"\r\n\x00")
    return asm.sector()


class _Asm:
    """Just enough of an assembler for the probe: hex code, labels, forward references."""

    ORIGIN = 0x7C00  # where the BIOS loads a boot sector

    def __init__(self) -> None:
        self._code = bytearray()
        self._labels: dict[str, int] = {}
        self._refs: list[tuple[str, int, int, bool]] = []  # label, at, size, relative

    def code(self, text: str) -> None:
        self._code += bytes.fromhex(text.replace(" ", ""))

    def raw(self, data: bytes) -> None:
        self._code += data

    def here(self) -> int:
        return len(self._code)

    def label(self, name: str) -> None:
        self._labels[name] = len(self._code)

    def address(self, name: str, size: int) -> None:
        self._refs.append((name, len(self._code), size, False))
        self._code += bytes(size)

    def offset8(self, name: str) -> None:
        self._refs.append((name, len(self._code), 1, True))
        self._code += b"\x00"

    def jump_back(self, opcode: str, target: int) -> None:
        self.code(opcode)
        self._code.append((target - (len(self._code) + 1)) & 0xFF)

    def sector(self) -> bytes:
        for name, at, size, relative in self._refs:
            target = self._labels[name]
            value = target - (at + 1) if relative else self.ORIGIN + target
            self._code[at : at + size] = value.to_bytes(size, "little", signed=relative)
        if len(self._code) > 510:
            raise AssertionError("probe boot sector too large")
        return bytes(self._code) + bytes(510 - len(self._code)) + b"\x55\xaa"


# --- the verdict, cached per host boot and qemu binary -------------------------------------------


def verdict_cache() -> Path:
    """Where verdicts are kept: ``$XDG_CACHE_HOME/bakery/kvm-verdicts.json``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "bakery" / "kvm-verdicts.json"


def _host_key(qemu: str) -> str:
    """This boot of this host with this qemu binary: what a verdict holds for.

    The boot id changes at every reboot (a kernel update or a module option can mend or break
    KVM); the qemu binary's size and time change when qemu is upgraded.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "unknown"
    stat = Path(qemu).resolve().stat()
    text = f"{PROBE_VERSION}|{os.uname().nodename}|{boot}|{qemu}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read_cache() -> dict[str, dict[str, object]]:
    try:
        data = json.loads(verdict_cache().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_verdict(qemu: str) -> tuple[bool, str] | None:
    """The verdict kept for this host and ``qemu``, or None when there is none."""
    entry = _read_cache().get(_host_key(qemu))
    if not isinstance(entry, dict) or not isinstance(entry.get("usable"), bool):
        return None
    return bool(entry["usable"]), str(entry.get("reason", ""))


def remember_verdict(qemu: str, usable: bool, reason: str) -> None:
    """Keep a verdict for this host and ``qemu`` (a failed write only costs a probe later)."""
    data = _read_cache()
    # Verdicts of earlier boots are of no use any more; keep the file small.
    data = {key: value for key, value in data.items() if isinstance(value, dict)}
    data = dict(list(data.items())[-7:])
    data[_host_key(qemu)] = {"usable": usable, "reason": reason, "at": int(time.time())}
    with contextlib.suppress(OSError, BakeryError):
        verdict_cache().parent.mkdir(parents=True, exist_ok=True)
        write_private(verdict_cache(), json.dumps(data, indent=1, sort_keys=True) + "\n")


def kvm_usable() -> tuple[bool, str]:
    """Whether KVM really runs a Linux kernel here: /dev/kvm must open *and* the probe must run.

    Some hosts (nested virtualisation) expose a /dev/kvm that opens but cannot run a kernel, so
    the check boots :func:`probe_boot_sector` under KVM with the VMs' CPU options and keeps the
    verdict per host boot and qemu binary (:func:`cached_verdict`).
    """
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not accessible to this user (add yourself to group kvm)"
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return False, "qemu-system-x86_64 not found"
    cached = cached_verdict(qemu)
    if cached is not None:
        return cached
    probe = run_probe(qemu, "kvm")
    if probe.ok:
        verdict = (True, f"a long-mode probe guest ran under KVM in {probe.seconds:.1f} s")
    else:
        verdict = (False, f"a long-mode probe guest does not run under KVM here ({probe.reason})")
    remember_verdict(qemu, *verdict)
    return verdict


@dataclass
class Accelerator:
    """The accelerator a run uses, why, and whether it may still fall back to TCG.

    One choice is shared by every VM of a run (a cluster's manager and workers), so a fallback
    on the first VM holds for the rest and the verdict is printed once.
    """

    requested: Accel
    accel: str
    reason: str

    def fall_back(self, why: str) -> str:
        """KVM booted no kernel (``why``): remember that here and use TCG from now on.

        Returns:
            The one line to show the user.

        Raises:
            LocalVmError: ``--accel kvm`` was asked for: no fallback.
        """
        qemu = shutil.which("qemu-system-x86_64")
        if qemu is not None:
            remember_verdict(qemu, False, f"a Linux kernel did not start under KVM here ({why})")
        if self.requested == "kvm":
            raise LocalVmError(
                f"--accel kvm: KVM here does not run a Linux kernel ({why}); "
                "use --accel auto or tcg (software emulation, slow)"
            )
        self.accel = "tcg"
        self.reason = f"TCG (software emulation, slow) because KVM did not start a kernel ({why})"
        return f"KVM here does not run a Linux kernel: falling back to TCG, slow ({why})"


def choose_accel(requested: Accel) -> Accelerator:
    """Pick ``kvm`` or ``tcg`` for ``requested`` and say why.

    Returns:
        The choice; ``auto`` uses KVM only when the probe guest really runs under it.

    Raises:
        LocalVmError: ``kvm`` was requested but does not work here.
    """
    if requested == "tcg":
        return Accelerator(
            requested, "tcg", "TCG (software emulation) as requested: slow, expect minutes per boot"
        )
    ok, why = kvm_usable()
    if requested == "kvm":
        if not ok:
            raise LocalVmError(f"--accel kvm: {why}; use --accel tcg (slow) or auto")
        return Accelerator(requested, "kvm", f"KVM (hardware virtualisation) as requested: {why}")
    if ok:
        return Accelerator(requested, "kvm", f"KVM (hardware virtualisation): {why}")
    return Accelerator(requested, "tcg", f"TCG (software emulation, slow) because {why}")
