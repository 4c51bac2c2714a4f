"""OpenStack operations with openstacksdk: launch, status and destroy a workshop's servers.

Everything bakery creates is marked so it can be found again: servers carry ``bakery_workshop``
metadata, floating IPs and the security group carry ``bakery:workshop=NAME`` in their description,
and a key pair bakery made is recorded in ``<config>.openstack.json`` beside the config (Nova key
pairs have no description). openstacksdk is imported here only, by the commands that need it.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bakery.config import Users, Workshop, load_config
from bakery.credentials import Account, credentials_path, ensure_credentials
from bakery.errors import BakeryError
from bakery.render import Stage, render_user_data
from bakery.sizing import estimate_workshop, smallest_flavor

if TYPE_CHECKING:
    from openstack.connection import Connection

T = TypeVar("T")
Progress = Callable[[str], None]

META_KEY = "bakery_workshop"
TRANSIENT = {500, 502, 503, 504}
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)


class CloudError(BakeryError):
    """The cloud refused or failed an operation; the message says which and why."""


class AuthError(CloudError):
    """Credentials were missing or refused."""

    exit_code = 2


class QuotaError(CloudError):
    """A project quota stops the operation."""


def marker(cfg: Workshop) -> str:
    """The description tag of resources bakery made for this workshop."""
    return f"bakery:workshop={cfg.name}"


def _quiet() -> None:
    # urllib3 warns on every unverified HTTPS request; the hub's certificate is self-signed.
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")


# --- API calls with retries and plain errors ------------------------------------------------------


def api(what: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``func``; retry transient failures (5xx, dropped connections) with backoff.

    Raises:
        AuthError, QuotaError, CloudError: with ``what`` and the cloud's own message.
    """
    from keystoneauth1 import exceptions as ks
    from openstack import exceptions as os_exc

    for delay in (*RETRY_DELAYS, None):
        try:
            return func(*args, **kwargs)
        except (ks.Unauthorized, ks.MissingAuthPlugin, ks.NoMatchingPlugin) as exc:
            raise AuthError(
                f"{what}: the cloud refused the credentials ({exc}); check clouds.yaml / "
                "OS_CLOUD, or the application credential's expiry"
            ) from None
        except (ks.ConnectFailure, ks.ConnectTimeout, ks.RetriableConnectionFailure) as exc:
            if delay is None:
                raise CloudError(f"{what}: cannot reach the cloud: {exc}") from None
        except os_exc.HttpException as exc:
            status = exc.status_code or 0
            detail = _http_detail(exc)
            if status == 401:
                raise AuthError(f"{what}: unauthorized: {detail}") from None
            if "quota" in detail.lower() or status == 413:
                raise QuotaError(f"{what}: quota exceeded: {detail}") from None
            if status not in TRANSIENT or delay is None:
                raise CloudError(f"{what}: {detail}") from None
        except (ks.ClientException, os_exc.SDKException) as exc:
            # Not HTTP: discovery failures, ResourceTimeout of wait_for_delete, ... (no retry).
            raise CloudError(f"{what}: {exc}") from None
        time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _http_detail(exc: Exception) -> str:
    details = getattr(exc, "details", None)
    status = getattr(exc, "status_code", None)
    text = str(details or getattr(exc, "message", None) or exc).strip()
    return f"HTTP {status}: {text}" if status else text


def connect(cfg: Workshop) -> Connection:
    """An openstacksdk connection to the config's cloud (``openstack.cloud``, else OS_CLOUD)."""
    import openstack
    from openstack import exceptions as os_exc

    cloud = cfg.openstack.cloud or os.environ.get("OS_CLOUD")
    try:
        conn = openstack.connect(cloud=cloud) if cloud else openstack.connect()
    except os_exc.ConfigException as exc:
        raise AuthError(
            f"cannot load cloud {cloud or '(default)'}: {exc}; set openstack.cloud in the config "
            "or OS_CLOUD, with credentials in clouds.yaml"
        ) from None
    # Not conn.authorize(): it turns keystoneauth's Unauthorized into a bare SDKException.
    api("authenticate", conn.session.get_token)
    return conn


# --- state beside the config ----------------------------------------------------------------------


