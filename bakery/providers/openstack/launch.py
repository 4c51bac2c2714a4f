"""Launch, status and destroy a workshop's servers: each an ordered list of its steps."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bakery.config.fields import parse_duration
from bakery.config.sections import Users
from bakery.config.workshop import Workshop, load_config
from bakery.errors import BakeryError, CloudError, UsageError
from bakery.progress import Reporter, quiet
from bakery.providers.openstack.api import (
    META_KEY,
    api,
    choose_flavor,
    connect,
    console_scan,
    console_state,
    find_image,
    find_network,
    hub_health,
    image_stage,
    network_ids,
    server_fault,
    wait_active,
)
from bakery.providers.openstack.resources import (
    Tracked,
    cleanup_on_failure,
    create_server,
    delete_all,
    ensure_floating_ip,
    ensure_keypair,
    ensure_security_group,
    find_group,
    load_state,
    owned,
    save_state,
    server_names,
    state_path,
    workshop_floating_ips,
    workshop_servers,
)
from bakery.vm.stages import Stage
from bakery.vm.userdata import render_user_data
from bakery.workshop.accounts import Account, credentials_path, ensure_credentials, sheet_order
from bakery.workshop.expiry import refuse_if_ended

if TYPE_CHECKING:
    from openstack.connection import Connection

HOMES_WARNING = (
    "the servers' disks are deleted with them: the trainees' files (their home folders and "
    "notebooks) are gone for good; download them first: `bakery destroy CONFIG --collect DIR` "
    "(or `bakery collect CONFIG -o DIR`)"
)


# --- what each server gets ------------------------------------------------------------------------


def workshop_config(config_path: Path, count: int | None = None) -> Workshop:
    """The config, with ``openstack.count`` overridden by ``count``.

    Raises:
        UsageError: ``count`` for a swarm cluster (one hub: `bakery scale` sizes it).
    """
    cfg = load_config(config_path)
    if count is None:
        return cfg
    if cfg.cluster.swarm:
        raise UsageError(
            f"--count {count}: workshop {cfg.name} is a swarm cluster (cluster.engine: swarm), "
            "one hub over its workers; --count makes separate hubs. Size the cluster with "
            "cluster.workers or `bakery scale CONFIG --workers N`"
        )
    return cfg.model_copy(update={"openstack": cfg.openstack.model_copy(update={"count": count})})


def refuse_unfilled_count(cfg: Workshop) -> list[str]:
    """The trainees, after refusing an ``openstack.count`` they cannot fill (a server each)."""
    listed = cfg.users.trainees()
    if cfg.openstack.count > len(listed):
        raise UsageError(
            f"openstack.count {cfg.openstack.count} is more than the {len(listed)} trainees"
        )
    return listed


def split_users(cfg: Workshop, order: Sequence[str] = ()) -> list[Workshop]:
    """One config per server: trainee number i on server i mod N, every admin on each.

    ``order`` is the credentials sheet's (`sheet_order`): trainees in it are dealt in the order
    their accounts were made, the others after them in the config's order. So a late trainee,
    wherever the config lists them, lands on a server without moving anyone already placed, and
    a relaunch of a lost server, `bakery users add` and the slips agree.
    """
    listed = refuse_unfilled_count(cfg)
    count = cfg.openstack.count
    known = set(listed)
    made = [n for n in dict.fromkeys(order) if n in known]
    placed = set(made)
    trainees = [*made, *(n for n in listed if n not in placed)]
    parts = []
    for i, name in enumerate(server_names(cfg)):
        group = trainees[i::count]
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


def image_ref(cfg: Workshop, image: str | None) -> str:
    """The image to boot: ``--image``, else ``openstack.image``."""
    ref = image or cfg.openstack.image
    if not ref:
        raise UsageError("no image: pass --image or set openstack.image in the config")
    return ref


@dataclass
class Basis:
    """What every server of a launch shares, looked up before anything is created."""

    image: Any
    stage: Stage
    flavor: Any
    networks: list[str]
    floating_network: Any | None


def server_attrs(
    cfg: Workshop, name: str, payload: str, basis: Basis, **extra: Any
) -> dict[str, Any]:
    """The create_server attributes of server ``name``."""
    attrs: dict[str, Any] = {
        "name": name,
        "flavor_id": basis.flavor.id,
        "user_data": payload,
        "metadata": {**cfg.openstack.metadata, META_KEY: cfg.name, "bakery_stage": basis.stage},
        **extra,
    }
    if cfg.openstack.config_drive is not None:
        attrs["config_drive"] = cfg.openstack.config_drive
    if basis.networks:
        attrs["networks"] = [{"uuid": n} for n in basis.networks]
    if cfg.openstack.boot_volume:
        attrs["block_device_mapping"] = [
            {
                "boot_index": 0,
                "uuid": basis.image.id,
                "source_type": "image",
                "destination_type": "volume",
                "volume_size": cfg.openstack.volume_size,
                "delete_on_termination": True,
            }
        ]
    else:
        attrs["image_id"] = basis.image.id
    return attrs


# --- what launch and status report ----------------------------------------------------------------


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


@dataclass
class LaunchResult:
    """What `bakery launch` made and where the hub is."""

    servers: list[ServerInfo]
    created: list[Tracked]
    credentials: Path
    workers: list[ServerInfo] = field(default_factory=list)  # a swarm's (no hub, no URL)
    workers_note: str | None = None  # a swarm's workers not all Ready when launch returned: why


# --- launch ---------------------------------------------------------------------------------------


def resolve_basis(
    conn: Connection, cfg: Workshop, image: str, stage: Stage | None, progress: Reporter
) -> Basis:
    """Image (and so the stage), flavor and networks: the look-ups a typo fails, before anything
    is created."""
    img = find_image(conn, image)
    if stage is not None:
        progress(f"image {img.name}: {stage} stage user-data (as asked)")
    else:
        stage = image_stage(img)
        kind = "baked by bakery: boot" if stage == "boot" else "stock: full"
        progress(f"image {img.name}: {kind} stage user-data")
    pool = cfg.openstack.floating_ip_network
    return Basis(
        img,
        stage,
        choose_flavor(conn, cfg),
        network_ids(conn, cfg),
        find_network(conn, pool, "openstack.floating_ip_network") if pool else None,
    )


def ensure_servers(
    conn: Connection,
    cfg: Workshop,
    payloads: dict[str, str],
    basis: Basis,
    shared: dict[str, Any],
    made: list[Tracked],
    progress: Reporter,
) -> list[Any]:
    """Get or create each server (``shared``: key pair and group attributes)."""
    existing = {s.name: s for s in workshop_servers(conn, cfg)}
    servers = []
    for name, payload in payloads.items():
        if name in existing:
            progress(f"server {name}: exists ({existing[name].status}), reused")
            servers.append(existing[name])
            continue
        server = create_server(conn, cfg, server_attrs(cfg, name, payload, basis, **shared))
        made.append(Tracked("server", str(server.id), name))
        progress(f"server {name}: creating ({basis.flavor.name})")
        servers.append(server)
    return servers


def remember_keypair(config_path: Path, key: Tracked) -> None:
    """Record the key pair bakery made in the state file (Nova key pairs carry no marker)."""
    state = load_state(state_path(config_path))
    save_state(state_path(config_path), {**state, "keypair": key.name})


def ensure_access(
    conn: Connection, cfg: Workshop, config_path: Path, made: list[Tracked], progress: Reporter
) -> dict[str, Any]:
    """The key pair (first: a key that differs is refused before anything is created) and the
    security group; what every server of the workshop is created with."""
    keyname, key = ensure_keypair(conn, cfg, progress)
    if key is not None:
        made.append(key)
        remember_keypair(config_path, key)
    group, sg = ensure_security_group(conn, cfg, progress)
    made += [sg] if sg else []
    shared: dict[str, Any] = {"security_groups": [{"name": group.name}]}
    if keyname:
        shared["key_name"] = keyname
    return shared


def bring_up(
    conn: Connection,
    cfg: Workshop,
    servers: list[Any],
    basis: Basis,
    made: list[Tracked],
    progress: Reporter,
) -> tuple[list[ServerInfo], dict[str, Any]]:
    """Wait for each server to be ACTIVE and give it its floating IP; (infos, servers by name)."""
    infos, raw = [], {}
    for server in servers:
        server = wait_active(conn, server, cfg.openstack.active_timeout, progress)
        fip, tracked = ensure_floating_ip(conn, cfg, server, basis.floating_network, progress)
        made += [tracked] if tracked else []
        infos.append(server_info(server, fip))
        raw[server.name] = server
    return infos, raw


def with_timeouts(
    cfg: Workshop, hub_timeout: str | int | None, active_timeout: str | int | None
) -> Workshop:
    """The config with ``openstack.hub_timeout`` / ``active_timeout`` replaced (90, 90s, 15m, 1h).

    Raises:
        UsageError: a value that is not a duration.
    """
    update: dict[str, int] = {}
    for key, value in (("hub_timeout", hub_timeout), ("active_timeout", active_timeout)):
        if value is None:
            continue
        try:
            update[key] = parse_duration(value)
        except ValueError as exc:
            raise UsageError(f"--{key.replace('_', '-')}: {exc}") from None
    return cfg.model_copy(update={"openstack": cfg.openstack.model_copy(update=update)})


def launch(
    *,
    config_path: Path,
    image: str | None = None,
    count: int | None = None,
    stage: Stage | None = None,
    wait: bool = True,
    hub_timeout: str | int | None = None,
    active_timeout: str | int | None = None,
    progress: Reporter = quiet,
) -> LaunchResult:
    """Ensure the key pair, security group, server(s) and floating IPs; wait for the hub.

    Idempotent: servers, groups and IPs that exist are reused. A failure removes what this run
    created and raises with the cloud's own message.

    Args:
        hub_timeout: how long to wait for ``/hub/health`` (default ``openstack.hub_timeout``).
        active_timeout: how long a server may take to be ACTIVE (``openstack.active_timeout``).
            Both in seconds or as ``90s``, ``15m``, ``1h``.
    """
    cfg = with_timeouts(workshop_config(config_path, count), hub_timeout, active_timeout)
    refuse_if_ended(cfg)  # its VM would refuse every trainee and power itself off
    ref = image_ref(cfg, image)
    if cfg.cluster.swarm:
        from bakery.providers.openstack.swarm import launch_cluster

        return launch_cluster(
            cfg, config_path=config_path, image=ref, stage=stage, wait=wait, progress=progress
        )
    refuse_unfilled_count(cfg)  # before anything is read from the cloud
    conn = connect(cfg)
    basis = resolve_basis(conn, cfg, ref, stage, progress)
    sheet = credentials_path(config_path)
    accounts = ensure_credentials(cfg, sheet)
    parts = split_users(cfg, sheet_order(sheet))
    # Every server's user-data before anything is created: a size error costs nothing.
    payloads = {str(p.hostname): user_data_b64(p, accounts, basis.stage) for p in parts}
    with cleanup_on_failure(conn, progress) as made:
        shared = ensure_access(conn, cfg, config_path, made, progress)
        servers = ensure_servers(conn, cfg, payloads, basis, shared, made, progress)
        infos, raw = bring_up(conn, cfg, servers, basis, made, progress)
        if wait:
            wait_hub(conn, cfg, infos, raw, cfg.openstack.hub_timeout, progress)
    return LaunchResult(infos, list(made), sheet)


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


# --- status ---------------------------------------------------------------------------------------


def status(*, config_path: Path) -> list[ServerInfo]:
    """The workshop's servers with state, addresses, hub health and cloud-init progress."""
    cfg = load_config(config_path)
    return server_infos(connect(cfg), cfg)


