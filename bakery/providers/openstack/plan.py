"""`bakery launch --dry-run`: what a launch would use and make, and whether the quota holds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bakery.config.infra import NOVA_USER_DATA_LIMIT
from bakery.config.workshop import Workshop
from bakery.providers.openstack.api import (
    connect,
    find_image,
    find_networks,
)
from bakery.providers.openstack.boot import root_disk, user_data_route
from bakery.providers.openstack.check import CheckReport, run_checks
from bakery.providers.openstack.flavors import explain_flavor, worker_flavor_lines
from bakery.providers.openstack.quota import floating_ips, launch_need, quota_lines
from bakery.providers.openstack.resources import existing_keypair, workshop_servers
from bakery.providers.openstack.rules import plan_group
from bakery.providers.openstack.steps import image_ref, payloads
from bakery.topology import Part, Topology, estimate, topology, workshop_config
from bakery.vm.image import image_stage
from bakery.vm.stages import Stage
from bakery.workshop.accounts import credentials_path, preview_accounts, sheet_order
from bakery.workshop.expiry import refuse_if_ended
from bakery.workshop.names import key_name

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
            f"networks: {', '.join(self.networks)}",
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


def _boot(
    conn: Connection, cfg: Workshop, flavor: Any, part: Part, config_dir: Path, network: Any
) -> str:
    """The boot disk and how the user-data reaches cloud-init on ``network`` (the first of the
    workshop's; bakery.providers.openstack.boot)."""
    disk = root_disk(cfg, flavor, estimate(cfg, part, config_dir).disk_gb)
    return f"{disk.why}; user-data by {user_data_route(conn, cfg, network).why}"


def _stage(img: Any, stage: Stage | None) -> tuple[Stage, str]:
    found = image_stage(img)
    if stage is not None:
        return stage, f"{stage} (--stage; the image suggests {found})"
    if found == "boot":
        return found, "boot (the image carries bakery_* properties: baked by bakery)"
    return found, "full (a stock image: no bakery_* properties, everything installs at boot)"


def _keypair(conn: Connection, cfg: Workshop) -> str:
    name = key_name(cfg)
    if name is None:
        return "none (no openstack.key_name or openstack.public_key)"
    if existing_keypair(conn, cfg) is not None:
        return f"{name}: exists, used"
    return f"{name}: will be created from {cfg.openstack.public_key}"


def _servers(
    cfg: Workshop, topo: Topology, existing: dict[str, Any], stage: Stage
) -> list[PlannedServer]:
    accounts = preview_accounts(cfg)  # the same sizes as the real sheet's; nothing is written
    out = []
    for machine, payload in zip(
        topo.machines, payloads(cfg, topo, accounts, stage).values(), strict=True
    ):
        server = existing.get(machine.name)
        action = f"exists ({server.status}): reused" if server else "will be created"
        role = "" if machine.part == "hub" else machine.part
        out.append(PlannedServer(machine.name, action, len(machine.accounts), len(payload), role))
    return out


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
    topo = topology(cfg, sheet_order(credentials_path(config_path)))
    conn = conn or connect(cfg)
    img = find_image(conn, ref)
    chosen, stage_text = _stage(img, stage)
    config_dir = Path(config_path).parent
    hub = topo.hubs[0]
    flavor, flavor_text = explain_flavor(conn, cfg, hub.part, config_dir)
    flavors = {hub.part: flavor}
    cluster: list[str] = []
    if topo.workers:
        flavors["worker"], cluster = worker_flavor_lines(conn, cfg, config_dir)
    nets = find_networks(conn, cfg)
    own = "" if cfg.openstack.networks else ": the project's own, openstack.networks being empty"
    networks = [f"{net.name} ({net.id}){own}" for net in nets]
    existing = {s.name: s for s in workshop_servers(conn, cfg)}
    fip_text, _ = floating_ips(conn, cfg, topo, existing)
    group = plan_group(conn, cfg)
    need = launch_need(
        conn, cfg, topo, flavors, rules=group.to_add, new_group=group.created, config_dir=config_dir
    )
    return LaunchPlan(
        workshop=cfg.name,
        image=f"{img.name} ({img.id})",
        stage=stage_text,
        flavor=flavor_text,
        networks=networks,
        floating_ip_network=fip_text,
        keypair=_keypair(conn, cfg),
        security_group=group.line,
        rules=group.rules,
        servers=_servers(cfg, topo, existing, chosen),
        quota=quota_lines(conn, need),
        boot=_boot(conn, cfg, flavor, hub.part, config_dir, nets[0]),
        cluster=cluster,
    )


def dry_run(
    *,
    config_path: Path,
    image: str | None = None,
    count: int | None = None,
    stage: Stage | None = None,
) -> tuple[CheckReport, LaunchPlan]:
    """`launch --dry-run`: the checks and the plan, over one connection."""
    cfg = workshop_config(config_path, count)
    refuse_if_ended(cfg)  # before the cloud: launch would refuse it too
    conn = connect(cfg)  # no cloud, no plan: its own message says how to configure one
    report = run_checks(
        cfg, image or cfg.openstack.image, conn=conn, config_dir=Path(config_path).parent
    )
    plan = plan_launch(config_path=config_path, image=image, count=count, stage=stage, conn=conn)
    return report, plan