def state_path(config_path: Path) -> Path:
    """``workshop.yaml`` -> ``workshop.openstack.json``: what bakery created that has no tag."""
    return config_path.with_name(config_path.stem + ".openstack.json")


def _load_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise BakeryError(f"{path}: unreadable ({exc}); remove it if no resources remain") from None
    return data if isinstance(data, dict) else {}


def _save_state(path: Path, state: dict[str, Any]) -> None:
    if not state:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# --- the resources --------------------------------------------------------------------------------


def sg_name(cfg: Workshop) -> str:
    """The workshop's security group name."""
    return cfg.openstack.security_group or f"bakery-{cfg.name}"


def key_name(cfg: Workshop) -> str | None:
    """The key pair servers get (None: no key pair configured or needed)."""
    if cfg.openstack.key_name:
        return cfg.openstack.key_name
    return f"bakery-{cfg.name}" if cfg.openstack.public_key else None


def server_names(cfg: Workshop) -> list[str]:
    """Server names: NAME-1 .. NAME-N."""
    return [f"{cfg.name}-{i}" for i in range(1, cfg.openstack.count + 1)]


def wanted_rules(cfg: Workshop) -> list[tuple[int, str]]:
    """(port, source CIDR) pairs the security group opens: ssh for admins, web for everyone."""
    return [(22, cfg.openstack.admin_cidr), (80, "0.0.0.0/0"), (443, "0.0.0.0/0")]


def ensure_security_group(conn: Connection, cfg: Workshop, progress: Progress) -> tuple[Any, bool]:
    """Get or create the workshop's security group with its rules; returns (group, created)."""
    name = sg_name(cfg)
    group = api(f"find security group {name}", conn.network.find_security_group, name)
    created = False
    if group is None:
        group = api(
            f"create security group {name}",
            conn.network.create_security_group,
            name=name,
            description=f"{marker(cfg)} (made by bakery; removed by bakery destroy)",
        )
        created = True
        progress(f"security group {name}: created")
    elif marker(cfg) not in (group.description or ""):
        progress(f"security group {name}: exists (not bakery's): used as it is, rules unchanged")
        return group, False
    have = {
        (r.port_range_min, r.remote_ip_prefix)
        for r in api(
            "list security group rules",
            lambda: list(conn.network.security_group_rules(security_group_id=group.id)),
        )
        if r.direction == "ingress" and r.protocol == "tcp"
    }
    for port, cidr in wanted_rules(cfg):
        if (port, cidr) not in have:
            api(
                f"open port {port} in {name}",
                conn.network.create_security_group_rule,
                security_group_id=group.id,
                direction="ingress",
                ethertype="IPv4",
                protocol="tcp",
                port_range_min=port,
                port_range_max=port,
                remote_ip_prefix=cidr,
            )
    if not created:
        progress(f"security group {name}: present")
    return group, created


def _public_key(cfg: Workshop) -> str:
    assert cfg.openstack.public_key is not None
    path = Path(cfg.openstack.public_key).expanduser()
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise BakeryError(f"openstack.public_key: cannot read {path}: {exc}") from None
    if not re.match(r"^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp\d+|sk-\S+) [A-Za-z0-9+/=]+", key):
        raise BakeryError(f"openstack.public_key: {path} is not an ssh public key")
    return key


def _same_key(a: str, b: str) -> bool:
    return a.split()[:2] == b.split()[:2]


def ensure_keypair(conn: Connection, cfg: Workshop, progress: Progress) -> tuple[str | None, bool]:
    """Get or create the key pair; refuse an existing one that holds a different key."""
    name = key_name(cfg)
    if name is None:
        return None, False
    existing = api(f"find key pair {name}", conn.compute.find_keypair, name)
    if cfg.openstack.public_key is None:
        if existing is None:
            raise BakeryError(
                f"key pair {name!r} does not exist; set openstack.public_key to a .pub file "
                "and bakery will create it"
            )
        return name, False
    key = _public_key(cfg)
    if existing is not None:
        if not _same_key(existing.public_key or "", key):
            raise BakeryError(
                f"key pair {name!r} exists with a different key than {cfg.openstack.public_key}; "
                "set openstack.key_name to another name, or delete the old key pair"
            )
        progress(f"key pair {name}: present")
        return name, False
    api(f"create key pair {name}", conn.compute.create_keypair, name=name, public_key=key)
    progress(f"key pair {name}: created")
    return name, True


