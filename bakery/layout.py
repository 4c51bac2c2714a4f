"""Where things live on the VM: the paths, units, ports and names bakery's files agree on."""

from __future__ import annotations

import posixpath

# The hub's Python environment (venv or conda), and Miniforge for `hub.install: conda`.
HUB_PREFIX = "/opt/jupyterhub"
CONDA_PREFIX = "/opt/miniforge"
# What the hub's environment installs (its lock: pinned, hashed) and the trainees' own environment
# (`environment:` with the systemd spawner) with its lock; with docker the lock sits in IMAGE_DIR.
HUB_REQUIREMENTS = "/usr/local/lib/bakery/hub-requirements.txt"
WORKSHOP_ENV = "/opt/workshop"
WORKSHOP_REQUIREMENTS = "workshop-requirements.txt"
# configurable-http-proxy and its node_modules (`npm ci` from bakery's lock); run by the hub
# environment's Node.js through the PROXY_BIN wrapper.
PROXY_DIR = "/opt/configurable-http-proxy"
PROXY_BIN = "/usr/local/bin/configurable-http-proxy"
# The hub's configuration (rewritten at every boot stage) and its state (secrets, database).
CONFIG_DIR = "/etc/jupyterhub"
STATE_DIR = "/srv/jupyterhub"
TLS_DIR = "/etc/jupyterhub/tls"
PROXY_ENV = "/etc/jupyterhub/proxy.env"
IMAGE_DIR = "/etc/jupyterhub/image"
SCRIPT_DIR = "/usr/local/lib/bakery"
# Where a bake puts spawner.image_archive; user-image.sh loads it into docker, then deletes it.
USER_IMAGE_ARCHIVE = "/var/lib/bakery/user-image.tar"
# The image's command (its Cmd, JSON), read from the archive at bake time: a cluster's hub hands
# it to the spawner, so a manager that runs no servers never loads the image (minutes under load).
USER_IMAGE_CMD = "/var/lib/bakery/user-image-cmd.json"
# Shared data and course material (bakery.content): a bake copies their folders in as tars here,
# content.sh unpacks them (shared_data.path, COURSE_DIR) and deletes them.
CONTENT_DIR = "/var/lib/bakery/content"
SHARED_DATA_TAR = f"{CONTENT_DIR}/shared-data.tar"
COURSE_TAR = f"{CONTENT_DIR}/course.tar"
SHARED_DATA_DIR = "/srv/shared"  # shared_data.path's default
# shared_data.url: where the boot stage says which archive to fetch (fetch-data.py, at first boot).
SHARED_DATA_SOURCE = "/etc/bakery/shared-data.json"
# The course as baked, world-readable: each server start copies it into ~/course.
COURSE_DIR = "/srv/course"
COURSE_HOME_DIR = "course"  # ~/course, for `from` and `git` alike
# The bake record: what a golden image holds and how it was made (bakery.image writes it).
RECORD_PATH = "/etc/bakery/image.json"
# What `bakery update` last applied to a server: the workshop file's digest, its boot files'
# digests, when, and any step still to finish (root only; bakery.day.update).
APPLIED_FILE = "/etc/bakery/applied.json"
ACME_ROOT = "/var/www/letsencrypt"
UNIT_DIR = "/etc/systemd/system"
NGINX_SITE = "/etc/nginx/conf.d/jupyterhub.conf"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/10-bakery.conf"
DOCKER_DAEMON_JSON = "/etc/docker/daemon.json"
# bakery's Jupyter config for the trainees' servers, on their JUPYTER_CONFIG_PATH (the hub sets
# it; the docker spawner mounts the folder read-only at the same path): how long a server waits
# for the hub's API and for a new kernel (SERVER_CONFIG, from
# cloudinit/jupyter_server_config.py.j2) and JupyterLab's page config.
SERVER_CONFIG_DIR = "/etc/bakery/jupyter"
SERVER_CONFIG = f"{SERVER_CONFIG_DIR}/jupyter_server_config.py"
LAB_PAGE_CONFIG = f"{SERVER_CONFIG_DIR}/labconfig/page_config.json"
# The boot stage sets HOME_MODE here (private homes).
LOGIN_DEFS = "/etc/login.defs"
DOCKER_NETWORK = "jupyterhub"
DOCKER_BRIDGE = "br-jupyterhub"
PROXY_PORT, PROXY_API_PORT, HUB_PORT = 8000, 8001, 8081

