"""`bakery bake --builder openstacksdk`: boot a builder, let it seal itself, snapshot it."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bakery.config.infra import NOVA_USER_DATA_LIMIT
from bakery.config.workshop import Workshop, load_config
from bakery.errors import BakeryError, BuildError, CloudError, LeftBehind, UsageError
from bakery.layout import META_ROLE, META_WORKSHOP, SCRIPT_DIR
from bakery.progress import Reporter, quiet
from bakery.providers.openstack import api as cloud
from bakery.providers.openstack import servers as cloud_servers
from bakery.templates import render as render_template
from bakery.version import __version__
from bakery.vm import image
from bakery.vm.image import BakeResult
from bakery.vm.userdata import build_cloud_config, dump_cloud_config, fit_for_nova

if TYPE_CHECKING:
    from openstack.connection import Connection

SEAL_SCRIPT = f"{SCRIPT_DIR}/seal.sh"
WAIT_SCRIPT = f"{SCRIPT_DIR}/wait-cloud-init.sh"
CLEAN_SCRIPT = f"{SCRIPT_DIR}/clean.sh"
# The seal's verdict on the serial console (packer/seal.sh.j2 writes it, bakery reads it).
SEAL_OK = "bakery-seal: sealed"
SEAL_FAILED = "bakery-seal: FAILED"
POLL_SECONDS = 5


def seal_script(build_user: str) -> str:
    """The seal (``packer/seal.sh.j2``): wait for cloud-init, clean for reuse, power off."""
    return render_template(
        "packer/seal.sh.j2",
        bakery_version=__version__,
        seal_ok=SEAL_OK,
        seal_failed=SEAL_FAILED,
        wait_script=WAIT_SCRIPT,
        clean_script=CLEAN_SCRIPT,
        build_user=build_user,
    )


def builder_user_data(cfg: Workshop, bake_doc: dict[str, Any] | None = None) -> bytes:
    """The bake stage (or ``bake_doc``) plus the seal, started once cloud-init's runcmd ends;
    gzipped when the plain document would not fit Nova's limit."""
    doc = dict(bake_doc or build_cloud_config(cfg, stage="bake"))
    doc["write_files"] = [
        *doc.get("write_files", []),
        {"path": WAIT_SCRIPT, "content": image.wait_script(), "permissions": "0755"},
        {"path": CLEAN_SCRIPT, "content": image.clean_script(), "permissions": "0755"},
        {"path": SEAL_SCRIPT, "content": seal_script(cfg.login_user), "permissions": "0755"},
    ]
    # A transient unit outside cloud-init: the seal waits for cloud-init to finish.
    doc["runcmd"] = [
        *doc.get("runcmd", []),
        ["systemd-run", "--unit=bakery-seal", "--on-active=5", SEAL_SCRIPT],
    ]
    return fit_for_nova(dump_cloud_config(doc).encode())


def _create_builder(conn: Connection, cfg: Workshop, data: bytes, progress: Reporter) -> Any:
    """Boot the builder server from ``bake.source_image`` with the builder's user-data."""
    b = cfg.bake
    payload = base64.b64encode(data).decode()
    if len(payload) > NOVA_USER_DATA_LIMIT:
        raise BuildError(
            f"the builder's user-data is {len(payload):,} base64 characters, over Nova's "
            f"{NOVA_USER_DATA_LIMIT:,}"
        )
    source = cloud.find_image(conn, b.source_image or image.SOURCE_IMAGE_NAMES[cfg.os])
    flavor = cloud.find_flavor(conn, b.flavor, "bake.flavor")
    name = f"{cfg.name}-builder"
    attrs: dict[str, Any] = {
        "name": name,
        "image_id": source.id,
        "flavor_id": flavor.id,
        "user_data": payload,
        "metadata": {META_WORKSHOP: cfg.name, META_ROLE: "builder"},
    }
    # Nova refuses a create without networks once the project sees more than one.
    nets = b.networks or [str(cloud.default_network(conn).id)]
    attrs["networks"] = [{"uuid": n} for n in nets]
    if b.security_groups:
        attrs["security_groups"] = [{"name": g} for g in b.security_groups]
    server = cloud.api(f"create builder {name}", conn.compute.create_server, **attrs)
    progress(f"builder {name}: creating from {source.name} ({flavor.name})")
    return server


def _console(conn: Connection, server: Any, last: str) -> str:
    """The builder's console log, or ``last`` when Nova has none (a guest powering off)."""
    try:
        out = cloud.api("read console", conn.compute.get_server_console_output, server, length=200)
    except CloudError:
        return last
    return str(out.get("output", "")) or last


def _wait_sealed(conn: Connection, server: Any, timeout: float, progress: Reporter) -> None:
    """Wait until the builder sealed itself and powered off.

    Raises:
        BuildError: the seal failed (with its console lines), or nothing after ``timeout`` s.
        CloudError: the builder went to ERROR.
    """
    name, start, out = server.name, time.monotonic(), ""
    while True:
        server = cloud.api(f"get {name}", conn.compute.get_server, server.id)
        if server.status == "ACTIVE":
            out = _console(conn, server, out)
        if SEAL_FAILED in out:
            tail = [ln for ln in out.splitlines() if "bakery-seal" in ln or ln.startswith("  ")]
            raise BuildError(f"the bake failed on {name}:\n  " + "\n  ".join(tail[-20:]))
        if server.status == "SHUTOFF":
            break
        if server.status == "ERROR":
            raise CloudError(f"builder {name} failed: {cloud_servers.server_fault(server)}")
        if time.monotonic() - start > timeout:
            raise BuildError(f"builder {name} still baking after {timeout / 60:.0f} min")
        progress(f"builder {name}: baking ({server.status})", transient=True)
        time.sleep(POLL_SECONDS)
    if SEAL_OK not in out:
        raise BuildError(f"builder {name} powered off without sealing; see its console log")