def workshop_servers(conn: Connection, cfg: Workshop) -> list[Any]:
    """The workshop's servers (found by their bakery metadata), sorted by name."""
    found = api(
        "list servers",
        lambda: list(conn.compute.servers(details=True, name=f"^{re.escape(cfg.name)}-[0-9]+$")),
    )
    return sorted(
        (s for s in found if (s.metadata or {}).get(META_KEY) == cfg.name), key=lambda s: s.name
    )


def workshop_floating_ips(conn: Connection, cfg: Workshop) -> list[Any]:
    """Floating IPs bakery allocated for the workshop."""
    ips = api("list floating IPs", lambda: list(conn.network.ips()))
    return [ip for ip in ips if marker(cfg) in (ip.description or "")]


def _image(conn: Connection, name_or_id: str) -> Any:
    image = api(f"find image {name_or_id}", conn.image.find_image, name_or_id)
    if image is None:
        raise BakeryError(f"image {name_or_id!r} not found; `openstack image list` shows them")
    return image


def image_stage(image: Any) -> Stage:
    """``boot`` for an image bakery baked (it carries bakery_* properties), else ``full``."""
    props = dict(getattr(image, "properties", None) or {})
    props.update({k: v for k, v in image.to_dict().items() if isinstance(k, str)})
    return "boot" if any(str(k).startswith("bakery_") for k in props) else "full"


def choose_flavor(conn: Connection, cfg: Workshop) -> Any:
    """The configured flavor, or with ``auto`` the smallest that fits `bakery size`."""
    wanted = cfg.openstack.flavor
    if wanted != "auto":
        flavor = api(f"find flavor {wanted}", conn.compute.find_flavor, wanted)
        if flavor is None:
            raise BakeryError(f"flavor {wanted!r} not found; `bakery size` lists fitting ones")
        return flavor
    need = estimate_workshop(cfg)
    flavors = api("list flavors", lambda: list(conn.compute.flavors(details=True)))
    table = [
        {"name": f.name, "ram": f.ram, "vcpus": f.vcpus, "disk": f.disk, "obj": f}
        for f in flavors
        if cfg.openstack.boot_volume or f.disk
    ]
    best = smallest_flavor(table, need, boot_volume=cfg.openstack.boot_volume)
    if best is None:
        raise BakeryError(
            f"no flavor fits {need.memory_mib} MiB, {need.vcpus} vCPUs, {need.disk_gb} GB; "
            "raise openstack.count to split the trainees, or name a flavor"
        )
    return best["obj"]


def _network_ids(conn: Connection, cfg: Workshop) -> list[str]:
    ids = []
    for name in cfg.openstack.networks:
        net = api(f"find network {name}", conn.network.find_network, name)
        if net is None:
            raise BakeryError(f"network {name!r} not found; `openstack network list` shows them")
        ids.append(net.id)
    return ids


def split_users(cfg: Workshop) -> list[Workshop]:
    """One config per server: the trainees split in contiguous groups, every admin on each."""
    trainees = cfg.users.trainees()
    count = cfg.openstack.count
    if count > len(trainees):
        raise BakeryError(f"openstack.count {count} is more than the {len(trainees)} trainees")
    size = math.ceil(len(trainees) / count)
    parts = []
    for i, name in enumerate(server_names(cfg)):
        group = trainees[i * size : (i + 1) * size]
        users = Users.model_validate(
            {**cfg.users.model_dump(), "names": group, "count": None, "prefix": cfg.users.prefix}
        )
        parts.append(cfg.model_copy(update={"users": users, "hostname": name}))
    return parts


def user_data_b64(cfg: Workshop, accounts: list[Account], stage: Stage) -> str:
    """Base64 user-data for one server (gzipped when needed to fit Nova's limit)."""
    by_name = {a.username: a for a in accounts}
    mine = [by_name[n] for n in cfg.users.all_names()]
    return base64.b64encode(render_user_data(cfg, stage=stage, accounts=mine).data).decode()


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


