"""`bakery launch --dry-run`: what a launch would use and make, and whether the quota holds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bakery.config.infra import NOVA_USER_DATA_LIMIT
from bakery.config.workshop import Workshop
from bakery.errors import BakeryError
from bakery.providers.openstack.api import (
    api,
    auto_flavor,
    connect,
    find_flavor,
    find_image,
    find_network,
    image_stage,
)
from bakery.providers.openstack.launch import image_ref, split_users, user_data_b64, workshop_config
from bakery.providers.openstack.resources import (
    all_wanted,
    cluster_rule_key,
    existing_keypair,
    find_group,
    key_name,
    owned,
    rule_changes,
    rule_key,
    server_names,
    sg_name,
    worker_name,
    workshop_floating_ips,
    workshop_servers,
)
from bakery.vm.stages import Stage
from bakery.workshop.accounts import credentials_path, preview_accounts, sheet_order
from bakery.workshop.sizing import estimate_workshop, worker_estimate, workers_for

if TYPE_CHECKING:
    from openstack.connection import Connection


@dataclass
class PlannedServer:
    """One server of the plan."""

    name: str
    action: str  # "create", or "exists (STATUS): reused"
    users: int
    user_data_chars: int
    role: str = ""  # a swarm's: manager or worker

    def line(self) -> str:
        """``intro-1: will be created; 6 accounts; user-data ...``."""
        what = {
            "": f"{self.users} accounts",
            "manager": f"swarm manager (the hub), {self.users} accounts",
            "worker": "swarm worker (trainees' servers, no accounts)",
        }[self.role]
        return (
            f"  {self.name}: {self.action}; {what}; user-data "
            f"{self.user_data_chars:,} of {NOVA_USER_DATA_LIMIT:,} base64 chars"
        )


@dataclass
class Need:
    """What the launch adds to the project's usage."""

    servers: int = 0
    vcpus: int = 0
    ram_mib: int = 0
    floating_ips: int = 0
    security_groups: int = 0
    rules: int = 0
    keypairs: int = 0
    volumes: int = 0  # boot volumes (openstack.boot_volume)
    volume_gb: int = 0


@dataclass
class LaunchPlan:
    """The plan of a launch: nothing of it is created."""

    workshop: str
    image: str
    stage: str
    flavor: str
    networks: list[str]
    floating_ip_network: str
    keypair: str
    security_group: str
    rules: list[str]
    servers: list[PlannedServer]
    quota: list[str] = field(default_factory=list)
    boot: str = ""
    cluster: list[str] = field(default_factory=list)  # a swarm's lines (none: one VM per hub)

    def lines(self) -> list[str]:
        """The plan as the CLI prints it."""
        out = [
            f"workshop {self.workshop}: dry run, nothing is created",
            f"image: {self.image}",
            f"stage: {self.stage}",
            f"flavor: {self.flavor}",
            *self.cluster,
            f"boot: {self.boot}",
            f"networks: {', '.join(self.networks) or '(the project default)'}",
            f"floating IPs: {self.floating_ip_network}",
            f"key pair: {self.keypair}",
            f"security group: {self.security_group}",
            *(f"  rule {r}" for r in self.rules),
            "servers:",
            *(s.line() for s in self.servers),
            "quota headroom:",
            *(f"  {q}" for q in self.quota),
        ]
        return out


def _boot(cfg: Workshop) -> str:
    """The boot disk and how the user-data reaches cloud-init."""
    o = cfg.openstack
    disk = f"a new {o.volume_size} GB volume" if o.boot_volume else "the flavor's disk"
    drive = {
        None: "the cloud's default (config drive or metadata service)",
        True: "config drive",
        False: "metadata service (no config drive)",
    }[o.config_drive]
    return f"{disk}; user-data by {drive}"


def _stage(img: Any, stage: Stage | None) -> tuple[Stage, str]:
    found = image_stage(img)
    if stage is not None:
        return stage, f"{stage} (--stage; the image suggests {found})"
    if found == "boot":
        return found, "boot (the image carries bakery_* properties: baked by bakery)"
    return found, "full (a stock image: no bakery_* properties, everything installs at boot)"


