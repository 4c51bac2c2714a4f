"""The golden image as one concept: its name, bake record, Glance properties and cleaning."""

from __future__ import annotations

import hashlib
import json
import re
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bakery import layout, versions
from bakery.config.workshop import Workshop
from bakery.errors import SidecarError
from bakery.files import write_private
from bakery.templates import Quoted
from bakery.templates import render as render_template
from bakery.version import __version__
from bakery.vm.stages import Stage
from bakery.workshop import software

# Inside every golden image, whichever builder made it: what was baked (see `record`).
RECORD_PATH = layout.RECORD_PATH
# Beside a file image (``golden.qcow2`` -> ``golden.qcow2.bakery.json``): the record, the name
# and the Glance properties, so an upload gives the image what a cloud bake would have.
SIDECAR_SUFFIX = ".bakery.json"
SIDECAR_MAX_BYTES = 1024 * 1024
# Glance property keys bakery owns; the record's own keys, in order (the rest are components).
PROPERTY_PREFIX = "bakery_"
RECORD_KEYS = ("bakery_version", "workshop", "os", "config_sha256")
# A guess at the cloud's stock image per OS (override with bake.source_image).
SOURCE_IMAGE_NAMES = {
    "ubuntu-24.04": "Ubuntu 24.04",
    "ubuntu-22.04": "Ubuntu 22.04",
    "debian-12": "Debian 12",
}

# What "clean for reuse" removes, relative to the image's root: everything that would make two
# VMs of the image share an identity (machine-id, ssh host keys, leases, random seed) or skip
# first-boot setup (cloud-init's state), and the bake's caches and logs. `packer/clean.sh.j2`
# (in a running builder) and `chroot.clean_for_first_boot` (in a mounted image) both use it.
CLEAN_GLOBS = (
    "var/lib/cloud/*",
    "var/log/cloud-init*.log",
    "etc/ssh/ssh_host_*",
    "var/lib/dbus/machine-id",
    "var/lib/dhcp/*.leases",
    "etc/udev/rules.d/70-persistent-net.rules",
    "root/.ssh/authorized_keys",
    "root/.bash_history",
    "root/.cache",
    "root/.npm",
    "var/lib/apt/lists/*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/lib/systemd/random-seed",
    "var/log/journal/*",
    "var/tmp/*",
    "tmp/*",
)
# Emptied, not removed: systemd makes a new machine-id at first boot when the file is empty.
EMPTIED = ("etc/machine-id",)
# Kept although a glob above matches it: apt needs the folder.
KEPT = ("var/lib/apt/lists/partial",)
# Rotated logs are removed, every other file under var/log is truncated.
ROTATED_LOGS = ("*.gz", "*.[0-9]", "*.old")
# What removing a builder's login user leaves behind: its sudo rule, and shadow's backups (which
# still list it) of the account files.
BUILD_USER_TRACES = (
    "etc/sudoers.d/90-cloud-init-users",
    *(f"etc/{f}-" for f in ("passwd", "shadow", "group", "gshadow", "subuid", "subgid")),
)


def secret_paths() -> tuple[str, ...]:
    """Files the bake stage must not make (each VM makes its own at boot): a bug if present."""
    return (
        f"{layout.STATE_DIR}/jupyterhub_cookie_secret",
        f"{layout.STATE_DIR}/jupyterhub.sqlite",
        layout.PROXY_ENV,
        f"{layout.TLS_DIR}/key.pem",
    )


