"""The cloud resources of a workshop: tracked, owned by exact match, got or created once.

Everything bakery creates is marked so it can be found again: servers carry ``bakery_workshop``
metadata, floating IPs and the security group carry the token ``bakery:workshop=NAME`` in their
description (compared whole, never as a substring: ``python`` does not own ``python-advanced``'s
resources), and a key pair bakery made is recorded in ``<config>.openstack.json`` beside the
config (Nova key pairs have no description). A create that fails ambiguously (a 5xx, a dropped
connection) is never repeated blindly: the resource is looked up by its exact name first.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from bakery.config.workshop import Workshop
from bakery.errors import (
    AuthError,
    BakeryError,
    CloudError,
    LeftBehind,
    NotFoundError,
    QuotaError,
)
from bakery.files import write_private
from bakery.layout import META_WORKSHOP
from bakery.progress import Reporter, quiet
from bakery.providers.openstack.api import RETRIABLE_FOR_CREATE, api, http_status
from bakery.workshop.names import is_server_name, key_name, marker, owned

if TYPE_CHECKING:
    from openstack.connection import Connection

T = TypeVar("T")
Kind = Literal["server", "floating_ip", "security_group", "keypair"]

LABELS: dict[str, str] = {
    "server": "server",
    "floating_ip": "floating IP",
    "security_group": "security group",
    "keypair": "key pair",
}
CREATE_ATTEMPTS = 3


@dataclass(frozen=True)
class Tracked:
    """One resource bakery made (or owns): its kind, cloud ID and the name people know it by."""

    kind: Kind
    id: str
    name: str

    @property
    def label(self) -> str:
        """``server intro-1``, ``floating IP 203.0.113.10``, ..."""
        return f"{LABELS[self.kind]} {self.name}"

    def __str__(self) -> str:
        return self.label


# --- names and ownership --------------------------------------------------------------------------


# --- the state file beside the config -------------------------------------------------------------


def state_path(config_path: Path) -> Path:
    """``workshop.yaml`` -> ``workshop.openstack.json``: what bakery created that has no tag."""
    return config_path.with_name(config_path.stem + ".openstack.json")


def load_state(path: Path) -> dict[str, Any]:
    """The state file's content ({} when there is none)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise BakeryError(f"{path}: unreadable ({exc}); remove it if no resources remain") from None
    return data if isinstance(data, dict) else {}


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write the state file (remove it when ``state`` is empty)."""
    if not state:
        path.unlink(missing_ok=True)
        return
    write_private(path, json.dumps(state, indent=2, sort_keys=True) + "\n", mode=0o644)


# --- creating once --------------------------------------------------------------------------------


@contextmanager
def _no_blind_retries(proxy: Any) -> Iterator[None]:
    """While creating: no keystoneauth retry of a dropped connection or a 5xx that may have
    been acted on; 429 and 503 (the request was not taken) are still retried."""
    saved = proxy.connect_retries, proxy.retriable_status_codes
    proxy.connect_retries, proxy.retriable_status_codes = 0, RETRIABLE_FOR_CREATE
    try:
        yield
    finally:
        proxy.connect_retries, proxy.retriable_status_codes = saved


def _ambiguous(exc: CloudError) -> bool:
    """Whether a failed create may have happened all the same (a 5xx or no answer at all)."""
    if isinstance(exc, AuthError | QuotaError | NotFoundError):
        return False
    status = http_status(exc)
    return status == 0 or status >= 500


def create_once(what: str, proxy: Any, create: Callable[[], T], find: Callable[[], T | None]) -> T:
    """``create()``; after an ambiguous failure, ``find()`` the resource before trying again.

    Raises:
        CloudError: the create failed plainly, or still fails after a few tries (nothing made).
    """
    for attempt in range(CREATE_ATTEMPTS):
        try:
            with _no_blind_retries(proxy):
                return api(what, create)
        except CloudError as exc:
            if not _ambiguous(exc) or attempt == CREATE_ATTEMPTS - 1:
                raise
        found = find()
        if found is not None:
            return found
        time.sleep(2.0**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


# --- key pair -------------------------------------------------------------------------------------


def public_key(cfg: Workshop) -> str:
    """The ssh public key of ``openstack.public_key``."""
    assert cfg.openstack.public_key is not None
    path = Path(cfg.openstack.public_key).expanduser()
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise BakeryError(f"openstack.public_key: cannot read {path}: {exc}") from None
    if not re.match(r"^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp\d+|sk-\S+) [A-Za-z0-9+/=]+", key):
        raise BakeryError(f"openstack.public_key: {path} is not an ssh public key")
    return key


def same_key(a: str, b: str) -> bool:
    """Whether two public key lines hold the same key (comments aside)."""
    return a.split()[:2] == b.split()[:2]


def existing_keypair(conn: Connection, cfg: Workshop) -> Any:
    """The key pair servers get if it exists (refused when it holds another key than ours).

    Raises:
        NotFoundError: ``openstack.key_name`` names no key pair and there is no key to make it.
        BakeryError: the key pair exists with a different key.
    """
    name = key_name(cfg)
    if name is None:
        return None
    existing = api(f"find key pair {name}", conn.compute.find_keypair, name)
    if cfg.openstack.public_key is None:
        if existing is None:
            raise NotFoundError(
                f"openstack.key_name: key pair {name!r} does not exist; `openstack keypair list` "
                "shows them, or set openstack.public_key to a .pub file and bakery will create it"
            )
        return existing
    if existing is not None and not same_key(existing.public_key or "", public_key(cfg)):
        raise BakeryError(
            f"key pair {name!r} exists with a different key than {cfg.openstack.public_key}; "
            "set openstack.key_name to another name, or delete the old key pair"
        )
    return existing


def ensure_keypair(
    conn: Connection, cfg: Workshop, progress: Reporter = quiet
) -> tuple[str | None, Tracked | None]:
    """Get or create the key pair; returns (its name, what was created)."""
    name = key_name(cfg)
    if name is None:
        return None, None
    if existing_keypair(conn, cfg) is not None:
        progress(f"key pair {name}: present")
        return name, None
    key = public_key(cfg)

    def find() -> Any:
        found = api(f"find key pair {name}", conn.compute.find_keypair, name)
        return found if found is not None and same_key(found.public_key or "", key) else None

    create_once(
        f"create key pair {name}",
        conn.compute,
        lambda: conn.compute.create_keypair(name=name, public_key=key),
        find,
    )
    progress(f"key pair {name}: created")
    return name, Tracked("keypair", name, name)


# --- security group -------------------------------------------------------------------------------


# --- servers and floating IPs ---------------------------------------------------------------------


def workshop_servers(conn: Connection, cfg: Workshop) -> list[Any]:
    """The workshop's servers (named as bakery names them, their ``bakery_workshop`` metadata
    equal to its name), by name."""
    # Nova's name filter is a regular expression, but not every one works: an alternation
    # (^NAME-(manager|worker-[0-9]+)$) matched nothing on the test cloud's nova. So nova gets the
    # prefix and the exact names are matched here.
    found = api(
        "list servers",
        lambda: list(conn.compute.servers(details=True, name=f"^{re.escape(cfg.name)}-")),
    )
    return sorted(
        (
            s
            for s in found
            if is_server_name(cfg, s.name) and (s.metadata or {}).get(META_WORKSHOP) == cfg.name
        ),
        key=lambda s: s.name,
    )


def create_server(conn: Connection, cfg: Workshop, attrs: dict[str, Any]) -> Any:
    """Create one server; after an ambiguous failure, adopt the one the cloud made after all."""
    name = attrs["name"]

    def find() -> Any:
        return next((s for s in workshop_servers(conn, cfg) if s.name == name), None)

    return create_once(
        f"create server {name}", conn.compute, lambda: conn.compute.create_server(**attrs), find
    )


def workshop_floating_ips(conn: Connection, cfg: Workshop) -> list[Any]:
    """Floating IPs bakery allocated for the workshop (exact description token)."""
    ips = api("list floating IPs", lambda: list(conn.network.ips()))
    return [ip for ip in ips if owned(ip.description, cfg)]


def _port_ip(conn: Connection, port_id: str) -> Any:
    return next(
        iter(api("list floating IPs", lambda: list(conn.network.ips(port_id=port_id)))), None
    )


def ensure_floating_ip(
    conn: Connection, cfg: Workshop, server: Any, network: Any | None, progress: Reporter = quiet
) -> tuple[str | None, Tracked | None]:
    """The server's floating IP: the one it has, else a new one from ``network`` (None: no
    floating IP). Returns (address, what was created)."""
    if network is None:
        return None, None
    ports = api("list ports", lambda: list(conn.network.ports(device_id=server.id)))
    if not ports:
        raise CloudError(f"server {server.name} has no port to attach a floating IP to")
    for port in ports:
        ip = _port_ip(conn, port.id)
        if ip is not None:
            return str(ip.floating_ip_address), None
    ip = create_once(
        f"allocate a floating IP on {network.name}",
        conn.network,
        lambda: conn.network.create_ip(
            floating_network_id=network.id,
            port_id=ports[0].id,
            description=f"{marker(cfg)} server={server.name}",
        ),
        lambda: _port_ip(conn, ports[0].id),
    )
    address = str(ip.floating_ip_address)
    progress(f"server {server.name}: floating IP {address}")
    return address, Tracked("floating_ip", str(ip.id), address)


# --- deleting -------------------------------------------------------------------------------------


def delete_all(conn: Connection, items: list[Tracked], progress: Reporter = quiet) -> list[str]:
    """Delete ``items``: servers first (and awaited), then the rest in order; collect failures.

    Returns the failures' messages (the other deletions went ahead).
    """
    from openstack.compute.v2.server import Server

    errors: list[str] = []
    going = []
    volumes: list[str] = []
    for item in (i for i in items if i.kind == "server"):
        try:
            volumes += boot_volumes(conn, item)
            api(f"delete {item}", conn.compute.delete_server, item.id, ignore_missing=True)
            going.append(item)  # only these are awaited: a failed delete never completes
        except BakeryError as exc:
            errors.append(str(exc))
    for item in going:
        try:
            server = Server.new(id=item.id, name=item.name)
            api(f"wait for {item} to go", conn.compute.wait_for_delete, server, wait=300)
            progress(f"{item}: deleted")
        except BakeryError as exc:
            errors.append(str(exc))
    errors += sweep_volumes(conn, volumes, progress)
    deleters: dict[str, Callable[..., Any]] = {
        "floating_ip": conn.network.delete_ip,
        "security_group": conn.network.delete_security_group,
        "keypair": conn.compute.delete_keypair,
    }
    for item in (i for i in items if i.kind != "server"):
        try:
            api(f"delete {item}", deleters[item.kind], item.id, ignore_missing=True)
            progress(f"{item}: deleted")
        except BakeryError as exc:
            errors.append(str(exc))
    return errors


def boot_volumes(conn: Connection, item: Tracked) -> list[str]:
    """The IDs of the volumes Nova is to delete with server ``item`` (its boot volume)."""
    try:
        server = api(f"look up {item}", conn.compute.get_server, item.id)
    except NotFoundError:
        return []
    attached = server.attached_volumes or []
    return [str(v["id"]) for v in attached if v.get("delete_on_termination")]


def sweep_volumes(conn: Connection, ids: list[str], progress: Reporter = quiet) -> list[str]:
    """Once their servers are gone: wait for Nova's deletion of the boot volumes ``ids`` and
    delete any it left (a volume that cost quota and money for nothing); the failures."""
    errors = []
    for vid in ids:
        try:
            volume = api("look up volume", conn.block_storage.find_volume, vid, ignore_missing=True)
            if volume is None:
                continue
            if volume.status != "deleting":
                progress(f"volume {vid}: left by its server ({volume.status}), deleting")
                api(f"delete volume {vid}", conn.block_storage.delete_volume, vid)
            wait = conn.block_storage.wait_for_delete
            api(f"wait for volume {vid} to go", wait, volume, wait=300)
            progress(f"boot volume {vid}: deleted")
        except BakeryError as exc:
            errors.append(str(exc))
    return errors


@contextmanager
def cleanup_on_failure(conn: Connection, progress: Reporter = quiet) -> Iterator[list[Tracked]]:
    """Collects what a run creates; on an error, deletes it (newest first) and re-raises."""
    made: list[Tracked] = []
    try:
        yield made
    except BaseException as exc:
        if not made:
            raise
        progress(f"failed: removing the {len(made)} resources this run created")
        errors = delete_all(conn, list(reversed(made)), progress)
        if not errors:
            raise
        # What could not be deleted keeps costing money: say so with the cause, not as a note.
        raise LeftBehind(
            f"{exc}\n\nand {len(errors)} of the {len(made)} resources this run created could not "
            "be removed (run `bakery destroy` to retry):\n  " + "\n  ".join(errors)
        ) from exc
