"""cloud-init rendering: the workshop as a cloud-config dict, per stage, dumped as user-data.

The document is data (a dict dumped with PyYAML), never templated YAML; Jinja renders only the
contents of the files it carries (templates in the top-level ``cloudinit/`` folder).

Stages: ``bake`` is everything a reusable golden image holds (packages, the hub's Python env, the
proxy, the user image, units and scripts; no users, secrets or TLS keys; services enabled, not
started). ``boot`` is what a VM booted from that image still needs (users, config, TLS, start).
``full`` is ``bake`` followed by ``boot`` in one document, for a stock cloud image.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from bakery import __version__, versions
from bakery.config import Workshop
from bakery.credentials import Account
from bakery.errors import RenderError
from bakery.templates import render

Stage = Literal["full", "bake", "boot"]
STAGES: tuple[Stage, ...] = ("full", "bake", "boot")

# Nova rejects a server's user_data above 65,535 characters of base64.
NOVA_USER_DATA_LIMIT = 65535

# Where things live on the VM.
HUB_PREFIX = "/opt/jupyterhub"
CONDA_PREFIX = "/opt/miniforge"
CONFIG_DIR = "/etc/jupyterhub"
STATE_DIR = "/srv/jupyterhub"
TLS_DIR = "/etc/jupyterhub/tls"
PROXY_ENV = "/etc/jupyterhub/proxy.env"
SCRIPT_DIR = "/usr/local/lib/bakery"
IMAGE_DIR = "/etc/jupyterhub/image"
# Where a bake puts spawner.image_archive; user-image.sh loads it into docker, then deletes it.
USER_IMAGE_ARCHIVE = "/var/lib/bakery/user-image.tar"
ACME_ROOT = "/var/www/letsencrypt"
BAKE_RECORD = "/etc/bakery/bake.json"
UNIT_DIR = "/etc/systemd/system"
NGINX_SITE = "/etc/nginx/conf.d/jupyterhub.conf"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/10-bakery.conf"
DOCKER_NETWORK = "jupyterhub"
DOCKER_BRIDGE = "br-jupyterhub"
PROXY_PORT, PROXY_API_PORT, HUB_PORT = 8000, 8001, 8081


@dataclass(frozen=True)
class VmFile:
    """A file the user-data writes: path on the VM, content, mode."""

    path: str
    content: str
    permissions: str = "0644"
    owner: str = "root:root"
    # Written in cloud-init's final stage, after packages and users exist.
    defer: bool = False

    def as_cloud_config(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"path": self.path, "content": self.content}
        entry["permissions"] = self.permissions
        entry["owner"] = self.owner
        if self.defer:
            entry["defer"] = True
        return entry


@dataclass(frozen=True)
class UserData:
    """A rendered user-data document and its sizes as Nova counts them."""

    stage: Stage
    data: bytes
    gzipped: bool

    @property
    def encoded_size(self) -> int:
        """Characters of base64, the unit of Nova's 65,535 limit."""
        return len(base64.b64encode(self.data))


def config_digest(cfg: Workshop) -> str:
    """A stable hash of the workshop config (recorded in golden images).

    Only what the bake stage depends on counts: users, ssh keys, extra files, the host name and
    where the image is built or launched do not change what is in it.
    """
    data = cfg.model_dump(mode="json", include={"name", "os", "hub", "spawner", "tls", "packages"})
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def custom_image_tag(cfg: Workshop) -> str | None:
    """The local tag of the workshop's custom image, named after its Dockerfile's content."""
    if cfg.spawner.custom_image is None:
        return None
    digest = hashlib.sha256(_dockerfile(cfg).encode()).hexdigest()[:12]
    return f"bakery/{cfg.name}-notebook:{digest}"


def _dockerfile(cfg: Workshop) -> str:
    custom = cfg.spawner.custom_image
    assert custom is not None
    return render(
        "cloudinit/Dockerfile.j2",
        bakery_version=__version__,
        base_image=cfg.spawner.image,
        apt=custom.apt,
        conda=custom.conda,
        pip=custom.pip,
    )


def import_changes(cfg: Workshop) -> list[str]:
    """The ``docker import --change`` instructions restoring a rootfs archive's image settings."""
    archive = cfg.spawner.image_archive
    if archive is None or archive.format != "rootfs":
        return []
    changes = [f"ENV {name}={value}" for name, value in archive.env.items()]
    if archive.entrypoint:
        changes.append(f"ENTRYPOINT {json.dumps(archive.entrypoint)}")
    changes.append(f"CMD {json.dumps(archive.cmd)}")
    return changes