def _addresses(server: Any) -> list[str]:
    out = []
    for entries in (server.addresses or {}).values():
        out += [e.get("addr") for e in entries if e.get("addr")]
    return out


def _fault(server: Any) -> str:
    fault = server.fault or {}
    return str(fault.get("message") or fault.get("details") or "no fault message from Nova")


@contextmanager
def _cleanup_on_failure(conn: Connection, progress: Progress) -> Iterator[list[tuple[str, Any]]]:
    """Collects what this run creates; on an error, deletes it (newest first) and re-raises."""
    made: list[tuple[str, Any]] = []
    try:
        yield made
    except BaseException:
        if made:
            progress(f"launch failed: removing the {len(made)} resources this run created")
            errors = _delete_all(conn, list(reversed(made)), progress)
            for err in errors:
                progress(f"cleanup: {err}")
        raise


def _delete_all(conn: Connection, items: list[tuple[str, Any]], progress: Progress) -> list[str]:
    """Delete (kind, resource) pairs; servers first and awaited; collect failures."""
    errors: list[str] = []
    servers = []
    for server in [r for k, r in items if k == "server"]:
        try:
            api(f"delete server {server.name}", conn.compute.delete_server, server)
            servers.append(server)  # only these are awaited: a failed delete never completes
        except BakeryError as exc:
            errors.append(str(exc))
    for server in servers:
        try:
            api(f"wait for {server.name} to go", conn.compute.wait_for_delete, server, wait=300)
            progress(f"server {server.name}: deleted")
        except BakeryError as exc:
            errors.append(str(exc))
    for kind, res in items:
        if kind == "server":
            continue
        label = {"fip": "floating IP", "sg": "security group", "keypair": "key pair"}[kind]
        ident = getattr(res, "floating_ip_address", None) or getattr(res, "name", None) or res
        try:
            if kind == "fip":
                api(f"delete {label} {ident}", conn.network.delete_ip, res, ignore_missing=True)
            elif kind == "sg":
                api(
                    f"delete {label} {ident}",
                    conn.network.delete_security_group,
                    res,
                    ignore_missing=True,
                )
            else:
                api(
                    f"delete {label} {ident}", conn.compute.delete_keypair, res, ignore_missing=True
                )
            progress(f"{label} {ident}: deleted")
        except BakeryError as exc:
            errors.append(str(exc))
    return errors


def _wait_active(conn: Connection, server: Any, timeout: float, progress: Progress) -> Any:
    start = time.monotonic()
    last = ""
    while True:
        server = api(f"get server {server.name}", conn.compute.get_server, server.id)
        if server.status == "ACTIVE":
            progress(f"server {server.name}: ACTIVE after {time.monotonic() - start:.0f} s")
            return server
        if server.status == "ERROR":
            raise CloudError(f"server {server.name} failed to build: {_fault(server)}")
        if time.monotonic() - start > timeout:
            raise CloudError(
                f"server {server.name} still {server.status} after {timeout:.0f} s; "
                "the cloud may be out of capacity"
            )
        if server.status != last:
            progress(f"server {server.name}: {server.status}")
            last = server.status
        time.sleep(2)


def _ensure_floating_ip(
    conn: Connection, cfg: Workshop, server: Any, made: list[tuple[str, Any]], progress: Progress
) -> str | None:
    """The server's floating IP: the one it has, else a new one (recorded in ``made``)."""
    network_name = cfg.openstack.floating_ip_network
    if network_name is None:
        return None
    ports = api("list ports", lambda: list(conn.network.ports(device_id=server.id)))
    if not ports:
        raise CloudError(f"server {server.name} has no port to attach a floating IP to")
    for port in ports:
        for ip in api("list floating IPs", lambda p=port: list(conn.network.ips(port_id=p.id))):
            return str(ip.floating_ip_address)
    net = api(f"find network {network_name}", conn.network.find_network, network_name)
    if net is None:
        raise BakeryError(f"floating IP network {network_name!r} not found")
    ip = api(
        f"allocate a floating IP on {network_name}",
        conn.network.create_ip,
        floating_network_id=net.id,
        port_id=ports[0].id,
        description=f"{marker(cfg)} server={server.name}",
    )
    made.append(("fip", ip))
    progress(f"server {server.name}: floating IP {ip.floating_ip_address}")
    return str(ip.floating_ip_address)


