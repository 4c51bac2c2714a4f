"""The sections of workshop.yaml: hub, users, spawner, cluster, TLS, ssh, files, content."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    model_validator,
)

from bakery import versions
from bakery.config.fields import (
    AbsPath,
    ArchivePath,
    CloudName,
    Email,
    EnvName,
    EnvValue,
    FileMode,
    FileOwner,
    Hostname,
    HttpsUrl,
    ImageRef,
    ImportWord,
    LoginName,
    SshKey,
    StrictModel,
    Username,
    UserPrefix,
    Version,
    check_username,
)
from bakery.config.units import DiskSize, MemSize
from bakery.errors import FieldError

# --- sections -----------------------------------------------------------------------------------


def _docker_subnet(value: str) -> str:
    try:
        net = ipaddress.IPv4Network(value)
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    # is_private also holds for link-local (the metadata service 169.254.169.254 lives there),
    # loopback, "this network" (0/8) and the reserved 240/4: none of them may carry containers.
    bad = [
        (net.is_link_local, "link-local (it holds the metadata service 169.254.169.254)"),
        (net.is_loopback, "loopback"),
        (net.is_multicast, "multicast"),
        (net.is_reserved, "reserved"),
        (net.is_unspecified or net.subnet_of(ipaddress.IPv4Network("0.0.0.0/8")), "unspecified"),
    ]
    for hit, what in bad:
        if hit:
            raise ValueError(f"{net} is a {what} range; use a private one such as 172.30.0.0/24")
    if net.prefixlen > 28 or not net.is_private:
        raise ValueError(
            f"{net}: use a private IPv4 network of /28 or larger (10/8, 172.16/12, 192.168/16)"
        )
    return str(net)


DockerSubnet = Annotated[str, AfterValidator(_docker_subnet)]


class Versions(StrictModel):
    """Pinned component versions; the defaults live in bakery/versions.py."""

    jupyterhub: Version = Field(versions.JUPYTERHUB, description="JupyterHub (pip).")
    dockerspawner: Version = Field(versions.DOCKERSPAWNER, description="dockerspawner (pip).")
    configurable_http_proxy: Version = Field(
        versions.CONFIGURABLE_HTTP_PROXY, description="configurable-http-proxy (npm)."
    )
    idle_culler: Version = Field(
        versions.JUPYTERHUB_IDLE_CULLER, description="jupyterhub-idle-culler (pip)."
    )
    oauthenticator: Version = Field(
        versions.OAUTHENTICATOR, description="oauthenticator (pip), for auth.kind oidc, github."
    )
    systemdspawner: Version = Field(
        versions.JUPYTERHUB_SYSTEMDSPAWNER,
        description="jupyterhub-systemdspawner (pip), with spawner.kind systemd.",
    )
    jupyterlab: Version = Field(
        versions.JUPYTERLAB, description="JupyterLab on the host, with spawner.kind systemd."
    )


class Hub(StrictModel):
    """How the hub itself is installed on the VM."""

    install: Literal["venv", "conda"] = Field(
        "venv",
        description="venv: a Python venv from the distro's python3-venv; conda: a pinned, "
        "checksummed Miniforge.",
    )
    versions: Versions = Field(Versions(), description="Pinned versions of the hub's parts.")


class Users(StrictModel):
    """Trainee and admin accounts: Linux users that log in to the hub with a password."""

    prefix: UserPrefix = Field(
        "training", description="Trainee names are PREFIX01, PREFIX02, ... (with count)."
    )
    count: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        None,
        description="How many PREFIXnn trainees (1-1000); default 30 unless names are given.",
    )
    names: list[Username] = Field([], description="Explicit trainee names (before PREFIXnn).")
    admins: Annotated[list[Username], Field(max_length=50)] = Field(
        ["instructor"],
        description="Hub admins; they log in with a password too, always their own.",
    )
    password: Literal["random", "shared"] = Field(  # (a mode, not a password)
        "random",
        description="random: one password per account; shared: one for all trainees "
        "(admins still get their own).",
    )
    password_length: Annotated[int, Field(ge=8, le=64)] = Field(
        12, description="Characters per generated password (8-64)."
    )

    @model_validator(mode="after")
    def _unique(self) -> Users:
        where = {name: ("names", i) for i, name in enumerate(self.names)}
        where.update({name: ("admins", i) for i, name in enumerate(self.admins)})
        seen: set[str] = set()
        for name in self.all_names():
            loc = where.get(name, ("prefix",))
            try:
                check_username(name)
            except ValueError as exc:
                raise FieldError(loc, f"generated name {exc}") from None
            if name in seen:
                raise FieldError(
                    loc, f"user {name!r} is listed twice (trainees and admins together)"
                )
            seen.add(name)
        if len(self.trainees()) > 1000:
            raise FieldError(
                ("count",), f"{len(self.trainees())} trainees is more than the 1000 supported"
            )
        return self

    def trainees(self) -> list[str]:
        """Trainee names: the explicit list, then PREFIX01..PREFIXnn (30 when nothing is set)."""
        count = self.count if self.count is not None else (0 if self.names else 30)
        width = max(2, len(str(count)))
        return [*self.names, *(f"{self.prefix}{i:0{width}d}" for i in range(1, count + 1))]

    def all_names(self) -> list[str]:
        """Every account bakery creates: trainees first, then admins."""
        return [*self.trainees(), *self.admins]


class ImageArchive(StrictModel):
    """A local user image, copied into the golden image and loaded there instead of a pull.

    ``docker-save``: a ``docker save`` tarball (``docker load``; tagged ``spawner.image`` if it
    holds one image under another name). ``rootfs``: a root filesystem tarball (``docker
    import``), which carries no image settings: ``entrypoint``, ``cmd`` and ``env`` restore them.
    """

    path: ArchivePath = Field(
        description="The archive on the machine that bakes: absolute, ~/..., or relative to "
        "workshop.yaml's folder."
    )
    format: Literal["docker-save", "rootfs"] = Field(
        "docker-save", description="docker-save: `docker save` output; rootfs: a root tarball."
    )
    entrypoint: list[ImportWord] = Field([], description="rootfs only: the image's ENTRYPOINT.")
    cmd: list[ImportWord] = Field([], description="rootfs only: the image's CMD (required).")
    env: dict[EnvName, EnvValue] = Field({}, description="rootfs only: the image's ENV.")

    @model_validator(mode="after")
    def _check(self) -> ImageArchive:
        given = [f for f in ("entrypoint", "cmd", "env") if getattr(self, f)]
        if self.format == "docker-save" and given:
            raise FieldError(
                (given[0],),
                f"{', '.join(given)}: only for format: rootfs (a docker save archive keeps the "
                "image's own settings)",
            )
        if self.format == "rootfs" and not self.cmd:
            raise FieldError(
                ("format",),
                "format rootfs needs cmd (e.g. [jupyterhub-singleuser]): docker import keeps no "
                "CMD, and the spawner starts the image's CMD",
            )
        return self

    def source(self, config_dir: Path) -> Path:
        """The archive on this machine: ``path`` with ``~`` expanded, relative to ``config_dir``."""
        return config_dir / Path(self.path).expanduser()


class Spawner(StrictModel):
    """Where each trainee's notebook server runs."""

    kind: Literal["docker", "systemd"] = Field(
        "docker",
        description="docker: one container per trainee (SystemUserSpawner); systemd: one "
        "systemd unit per trainee on the host.",
    )
    image: ImageRef = Field(versions.USER_IMAGE, description="The trainees' container image.")
    image_archive: ImageArchive | None = Field(
        None,
        description="Load the user image from this archive (shipped in the golden image) "
        "instead of pulling it (docker only).",
    )
    mem_limit: MemSize = Field("2G", description="Memory per trainee (128M-4T), e.g. 2G.")
    disk_limit: DiskSize = Field(
        "auto",
        description="Disk per trainee's home, enforced by the filesystem (a project quota on "
        "the homes' own XFS filesystem, both spawners, a swarm's NFS homes too), e.g. 2G; "
        "auto: what `bakery size` counts per home (0.5 GB plus openstack.data_gb_per_user); "
        "none: no quota (the homes stay on the root filesystem; one trainee can fill it). "
        "Admins' homes have no quota.",
    )
    cpu_limit: Annotated[float, Field(gt=0, le=256)] = Field(1.0, description="CPUs per trainee.")
    idle_cull_minutes: Annotated[int, Field(ge=0, le=10080)] = Field(
        60, description="Stop servers idle this long (files stay); 0: never."
    )
    network_subnet: DockerSubnet = Field(
        "172.30.0.0/24",
        description="The private docker network the containers join (/28 or larger); the hub "
        "listens on its gateway.",
    )
    default_url: Literal["/lab", "/tree"] = Field(
        "/lab", description="Where a trainee lands: JupyterLab or the classic tree."
    )

    @model_validator(mode="after")
    def _check(self) -> Spawner:
        if self.kind == "systemd" and self.image_archive is not None:
            raise FieldError(("image_archive",), "image_archive needs spawner.kind: docker")
        return self

    @property
    def gateway(self) -> str:
        """The docker network's gateway: the address containers reach the hub on."""
        return str(next(ipaddress.IPv4Network(self.network_subnet).hosts()))