def _context(cfg: Workshop, accounts: list[Account] | None = None) -> dict[str, Any]:
    docker = cfg.spawner.kind == "docker"
    archive = cfg.spawner.image_archive
    cull = cfg.spawner.idle_cull_minutes * 60
    v = cfg.hub.versions
    pip_specs = [
        f"jupyterhub=={v.jupyterhub}",
        f"jupyterhub-idle-culler=={v.idle_culler}",
    ]
    if docker:
        pip_specs.append(f"dockerspawner=={v.dockerspawner}")
    else:
        # Servers run on the host: they need JupyterLab beside the hub.
        pip_specs += [
            f"jupyterhub-systemdspawner=={v.systemdspawner}",
            f"jupyterlab=={v.jupyterlab}",
        ]
    admins = set(cfg.users.admins)
    return {
        "bakery_version": __version__,
        "name": cfg.name,
        "fqdn": cfg.fqdn,
        "spawner": cfg.spawner.kind,
        "install": cfg.hub.install,
        "hub_prefix": HUB_PREFIX,
        "conda_prefix": CONDA_PREFIX,
        "conda_python": versions.CONDA_PYTHON,
        "miniforge": versions.MINIFORGE,
        "miniforge_sha256": versions.MINIFORGE_SHA256,
        "pip_specs": pip_specs,
        "chp_version": v.configurable_http_proxy,
        "config_dir": CONFIG_DIR,
        "state_dir": STATE_DIR,
        "tls_dir": TLS_DIR,
        "acme_root": ACME_ROOT,
        "proxy_env": PROXY_ENV,
        "script_dir": SCRIPT_DIR,
        "image_dir": IMAGE_DIR,
        "proxy_port": PROXY_PORT,
        "proxy_api_port": PROXY_API_PORT,
        "hub_port": HUB_PORT,
        "hub_ip": "0.0.0.0" if docker else "127.0.0.1",  # noqa: S104 (firewalled, see firewall.sh)
        "hub_connect_ip": cfg.spawner.gateway if docker else None,
        "docker_network": DOCKER_NETWORK,
        "docker_bridge": DOCKER_BRIDGE,
        "docker_subnet": cfg.spawner.network_subnet,
        "image": custom_image_tag(cfg) or cfg.spawner.image,
        "custom_tag": custom_image_tag(cfg),
        "base_image": cfg.spawner.image,
        "image_archive": USER_IMAGE_ARCHIVE if archive else None,
        "archive_format": archive.format if archive else None,
        "import_changes": import_changes(cfg),
        "mem_limit": cfg.spawner.mem_limit,
        "cpu_limit": cfg.spawner.cpu_limit,
        "default_url": cfg.spawner.default_url,
        "cull_seconds": cull,
        "cull_every": max(30, min(300, cull // 4)),
        # Servers report activity to the hub every 300 s by default: with a shorter idle timeout
        # the culler would stop servers in use. Report at least 4 times per timeout.
        "activity_interval": max(10, min(300, cull // 4)),
        "allowed_users": [a.username for a in accounts or []] or cfg.users.all_names(),
        "admin_users": sorted(admins),
        "letsencrypt": cfg.tls.mode == "letsencrypt",
        "domain": cfg.tls.domain or "",
        "email": cfg.tls.email or "",
        "server_name": cfg.tls.domain or "_",
        "hsts": cfg.tls.mode == "letsencrypt",
        "login_user": cfg.login_user,
    }


def _script(name: str, ctx: dict[str, Any]) -> VmFile:
    return VmFile(f"{SCRIPT_DIR}/{name}", render(f"cloudinit/{name}.j2", **ctx), "0755")


def _unit(name: str, ctx: dict[str, Any]) -> VmFile:
    return VmFile(f"{UNIT_DIR}/{name}", render(f"cloudinit/{name}.j2", **ctx))


# The systemd units bakery installs, in the order they start.
UNITS = (
    "bakery-firewall.service",
    "bakery-tls.service",
    "jupyterhub-secrets.service",
    "configurable-http-proxy.service",
    "jupyterhub.service",
)
# Loads spawner.image_archive at boot when the bake had no Docker daemon (the chroot builder).
USER_IMAGE_UNIT = "bakery-user-image.service"


def units(cfg: Workshop) -> tuple[str, ...]:
    """The units of ``cfg``: :data:`UNITS`, plus the image loader with an image archive."""
    if cfg.spawner.kind == "docker" and cfg.spawner.image_archive is not None:
        return (*UNITS[:-1], USER_IMAGE_UNIT, UNITS[-1])
    return UNITS


def bake_files(cfg: Workshop) -> list[VmFile]:
    """Files of the bake stage: scripts, units and the image recipe; nothing secret."""
    ctx = _context(cfg)
    files = [_script("install-hub.sh", ctx), _script("make-secrets.sh", ctx)]
    files += [_script("firewall.sh", ctx), _script("tls.sh", ctx)]
    if cfg.tls.mode == "letsencrypt":
        files.append(_script("tls-deploy.sh", ctx))
    if cfg.spawner.kind == "docker":
        files += [_script("docker-network.sh", ctx), _script("user-image.sh", ctx)]
        daemon = {"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"}}
        files.append(VmFile("/etc/docker/daemon.json", json.dumps(daemon, indent=2) + "\n"))
        if cfg.spawner.custom_image is not None:
            files.append(VmFile(f"{IMAGE_DIR}/Dockerfile", _dockerfile(cfg)))
    files += [_unit(name, ctx) for name in units(cfg)]
    record = {
        "bakery": __version__,
        "workshop": cfg.name,
        "config_sha256": config_digest(cfg),
        "components": {
            "jupyterhub": cfg.hub.versions.jupyterhub,
            "configurable-http-proxy": cfg.hub.versions.configurable_http_proxy,
            "jupyterhub-idle-culler": cfg.hub.versions.idle_culler,
            **(
                {
                    "dockerspawner": cfg.hub.versions.dockerspawner,
                    "user-image": ctx["image"],
                    **(
                        {"user-image-archive": cfg.spawner.image_archive.format}
                        if cfg.spawner.image_archive
                        else {}
                    ),
                }
                if cfg.spawner.kind == "docker"
                else {"jupyterhub-systemdspawner": cfg.hub.versions.systemdspawner}
            ),
        },
    }
    files.append(VmFile(BAKE_RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n"))
    return files


def boot_files(cfg: Workshop, accounts: list[Account] | None = None) -> list[VmFile]:
    """Files of the boot stage: the hub's and nginx's config, sshd policy, the user's files."""
    ctx = _context(cfg, accounts)
    files = [
        VmFile(
            f"{CONFIG_DIR}/jupyterhub_config.py", render("cloudinit/jupyterhub_config.py.j2", **ctx)
        ),
        # Deferred (written after packages): on a stock image nginx must install and start with
        # its own default site, before this one (whose certificate comes later) exists.
        VmFile(NGINX_SITE, render("cloudinit/nginx.conf.j2", **ctx), defer=True),
        VmFile(SSHD_DROPIN, render("cloudinit/sshd.conf.j2", **ctx)),
    ]
    files += [
        VmFile(f.path, f.content, f.permissions.rjust(4, "0"), f.owner, defer=True)
        for f in cfg.files
    ]
    return files


def packages(cfg: Workshop) -> list[str]:
    """Debian/Ubuntu packages the VM needs (the distro's versions), then the user's extras."""
    pkgs = ["nginx", "openssl", "iptables", "nodejs", "npm", "ca-certificates", "curl"]
    if cfg.hub.install == "venv":
        pkgs.append("python3-venv")
    if cfg.spawner.kind == "docker":
        pkgs.append("docker.io")
    if cfg.tls.mode == "letsencrypt":
        pkgs.append("certbot")
    return pkgs + [p for p in cfg.packages if p not in pkgs]


def _bake_runcmd(cfg: Workshop) -> list[list[str]]:
    cmds = [[f"{SCRIPT_DIR}/install-hub.sh"]]
    if cfg.spawner.kind == "docker":
        cmds.append([f"{SCRIPT_DIR}/user-image.sh"])
    # `enable` only makes symlinks (no daemon-reload: it also has to work in a chroot bake).
    cmds.append(["systemctl", "enable", *units(cfg)])
    return cmds


def _boot_runcmd(cfg: Workshop) -> list[list[str]]:
    cmds = [
        ["rm", "-f", "/etc/nginx/sites-enabled/default"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "try-reload-or-restart", "ssh"],
        ["systemctl", "enable", "--now", *units(cfg)],
        ["systemctl", "restart", "nginx"],
    ]
    if cfg.tls.mode == "letsencrypt":
        cmds.append([f"{SCRIPT_DIR}/tls.sh", "letsencrypt"])
    return cmds


def _users(accounts: list[Account]) -> list[Any]:
    users: list[Any] = ["default"]
    users += [
        {"name": a.username, "lock_passwd": False, "passwd": a.hash, "shell": "/bin/bash"}
        for a in accounts
    ]
    return users


def build_cloud_config(
    cfg: Workshop, *, stage: Stage = "full", accounts: list[Account] | None = None
) -> dict[str, Any]:
    """The cloud-config of ``stage`` as a dict (keys in cloud-init's order of use).

    Args:
        cfg: the workshop.
        stage: ``full``, ``bake`` or ``boot``.
        accounts: the trainees' and admins' accounts (from :func:`ensure_credentials`); required
            for ``full`` and ``boot``, which create them.
    """
    if stage not in STAGES:
        raise RenderError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    doc: dict[str, Any] = {}
    with_bake, with_boot = stage in ("full", "bake"), stage in ("full", "boot")
    if with_boot:
        if accounts is None:
            raise RenderError(f"stage {stage} creates accounts: pass the credentials")
        names = [a.username for a in accounts]
        if names != cfg.users.all_names():
            raise RenderError("the accounts do not match the config's users; reload credentials")
        doc["hostname"] = cfg.fqdn.split(".")[0]
        if "." in cfg.fqdn:
            doc["fqdn"] = cfg.fqdn
        doc["users"] = _users(accounts)
        doc["chpasswd"] = {"expire": False}
        doc["ssh_pwauth"] = False
        if cfg.ssh.authorized_keys:
            doc["ssh_authorized_keys"] = list(cfg.ssh.authorized_keys)
    files: list[VmFile] = []
    if with_bake:
        doc["package_update"] = True
        doc["packages"] = packages(cfg)
        files += bake_files(cfg)
    if with_boot:
        files += boot_files(cfg, accounts)
    doc["write_files"] = [f.as_cloud_config() for f in files]
    runcmd: list[list[str]] = []
    if with_bake:
        runcmd += _bake_runcmd(cfg)
    if with_boot:
        runcmd += _boot_runcmd(cfg)
    doc["runcmd"] = runcmd
    doc["final_message"] = f"bakery: {cfg.name} {stage} stage done after $UPTIME seconds"
    return doc


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Safe dumper writing multi-line strings (file contents) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_cloud_config(doc: dict[str, Any]) -> str:
    """``#cloud-config`` text of a cloud-config dict (block style, stable order)."""
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)
    return "#cloud-config\n" + body


def render_user_data(
    cfg: Workshop,
    *,
    stage: Stage = "full",
    accounts: list[Account] | None = None,
    gzip_data: bool | None = None,
) -> UserData:
    """The user-data document of ``stage``, gzipped when asked or when needed to fit Nova.

    Args:
        cfg: the workshop.
        stage: ``full``, ``bake`` or ``boot``.
        accounts: the accounts to create (``full`` and ``boot``).
        gzip_data: True always gzips, False never does, None gzips only when the plain document
            would exceed Nova's limit.

    Raises:
        RenderError: when the document cannot fit Nova's 65,535-character limit.
    """
    text = dump_cloud_config(build_cloud_config(cfg, stage=stage, accounts=accounts)).encode()
    plain = UserData(stage, text, gzipped=False)
    if gzip_data is False or (gzip_data is None and plain.encoded_size <= NOVA_USER_DATA_LIMIT):
        result = plain
    else:
        # mtime=0: the same input gives the same bytes.
        result = UserData(stage, gzip.compress(text, compresslevel=9, mtime=0), gzipped=True)
    if result.encoded_size > NOVA_USER_DATA_LIMIT:
        n = len(accounts or [])
        how = "even gzipped" if result.gzipped else "(try --gzip)"
        ways = ["split the trainees over several workshops, fewer accounts each"]
        if stage == "full":
            ways.insert(0, "bake a golden image and launch it with the smaller boot stage")
        raise RenderError(
            f"the {stage} user-data is {result.encoded_size:,} base64 characters, over Nova's "
            f"limit of {NOVA_USER_DATA_LIMIT:,} {how}. Each of the {n} accounts adds a password "
            f"hash that does not compress. Way{'s' if len(ways) > 1 else ''} out: "
            + "; or ".join(ways)
            + "."
        )
    return result