def console_state(conn: Connection, server: Any, cfg: Workshop) -> tuple[str, list[str]]:
    """cloud-init's state from the console log: (``done``/``error``/``running``, relevant lines)."""
    try:
        out = api("read console", conn.compute.get_server_console_output, server, length=400).get(
            "output", ""
        )
    except BakeryError:
        return "unknown", []
    lines = str(out).splitlines()
    bad = [
        ln
        for ln in lines
        if re.search(r"Failed to run module|Traceback|\[CRITICAL\]|bakery: attempt 3", ln)
    ]
    if bad:
        return "error", bad[-15:]
    if any(f"bakery: {cfg.name} " in ln and "stage done" in ln for ln in lines):
        return "done", []
    return "running", []


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


def _wait_hub(
    conn: Connection,
    cfg: Workshop,
    servers: list[ServerInfo],
    raw: dict[str, Any],
    timeout: float,
    progress: Progress,
) -> None:
    start = time.monotonic()
    pending = {s.name: s for s in servers if s.floating_ip or s.addresses}
    while pending:
        for name, info in list(pending.items()):
            ip = info.floating_ip or info.addresses[0]
            info.hub = hub_health(ip)
            state, lines = console_state(conn, raw[name], cfg)
            info.cloud_init = state
            if info.hub == "ok":
                progress(
                    f"server {name}: hub answers at https://{ip}/ "
                    f"({time.monotonic() - start:.0f} s)"
                )
                del pending[name]
            elif state == "error":
                raise CloudError(
                    f"cloud-init failed on {name}; from its console:\n  " + "\n  ".join(lines)
                )
        if pending and time.monotonic() - start > timeout:
            names = ", ".join(pending)
            raise CloudError(
                f"the hub on {names} did not answer within {timeout / 60:.0f} min (last: "
                f"{'; '.join(p.hub for p in pending.values())}); see `bakery status` and the "
                "console log (openstack console log show SERVER)"
            )
        if pending:
            time.sleep(10)


@dataclass
class LaunchResult:
    """What `bakery launch` made and where the hub is."""

    servers: list[ServerInfo]
    created: list[str]
    credentials: Path


