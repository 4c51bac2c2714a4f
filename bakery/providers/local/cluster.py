"""A local swarm's private network: the VMs' second NICs on a loopback multicast group, its secret.

`bakery try` of a workshop whose topology has workers (``cluster.engine: swarm``) gives every VM
a second NIC on one private network, a qemu multicast socket on the loopback interface (no root,
no bridge, nothing on the host's real network). The manager is .10, worker i is .(10+i); MTU
1450 as on an OpenStack VXLAN tenant network, so the swarm's overlay MTU is exercised as it will
be there. One random secret per cluster goes into every VM's meta-data (never user-data), as the
cloud's server metadata carries it there.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from bakery.files import write_private
from bakery.layout import CLUSTER_META_MANAGER, CLUSTER_META_SECRET
from bakery.providers.local import seed

CLUSTER_NET = "10.77.0.0/24"
CLUSTER_FIRST_HOST = 10
CLUSTER_MTU = 1450
CLUSTER_GROUP = "230.0.0.1"
# The cluster's secret (the workers show it to the manager for the swarm join token), mode 600.
CLUSTER_SECRET_FILE = "cluster-secret"  # noqa: S105 (a file name)
# Guest NIC names the seed's network-config gives (by MAC): the user-mode NIC, the cluster NIC.
LAN_NIC = "lan0"
CLUSTER_NIC = "cluster0"


@dataclass(frozen=True)
class ClusterNic:
    """A VM's place on a local cluster's private network (see :data:`CLUSTER_NET`).

    Attributes:
        index: 0 for the manager, ``i`` for worker ``i``.
        port: the UDP port of the network's multicast group, one per cluster: two clusters on
            one machine with different ports do not see each other's frames.
    """

    index: int
    port: int

    @property
    def address(self) -> str:
        """The VM's address on the cluster network, e.g. ``10.77.0.10``."""
        net = ipaddress.IPv4Network(CLUSTER_NET)
        return str(net.network_address + CLUSTER_FIRST_HOST + self.index)

    @property
    def mac(self) -> str:
        """The cluster NIC's fixed MAC (qemu's 52:54:00 prefix, the host byte last)."""
        return f"52:54:00:77:00:{CLUSTER_FIRST_HOST + self.index:02x}"

    @property
    def lan_mac(self) -> str:
        """The user-mode NIC's fixed MAC (the network-config finds each NIC by its MAC)."""
        return f"52:54:00:12:34:{CLUSTER_FIRST_HOST + self.index:02x}"

    def network_config(self) -> str:
        """The seed's ``network-config``: DHCP on the user-mode NIC, the static cluster address."""
        prefix = ipaddress.IPv4Network(CLUSTER_NET).prefixlen
        return seed.network_config(
            [
                seed.Nic(LAN_NIC, self.lan_mac),
                seed.Nic(CLUSTER_NIC, self.mac, f"{self.address}/{prefix}", CLUSTER_MTU),
            ]
        )

    def netdev(self) -> str:
        """qemu's ``-netdev`` of the cluster network: a multicast group on the loopback."""
        return f"socket,id=cluster,mcast={CLUSTER_GROUP}:{self.port},localaddr=127.0.0.1"


@dataclass(frozen=True)
class LocalCluster:
    """One local cluster: its network (by multicast port) and its secret, kept in the run
    directory (mode 600) and nowhere else."""

    port: int
    secret: str

    @classmethod
    def create(cls, run_dir: Path, port: int) -> LocalCluster:
        """A new cluster on multicast ``port`` (one per cluster on this machine, so two stay
        apart), with a new secret written to ``run_dir``."""
        secret = secrets.token_hex(32)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_private(run_dir / CLUSTER_SECRET_FILE, secret + "\n")
        return cls(port, secret)

    def nic(self, number: int) -> ClusterNic:
        """A member's NIC on the network: the manager's (0) .10, worker i's .(10+i)."""
        return ClusterNic(number, self.port)

    @property
    def meta(self) -> dict[str, str]:
        """What every member's meta-data carries: the secret and the manager's address."""
        return {
            CLUSTER_META_SECRET: self.secret,
            CLUSTER_META_MANAGER: ClusterNic(0, self.port).address,
        }
