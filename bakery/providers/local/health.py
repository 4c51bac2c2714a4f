"""Is a local VM's hub up: the wait for its login page, --status, the report when it fails."""

from __future__ import annotations

import http.client
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bakery.errors import LocalVmError
from bakery.progress import Reporter, quiet
from bakery.providers.local import qemu
from bakery.providers.local.vm import VmState, console_text
from bakery.vm import console

if TYPE_CHECKING:
    pass

# After cloud-init says it has finished, the hub gets this long to answer before we give up.
AFTER_FINISH_GRACE = 120.0


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


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