def launch(
    *,
    config_path: Path,
    image: str | None = None,
    count: int | None = None,
    stage: Stage | None = None,
    wait: bool = True,
    timeout_minutes: float | None = None,
    progress: Progress = lambda m: None,
) -> LaunchResult:
    """Ensure the security group, key pair, server(s) and floating IPs; wait for the hub.

    Idempotent: servers, groups and IPs that exist are reused. A failure removes what this run
    created and raises with the cloud's own message.
    """
    cfg = load_config(config_path)
    if count is not None:
        cfg = cfg.model_copy(
            update={"openstack": cfg.openstack.model_copy(update={"count": count})}
        )
    image_ref = image or cfg.openstack.image
    if not image_ref:
        raise BakeryError("no image: pass --image or set openstack.image in the config")
    sheet = credentials_path(config_path)
    accounts = ensure_credentials(cfg, sheet)
    parts = split_users(cfg)
    conn = connect(cfg)
    img = _image(conn, image_ref)
    stage = stage or image_stage(img)
    progress(
        f"image {img.name}: {'baked by bakery: boot' if stage == 'boot' else 'stock: full'} "
        "stage user-data"
    )
    # Render every server's user-data before creating anything: a size error costs nothing.
    payloads = {p.hostname: user_data_b64(p, accounts, stage) for p in parts}
    # Look-ups that can fail on a typo come before anything is created.
    flavor = choose_flavor(conn, cfg)
    networks = _network_ids(conn, cfg)
    state_file = state_path(config_path)
    state = _load_state(state_file)
    created: list[str] = []
    with _cleanup_on_failure(conn, progress) as made:
        # The key pair first: a key that differs is refused before anything is created.
        keyname, key_created = ensure_keypair(conn, cfg, progress)
        if key_created:
            made.append(("keypair", keyname))
            created.append(f"key pair {keyname}")
            state["keypair"] = keyname
            _save_state(state_file, state)
        group, sg_created = ensure_security_group(conn, cfg, progress)
        if sg_created:
            made.append(("sg", group))
            created.append(f"security group {group.name}")
        existing = {s.name: s for s in workshop_servers(conn, cfg)}
        raw: dict[str, Any] = {}
        for part in parts:
            name = str(part.hostname)
            if name in existing:
                progress(f"server {name}: exists ({existing[name].status}), reused")
                raw[name] = existing[name]
                continue
            attrs: dict[str, Any] = {
                "name": name,
                "flavor_id": flavor.id,
                "user_data": payloads[name],
                "security_groups": [{"name": group.name}],
                "metadata": {**cfg.openstack.metadata, META_KEY: cfg.name, "bakery_stage": stage},
            }
            if keyname:
                attrs["key_name"] = keyname
            if networks:
                attrs["networks"] = [{"uuid": n} for n in networks]
            if cfg.openstack.boot_volume:
                attrs["block_device_mapping"] = [
                    {
                        "boot_index": 0,
                        "uuid": img.id,
                        "source_type": "image",
                        "destination_type": "volume",
                        "volume_size": cfg.openstack.volume_size,
                        "delete_on_termination": True,
                    }
                ]
            else:
                attrs["image_id"] = img.id
            server = api(f"create server {name}", conn.compute.create_server, **attrs)
            made.append(("server", server))
            created.append(f"server {name}")
            progress(f"server {name}: creating ({flavor.name})")
            raw[name] = server
        infos = []
        for name, server in raw.items():
            server = _wait_active(conn, server, 900, progress)
            raw[name] = server
            before = len(made)
            fip = _ensure_floating_ip(conn, cfg, server, made, progress)
            if len(made) > before:
                created.append(f"floating IP {fip}")
            info = ServerInfo(name, server.id, server.status, _addresses(server), fip)
            ip = fip or (info.addresses[0] if info.addresses else None)
            info.url = f"https://{ip}/" if ip else None
            infos.append(info)
        if wait:
            minutes = (
                cfg.openstack.hub_timeout_minutes if timeout_minutes is None else timeout_minutes
            )
            _wait_hub(conn, cfg, infos, raw, minutes * 60, progress)
    return LaunchResult(infos, created, sheet)


def status(*, config_path: Path) -> list[ServerInfo]:
    """The workshop's servers with state, addresses, hub health and cloud-init progress."""
    cfg = load_config(config_path)
    conn = connect(cfg)
    fips = {
        ip.port_details.get("device_id") if ip.port_details else None: ip
        for ip in workshop_floating_ips(conn, cfg)
    }
    infos = []
    for server in workshop_servers(conn, cfg):
        addresses = _addresses(server)
        fip = fips.get(server.id)
        floating = str(fip.floating_ip_address) if fip else None
        info = ServerInfo(server.name, server.id, server.status, addresses, floating)
        ip = floating or (addresses[0] if addresses else None)
        if server.status == "ERROR":
            info.fault = _fault(server)
        if ip and server.status == "ACTIVE":
            info.url = f"https://{ip}/"
            info.hub = hub_health(ip)
            info.cloud_init, _ = console_state(conn, server, cfg)
        infos.append(info)
    return infos


def status_json(infos: list[ServerInfo]) -> str:
    """`bakery status --json`."""
    return json.dumps([asdict(i) for i in infos], indent=2, sort_keys=True)


@dataclass
class DestroyPlan:
    """What `bakery destroy` would delete."""

    items: list[tuple[str, Any]]

    def lines(self) -> list[str]:
        """One line per resource."""
        labels = {
            "server": "server",
            "fip": "floating IP",
            "sg": "security group",
            "keypair": "key pair",
        }
        out = []
        for kind, res in self.items:
            ident = getattr(res, "floating_ip_address", None) or getattr(res, "name", None) or res
            out.append(f"{labels[kind]} {ident}")
        return out