class Cluster(StrictModel):
    """One hub over a Docker swarm of VMs: the manager runs the hub, workers run the servers."""

    engine: Literal["none", "swarm"] = Field(
        "none",
        description="none: one VM per hub (openstack.count alike hubs); swarm: one hub on a "
        "manager VM, the trainees' servers as swarm services on worker VMs, /home over NFS.",
    )
    workers: Annotated[int, Field(ge=1, le=50)] = Field(
        2, description="Worker VMs (1-50), with engine swarm; `bakery scale` changes it."
    )
    worker_flavor: CloudName = Field(
        "auto", description="The workers' flavor; auto: the smallest that fits `bakery size`."
    )
    manager_runs_servers: bool = Field(
        False,
        description="Let trainees' servers run on the manager too (a small class); default: "
        "workers only, the manager keeps the hub, the proxy and NFS.",
    )

    @property
    def swarm(self) -> bool:
        """Whether the workshop is a swarm cluster."""
        return self.engine == "swarm"

    @model_validator(mode="after")
    def _swarm_keys_need_swarm(self) -> Cluster:
        # `cluster: {workers: 4}` without the engine would launch one VM and look like it worked.
        if not self.swarm:
            for key in ("workers", "worker_flavor", "manager_runs_servers"):
                if key in self.model_fields_set:
                    raise FieldError(
                        (key,),
                        f"{key} is only used by a cluster: set cluster.engine: swarm "
                        f"(or remove {key} for one VM per hub)",
                    )
        return self