def _flavor(conn: Connection, cfg: Workshop, config_dir: Path) -> tuple[Any, str]:
    if cfg.openstack.flavor != "auto":
        flavor = find_flavor(conn, cfg.openstack.flavor)
        why = "openstack.flavor"
    else:
        need = estimate_workshop(cfg, config_dir)
        flavor = auto_flavor(conn, cfg, need)
        content = f", {need.content_mb:,} MB of it content" if need.content_mb else ""
        why = (
            f"auto: the smallest that holds the estimate for {need.users} accounts "
            f"({need.memory_mib} MiB, {need.vcpus} vCPUs, {need.disk_gb} GB{content}; "
            "`bakery size`)"
        )
    text = f"{flavor.name} ({flavor.vcpus} vCPUs, {flavor.ram} MiB, {flavor.disk} GB): {why}"
    return flavor, text


def _keypair(conn: Connection, cfg: Workshop) -> str:
    name = key_name(cfg)
    if name is None:
        return "none (no openstack.key_name or openstack.public_key)"
    if existing_keypair(conn, cfg) is not None:
        return f"{name}: exists, used"
    return f"{name}: will be created from {cfg.openstack.public_key}"


def _group(conn: Connection, cfg: Workshop) -> tuple[str, list[str], int]:
    """(the group's line, its rule lines, rules to add)."""
    name = sg_name(cfg)
    group = find_group(conn, cfg)
    if group is None:
        rules = [f"{r}: will add" for r in all_wanted(cfg)]
        return f"{name}: will be created", rules, len(rules)
    if not owned(group.description, cfg):
        return f"{name}: exists (not bakery's): used as it is, rules unchanged", [], 0
    add, remove = rule_changes(conn, cfg, group)
    rules = [f"{r}: present" for r in all_wanted(cfg) if r not in add]
    rules += [f"{r}: will add" for r in add]
    rules += [
        f"{cluster_rule_key(r, group) or rule_key(r) or 'rule ' + str(r.id)}: will remove"
        for r in remove
    ]
    return f"{name}: exists (bakery's), rules reconciled", rules, len(add)


@dataclass(frozen=True)
class Headroom:
    """One quota against what a launch needs: ``free`` and ``limit`` are None without a limit."""

    label: str
    need: int
    free: int | None = None
    limit: int | None = None
    error: str | None = None  # the limits could not be read

    @property
    def fits(self) -> bool:
        """Whether the need fits (an unreadable or absent limit counts as fitting)."""
        return self.free is None or self.need <= self.free

    def line(self) -> str:
        """``instances: needs 1, 9 free of 10: fits``."""
        if self.error is not None:
            return f"{self.label}: unavailable ({self.error})"
        if self.free is None:
            return f"{self.label}: needs {self.need}, no limit"
        verdict = "fits" if self.fits else "DOES NOT FIT"
        return f"{self.label}: needs {self.need}, {self.free} free of {self.limit}: {verdict}"


def _headroom(label: str, limit: Any, used: Any, need: int) -> Headroom:
    if limit is None or int(limit) < 0:
        return Headroom(label, need)
    return Headroom(label, need, int(limit) - int(used or 0), int(limit))