def _snapshot(conn: Connection, cfg: Workshop, server: Any, rec: dict[str, Any]) -> tuple[str, Any]:
    """Snapshot the sealed builder into the golden image, with the record as properties."""
    name = image.image_name(cfg)
    snap = cloud.api(
        f"snapshot {server.name}",
        conn.compute.create_server_image,
        server,
        name,
        metadata=image.properties(cfg, rec),
        wait=True,
        timeout=3600,
    )
    if cfg.bake.image_visibility != "private":
        visibility = cfg.bake.image_visibility
        cloud.api("set visibility", conn.image.update_image, snap, visibility=visibility)
    return name, snap


def delete_builder(
    conn: Connection, server: Any, progress: Reporter, failure: BaseException | None = None
) -> None:
    """Delete the builder and wait until it is gone.

    Raises:
        LeftBehind: it could not be deleted (its ID and how to delete it by hand in the message;
            ``failure``, the bake's own error if any, is named too).
    """
    name = server.name
    try:
        cloud.api(f"delete builder {name}", conn.compute.delete_server, server)
        cloud.api(f"wait for {name} to go", conn.compute.wait_for_delete, server, wait=300)
    except BakeryError as exc:
        also = f"; the bake had failed before: {failure}" if failure else ""
        raise LeftBehind(
            f"builder server {name} ({server.id}) could not be deleted and keeps costing money: "
            f"{exc}; delete it with `openstack server delete {server.id}`{also}"
        ) from failure
    progress(f"builder {name}: deleted")


def _refuse_files(cfg: Workshop) -> None:
    """Refuse what this builder cannot bring into its builder: it only passes user-data.

    Raises:
        UsageError: an image archive or a content folder, with the builders that can.
    """
    if cfg.spawner.kind == "docker" and cfg.spawner.image_archive is not None:
        raise UsageError(
            "spawner.image_archive: the openstacksdk builder cannot copy a file into its builder "
            "(it only passes user-data, far too small for an image): use --builder packer, which "
            "uploads the archive over ssh, or --builder chroot"
        )
    folders = [k for k, v in (("shared_data.from", cfg.shared_data), ("course.from", cfg.course))
               if v is not None and v.from_ is not None]  # fmt: skip
    if folders:
        raise UsageError(
            f"{' and '.join(folders)}: the openstacksdk builder cannot copy a folder into its "
            "builder (it only passes user-data): use --builder packer, which uploads it over ssh, "
            "or --builder chroot"
        )


def bake(
    *,
    config_path: str | Path,
    output: str | Path | None = None,
    progress: Reporter = quiet,
    bake_doc: dict[str, Any] | None = None,
    timeout_minutes: float = 120,
) -> list[BakeResult]:
    """Bake the golden image with openstacksdk alone (no Packer).

    Boots a builder from ``bake.source_image`` with the bake stage and the seal, waits until it
    has sealed itself (cloud-init done, cleaned for reuse, powered off), snapshots it with the
    record's ``bakery_*`` properties, and deletes the builder whatever happens.

    Args:
        config_path: the workshop file.
        output: not used by this builder (the image goes to Glance); must be None.
        progress: where notes and the builder's state go.
        bake_doc: the bake-stage cloud-config to use instead of the workshop's (tests).
        timeout_minutes: how long the bake may take once the builder is ACTIVE.

    Raises:
        UsageError: ``output`` given, or an image archive (too big for user-data).
        BuildError: the bake or the seal failed; CloudError: the cloud refused something.
        LeftBehind: the builder could not be deleted.
    """
    if output is not None:
        raise UsageError("-o/--output: the openstacksdk builder makes a Glance image, not a file")
    cfg = load_config(config_path)
    _refuse_files(cfg)
    conn = cloud.connect(cfg)
    rec = image.record(cfg)
    start = time.monotonic()
    server = _create_builder(conn, cfg, builder_user_data(cfg, bake_doc), progress)
    failure: BaseException | None = None
    try:
        server = cloud_servers.wait_active(conn, server, 900, progress)
        timings = {"boot": round(time.monotonic() - start, 1)}
        _wait_sealed(conn, server, timeout_minutes * 60, progress)
        timings["bake"] = round(time.monotonic() - start - timings["boot"], 1)
        progress(f"builder {server.name}: sealed after {timings['bake']:.0f} s; snapshotting")
        name, snap = _snapshot(conn, cfg, server, rec)
        timings["snapshot"] = round(time.monotonic() - start - sum(timings.values()), 1)
        progress(f"image {name}: {snap.id}")
        return [BakeResult("openstacksdk", name, rec, image_id=str(snap.id), timings=timings)]
    except BaseException as exc:
        failure = exc
        raise
    finally:
        delete_builder(conn, server, progress, failure)
