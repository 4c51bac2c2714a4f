"""qemu as a process: its tools, its pid, its QMP socket, the local ports it forwards."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from bakery.errors import LocalVmError, ToolMissing


def need(tool: str, package: str) -> str:
    """The path of ``tool``; ToolMissing naming the Debian package when it is not installed."""
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(
            f"{tool} not found: install it (Debian/Ubuntu: apt-get install {package})"
        )
    return path


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running qemu (a recycled pid of another program does not count)."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"qemu-system" in cmdline.split(b"\0", 1)[0]


def port_free(port: int) -> bool:
    """Whether ``127.0.0.1:port`` can be listened on (so qemu can forward it)."""
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


def image_format(qemu_img: str, image: Path) -> str:
    """The format of the disk image ``image`` (qcow2, raw...) as qemu-img sees it."""
    proc = subprocess.run(
        [qemu_img, "info", "--output=json", str(image)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise LocalVmError(f"{image}: not a disk image qemu can read: {proc.stderr.strip()}")
    return str(json.loads(proc.stdout).get("format", "raw"))


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for qemu ``pid`` to exit; whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.5)
    return not alive(pid)