def server_infos(conn: Connection, cfg: Workshop) -> list[ServerInfo]:
    """Each of the workshop's servers as `status` shows it (a swarm's workers: no hub)."""
    hubs = set(server_names(cfg)) if cfg.cluster.swarm else None
    fips = {
        ip.port_details.get("device_id") if ip.port_details else None: ip
        for ip in workshop_floating_ips(conn, cfg)
    }
    infos = []
    for server in workshop_servers(conn, cfg):
        fip = fips.get(server.id)
        info = server_info(server, str(fip.floating_ip_address) if fip else None)
        if server.status == "ERROR":
            info.fault = server_fault(server)
        if hubs is not None and server.name not in hubs:
            info.url, info.hub = None, "none (a swarm worker)"
            if server.status == "ACTIVE":
                info.cloud_init, _ = console_state(conn, server, cfg)
        elif info.ip and server.status == "ACTIVE":
            info.hub = hub_health(info.ip)
            info.cloud_init, _ = console_state(conn, server, cfg)
        infos.append(info)
    return infos


def status_json(cfg: Workshop, infos: list[ServerInfo], swarm: dict[str, Any] | None = None) -> str:
    """`bakery status --json`: the workshop, its servers and its expiry (see `expiry.state`);
    a swarm's nodes as the manager sees them under ``swarm``."""
    from bakery.workshop.expiry import state

    doc = {"workshop": cfg.name, "servers": [asdict(i) for i in infos], "expiry": state(cfg)}
    if swarm is not None:
        doc["swarm"] = swarm
    return json.dumps(doc, indent=2, sort_keys=True)


