"""The launch's steps, the same for every machine of a topology: look-ups, access, servers, IPs.

Each step is idempotent: what exists is reused, what is created is recorded in ``made`` (the
caller's :func:`~bakery.providers.openstack.resources.cleanup_on_failure` list).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bakery.config.units import parse_duration
from bakery.config.workshop import Workshop
from bakery.errors import UsageError
from bakery.layout import META_STAGE, META_WORKSHOP
from bakery.progress import Reporter
from bakery.providers.openstack.api import find_image, find_network, find_networks
from bakery.providers.openstack.boot import (
    RootDisk,
    UserDataRoute,
    boot_mapping,
    root_disk,
    user_data_route,
)
from bakery.providers.openstack.flavors import choose_flavor
from bakery.providers.openstack.resources import (
    Tracked,
    create_server,
    ensure_floating_ip,
    ensure_keypair,
    load_state,
    save_state,
    state_path,
)
from bakery.providers.openstack.rules import ensure_security_group
from bakery.providers.openstack.servers import (
    ServerInfo,
    server_info,
    wait_active,
    wait_fixed_ip,
)
from bakery.topology import Machine, Part, Topology, estimate
from bakery.vm.image import image_stage
from bakery.vm.stages import Stage
from bakery.vm.userdata import machine_documents
from bakery.workshop.accounts import Account

if TYPE_CHECKING:
    from openstack.connection import Connection


def image_ref(cfg: Workshop, image: str | None) -> str:
    """The image to boot: ``--image``, else ``openstack.image``."""
    ref = image or cfg.openstack.image
    if not ref:
        raise UsageError("no image: pass --image or set openstack.image in the config")
    return ref


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


@dataclass
class Basis:
    """What the servers of a launch share, looked up before anything is created."""

    image: Any
    stage: Stage
    flavors: dict[Part, Any]  # each part's (a hub, a manager, a worker)
    networks: list[str]
    floating_network: Any | None  # for the machines trainees log in to
    disks: dict[Part, RootDisk]  # each part's root disk (the flavor's, or a volume)
    route: UserDataRoute  # config drive or metadata service, the same for every machine

    def flavor(self, machine: Machine) -> Any:
        """The flavor ``machine`` gets."""
        return self.flavors[machine.part]


def boot_basis(
    conn: Connection,
    cfg: Workshop,
    img: Any,
    stage: Stage,
    flavors: dict[Part, Any],
    pool: str | None,
    config_dir: Path | None = None,
) -> Basis:
    """The basis of ``flavors`` on the config's networks (floating IPs from ``pool``): each
    part's root disk and the user-data's way in (bakery.providers.openstack.boot)."""
    nets = find_networks(conn, cfg)
    floating = find_network(conn, pool, "openstack.floating_ip_network") if pool else None
    return Basis(
        img,
        stage,
        flavors,
        [str(n.id) for n in nets],
        floating,
        {
            part: root_disk(cfg, flavor, estimate(cfg, part, config_dir).disk_gb)
            for part, flavor in flavors.items()
        },
        user_data_route(conn, cfg, nets[0]),
    )


def resolve_basis(
    conn: Connection,
    cfg: Workshop,
    parts: list[Part],
    image: str,
    stage: Stage | None,
    progress: Reporter,
    config_dir: Path | None = None,
) -> Basis:
    """Image (and so the stage), each part's flavor, the networks, the root disks and the
    user-data's way in: the look-ups a typo fails, before anything is created."""
    img = find_image(conn, image)
    if stage is not None:
        progress(f"image {img.name}: {stage} stage user-data (as asked)")
    else:
        stage = image_stage(img)
        kind = "baked by bakery: boot" if stage == "boot" else "stock: full"
        progress(f"image {img.name}: {kind} stage user-data")
    flavors = {part: choose_flavor(conn, cfg, part, config_dir) for part in dict.fromkeys(parts)}
    pool = cfg.openstack.floating_ip_network
    basis = boot_basis(conn, cfg, img, stage, flavors, pool, config_dir)
    for part, disk in basis.disks.items():
        progress(f"{part} root disk: {disk.why}")
    progress(f"user-data by {basis.route.why}")
    return basis


