"""The files a VM gets per stage and role: scripts, units, hub and nginx config, the user's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bakery import versions
from bakery.config.workshop import Workshop
from bakery.errors import RenderError
from bakery.layout import (
    AUTH_MODULE,
    CLUSTER_ROLE_FILE,
    CLUSTER_UNITS,
    CONFIG_DIR,
    DOCKER_DAEMON_JSON,
    EXPIRY_FILE,
    EXPIRY_UNITS,
    HOMES_FILE,
    HUB_REQUIREMENTS,
    HUB_TEMPLATES,
    IMAGE_DIR,
    LAB_PAGE_CONFIG,
    NGINX_SITE,
    PROXY_DIR,
    SCRIPT_DIR,
    SERVER_CONFIG,
    SHARED_DATA_SOURCE,
    SSHD_DROPIN,
    TLS_RETRY_UNITS,
    UNIT_DIR,
    UNITS,
    USER_IMAGE_UNIT,
    WORKER_OFF_DROPIN,
    WORKER_OFF_UNITS,
    WORKSHOP_REQUIREMENTS,
)
from bakery.templates import read_text, render
from bakery.vm.stages import Role
from bakery.workshop import expiry, sizing, software

# The first screen, both spawners: JupyterLab's announcements plugin off, so no "get notified about
# official Jupyter news?" pop-up and no news or update check (that plugin does both).
LAB_PAGE_CONFIG_DATA = {
    "disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}
}


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


def proxy_files(cfg: Workshop, ctx: dict[str, Any]) -> list[VmFile]:
    """The proxy's package.json and, at the pinned version, the lock `npm ci` installs from."""
    package = {
        "name": "bakery-proxy",
        "private": True,
        "dependencies": {"configurable-http-proxy": cfg.hub.versions.configurable_http_proxy},
    }
    files = [VmFile(f"{PROXY_DIR}/package.json", json.dumps(package, indent=2) + "\n")]
    if ctx["chp_locked"]:
        lock = render("cloudinit/configurable-http-proxy.lock.json.j2")
        pinned = json.loads(lock)["packages"]["node_modules/configurable-http-proxy"]["version"]
        if pinned != versions.CONFIGURABLE_HTTP_PROXY:
            raise RenderError(
                f"cloudinit/configurable-http-proxy.lock.json.j2 locks {pinned}, not "
                f"{versions.CONFIGURABLE_HTTP_PROXY}: regenerate it (see bakery/versions.py)"
            )
        files.append(VmFile(f"{PROXY_DIR}/package-lock.json", lock))
    return files


def _script(name: str, ctx: dict[str, Any]) -> VmFile:
    return VmFile(f"{SCRIPT_DIR}/{name}", render(f"cloudinit/{name}.j2", **ctx), "0755")


def _unit(name: str, ctx: dict[str, Any]) -> VmFile:
    return VmFile(f"{UNIT_DIR}/{name}", render(f"cloudinit/{name}.j2", **ctx))


def units(cfg: Workshop) -> tuple[str, ...]:
    """The units of ``cfg``: :data:`UNITS`, plus the image loader with an image archive and the
    cluster's units with a swarm (all before the hub's requirements and the hub, the last)."""
    extra: tuple[str, ...] = ()
    if cfg.spawner.kind == "docker" and cfg.spawner.image_archive is not None:
        extra += (USER_IMAGE_UNIT,)
    if cfg.cluster.swarm:
        extra += CLUSTER_UNITS
    return (*UNITS[:-2], *extra, *UNITS[-2:])


def worker_units(cfg: Workshop) -> tuple[str, ...]:
    """The units a swarm worker runs: the firewall, the image loader, its part in the cluster."""
    return tuple(
        u for u in units(cfg) if u in ("bakery-firewall.service", USER_IMAGE_UNIT, CLUSTER_UNITS[0])
    )