def headroom(conn: Connection, need: Need) -> list[Headroom]:
    """The compute limits and the network quota against ``need``."""
    out = []
    try:
        limits = api("read compute limits", conn.compute.get_limits).absolute
        keypairs = len(api("list key pairs", lambda: list(conn.compute.keypairs())))
        out += [
            _headroom("instances", limits.instances, limits.instances_used, need.servers),
            _headroom("vCPUs", limits.total_cores, limits.total_cores_used, need.vcpus),
            _headroom("RAM MiB", limits.total_ram, limits.total_ram_used, need.ram_mib),
            _headroom("key pairs", limits.keypairs, keypairs, need.keypairs),
        ]
    except BakeryError as exc:
        out.append(Headroom("compute limits", 0, error=str(exc)))
    try:
        project = conn.current_project_id
        quota = api("read network quota", conn.network.get_quota, project, details=True)
        for label, detail, n in [
            ("floating IPs", quota.floating_ips, need.floating_ips),
            ("security groups", quota.security_groups, need.security_groups),
            ("security group rules", quota.security_group_rules, need.rules),
        ]:
            detail = detail or {}
            used = int(detail.get("used") or 0) + int(detail.get("reserved") or 0)
            out.append(_headroom(label, detail.get("limit"), used, n))
    except BakeryError as exc:
        out.append(Headroom("network quota", 0, error=str(exc)))
    if need.volumes:
        try:
            vol = api("read volume limits", conn.block_storage.get_limits).absolute
            out += [
                _headroom("volumes", vol.max_total_volumes, vol.total_volumes_used, need.volumes),
                _headroom(
                    "volume GB",
                    vol.max_total_volume_gigabytes,
                    vol.total_gigabytes_used,
                    need.volume_gb,
                ),
            ]
        except BakeryError as exc:
            out.append(Headroom("volume limits", 0, error=str(exc)))
    return out


def quota_lines(conn: Connection, need: Need) -> list[str]:
    """The headroom of the compute limits and the network quota for ``need``."""
    return [h.line() for h in headroom(conn, need)]


def _servers(
    cfg: Workshop, existing: dict[str, Any], stage: Stage, order: list[str]
) -> list[PlannedServer]:
    accounts = preview_accounts(cfg)  # the same sizes as the real sheet's; nothing is written
    if cfg.cluster.swarm:
        return _cluster_servers(cfg, existing, stage, order, accounts)
    out = []
    for part in split_users(cfg, order):
        name = str(part.hostname)
        payload = user_data_b64(part, accounts, stage)
        server = existing.get(name)
        action = f"exists ({server.status}): reused" if server else "will be created"
        out.append(PlannedServer(name, action, len(part.users.all_names()), len(payload)))
    return out


def _action(server: Any) -> str:
    return f"exists ({server.status}): reused" if server else "will be created"


def _cluster_servers(
    cfg: Workshop, existing: dict[str, Any], stage: Stage, order: list[str], accounts: list[Any]
) -> list[PlannedServer]:
    from bakery.providers.openstack.swarm import manager_payload, worker_payload

    (manager,) = server_names(cfg)
    payload = manager_payload(cfg, accounts, stage, order)
    out = [
        PlannedServer(
            manager, _action(existing.get(manager)), len(cfg.users.all_names()), len(payload),
            "manager",
        )
    ]  # fmt: skip
    for n in range(1, cfg.cluster.workers + 1):
        name = worker_name(cfg, n)
        size = len(worker_payload(cfg, n, stage))
        out.append(PlannedServer(name, _action(existing.get(name)), 0, size, "worker"))
    return out


def worker_flavor_lines(conn: Connection, cfg: Workshop, config_dir: Path) -> tuple[Any, list[str]]:
    """The workers' flavor and the plan's cluster lines (`launch --dry-run`, `size --flavors`):
    which flavor, why, and a warning when the class needs more workers of it."""
    need = worker_estimate(cfg, config_dir)
    if cfg.cluster.worker_flavor != "auto":
        flavor = find_flavor(conn, cfg.cluster.worker_flavor, "cluster.worker_flavor")
        why = "cluster.worker_flavor"
    else:
        flavor = auto_flavor(conn, cfg, need)
        why = (
            f"auto: the smallest that holds a worker's share, {need.trainees} trainees' and "
            f"{need.admins} admins' servers ({need.memory_mib} MiB, {need.vcpus} vCPUs, "
            f"{need.disk_gb} GB; `bakery size`)"
        )
    on = " and the manager" if cfg.cluster.manager_runs_servers else ""
    lines = [
        f"cluster: swarm, one hub on {server_names(cfg)[0]}, the trainees' servers on "
        f"{cfg.cluster.workers} workers{on}",
        f"worker flavor: {flavor.name} ({flavor.vcpus} vCPUs, {flavor.ram} MiB, "
        f"{flavor.disk} GB): {why}",
    ]
    needed = workers_for(cfg, int(flavor.ram))
    if needed > cfg.cluster.workers:
        lines.append(
            f"  warning: {flavor.name} holds fewer servers than a worker's share: the class "
            f"needs {needed} workers of it (cluster.workers is {cfg.cluster.workers})"
        )
    return flavor, lines


