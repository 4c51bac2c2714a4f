"""The security group's rules: public ssh and web, the cluster's own ports, reconciled."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bakery.config.workshop import Workshop
from bakery.layout import CLUSTER_PORTS
from bakery.progress import Reporter, quiet
from bakery.providers.openstack.api import api
from bakery.providers.openstack.resources import Tracked, create_once
from bakery.topology import topology
from bakery.workshop.names import marker, owned, sg_name

if TYPE_CHECKING:
    from openstack.connection import Connection


@dataclass(frozen=True)
class Rule:
    """An ingress TCP rule of the security group: one port from one network."""

    port: int
    cidr: str

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The source network, normalised."""
        return ipaddress.ip_network(self.cidr, strict=False)

    @property
    def ethertype(self) -> str:
        """``IPv4`` or ``IPv6``, as the source network is."""
        return f"IPv{self.network.version}"

    def __str__(self) -> str:
        return f"tcp {self.port} from {self.network} ({self.ethertype})"


def wanted_rules(cfg: Workshop) -> list[Rule]:
    """The rules the security group holds: ssh for the admins' network, web for everyone."""
    return [Rule(22, cfg.openstack.admin_cidr), Rule(80, "0.0.0.0/0"), Rule(443, "0.0.0.0/0")]


@dataclass(frozen=True)
class ClusterRule:
    """An ingress rule open to the group's own members only (its remote is the group itself)."""

    port: int
    protocol: str

    def __str__(self) -> str:
        return f"{self.protocol} {self.port} from the group's own members (IPv4)"


def cluster_rules(cfg: Workshop) -> list[ClusterRule]:
    """A swarm's intra-cluster rules (swarm, overlay, NFS, join token, hub API); else none."""
    if not topology(cfg).workers:
        return []
    return [ClusterRule(port, proto) for port, proto in CLUSTER_PORTS]


def all_wanted(cfg: Workshop) -> list[Rule | ClusterRule]:
    """Every ingress rule the workshop's group holds: the public ones, then the cluster's."""
    return [*wanted_rules(cfg), *cluster_rules(cfg)]


def find_group(conn: Connection, cfg: Workshop) -> Any:
    """The workshop's security group, bakery's or not (None: there is none)."""
    name = sg_name(cfg)
    return api(f"find security group {name}", conn.network.find_security_group, name)


def rule_key(rule: Any) -> Rule | None:
    """The single-port ingress TCP rule ``rule`` is, else None (a rule bakery does not make)."""
    if rule.direction != "ingress" or rule.protocol != "tcp" or rule.remote_group_id:
        return None
    if rule.port_range_min is None or rule.port_range_min != rule.port_range_max:
        return None
    anywhere = "0.0.0.0/0" if rule.ether_type == "IPv4" else "::/0"
    return Rule(int(rule.port_range_min), str(rule.remote_ip_prefix or anywhere))


def cluster_rule_key(rule: Any, group: Any) -> ClusterRule | None:
    """The intra-group single-port ingress rule ``rule`` is, else None."""
    if rule.direction != "ingress" or rule.protocol not in ("tcp", "udp"):
        return None
    if rule.remote_group_id != group.id or rule.remote_ip_prefix or rule.ether_type != "IPv4":
        return None
    if rule.port_range_min is None or rule.port_range_min != rule.port_range_max:
        return None
    return ClusterRule(int(rule.port_range_min), str(rule.protocol))


def _ident(rule: Any, group: Any) -> Any:
    cluster = cluster_rule_key(rule, group)
    if cluster is not None:
        return cluster
    key = rule_key(rule)
    return (key.port, key.network) if key else None


def rule_changes(
    conn: Connection, cfg: Workshop, group: Any
) -> tuple[list[Rule | ClusterRule], list[Any]]:
    """(rules to add, ingress rules to remove) to bring bakery's group to ``all_wanted``."""
    wanted: dict[Any, Rule | ClusterRule] = {(r.port, r.network): r for r in wanted_rules(cfg)}
    wanted.update({r: r for r in cluster_rules(cfg)})
    rules = api(
        "list security group rules",
        lambda: list(conn.network.security_group_rules(security_group_id=group.id)),
    )
    have: set[Any] = set()
    stale = []
    for rule in rules:
        if rule.direction != "ingress":
            continue
        ident = _ident(rule, group)
        if ident in wanted and ident not in have:
            have.add(ident)
        else:
            stale.append(rule)
    return [r for ident, r in wanted.items() if ident not in have], stale