# The trainees' homes: an XFS filesystem of their own (a loop image on the root disk, made at
# first boot), mounted on /home with project quotas; what each home may hold and who is exempt.
HOMES_IMAGE = "/var/lib/bakery/homes.xfs"
HOMES_FILE = "/etc/bakery/homes.json"
HOMES_UNIT = "bakery-homes.service"

# The systemd units bakery installs, in the order they start.
UNITS = (
    HOMES_UNIT,
    "bakery-firewall.service",
    "bakery-tls.service",
    "jupyterhub-secrets.service",
    "configurable-http-proxy.service",
    # What the hub needs; jupyterhub.service starts early and waits for it (hub-start.py).
    "jupyterhub-ready.target",
    "jupyterhub.service",
)
HUB_READY = UNITS[-2]
# Loads spawner.image_archive at boot when the bake had no Docker daemon (the chroot builder).
USER_IMAGE_UNIT = "bakery-user-image.service"

# tls.mode letsencrypt: retries the ACME certificate until one is installed (tls.sh starts it).
TLS_RETRY_UNITS = ("bakery-tls-retry.service", "bakery-tls-retry.timer")
# Workshop expiry (`ends`): the times the hub and the power-off timer read, and the timer's units.
EXPIRY_FILE = "/etc/bakery/expiry.json"
EXPIRY_UNITS = ("bakery-expiry.service", "bakery-expiry.timer")
# The token of bakery's own hub API client (`bakery users`), made on the VM, root only, and the
# hub's API as that client reaches it: through the proxy on the VM's loopback (the hub's own port
# may be on the docker network's gateway only).
API_TOKEN_FILE = f"{STATE_DIR}/bakery-api-token"
HUB_API_LOCAL = f"http://127.0.0.1:{PROXY_PORT}/hub/api"
# Warm start (`warm:`, `bakery warm`): bakery_warm.py, a service the hub runs, starts the trainees'
# servers before they arrive and keeps each warmed one from the idle culler until its trainee has
# logged in once (the hub's login hook leaves LOGINS_DIR/NAME). Its settings (boot stage), and
# what it warmed and left cold, with why.
WARM_FILE = "/etc/bakery/warm.json"
WARM_STATE = f"{STATE_DIR}/warm-state.json"
LOGINS_DIR = f"{STATE_DIR}/logins"
# The hub's own templates beside JupyterHub's: its error page, whose 429 tries again by itself.
HUB_TEMPLATES = f"{CONFIG_DIR}/templates"