def bake_files(cfg: Workshop, ctx: dict[str, Any]) -> list[VmFile]:
    """Files of the bake stage (``ctx``: bakery.vm.context's, without accounts): scripts, units
    and the image recipe; nothing secret."""
    files = [_script("install-hub.sh", ctx), *proxy_files(cfg, ctx)]
    files.append(VmFile(HUB_REQUIREMENTS, software.hub_lock(cfg).requirements()))
    files += _workshop_env_files(cfg, ctx)
    files += [_script("make-secrets.sh", ctx), _script("homes.py", ctx)]
    files.append(_script("hub-start.py", ctx))  # jupyterhub.service's
    files.append(_script("bakery_warm.py", ctx))  # the hub imports it, and runs it
    files.append(VmFile(f"{HUB_TEMPLATES}/error.html", read_text("cloudinit/hub-error.html")))
    tls = tls_files(cfg, ctx)
    files += [_script("firewall.sh", ctx), tls[0]]
    if ctx["content"]:
        # Unpacks the baked folders; the hub imports the other (its pre-spawn hook).
        files.append(_script("content.sh", ctx))
        if ctx["shared_path"]:
            files.append(_script("fetch-data.py", ctx))  # shared_data.url, at first boot
        hook = render("cloudinit/bakery_content.py.j2", **ctx)
        files.append(VmFile(f"{SCRIPT_DIR}/bakery_content.py", hook))
    files += tls[1:]  # (after the content's: the images' byte order)
    if cfg.cluster.swarm:
        files += _cluster_bake_files(ctx)
    if cfg.spawner.kind == "docker":
        if not cfg.cluster.swarm:
            files.append(_script("docker-network.sh", ctx))
        files.append(_script("user-image.sh", ctx))
        # live-restore: trainees' containers keep running while the docker daemon restarts.
        # Not in a swarm, which refuses it ("incompatible with swarm mode", docker 20.10): there
        # a restarted daemon's tasks are started again (files stay, kernels do not).
        daemon: dict[str, Any] = {} if cfg.cluster.swarm else {"live-restore": True}
        daemon |= {"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"}}
        files.append(VmFile(DOCKER_DAEMON_JSON, json.dumps(daemon, indent=2) + "\n"))
        layer = software.image_layer(cfg)
        if layer is not None:
            files.append(VmFile(f"{IMAGE_DIR}/Dockerfile", layer.dockerfile))
            if layer.requirements is not None:
                path = f"{IMAGE_DIR}/{WORKSHOP_REQUIREMENTS}"
                files.append(VmFile(path, layer.requirements))
    files.append(VmFile(LAB_PAGE_CONFIG, json.dumps(LAB_PAGE_CONFIG_DATA) + "\n"))
    files.append(VmFile(SERVER_CONFIG, render("cloudinit/jupyter_server_config.py.j2", **ctx)))
    files += [_unit(name, ctx) for name in units(cfg)]
    return files


# Every file tls_files may write (`bakery update` removes those a new tls.mode has not).
TLS_PATHS = (
    f"{SCRIPT_DIR}/tls.sh", f"{SCRIPT_DIR}/tls-deploy.sh",
    *(f"{UNIT_DIR}/{u}" for u in TLS_RETRY_UNITS),
)  # fmt: skip


def tls_files(cfg: Workshop, ctx: dict[str, Any]) -> list[VmFile]:
    """The certificate's script (first), and with Let's Encrypt certbot's deploy hook and
    retry timer."""
    files = [_script("tls.sh", ctx)]
    if cfg.tls.mode == "letsencrypt":
        files.append(_script("tls-deploy.sh", ctx))
        files += [_unit(name, ctx) for name in TLS_RETRY_UNITS]
    return files


def _workshop_env_files(cfg: Workshop, ctx: dict[str, Any]) -> list[VmFile]:
    """systemd: the trainees' own environment (its script and its lock), if they have one."""
    lock = software.trainee_lock(cfg) if cfg.spawner.kind == "systemd" else None
    if lock is None:
        return []
    reqs = VmFile(ctx["workshop_requirements"], lock.requirements())
    return [_script("workshop-env.sh", ctx), reqs]


def _cluster_bake_files(ctx: dict[str, Any]) -> list[VmFile]:
    """The swarm cluster's scripts, units and spawner, for both roles (one golden image)."""
    files = [_script("cluster.sh", ctx), _script("swarm-token.py", ctx)]
    spawner = read_text("cloudinit/bakery_swarmspawner.py")
    files.append(VmFile(f"{SCRIPT_DIR}/bakery_swarmspawner.py", spawner))
    # Debian's nginx and NFS server start by themselves: not on a worker.
    off = f"[Unit]\nConditionPathExists=!{ctx['role_file_worker']}\nAfter=cloud-init.service\n"
    files += [VmFile(WORKER_OFF_DROPIN.format(unit=unit), off) for unit in WORKER_OFF_UNITS]
    return files


