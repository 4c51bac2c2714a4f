"""`bakery check`: will this launch work? Credentials, image, flavor, quota, networks, key, DNS."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bakery.config.workshop import Workshop
from bakery.errors import BakeryError, PreflightFailed
from bakery.progress import Reporter
from bakery.providers.openstack.api import (
    connect,
    default_network,
    find_image,
    find_network,
    find_networks,
    glance_formats,
)
from bakery.providers.openstack.boot import root_disk, user_data_route
from bakery.providers.openstack.flavors import choose_flavor
from bakery.providers.openstack.quota import headroom, launch_need
from bakery.providers.openstack.resources import existing_keypair
from bakery.providers.openstack.rules import plan_group
from bakery.topology import estimate, topology, workshop_config
from bakery.vm import image as bake_image
from bakery.vm.image import image_properties
from bakery.workshop import expiry
from bakery.workshop.names import key_name

if TYPE_CHECKING:
    from openstack.connection import Connection

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One pre-flight check: its name, ok / warn / fail, and what was found."""

    name: str
    status: Status
    detail: str

    def line(self) -> str:
        """``ok    image: ...``."""
        return f"{self.status:<5} {self.name}: {self.detail}"


@dataclass
class CheckReport:
    """Every check of one workshop, in order."""

    workshop: str
    checks: list[Check]

    @property
    def failed(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if c.status == "fail"]

    @property
    def ok(self) -> bool:
        """True when nothing failed (warnings allowed)."""
        return not self.failed

    def lines(self) -> list[str]:
        """One line per check, then a summary."""
        warns = sum(c.status == "warn" for c in self.checks)
        summary = (
            f"workshop {self.workshop}: {len(self.failed)} failed, {warns} warnings"
            if self.failed or warns
            else f"workshop {self.workshop}: all {len(self.checks)} checks ok"
        )
        return [c.line() for c in self.checks] + [summary]

    def to_json(self) -> str:
        """`bakery check --json`."""
        data = {
            "workshop": self.workshop,
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
        }
        return json.dumps(data, indent=2)


# --- the checks -----------------------------------------------------------------------------------


def check_dates(cfg: Workshop) -> Check:
    """The workshop has not ended."""
    if cfg.ends is None:
        return Check("dates", "ok", "no ends set: the VM runs until `bakery destroy`")
    line = expiry.describe(cfg) or ""
    return Check("dates", "fail" if expiry.ended(cfg) else "ok", line)