def plan_destroy(conn: Connection, cfg: Workshop, config_path: Path) -> DestroyPlan:
    """Everything bakery made for this workshop, found through the API and the state file."""
    items: list[tuple[str, Any]] = [("server", s) for s in workshop_servers(conn, cfg)]
    items += [("fip", ip) for ip in workshop_floating_ips(conn, cfg)]
    group = api("find security group", conn.network.find_security_group, sg_name(cfg))
    if group is not None and marker(cfg) in (group.description or ""):
        items.append(("sg", group))
    keyname = _load_state(state_path(config_path)).get("keypair")
    if keyname and api("find key pair", conn.compute.find_keypair, keyname) is not None:
        items.append(("keypair", keyname))
    return DestroyPlan(items)


def destroy(
    *,
    config_path: Path,
    confirm: Callable[[DestroyPlan], bool] = lambda plan: True,
    progress: Progress = lambda m: None,
) -> DestroyPlan:
    """Delete what bakery made for the workshop; safe to re-run.

    Raises:
        CloudError: listing every deletion that failed (the others went ahead).
    """
    cfg = load_config(config_path)
    conn = connect(cfg)
    plan = plan_destroy(conn, cfg, config_path)
    if not plan.items:
        progress(f"nothing of workshop {cfg.name} left to delete")
        _save_state(state_path(config_path), {})
        return plan
    if not confirm(plan):
        raise BakeryError("not confirmed; nothing deleted")
    errors = _delete_all(conn, plan.items, progress)
    if errors:
        raise CloudError(
            f"{len(errors)} of {len(plan.items)} deletions failed (the rest went ahead; run "
            "destroy again to retry):\n  " + "\n  ".join(errors)
        )
    _save_state(state_path(config_path), {})
    return plan


# --- bake without Packer: boot a builder, let it seal itself, snapshot it -------------------------

SEAL_SCRIPT = "/usr/local/lib/bakery/seal.sh"
SEAL_OK = "bakery-seal: sealed"
SEAL_FAILED = "bakery-seal: FAILED"


def _seal_script(build_user: str) -> str:
    # Runs outside cloud-init (a transient systemd unit): waits for cloud-init to finish, then
    # cleans the instance for reuse and powers it off. Its verdict goes to the serial console,
    # which bakery reads through Nova's console log; Nova serves no console log of a stopped
    # server, so the verdict stays up for 30 s before the power-off.
    return f"""#!/bin/sh
# Written by bakery: seal this builder into a golden image, then power off.
set -u
say() {{ for c in /dev/ttyS0 /dev/console; do [ -w "$c" ] && echo "$*" > "$c"; done; true; }}
cloud-init status --wait >/dev/null 2>&1
rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then
    say "{SEAL_FAILED}: cloud-init status $rc"
    cloud-init status --long 2>&1 | while read -r line; do say "  $line"; done
    sleep 30
    poweroff
    exit 1
fi
if BAKERY_BUILD_USER={build_user} BAKERY_SOURCE=openstack /usr/local/lib/bakery/clean.sh; then
    rm -f "$0"
    say "{SEAL_OK}"
else
    say "{SEAL_FAILED}: clean.sh failed"
fi
sync
sleep 30
poweroff
"""


def builder_user_data(
    cfg: Workshop, bake_doc: dict[str, Any] | None = None
) -> tuple[bytes, dict[str, Any]]:
    """The bake stage plus the seal (clean for reuse, power off once cloud-init is done), and
    the bake record of the bake stage."""
    from bakery import packer
    from bakery.render import build_cloud_config, dump_cloud_config

    doc = dict(bake_doc or build_cloud_config(cfg, stage="bake"))
    record = packer.bake_record(cfg, dump_cloud_config(doc).encode())
    doc["write_files"] = [
        *doc.get("write_files", []),
        {"path": "/tmp/bakery-image.json", "content": json.dumps(record, indent=2) + "\n"},  # noqa: S108
        {
            "path": "/usr/local/lib/bakery/clean.sh",
            "content": packer.clean_script(),
            "permissions": "0755",
        },
        {"path": SEAL_SCRIPT, "content": _seal_script(cfg.login_user), "permissions": "0755"},
    ]
    doc["runcmd"] = [
        *doc.get("runcmd", []),
        ["systemd-run", "--unit=bakery-seal", "--on-active=5", SEAL_SCRIPT],
    ]
    return dump_cloud_config(doc).encode(), record