def _create_rule(conn: Connection, cfg: Workshop, group: Any, rule: Rule | ClusterRule) -> None:
    def find() -> Any:
        added, _ = rule_changes(conn, cfg, group)
        return None if rule in added else rule

    if isinstance(rule, ClusterRule):
        # The remote is the group itself: only the cluster's own members, never a CIDR.
        attrs: dict[str, Any] = {
            "ethertype": "IPv4",
            "protocol": rule.protocol,
            "remote_group_id": group.id,
        }
    else:
        attrs = {
            "ethertype": rule.ethertype,
            "protocol": "tcp",
            "remote_ip_prefix": str(rule.network),
        }
    create_once(
        f"open {rule} in {group.name}",
        conn.network,
        lambda: conn.network.create_security_group_rule(
            security_group_id=group.id,
            direction="ingress",
            port_range_min=rule.port,
            port_range_max=rule.port,
            **attrs,
        ),
        find,
    )


def reconcile_rules(conn: Connection, cfg: Workshop, group: Any, progress: Reporter) -> None:
    """Add the wanted rules that are missing and remove every other ingress rule."""
    add, remove = rule_changes(conn, cfg, group)
    for old in remove:
        api(
            f"remove an old rule from {group.name}",
            conn.network.delete_security_group_rule,
            old,
            ignore_missing=True,
        )
        key = cluster_rule_key(old, group) or rule_key(old)
        progress(f"security group {group.name}: removed {key or 'a rule bakery does not make'}")
    for rule in add:
        _create_rule(conn, cfg, group, rule)


def ensure_security_group(
    conn: Connection, cfg: Workshop, progress: Reporter = quiet
) -> tuple[Any, Tracked | None]:
    """Get or create the workshop's security group and reconcile its rules.

    A group of that name that bakery did not make is used as it is. Returns (group, what was
    created).
    """
    name = sg_name(cfg)
    group = find_group(conn, cfg)
    created = None
    if group is None:

        def find() -> Any:
            found = find_group(conn, cfg)
            return found if found is not None and owned(found.description, cfg) else None

        group = create_once(
            f"create security group {name}",
            conn.network,
            lambda: conn.network.create_security_group(
                name=name, description=f"{marker(cfg)} (made by bakery; removed by bakery destroy)"
            ),
            find,
        )
        created = Tracked("security_group", str(group.id), name)
        progress(f"security group {name}: created")
    elif not owned(group.description, cfg):
        progress(f"security group {name}: exists (not bakery's): used as it is, rules unchanged")
        return group, None
    reconcile_rules(conn, cfg, group, progress)
    if created is None:
        progress(f"security group {name}: present")
    return group, created


@dataclass(frozen=True)
class GroupPlan:
    """What a launch would do to the security group (a dry run and `check` read it)."""

    line: str  # the group's line of the plan
    rules: list[str]  # one line per rule: present, will add, will remove
    to_add: int  # rules the launch adds (quota)
    created: bool  # the group itself is made


def plan_group(conn: Connection, cfg: Workshop) -> GroupPlan:
    """The security group as a launch would leave it; nothing is changed."""
    name = sg_name(cfg)
    group = find_group(conn, cfg)
    if group is None:
        rules = [f"{r}: will add" for r in all_wanted(cfg)]
        return GroupPlan(f"{name}: will be created", rules, len(rules), True)
    if not owned(group.description, cfg):
        line = f"{name}: exists (not bakery's): used as it is, rules unchanged"
        return GroupPlan(line, [], 0, False)
    add, remove = rule_changes(conn, cfg, group)
    rules = [f"{r}: present" for r in all_wanted(cfg) if r not in add]
    rules += [f"{r}: will add" for r in add]
    rules += [
        f"{cluster_rule_key(r, group) or rule_key(r) or 'rule ' + str(r.id)}: will remove"
        for r in remove
    ]
    return GroupPlan(f"{name}: exists (bakery's), rules reconciled", rules, len(add), False)
