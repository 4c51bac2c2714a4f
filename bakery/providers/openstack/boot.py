"""How a server boots: its root disk (the flavor's, or a new volume) and the way its user-data
reaches cloud-init (the metadata service, or a config drive where that may be out of reach).

Both are decided before anything is created, from what the project can see, and said by
`check`, `launch --dry-run` and `launch` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bakery.config.workshop import Workshop
from bakery.providers.openstack.api import api

if TYPE_CHECKING:
    from openstack.connection import Connection

# A router's leg on a network (centralised, distributed, HA): what carries 169.254.169.254 to
# Neutron's metadata proxy. A provider network's gateway is a physical router: none of these.
ROUTER_PORTS = (
    "network:router_interface",
    "network:router_interface_distributed",
    "network:ha_router_replicated_interface",
)


@dataclass(frozen=True)
class RootDisk:
    """A server's root disk: the flavor's, or a new volume of ``volume_gb``."""

    volume_gb: int | None
    why: str  # "a new 24 GB volume (...)" or "the flavor's 40 GB disk"


def root_disk(cfg: Workshop, flavor: Any, estimate_gb: int) -> RootDisk:
    """A server of ``flavor``: a volume when asked (``openstack.boot_volume``) or when the flavor
    has no root disk (Nova boots those only from a volume: "Only volume-backed servers are
    allowed for flavors with zero disk"); sized by ``openstack.volume_size``, else by
    ``estimate_gb`` (`bakery size`'s disk estimate of the machine). The volume is deleted with its
    server."""
    disk = int(flavor.disk or 0)
    if disk and not cfg.openstack.boot_volume:
        return RootDisk(None, f"the flavor's {disk} GB disk")
    size = cfg.openstack.volume_size or estimate_gb
    sized = "openstack.volume_size" if cfg.openstack.volume_size else "`bakery size`"
    why = (
        "openstack.boot_volume"
        if cfg.openstack.boot_volume
        else f"{flavor.name} has no root disk: Nova boots it only from a volume"
    )
    return RootDisk(size, f"a new {size} GB volume ({sized}; deleted with the server): {why}")


def boot_mapping(image_id: str, disk: RootDisk) -> dict[str, Any]:
    """The create_server attributes that boot ``image_id`` on ``disk``."""
    if disk.volume_gb is None:
        return {"image_id": image_id}
    volume = {
        "boot_index": 0,
        "uuid": image_id,
        "source_type": "image",
        "destination_type": "volume",
        "volume_size": disk.volume_gb,
        "delete_on_termination": True,
    }
    return {"block_device_mapping": [volume]}


@dataclass(frozen=True)
class UserDataRoute:
    """How the user-data reaches cloud-init: ``config_drive`` as sent to Nova (None: not sent,
    the cloud's default) and why."""

    config_drive: bool | None
    why: str  # "config drive: ..." or "metadata service: ..."


def routed(conn: Connection, network_id: str) -> bool:
    """A router this project can see has a leg on the network."""
    for owner in ROUTER_PORTS:
        ports = api(
            "list router ports",
            lambda o=owner: list(conn.network.ports(network_id=network_id, device_owner=o)),
        )
        if ports:
            return True
    return False


def user_data_route(conn: Connection, cfg: Workshop, network: Any) -> UserDataRoute:
    """The way in for the workshop's servers, whose first NIC is on ``network`` (a Neutron
    network).

    ``openstack.config_drive`` decides when set. Otherwise the metadata service is reached
    through a router (Neutron's metadata proxy), so a workshop with floating IPs (any of its
    servers: a swarm's workers have none but sit on the manager's network), or on a network
    with a router leg, uses it (the cloud's default; a config drive is fixed at the create and,
    on some clouds, pins the server to its host). A network without one (a provider network:
    its gateway is a physical router) may have no metadata service at all (Neutron serves it
    there only with the DHCP agent's ``enable_isolated_metadata``, off by default), and no DHCP
    either: the config drive carries the user-data and the addresses (network_data.json), so
    bakery asks for one.
    """
    asked = cfg.openstack.config_drive
    if asked is not None:
        if asked:
            return UserDataRoute(True, "config drive (openstack.config_drive)")
        return UserDataRoute(False, "metadata service (openstack.config_drive: false)")
    if cfg.openstack.floating_ip_network:
        return UserDataRoute(
            None, "metadata service, the cloud's default (a floating IP means a router)"
        )
    if routed(conn, str(network.id)):
        return UserDataRoute(
            None, f"metadata service, the cloud's default (a router serves {network.name})"
        )
    return UserDataRoute(
        True,
        f"config drive: {network.name} has no router this project can see (a provider "
        "network?), where the metadata service may be out of reach; "
        "`openstack.config_drive: false` says it is not",
    )
