"""Whether KVM really works here (a probe guest), and the qemu accelerator to use."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal

from bakery.errors import LocalVmError

Accel = Literal["auto", "kvm", "tcg"]
# The probe guest prints this on its serial port once it runs in protected mode.
PROBE_MARKER = b"BAKERY-KVM-OK"


def kvm_usable() -> tuple[bool, str]:
    """Whether KVM really runs a guest: /dev/kvm must open *and* a tiny probe guest must run.

    Some hosts (nested virtualisation) expose a /dev/kvm that opens but cannot run stock guests,
    so the check boots a 512-byte boot sector that writes to the serial port and halts.
    """
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not accessible to this user (add yourself to group kvm)"
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return False, "qemu-system-x86_64 not found"
    ok, why = run_probe(qemu, "kvm")
    if ok:
        return True, "KVM works"
    return False, f"a protected-mode probe guest does not run under KVM here ({why})"


def run_probe(qemu: str, accel: Literal["kvm", "tcg"], timeout: float = 15.0) -> tuple[bool, str]:
    """Boot :func:`probe_boot_sector` under ``accel``: whether it printed its marker, and why not.

    Returns:
        ``(True, "")`` when the marker arrived within ``timeout`` seconds, else ``(False,
        reason)`` with qemu's last error line.
    """
    with tempfile.TemporaryDirectory(prefix="bakery-kvm-") as tmp:
        disk, out = Path(tmp) / "probe.img", Path(tmp) / "serial.out"
        disk.write_bytes(probe_boot_sector())
        os.truncate(disk, 1024 * 1024)  # SeaBIOS ignores a disk of a single sector
        cpu = ["-cpu", "host"] if accel == "kvm" else []
        proc = subprocess.Popen(
            [qemu, "-accel", accel, *cpu, "-machine", "q35", "-m", "64",
             "-display", "none", "-no-reboot", "-monitor", "none", "-serial", f"file:{out}",
             "-drive", f"file={disk},format=raw,if=ide"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

        def printed() -> bool:
            return out.exists() and PROBE_MARKER in out.read_bytes()

        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None and not printed():
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, stderr = proc.communicate()
        if printed():
            return True, ""
        err = stderr.decode(errors="replace").strip().splitlines()
        return False, err[-1] if err else f"it printed nothing within {timeout:.0f} s"


def probe_boot_sector() -> bytes:
    """A boot sector that switches to 32-bit protected mode, prints a marker on COM1 and halts.

    Protected mode matters: the KVM failure seen on nested hosts shows only once the guest leaves
    real mode, which is what every kernel does first.
    """
    msg = PROBE_MARKER + b"\r\n"
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
    ok, why = kvm_usable()
    if requested == "kvm":
        if not ok:
            raise LocalVmError(f"--accel kvm: {why}; use --accel tcg (slow) or auto")
        return "kvm", "KVM (hardware virtualisation) as requested"
    if ok:
        return "kvm", "KVM (hardware virtualisation): the probe guest ran"
    return "tcg", f"TCG (software emulation, slow) because {why}"