def role_file(role: Role, manager_runs_servers: bool = False) -> VmFile:
    """The file that tells a cluster VM its role (cluster.sh, the units' conditions); the
    manager's also says where servers run (user-image.sh loads no image where none runs)."""
    content = f"{role}\n"
    if role == "manager":
        content += f"servers={'all' if manager_runs_servers else 'workers'}\n"
    return VmFile(CLUSTER_ROLE_FILE.format(role=role), content)


def expiry_files(cfg: Workshop, ctx: dict[str, Any]) -> list[VmFile]:
    """With ``ends``: the moments, the script that powers the VM off after them, its timer.
    Every machine of a workshop gets them (a swarm's workers too: they would run, and cost,
    after the class)."""
    ends = expiry.expiry(cfg)
    if ends is None:
        return []
    files = [VmFile(EXPIRY_FILE, ends.vm_json()), _script("expiry.py", ctx)]
    return files + [_unit(name, ctx) for name in EXPIRY_UNITS]


def worker_boot_files(cfg: Workshop, ctx: dict[str, Any]) -> list[VmFile]:
    """A swarm worker's boot stage: its role, the admin's sshd policy and the workshop's expiry;
    no hub, no accounts."""
    return [
        role_file("worker"),
        VmFile(SSHD_DROPIN, render("cloudinit/sshd.conf.j2", **ctx)),
        *expiry_files(cfg, ctx),
    ]


def homes_files(cfg: Workshop) -> list[VmFile]:
    """What each trainee's home may hold (bytes) and whose homes have no quota: the login
    user's and the admins' (homes.py reads it; without it, with ``disk_limit: none``, it does
    nothing)."""
    limit = sizing.home_bytes(cfg)
    if limit is None:
        return []
    admins = [] if cfg.auth.oauth else cfg.users.admins  # a provider's admins: named at login
    settings = {"limit_bytes": limit, "exempt": sorted({cfg.login_user, *admins})}
    return [VmFile(HOMES_FILE, json.dumps(settings, indent=2) + "\n")]


def data_source_files(cfg: Workshop) -> list[VmFile]:
    """shared_data.url: the archive fetch-data.py downloads, checks and unpacks at first boot."""
    shared = cfg.shared_data
    if shared is None or shared.url is None:
        return []
    source = {"url": shared.url, "sha256": shared.sha256, "path": shared.path}
    return [VmFile(SHARED_DATA_SOURCE, json.dumps(source, indent=2, sort_keys=True) + "\n")]


def boot_files(cfg: Workshop, ctx: dict[str, Any], stock_image: bool = False) -> list[VmFile]:
    """Files of the boot stage (``ctx``: bakery.vm.context's, with the accounts): the hub's and
    nginx's config, sshd policy, the user's files. ``stock_image``: the full stage's (the
    packages are installed in the same boot)."""
    files = [
        VmFile(
            f"{CONFIG_DIR}/jupyterhub_config.py", render("cloudinit/jupyterhub_config.py.j2", **ctx)
        ),
        # On a stock image deferred (written after packages): nginx must install and start with
        # its own default site, before this one (whose certificate comes later) exists. On a
        # golden image written at once: nginx (after cloud-init's first stage and bakery-tls)
        # then starts with it, instead of waiting for cloud-init's last stage to restart it.
        VmFile(NGINX_SITE, render("cloudinit/nginx.conf.j2", **ctx), defer=stock_image),
        VmFile(SSHD_DROPIN, render("cloudinit/sshd.conf.j2", **ctx)),
        *homes_files(cfg),
        *data_source_files(cfg),
    ]
    files += expiry_files(cfg, ctx)
    if cfg.auth.oauth:  # the hub imports it (not baked: no image depends on auth.kind)
        files.append(VmFile(AUTH_MODULE, render("cloudinit/bakery_auth.py.j2", **ctx)))
    files += [
        VmFile(f.path, f.content, f.permissions.rjust(4, "0"), f.owner, defer=True)
        for f in cfg.files
    ]
    if cfg.cluster.swarm:
        files.insert(0, role_file("manager", cfg.cluster.manager_runs_servers))
    return files
