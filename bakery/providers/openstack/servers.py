"""A workshop's servers as the cloud shows them: addresses, state, console and hub health."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bakery.config.workshop import Workshop
from bakery.errors import BakeryError, CloudError
from bakery.progress import Reporter, quiet
from bakery.providers.openstack.api import api
from bakery.vm.console import ConsoleScan
from bakery.vm.console import scan as scan_console

if TYPE_CHECKING:
    from openstack.connection import Connection

# How long an ACTIVE server may take to show its fixed address (the port is bound after ACTIVE).
FIXED_IP_TIMEOUT = 120.0


@dataclass
class ServerInfo:
    """One workshop server as `status` and `launch` report it."""

    name: str
    id: str
    status: str
    addresses: list[str] = field(default_factory=list)
    floating_ip: str | None = None
    url: str | None = None
    hub: str = "unknown"
    cloud_init: str = "unknown"
    fault: str | None = None
    config: str | None = None  # matches the workshop file? (`status`, over ssh; None: not asked)

    @property
    def ip(self) -> str | None:
        """The address trainees use: the floating IP, else the first fixed one."""
        return self.floating_ip or (self.addresses[0] if self.addresses else None)


def addresses(server: Any) -> list[str]:
    """Every address Nova lists for the server."""
    out = []
    for entries in (server.addresses or {}).values():
        out += [e.get("addr") for e in entries if e.get("addr")]
    return out


def server_info(server: Any, floating_ip: str | None) -> ServerInfo:
    """A ServerInfo with the URL of the hub (when the server has an address)."""
    info = ServerInfo(server.name, server.id, server.status, addresses(server), floating_ip)
    info.url = f"https://{info.ip}/" if info.ip else None
    return info


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


def _quiet() -> None:
    # urllib3 warns on every unverified HTTPS request; the hub's certificate is self-signed.
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")


def server_fault(server: Any) -> str:
    """Nova's fault message of a server in ERROR."""
    fault = server.fault or {}
    return str(fault.get("message") or fault.get("details") or "no fault message from Nova")


def wait_active(conn: Connection, server: Any, timeout: float, progress: Reporter = quiet) -> Any:
    """Wait (openstacksdk's waiter) until ``server`` is ACTIVE; returns it fresh.

    Raises:
        CloudError: the server went to ERROR (with Nova's fault) or is not up after ``timeout``.
    """
    from openstack import exceptions as os_exc

    name = server.name
    start = time.monotonic()

    def wait() -> Any:
        try:
            return conn.compute.wait_for_server(
                server, status="ACTIVE", failures=["ERROR"], interval=2, wait=timeout
            )
        except os_exc.ResourceFailure:
            failed = api(f"get server {name}", conn.compute.get_server, server.id)
            raise CloudError(f"server {name} failed to build: {server_fault(failed)}") from None
        except os_exc.ResourceTimeout:
            raise CloudError(
                f"server {name} still not ACTIVE after {timeout:.0f} s; "
                "the cloud may be out of capacity"
            ) from None

    progress(f"server {name}: waiting for ACTIVE", transient=True)
    server = api(f"wait for server {name}", wait)
    progress(f"server {name}: ACTIVE after {time.monotonic() - start:.0f} s")
    return server


def console_scan(conn: Connection, server: Any, cfg: Workshop) -> ConsoleScan:
    """What the server's console log says of cloud-init (bakery.console reads it): its stage,
    end and failure lines; an empty scan when the cloud does not give the log."""
    try:
        out = api("read console", conn.compute.get_server_console_output, server, length=400).get(
            "output", ""
        )
    except BakeryError:
        return ConsoleScan()
    return scan_console(str(out), workshop=cfg.name)


def console_state(conn: Connection, server: Any, cfg: Workshop) -> tuple[str, list[str]]:
    """cloud-init's state from the console log: ``done``, ``error``, ``running`` or ``unknown``,
    and the failure lines (the last 15)."""
    return console_scan(conn, server, cfg).summary()


def hub_health(ip: str, timeout: float = 5) -> str:
    """``ok`` when https://IP/hub/health answers 200 (self-signed certificates accepted)."""
    import requests

    _quiet()
    session = requests.Session()
    session.trust_env = False  # a REQUESTS_CA_BUNDLE in the environment would override verify
    try:
        resp = session.get(f"https://{ip}/hub/health", verify=False, timeout=timeout)
    except requests.RequestException as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok" if resp.status_code == 200 else f"HTTP {resp.status_code}"


def wait_fixed_ip(conn: Connection, cfg: Workshop, server: Any, progress: Reporter) -> Any:
    """Wait until ``server`` is ACTIVE with a fixed address (what joins it needs); returns it
    fresh.

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


def wait_hub(
    conn: Connection,
    cfg: Workshop,
    servers: list[ServerInfo],
    raw: dict[str, Any],
    timeout: float,
    progress: Reporter = quiet,
) -> None:
    """Wait until every server's hub answers through its address (the floating IP when it has
    one), showing cloud-init's stage from the console log; stop at a cloud-init failure."""
    start = time.monotonic()
    pending = {s.name: s for s in servers if s.ip}
    # The console log is read as its last lines: a stage's line scrolls out while the stage runs.
    stages: dict[str, str] = {}
    while pending:
        for name, info in list(pending.items()):
            info.hub = hub_health(str(info.ip))
            scan = console_scan(conn, raw[name], cfg)
            stages[name] = scan.stage or stages.get(name, "")
            info.cloud_init = scan.state
            if info.hub == "ok":
                progress(
                    f"server {name}: hub answers at {info.url} ({time.monotonic() - start:.0f} s)"
                )
                del pending[name]
            elif scan.state == "error":
                raise CloudError(
                    f"cloud-init failed on {name}; from its console:\n  "
                    + "\n  ".join(scan.failures[-15:])
                )
            else:
                where = stages[name] or "booting (no console output yet)"
                progress(f"server {name}: {where}; hub: {info.hub}", transient=True)
        if pending and time.monotonic() - start > timeout:
            raise CloudError(
                f"the hub on {', '.join(pending)} did not answer within {timeout:.0f} s "
                f"(last: {'; '.join(p.hub for p in pending.values())}); a slow cloud needs "
                "longer: --hub-timeout 1h or openstack.hub_timeout; see `bakery status` and the "
                "console log (openstack console log show SERVER)"
            )
        if pending:
            time.sleep(10)