def record_mismatches(found: dict[str, Any], wanted: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(what breaks the launch, what is only worth a warning) between two bake records."""
    fails, warns = [], []
    if found.get("os") != wanted["os"]:
        fails.append(f"os: image has {found.get('os')}, config wants {wanted['os']}")
    have, want = found.get("components", {}), wanted["components"]
    for name in sorted(set(have) | set(want)):
        if have.get(name) != want.get(name):
            fails.append(
                f"{name}: image has {have.get(name, 'none')}, config wants {want.get(name, 'none')}"
            )
    if found.get("config_sha256") != wanted["config_sha256"] and not fails:
        warns.append(
            "baked from another config (name, tls, packages or spawner settings differ): "
            "rebake to be sure"
        )
    if found.get("bakery_version") != wanted["bakery_version"]:
        warns.append(
            f"baked by bakery {found.get('bakery_version')}, this is {wanted['bakery_version']}"
        )
    return fails, warns


def check_image(conn: Connection, cfg: Workshop, ref: str | None) -> Check:
    """The image exists; a baked one matches this config's bake record."""
    if not ref:
        return Check("image", "fail", "no image: pass --image or set openstack.image")
    try:
        img = find_image(conn, ref)
    except BakeryError as exc:
        return Check("image", "fail", str(exc))
    rec = bake_image.record_from_properties(image_properties(img))
    if rec is None:
        return Check(
            "image",
            "warn",
            f"{img.name}: not baked by bakery (no bakery_* properties): the full stage installs "
            "everything at boot (15-30 min per server); `bakery bake` makes a golden image",
        )
    fails, warns = record_mismatches(rec, bake_image.record(cfg))
    if fails:
        return Check(
            "image", "fail", f"{img.name}: its bake record does not match: " + "; ".join(fails)
        )
    text = f"{img.name}: baked by bakery, record matches"
    fmt, fmt_warn = disk_format_note(conn, img)
    warns += [fmt] if fmt_warn else []
    parts = [text, *([] if fmt_warn else [fmt]), *warns]
    return Check("image", "warn" if warns else "ok", "; ".join(parts))


def disk_format_note(conn: Connection, img: Any) -> tuple[str, bool]:
    """(what the image's disk format is against what this Glance takes, whether to warn).

    The bake record is the file's (a bake writes qcow2); `image upload` sends the format Glance
    takes (raw to a Ceph-backed one), so the image's own disk_format is the one that counts. A
    format Glance no longer takes (an image uploaded before the cloud moved to Ceph, or made by
    another tool) still boots, but is converted or copied at every boot.
    """
    have = str(img.disk_format or "unknown")
    try:
        allowed = glance_formats(conn)
    except BakeryError:
        allowed = None
    if allowed is None:
        return f"disk format {have}", False
    if have in allowed:
        # Said where Glance takes no qcow2: a Ceph-backed one, typically.
        takes = "" if "qcow2" in allowed else f" (this Glance takes {', '.join(allowed)})"
        return f"disk format {have}{takes}", False
    return (
        f"disk format {have}, which this Glance no longer takes ({', '.join(allowed)}): each "
        "boot may convert or copy it; `bakery image upload` sends the golden image as "
        f"{allowed[0] if len(allowed) == 1 else 'one it takes'}",
        True,
    )


def check_flavor(
    conn: Connection, cfg: Workshop, config_dir: Path | None = None
) -> tuple[Check, Any]:
    """The flavor exists and holds `bakery size`'s estimate; (the check, the flavor or None).

    The flavor of the machine trainees log in to (a hub, or a swarm's manager).
    """
    part = topology(cfg).hubs[0].part
    need = estimate(cfg, part, config_dir)
    try:
        flavor = choose_flavor(conn, cfg, part, config_dir)
    except BakeryError as exc:
        return Check("flavor", "fail", str(exc)), None
    short = []
    if int(flavor.ram) < need.memory_mib:
        short.append(f"{flavor.ram} MiB RAM < {need.memory_mib} MiB")
    disk = root_disk(cfg, flavor, need.disk_gb).volume_gb or int(flavor.disk)
    small = [f"{flavor.vcpus} vCPUs < {need.vcpus}"] if int(flavor.vcpus) < need.vcpus else []
    small += [f"{disk} GB disk < {need.disk_gb} GB"] if int(disk or 0) < need.disk_gb else []
    what = (
        f"{flavor.name} ({flavor.vcpus} vCPUs, {flavor.ram} MiB) for {need.users} accounts per "
        f"server (estimate {need.memory_mib} MiB, {need.vcpus} vCPUs, {need.disk_gb} GB)"
    )
    if short:
        return Check("flavor", "fail", f"{what}: too small: {'; '.join(short)}"), flavor
    if small:
        return Check("flavor", "warn", f"{what}: below the estimate: {'; '.join(small)}"), flavor
    return Check("flavor", "ok", what), flavor


def check_networks(conn: Connection, cfg: Workshop) -> list[Check]:
    """The configured networks and the floating-IP pool exist."""
    out = []
    if not cfg.openstack.networks:
        try:
            net = default_network(conn)
            out.append(Check("network", "ok", f"{net.name} ({net.id}): the project's own"))
        except BakeryError as exc:
            out.append(Check("network", "fail", str(exc)))
    for name in cfg.openstack.networks:
        try:
            net = find_network(conn, name)
            out.append(Check(f"network {name}", "ok", f"exists ({net.id})"))
        except BakeryError as exc:
            out.append(Check(f"network {name}", "fail", str(exc)))
    pool = cfg.openstack.floating_ip_network
    if pool is None:
        what = "no floating IP (openstack.floating_ip_network unset)"
        where = "trainees use the server's own address: it must be reachable from theirs"
        return [*out, Check("address", "ok", f"{what}: {where}")]
    try:
        net = find_network(conn, pool, "openstack.floating_ip_network")
    except BakeryError as exc:
        return [*out, Check("floating-IP pool", "fail", str(exc))]
    if net.is_router_external is False:
        return [
            *out,
            Check(
                "floating-IP pool", "fail", f"{pool} is not an external network (no floating IPs)"
            ),
        ]
    return [*out, Check("floating-IP pool", "ok", f"{pool} exists ({net.id})")]


def check_boot(
    conn: Connection, cfg: Workshop, flavor: Any, config_dir: Path | None = None
) -> list[Check]:
    """The hub's root disk (the flavor's, or a volume) and how the user-data reaches cloud-init
    (bakery.providers.openstack.boot), each with why."""
    need = estimate(cfg, topology(cfg).hubs[0].part, config_dir)
    out = [Check("root disk", "ok", root_disk(cfg, flavor, need.disk_gb).why)]
    try:
        net = find_networks(conn, cfg)[0]
        route = user_data_route(conn, cfg, net)
    except BakeryError as exc:
        return [*out, Check("user-data", "warn", f"cannot tell how it reaches the server: {exc}")]
    return [*out, Check("user-data", "ok", route.why)]


def check_keypair(conn: Connection, cfg: Workshop) -> Check:
    """The key pair exists with our key, or can be made from openstack.public_key."""
    name = key_name(cfg)
    if name is None:
        return Check(
            "key pair", "warn", "none: no openstack.key_name or public_key (ssh only with "
            "ssh.authorized_keys; `bakery users` and `collect` need ssh)",
        )  # fmt: skip
    try:
        found = existing_keypair(conn, cfg)
    except BakeryError as exc:
        return Check("key pair", "fail", str(exc))
    if found is not None:
        return Check("key pair", "ok", f"{name}: exists with the same key")
    return Check("key pair", "ok", f"{name}: will be created from {cfg.openstack.public_key}")


def check_quota(
    conn: Connection, cfg: Workshop, flavor: Any, config_dir: Path | None = None
) -> list[Check]:
    """Quota headroom for exactly this launch (what exists is reused and needs nothing)."""
    topo = topology(cfg)
    try:
        flavors = {
            m.part: flavor if m.serves_hub else choose_flavor(conn, cfg, m.part, config_dir)
            for m in topo.machines
        }
        group = plan_group(conn, cfg)
        need = launch_need(
            conn,
            cfg,
            topo,
            flavors,
            rules=group.to_add,
            new_group=group.created,
            config_dir=config_dir,
        )
    except BakeryError as exc:
        return [Check("quota", "warn", f"cannot work out what the launch needs: {exc}")]
    out = []
    for h in headroom(conn, need):
        status: Status = "warn" if h.error else ("ok" if h.fits else "fail")
        out.append(Check(f"quota {h.label}", status, h.line().split(": ", 1)[1]))
    return out


Resolver = Callable[[str], list[str]]


def _resolve(host: str) -> list[str]:
    return sorted({str(a[4][0]) for a in socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)})