def config_digest(cfg: Workshop) -> str:
    """A stable hash of the workshop config (recorded in golden images).

    Only what the bake stage depends on counts: users, ssh keys, extra files, the host name and
    where the image is built or launched do not change what is in it.
    """
    data = cfg.model_dump(mode="json", include={"name", "os", "hub", "spawner", "tls", "packages"})
    if cfg.ca_certificates:  # only when set: images baked before the setting keep their hash
        data["ca_certificates"] = list(cfg.ca_certificates)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def image_name(cfg: Workshop, *, now: datetime | None = None) -> str:
    """The golden image's final name: ``bake.image_name`` (default ``bakery-NAME``) and its suffix.

    ``bake.image_suffix``: ``date`` adds ``-YYYYMMDD-hhmm`` (UTC, ``now`` or the current time),
    ``version`` adds ``-BAKERYVERSION-CONFIGHASH8``, ``none`` nothing.
    """

    name = cfg.bake.image_name or f"bakery-{cfg.name}"
    if cfg.bake.image_suffix == "version":
        return f"{name}-{__version__}-{config_digest(cfg)[:8]}"
    if cfg.bake.image_suffix == "date":
        return name + (now or datetime.now(UTC)).strftime("-%Y%m%d-%H%M")
    return name


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record(cfg: Workshop) -> dict[str, Any]:
    """The bake record: what a golden image of ``cfg`` holds and which bakery made it.

    One dict for every builder: written into the image at :data:`RECORD_PATH` (by the bake stage's
    user-data), beside a file image (:func:`write_sidecar`) and as Glance properties
    (:func:`properties`). It depends on the config only, so it can ride in the user-data it
    describes.
    """

    v = cfg.hub.versions
    components: dict[str, str] = {
        "jupyterhub": v.jupyterhub,
        "configurable-http-proxy": v.configurable_http_proxy,
        "jupyterhub-idle-culler": v.idle_culler,
        "oauthenticator": v.oauthenticator,
    }
    # What the image was installed from: the locks' contents, by digest.
    components["hub-lock"] = _digest(software.hub_lock(cfg).requirements())
    trainees = software.trainee_lock(cfg)
    if trainees is not None:
        components["workshop-lock"] = _digest(trainees.requirements())
    if cfg.hub.install == "conda":
        components["miniforge"] = versions.MINIFORGE
    if cfg.spawner.kind == "docker":
        components["dockerspawner"] = v.dockerspawner
        layer = software.image_layer(cfg)
        components["user-image"] = layer.tag if layer is not None else cfg.spawner.image
        if cfg.spawner.image_archive is not None:
            components["user-image-archive"] = cfg.spawner.image_archive.format
    else:
        # Servers run on the host: JupyterLab is installed there, not in a user image.
        components["jupyterhub-systemdspawner"] = v.systemdspawner
        components["jupyterlab"] = v.jupyterlab
    return {
        "bakery_version": __version__,
        "workshop": cfg.name,
        "os": cfg.os,
        "config_sha256": config_digest(cfg),
        "components": components,
    }


def record_json(rec: dict[str, Any]) -> str:
    """The record as the file in the image holds it (stable: sorted keys, a final newline)."""
    return json.dumps(rec, indent=2, sort_keys=True) + "\n"


def record_properties(rec: dict[str, Any]) -> dict[str, str]:
    """The record as ``bakery_*`` Glance properties (components flattened, dashes to ``_``)."""
    props: dict[str, str] = {}
    for key, value in rec.items():
        if key == "components":
            for name, version in value.items():
                props[PROPERTY_PREFIX + name.replace("-", "_")] = str(version)
        else:
            props[key if key.startswith(PROPERTY_PREFIX) else PROPERTY_PREFIX + key] = str(value)
    return props


# What tells Nova how to run a bakery image; every key is a standard Glance property. virtio disk
# and NIC are what Debian's and Ubuntu's cloud kernels boot with (and libvirt's default on x86).
# Left out on purpose: hw_qemu_guest_agent (no agent in the image), hw_rng_model (needs a flavor
# extra spec), hw_scsi_model (only with virtio-scsi disks), hw_firmware_type (the images boot BIOS).
NOVA_HINTS = {"hw_disk_bus": "virtio", "hw_vif_model": "virtio", "os_type": "linux"}


def nova_properties(os_name: str) -> dict[str, str]:
    """``os_distro``, ``os_version`` (from the record's ``os``, e.g. ``debian-12``) and hints."""
    distro, _, version = os_name.partition("-")
    return {"os_distro": distro, "os_version": version, **NOVA_HINTS}


def properties(cfg: Workshop, rec: dict[str, Any]) -> dict[str, str]:
    """The image's Glance properties, the same from every builder: Nova's hints, then
    ``bake.image_properties`` (which may override them), then the record's ``bakery_*``."""
    return {
        **nova_properties(str(rec.get("os", cfg.os))),
        **cfg.bake.image_properties,
        **record_properties(rec),
    }


def record_from_properties(props: dict[str, Any]) -> dict[str, Any] | None:
    """The record back from an image's Glance properties; None for an image bakery did not bake.

    The inverse of :func:`record_properties`: unknown ``bakery_*`` keys are components.
    """
    if "bakery_version" not in props:
        return None
    rec: dict[str, Any] = {}
    components: dict[str, str] = {}
    top = {k if k.startswith(PROPERTY_PREFIX) else PROPERTY_PREFIX + k: k for k in RECORD_KEYS}
    for key, value in props.items():
        if not str(key).startswith(PROPERTY_PREFIX):
            continue
        if key in top:
            rec[top[key]] = str(value)
        else:
            components[key[len(PROPERTY_PREFIX) :].replace("_", "-")] = str(value)
    rec["components"] = components
    return rec