# Let's Encrypt's production ACME directory: certbot's default, tls.acme_server's too.
LETSENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"


class Tls(StrictModel):
    """HTTPS in front of the hub; HTTP always redirects to it."""

    mode: Literal["self-signed", "letsencrypt"] = Field(
        "self-signed",
        description="self-signed: a certificate made on the VM; letsencrypt: certbot for "
        "domain (needs domain and email).",
    )
    domain: Hostname | None = Field(
        None, description="The DNS name pointing at the VM (letsencrypt); also its host name."
    )
    email: Email | None = Field(None, description="Where Let's Encrypt mails expiry notices.")
    acme_server: HttpsUrl | None = Field(
        None,
        description="The ACME directory certbot asks (letsencrypt; default Let's Encrypt's, "
        f"{LETSENCRYPT_DIRECTORY}): a site's own ACME CA (step-ca, ...); put that CA's root in "
        "ca_certificates.",
    )

    @model_validator(mode="after")
    def _letsencrypt_needs(self) -> Tls:
        if self.acme_server is not None and self.mode != "letsencrypt":
            raise FieldError(
                ("acme_server",),
                "acme_server is only used with mode letsencrypt: set mode: letsencrypt (with "
                "domain and email) or remove acme_server",
            )
        if self.mode == "letsencrypt":
            missing = [f for f in ("domain", "email") if getattr(self, f) is None]
            if missing:
                raise FieldError(
                    ("mode",),
                    f"mode letsencrypt needs {' and '.join(missing)}: Let's Encrypt issues a "
                    "certificate for a DNS name that points at the VM and mails expiry notices",
                )
        return self


class Ssh(StrictModel):
    """Who may log in over ssh: only the admin login user, by key."""

    login_user: LoginName | None = Field(
        None,
        description="The only ssh login. Default: the image's user (ubuntu, debian). Another "
        "name is created with sudo and authorized_keys.",
    )
    authorized_keys: list[SshKey] = Field(
        [], description="Public keys for the login user (the cloud's key pair is added too)."
    )


_DANGEROUS_MODE = 0o7000 | 0o002
# Virtual filesystems: nothing written there at boot survives or means what it seems.
_VIRTUAL = ("/proc", "/sys", "/dev")


def _file_path(value: str) -> str:
    parts = value.split("/")[1:]
    if value == "/" or value.endswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"{value!r} names a folder, not a file: write a file path without '.', '..', "
            "'//' or a trailing '/'"
        )
    if any(value == v or value.startswith(v + "/") for v in _VIRTUAL):
        raise ValueError(f"{value!r} is on a virtual filesystem (/proc, /sys, /dev)")
    return value


class ExtraFile(StrictModel):
    """A file written onto the VM at boot, after bakery's own files."""

    path: Annotated[AbsPath, AfterValidator(_file_path)] = Field(
        description="Absolute path on the VM; not one of bakery's own files or folders."
    )
    content: str = Field(description="The file's text.")
    permissions: FileMode = Field(
        "0644",
        description="Octal mode, quoted ('0644'); setuid/setgid/sticky and "
        "world-writable modes need unsafe_permissions.",
    )
    owner: FileOwner = Field("root:root", description="USER:GROUP owning the file.")
    unsafe_permissions: bool = Field(
        False,
        description="Allow a setuid, setgid, sticky or world-writable mode (you know why).",
    )

    @model_validator(mode="after")
    def _check(self) -> ExtraFile:
        mode = int(self.permissions, 8)
        if mode & _DANGEROUS_MODE and not self.unsafe_permissions:
            raise FieldError(
                ("permissions",),
                f"{self.permissions!r} is setuid, setgid, sticky or world-writable; use e.g. "
                "'0644' or '0755' (or set unsafe_permissions: true if you mean it)",
            )
        return self