def check_domain(cfg: Workshop, resolve: Resolver = _resolve) -> Check | None:
    """With Let's Encrypt, the domain resolves (it must point at the floating IP)."""
    if cfg.tls.mode != "letsencrypt" or cfg.tls.domain is None:
        return None
    try:
        found = resolve(cfg.tls.domain)
    except OSError as exc:
        return Check(
            "domain", "fail", f"{cfg.tls.domain} does not resolve ({exc}): Let's Encrypt "
            "cannot issue a certificate; add a DNS record pointing at the floating IP",
        )  # fmt: skip
    return Check(
        "domain", "ok", f"{cfg.tls.domain} resolves to {', '.join(found)} (it must be the "
        "server's floating IP)",
    )  # fmt: skip


# --- the whole check ------------------------------------------------------------------------------


def run_checks(
    cfg: Workshop,
    image_ref: str | None,
    *,
    resolve: Resolver = _resolve,
    conn: Connection | None = None,
    config_dir: Path | None = None,
) -> CheckReport:
    """Every check of ``cfg`` against its cloud (``conn``, else a new connection); creates
    nothing. ``config_dir``: the config's folder (its content folders count in the disk)."""
    report = CheckReport(cfg.name, [check_dates(cfg)])
    try:
        conn = conn or connect(cfg)
    except BakeryError as exc:
        report.checks.append(Check("credentials", "fail", str(exc)))
        return report
    cloud = cfg.openstack.cloud or "(OS_* environment)"
    report.checks.append(
        Check("credentials", "ok", f"cloud {cloud}: project {conn.current_project_id}")
    )
    report.checks.append(check_image(conn, cfg, image_ref))
    flavor_check, flavor = check_flavor(conn, cfg, config_dir)
    report.checks.append(flavor_check)
    report.checks += check_networks(conn, cfg)
    report.checks.append(check_keypair(conn, cfg))
    if flavor is not None:
        report.checks += check_boot(conn, cfg, flavor, config_dir)
        report.checks += check_quota(conn, cfg, flavor, config_dir)
    domain = check_domain(cfg, resolve)
    if domain is not None:
        report.checks.append(domain)
    return report


def check(*, config_path: Path, image: str | None = None, count: int | None = None) -> CheckReport:
    """`bakery check`: the pre-flight checks of the workshop at ``config_path``."""
    cfg = workshop_config(config_path, count)
    return run_checks(cfg, image or cfg.openstack.image, config_dir=Path(config_path).parent)


def refuse_failed_checks(
    conn: Connection,
    cfg: Workshop,
    image: str,
    progress: Reporter,
    config_dir: Path | None = None,
) -> None:
    """`bakery launch`'s first step: the pre-flight checks, each that is not ok reported.

    Raises:
        PreflightFailed: listing the failed checks; nothing was created.
    """
    report = run_checks(cfg, image, conn=conn, config_dir=config_dir)
    for c in report.checks:
        if c.status != "ok":
            progress(f"check: {c.line()}")
    if not report.ok:
        raise PreflightFailed(
            "launch refused, nothing created: "
            + "; ".join(f"{c.name}: {c.detail}" for c in report.failed)
            + " (`bakery check CONFIG` shows every check)"
        )
    progress(f"checks passed ({len(report.checks)})")