def bake_image(
    *,
    config_path: Path,
    bake_doc: dict[str, Any] | None = None,
    timeout_minutes: float = 120,
    progress: Progress = lambda m: None,
) -> str:
    """Bake the golden image with openstacksdk alone; returns the new image's ID.

    Boots a builder from ``bake.source_image`` with the bake-stage user-data, waits until it has
    sealed itself (cloud-init done, cleaned for reuse, powered off), snapshots it with the
    ``bakery_*`` properties, and deletes the builder whatever happens.
    """
    from bakery import packer

    cfg = load_config(config_path)
    if cfg.spawner.kind == "docker" and cfg.spawner.image_archive is not None:
        raise BakeryError(
            "spawner.image_archive: the openstacksdk builder cannot copy a file into its builder "
            "(it only passes user-data, far too small for an image): use --builder packer, which "
            "uploads the archive over ssh, or --builder chroot"
        )
    b = cfg.bake
    conn = connect(cfg)
    source = _image(conn, b.source_image or packer.SOURCE_IMAGE_NAMES[cfg.os])
    flavor = api(f"find flavor {b.flavor}", conn.compute.find_flavor, b.flavor)
    if flavor is None:
        raise BakeryError(f"bake.flavor {b.flavor!r} not found")
    data, record = builder_user_data(cfg, bake_doc)
    payload = base64.b64encode(data).decode()
    if len(payload) > 65535:
        raise BakeryError(f"the builder's user-data is {len(payload):,} base64 chars, over 65,535")
    name = f"{cfg.name}-builder"
    attrs: dict[str, Any] = {
        "name": name,
        "image_id": source.id,
        "flavor_id": flavor.id,
        "user_data": payload,
        "metadata": {META_KEY: cfg.name, "bakery_role": "builder"},
    }
    if b.networks:
        attrs["networks"] = [{"uuid": n} for n in b.networks]
    if b.security_groups:
        attrs["security_groups"] = [{"name": g} for g in b.security_groups]
    server = api(f"create builder {name}", conn.compute.create_server, **attrs)
    progress(f"builder {name}: creating from {source.name} ({flavor.name})")
    try:
        server = _wait_active(conn, server, 900, progress)
        start = time.monotonic()
        out = ""
        while True:
            server = api(f"get {name}", conn.compute.get_server, server.id)
            if server.status == "ACTIVE":
                try:
                    console = api(
                        "read console", conn.compute.get_server_console_output, server, length=200
                    )
                    out = str(console.get("output", "")) or out
                except CloudError:
                    pass  # powering off: Nova has no console log of a stopped guest; keep the last
            if SEAL_FAILED in out:
                tail = [ln for ln in out.splitlines() if "bakery-seal" in ln or ln.startswith("  ")]
                raise CloudError(f"the bake failed on {name}:\n  " + "\n  ".join(tail[-20:]))
            if server.status == "SHUTOFF":
                break
            if server.status == "ERROR":
                raise CloudError(f"builder {name} failed: {_fault(server)}")
            if time.monotonic() - start > timeout_minutes * 60:
                raise CloudError(f"builder {name} still baking after {timeout_minutes:.0f} min")
            time.sleep(5)
        if SEAL_OK not in out:
            raise CloudError(f"builder {name} powered off without sealing; see its console log")
        progress(f"builder {name}: sealed after {time.monotonic() - start:.0f} s; snapshotting")
        image_name = packer.image_name(cfg)
        if b.image_suffix == "date":
            image_name += time.strftime("-%Y%m%d-%H%M", time.gmtime())
        image = api(
            f"snapshot {name}",
            conn.compute.create_server_image,
            server,
            image_name,
            metadata=packer.image_metadata(cfg, record),
            wait=True,
            timeout=3600,
        )
        if b.image_visibility != "private":
            api("set visibility", conn.image.update_image, image, visibility=b.image_visibility)
        progress(f"image {image_name}: {image.id}")
        return str(image.id)
    finally:
        try:
            api(f"delete builder {name}", conn.compute.delete_server, server)
            api(f"wait for {name} to go", conn.compute.wait_for_delete, server, wait=300)
            progress(f"builder {name}: deleted")
        except BakeryError as exc:
            progress(f"builder {name}: could not delete it: {exc}")