# --- a baked image, and the sidecar of a file image ----------------------------------------------


@dataclass(frozen=True)
class BakeResult:
    """One golden image a builder made: in Glance (``image_id``) or a file (``path``)."""

    builder: str  # packer:openstack, packer:qemu, openstacksdk or chroot
    image_name: str
    record: dict[str, Any]
    image_id: str | None = None
    path: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """The Glance image ID or the file, for a one-line report."""
        return self.image_id or str(self.path or "?")


def sidecar_path(image_file: str | Path) -> Path:
    """The sidecar of a file image: ``golden.qcow2`` -> ``golden.qcow2.bakery.json``."""
    path = Path(image_file)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def sidecar(cfg: Workshop, rec: dict[str, Any], name: str, disk_format: str) -> dict[str, Any]:
    """What an upload of a file image needs: its name, format, record and Glance properties."""
    return {
        "image_name": name,
        "disk_format": disk_format,
        "visibility": cfg.bake.image_visibility,
        "record": rec,
        "properties": properties(cfg, rec),
    }


def write_sidecar(image_file: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` (see :func:`sidecar`) beside ``image_file``; returns the sidecar's path."""
    path = sidecar_path(image_file)
    write_private(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=0o644)
    return path


def read_sidecar(image_file: str | Path) -> dict[str, Any]:
    """The sidecar of ``image_file`` (for an upload).

    Raises:
        SidecarError: there is none, or it is not a bakery sidecar (exit 2).
    """
    path = sidecar_path(image_file)
    advice = "bake the image with `bakery bake --builder chroot` or `--only qemu`"
    try:
        # Only a regular file of a sidecar's size is read: a FIFO would block the read forever.
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > SIDECAR_MAX_BYTES:
            raise SidecarError(f"{path}: not a bake sidecar (a regular JSON file); {advice}")
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SidecarError(
            f"{path}: cannot read the bake sidecar of {image_file} ({exc}); {advice}"
        ) from None
    shapes = {"image_name": str, "record": dict, "properties": dict}
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), kind) for key, kind in shapes.items()
    ):
        raise SidecarError(
            f"{path}: not a bakery sidecar (image_name, and record and properties as objects); "
            + advice
        )
    return data


# --- scripts shared by the builders ---------------------------------------------------------------


def _shell_globs(globs: tuple[str, ...]) -> Quoted:
    """Absolute globs for a shell script, left unquoted so the shell expands them.

    They are bakery's own constants; the alphabet check makes the ``Quoted`` mark true.
    """
    for g in globs:
        if not re.fullmatch(r"[A-Za-z0-9_./*\[\]-]+", g):
            raise ValueError(f"unsafe clean glob {g!r}")
    return Quoted(" ".join("/" + g for g in globs))


def clean_context() -> dict[str, Any]:
    """What ``packer/clean.sh.j2`` needs: the record's path, what to remove, what must not exist."""
    return {
        "bakery_version": __version__,
        "record_path": RECORD_PATH,
        "clean_globs": _shell_globs(CLEAN_GLOBS),
        "emptied": _shell_globs(EMPTIED),
        "kept": _shell_globs(KEPT),
        "rotated_logs": list(ROTATED_LOGS),
        "secret_paths": list(secret_paths()),
        "user_traces": _shell_globs(BUILD_USER_TRACES),
    }


def clean_script() -> str:
    """The clean-for-reuse script run in a builder VM (Packer's and the openstacksdk builder's)."""
    return render_template("packer/clean.sh.j2", **clean_context())


def wait_script() -> str:
    """The script that waits for cloud-init and fails unless the bake stage succeeded."""
    return render_template("packer/wait-cloud-init.sh.j2", bakery_version=__version__)


def image_properties(img: Any) -> dict[str, Any]:
    """An image's Glance properties, wherever openstacksdk put them (attributes, ``properties``)."""
    props = dict(getattr(img, "properties", None) or {})
    props.update({k: v for k, v in img.to_dict().items() if isinstance(k, str)})
    return props


def image_stage(img: Any) -> Stage:
    """``boot`` for an image bakery baked (its properties hold a bake record), else ``full``.

    The same test as ``check``, ``image upload`` and ``image delete`` use: bakery.vm.image decides.
    """
    return "full" if record_from_properties(image_properties(img)) is None else "boot"