@dataclass
class Recipe:
    """How each machine's server is made: the look-ups, the key pair and group, each machine's
    user-data (base64) and the metadata it gets beside bakery's own."""

    basis: Basis
    shared: dict[str, Any]
    payloads: dict[str, str]
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    # The hub's own (its logins' client secret: bakery.workshop.login), on the hub's server only.
    hub_meta: dict[str, str] = field(default_factory=dict)

    def attrs(self, cfg: Workshop, machine: Machine) -> dict[str, Any]:
        """The create_server attributes of ``machine``'s server."""
        basis = self.basis
        attrs: dict[str, Any] = {
            "name": machine.name,
            "flavor_id": basis.flavor(machine).id,
            "user_data": self.payloads[machine.name],
            "metadata": {
                **cfg.openstack.metadata,
                META_WORKSHOP: cfg.name,
                META_STAGE: basis.stage,
                **self.metadata.get(machine.name, {}),
                **(self.hub_meta if machine.serves_hub else {}),
            },
            **self.shared,
        }
        if basis.route.config_drive is not None:
            attrs["config_drive"] = basis.route.config_drive
        if basis.networks:
            attrs["networks"] = [{"uuid": n} for n in basis.networks]
        return {**attrs, **boot_mapping(basis.image.id, basis.disks[machine.part])}


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


@dataclass
class Servers:
    """The servers of a launch so far: found or made, by name, and which are known ACTIVE."""

    found: dict[str, Any]
    ready: dict[str, Any] = field(default_factory=dict)


def ensure_servers(
    conn: Connection,
    cfg: Workshop,
    wave: tuple[Machine, ...],
    servers: Servers,
    recipe: Recipe,
    made: list[Tracked],
    progress: Reporter,
) -> None:
    """Get or create the server of each machine of ``wave``, without waiting for any: they boot
    side by side."""
    for machine in wave:
        server = servers.found.get(machine.name)
        if server is not None:
            progress(f"server {machine.name}: exists ({server.status}), reused")
            continue
        server = create_server(conn, cfg, recipe.attrs(cfg, machine))
        servers.found[machine.name] = server
        made.append(Tracked("server", str(server.id), machine.name))
        progress(f"server {machine.name}: creating ({recipe.basis.flavor(machine).name})")


def wait_joinable(
    conn: Connection, cfg: Workshop, wave: tuple[Machine, ...], servers: Servers, progress: Reporter
) -> None:
    """Wait until each server of ``wave`` is ACTIVE with a fixed address: what joins it next
    needs the address."""
    for machine in wave:
        server = wait_fixed_ip(conn, cfg, servers.found[machine.name], progress)
        servers.found[machine.name] = servers.ready[machine.name] = server


def bring_up(
    conn: Connection,
    cfg: Workshop,
    topo: Topology,
    servers: Servers,
    basis: Basis,
    made: list[Tracked],
    progress: Reporter,
) -> dict[str, ServerInfo]:
    """Wait for each machine's server to be ACTIVE; give the ones trainees log in to their
    floating IP. Returns each one's info, by name."""
    infos = {}
    for machine in topo.machines:
        server = servers.ready.get(machine.name)
        if server is None:
            found = servers.found[machine.name]
            server = wait_active(conn, found, cfg.openstack.active_timeout, progress)
            servers.found[machine.name] = servers.ready[machine.name] = server
        fip = None
        if machine.serves_hub:
            fip, tracked = ensure_floating_ip(conn, cfg, server, basis.floating_network, progress)
            made += [tracked] if tracked else []
        infos[machine.name] = server_info(server, fip)
    return infos


def payloads(
    cfg: Workshop, topo: Topology, accounts: list[Account], stage: Stage
) -> dict[str, str]:
    """Every machine's user-data as Nova takes it (base64), each hub with its own trainees'
    accounts (bakery.vm.userdata.machine_documents, as `bakery try` boots them)."""
    docs = machine_documents(cfg, topo.machines, accounts, stage)
    return {name: base64.b64encode(doc).decode() for name, doc in docs.items()}