# cluster.engine swarm (issue 12): one hub on a manager VM, trainees' servers as swarm services on
# worker VMs. Each node's role: this file (ROLE: manager or worker) exists, written at boot; the
# hub's units do not start where cluster-worker exists. What cluster.sh found (address, CIDR, MTU).
CLUSTER_ROLE_FILE = "/etc/bakery/cluster-{role}"
CLUSTER_STATE = "/run/bakery/cluster.json"
# The manager's /home over NFS on every node (a symlink to /home on the manager): the trainees'
# servers bind-mount CLUSTER_HOME/NAME wherever they run.
CLUSTER_HOME = "/srv/cluster/home"
# Server metadata (Nova's key-value tags), the one table of the keys bakery sets and reads.
# The workshop a server belongs to (how bakery finds its own servers), the user-data stage it
# booted with (`bakery scale` boots new workers alike), what a throwaway server is for (a bake's
# builder). Root only on the VM (the firewall closes the metadata service to the rest): the
# secret a worker shows the manager's token service for the swarm's join token, and the
# manager's address on the cluster network (workers; the manager's own default: its route's).
META_WORKSHOP = "bakery_workshop"
META_STAGE = "bakery_stage"
META_ROLE = "bakery_role"
CLUSTER_META_SECRET = "bakery_cluster_secret"  # noqa: S105 (a key's name)
CLUSTER_META_MANAGER = "bakery_manager"
# auth.kind oidc or github: the hub's module for them (boot stage); the OAuth client secret (from
# client_secret_file, never user-data), read as root by make-secrets.sh into AUTH_SECRET_FILE;
# the hub's record of which provider identity owns which Linux name (made at first login); the
# issuer's discovery document, kept for a hub restarted while the provider cannot be reached.
AUTH_META_SECRET = "bakery_auth_secret"  # noqa: S105 (a key's name)
AUTH_MODULE = f"{SCRIPT_DIR}/bakery_auth.py"
AUTH_SECRET_FILE = f"{STATE_DIR}/oauth-client-secret"
IDENTITIES_FILE = f"{STATE_DIR}/identities.json"
OIDC_DISCOVERY_CACHE = f"{STATE_DIR}/oidc-discovery.json"
# The manager's join-token service (swarm-token.py), for cluster members only.
SWARM_TOKEN_PORT = 2378
# It rotates the worker join token once this long has passed without a worker asking for it.
SWARM_TOKEN_ROTATE_AFTER = 300
# What the cluster's members open to each other, and only to each other: swarm management, node
# gossip, the overlay's VXLAN, NFS, the join token and the hub's API (servers on workers).
CLUSTER_PORTS = (
    (2377, "tcp"),
    (7946, "tcp"),
    (7946, "udp"),
    (4789, "udp"),
    (2049, "tcp"),
    (SWARM_TOKEN_PORT, "tcp"),
    (HUB_PORT, "tcp"),
)
# The range swarm publishes the servers' ports in (the ingress routing mesh, on every node): the
# hub reaches them on the manager's own address; the firewall drops them from anywhere else.
SWARM_PUBLISHED_PORTS = (30000, 32767)
# Swarm's overlay networks (ingress included) come from here, not docker's default 10.0.0.0/8,
# which clashes with the usual OpenStack tenant networks.
SWARM_ADDRESS_POOL = "172.29.0.0/16"
SWARM_INGRESS_SUBNET = "172.29.255.0/24"
CLUSTER_UNITS = ("bakery-cluster.service", "bakery-swarm-token.service")
# Debian's units that must not start on a worker (no hub there, no NFS server): their drop-in.
WORKER_OFF_DROPIN = "/etc/systemd/system/{unit}.d/bakery-cluster.conf"
WORKER_OFF_UNITS = ("nginx.service", "nfs-server.service")

# Files bakery writes or edits outside its own folders, and the folders it owns: user `files:`
# may replace neither (render also refuses any path written twice, whatever this list says).
MANAGED_FILES = frozenset(
    {
        NGINX_SITE,
        SSHD_DROPIN,
        DOCKER_DAEMON_JSON,
        LAB_PAGE_CONFIG,
        LOGIN_DEFS,
        RECORD_PATH,
        APPLIED_FILE,
        EXPIRY_FILE,
        HOMES_FILE,
        SHARED_DATA_SOURCE,
        *(CLUSTER_ROLE_FILE.format(role=role) for role in ("manager", "worker")),
        *(f"{UNIT_DIR}/{unit}" for unit in (*UNITS, USER_IMAGE_UNIT, *EXPIRY_UNITS)),
        *(f"{UNIT_DIR}/{unit}" for unit in CLUSTER_UNITS),
        *(f"{UNIT_DIR}/{unit}" for unit in TLS_RETRY_UNITS),
    }
)
MANAGED_DIRS = frozenset(
    {
        HUB_PREFIX,
        CONDA_PREFIX,
        WORKSHOP_ENV,
        PROXY_DIR,
        CONFIG_DIR,
        STATE_DIR,
        SCRIPT_DIR,
        ACME_ROOT,
        COURSE_DIR,
        posixpath.dirname(RECORD_PATH),
        posixpath.dirname(USER_IMAGE_ARCHIVE),
        # A swarm's homes over NFS: a folder there would hide the workers' mount.
        posixpath.dirname(CLUSTER_HOME),
    }
)