# --- destroy --------------------------------------------------------------------------------------


@dataclass
class DestroyPlan:
    """What `bakery destroy` deletes (or, with a dry run, would delete)."""

    items: list[Tracked]

    def lines(self) -> list[str]:
        """One line per resource."""
        return [item.label for item in self.items]

    @property
    def warning(self) -> str | None:
        """What the user loses beyond the resources (None: no server goes)."""
        return HOMES_WARNING if any(i.kind == "server" for i in self.items) else None


def plan_destroy(conn: Connection, cfg: Workshop, config_path: Path) -> DestroyPlan:
    """Everything bakery made for this workshop, found through the API and the state file."""
    items = [Tracked("server", str(s.id), s.name) for s in workshop_servers(conn, cfg)]
    items += [
        Tracked("floating_ip", str(ip.id), str(ip.floating_ip_address))
        for ip in workshop_floating_ips(conn, cfg)
    ]
    group = find_group(conn, cfg)
    if group is not None and owned(group.description, cfg):
        items.append(Tracked("security_group", str(group.id), group.name))
    keyname = load_state(state_path(config_path)).get("keypair")
    if keyname and api("find key pair", conn.compute.find_keypair, keyname) is not None:
        items.append(Tracked("keypair", keyname, keyname))
    return DestroyPlan(items)


def destroy(
    *,
    config_path: Path,
    confirm: Callable[[DestroyPlan], bool] = lambda plan: True,
    dry_run: bool = False,
    progress: Reporter = quiet,
) -> DestroyPlan:
    """Delete what bakery made for the workshop; safe to re-run. A dry run only finds it.

    Raises:
        CloudError: listing every deletion that failed (the others went ahead).
    """
    cfg = load_config(config_path)
    conn = connect(cfg)
    plan = plan_destroy(conn, cfg, config_path)
    if dry_run:
        return plan
    if not plan.items:
        progress(f"nothing of workshop {cfg.name} left to delete")
        save_state(state_path(config_path), {})
        return plan
    if not confirm(plan):
        raise BakeryError("not confirmed; nothing deleted")
    errors = delete_all(conn, plan.items, progress)
    if errors:
        raise CloudError(
            f"{len(errors)} of {len(plan.items)} deletions failed (the rest went ahead; run "
            "destroy again to retry):\n  " + "\n  ".join(errors)
        )
    save_state(state_path(config_path), {})
    return plan