def _floating(conn: Connection, cfg: Workshop, existing: dict[str, Any]) -> tuple[str, int]:
    name = cfg.openstack.floating_ip_network
    if name is None:
        return "none (openstack.floating_ip_network unset: servers keep their fixed addresses)", 0
    net = find_network(conn, name, "openstack.floating_ip_network")
    attached = {(ip.port_details or {}).get("device_id") for ip in workshop_floating_ips(conn, cfg)}
    need = sum(
        1
        for server in server_names(cfg)
        if server not in existing or existing[server].id not in attached
    )
    return f"from {net.name} ({net.id}); {need} to allocate", need


def launch_need(conn: Connection, cfg: Workshop, flavor: Any) -> Need:
    """What a launch of ``cfg`` with ``flavor`` adds to the project (what exists is reused).

    A swarm's workers add theirs with the workers' flavor (``flavor`` is the manager's).
    """
    existing = {s.name: s for s in workshop_servers(conn, cfg)}
    new = sum(1 for name in server_names(cfg) if name not in existing)
    vcpus, ram = new * int(flavor.vcpus), new * int(flavor.ram)
    if cfg.cluster.swarm:
        from bakery.providers.openstack.swarm import choose_worker_flavor

        workers = [worker_name(cfg, n) for n in range(1, cfg.cluster.workers + 1)]
        added = sum(1 for name in workers if name not in existing)
        if added:
            each = choose_worker_flavor(conn, cfg)
            vcpus, ram = vcpus + added * int(each.vcpus), ram + added * int(each.ram)
        new += added
    _, fip_need = _floating(conn, cfg, existing)
    group_text, _, rule_need = _group(conn, cfg)
    name = key_name(cfg)
    new_key = name is not None and cfg.openstack.public_key is not None
    return Need(
        servers=new,
        vcpus=vcpus,
        ram_mib=ram,
        floating_ips=fip_need,
        security_groups=int(group_text.endswith("will be created")),
        rules=rule_need,
        keypairs=int(new_key and existing_keypair(conn, cfg) is None),
        volumes=new if cfg.openstack.boot_volume else 0,
        volume_gb=new * cfg.openstack.volume_size if cfg.openstack.boot_volume else 0,
    )


def plan_launch(
    *,
    config_path: Path,
    image: str | None = None,
    count: int | None = None,
    stage: Stage | None = None,
    conn: Connection | None = None,
) -> LaunchPlan:
    """What `launch` would do with the same arguments; reads the cloud, creates nothing.

    Raises:
        NotFoundError: the image, flavor or a network does not exist (as `launch` would).
    """
    cfg = workshop_config(config_path, count)
    ref = image_ref(cfg, image)
    conn = conn or connect(cfg)
    img = find_image(conn, ref)
    chosen, stage_text = _stage(img, stage)
    flavor, flavor_text = _flavor(conn, cfg, Path(config_path).parent)
    networks = [
        f"{net.name} ({net.id})" for net in (find_network(conn, n) for n in cfg.openstack.networks)
    ]
    existing = {s.name: s for s in workshop_servers(conn, cfg)}
    servers = _servers(cfg, existing, chosen, sheet_order(credentials_path(config_path)))
    fip_text, _ = _floating(conn, cfg, existing)
    group_text, rules, _ = _group(conn, cfg)
    cluster: list[str] = []
    if cfg.cluster.swarm:
        _, cluster = worker_flavor_lines(conn, cfg, Path(config_path).parent)
    need = launch_need(conn, cfg, flavor)
    return LaunchPlan(
        workshop=cfg.name,
        image=f"{img.name} ({img.id})",
        stage=stage_text,
        flavor=flavor_text,
        networks=networks,
        floating_ip_network=fip_text,
        keypair=_keypair(conn, cfg),
        security_group=group_text,
        rules=rules,
        servers=servers,
        quota=quota_lines(conn, need),
        boot=_boot(cfg),
        cluster=cluster,
    )
