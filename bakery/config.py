"""The workshop model: what workshop.yaml may say, its defaults, loading with clear errors."""

from __future__ import annotations

import difflib
import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from bakery import versions
from bakery.errors import ConfigError

# --- constrained strings -----------------------------------------------------------------------
# Every string that ends up in a shell script, a Python file, an nginx config or a unit file is
# either constrained here to a safe alphabet or quoted by the template filter for its language.

# POSIX portable user names, lower case (useradd's default NAME_REGEX), at most 32 characters.
_USERNAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Accounts that exist on Ubuntu/Debian cloud images or that bakery's services use.
RESERVED_USERNAMES = frozenset(
    [
        "root",
        "daemon",
        "bin",
        "sys",
        "sync",
        "games",
        "man",
        "lp",
        "mail",
        "news",
        "uucp",
        "proxy",
        "www-data",
        "backup",
        "list",
        "irc",
        "gnats",
        "nobody",
        "_apt",
        "systemd-network",
        "systemd-resolve",
        "systemd-timesync",
        "systemd-coredump",
        "messagebus",
        "syslog",
        "sshd",
        "uuidd",
        "tcpdump",
        "tss",
        "landscape",
        "pollinate",
        "polkitd",
        "usbmux",
        "lxd",
        "dnsmasq",
        "fwupd-refresh",
        "_chrony",
        "ubuntu",
        "debian",
        "cloud-user",
        "admin",
        "docker",
        "jupyterhub",
        "jovyan",
        "nginx",
        "certbot",
    ]
)


def _username(value: str) -> str:
    if not _USERNAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid Linux user name: use 1-32 characters, lower-case letters, "
            "digits, '_' or '-', starting with a letter or '_'"
        )
    if value in RESERVED_USERNAMES:
        raise ValueError(f"{value!r} is a reserved system account name; pick another name")
    return value


Username = Annotated[str, AfterValidator(_username)]


def _login_name(value: str) -> str:
    if not _USERNAME_RE.match(value) or value == "root":
        raise ValueError(f"{value!r} is not a valid login user (a non-root POSIX user name)")
    return value


# The image's admin user (ubuntu, debian, ...): a system name, so not held to RESERVED_USERNAMES.
LoginName = Annotated[str, AfterValidator(_login_name)]

# A workshop name becomes a hostname, a resource tag and part of file names: a DNS label.
WorkshopName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$"),
]
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


def _hostname(value: str) -> str:
    value = value.lower()
    if not _HOSTNAME_RE.match(value):
        raise ValueError(f"{value!r} is not a valid DNS name (letters, digits, '-' and '.')")
    return value


Hostname = Annotated[str, AfterValidator(_hostname)]


def _email(value: str) -> str:
    if not re.match(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$", value):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


Email = Annotated[str, AfterValidator(_email)]

# PEP 440-ish release strings, also safe in a shell word and an npm/pip spec.
Version = Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+){0,3}([a-z0-9.+-]{0,20})$")]

# Debian package names (Policy 5.6.1), optionally pinned with =VERSION.
AptPackage = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")
]
# pip / conda requirement specs: a name and an optional version constraint, no URLs or options.
PackageSpec = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?"
        r"((==|>=|<=|~=|!=|>|<|=)[A-Za-z0-9.*+!-]+(,(==|>=|<=|~=|!=|>|<)[A-Za-z0-9.*+!-]+)*)?$"
    ),
]

# A container image reference (docker's reference grammar, lower-case repository, optional digest).
_IMAGE_RE = re.compile(
    r"^(?:(?:[a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+(?::[0-9]+)?/)?"  # registry host[:port]/
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"  # path
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"  # :tag
    r"(?:@sha256:[a-f0-9]{64})?$"  # @digest
)


def _image(value: str) -> str:
    if not _IMAGE_RE.match(value):
        raise ValueError(
            f"{value!r} is not a container image reference; expected e.g. "
            "'quay.io/jupyter/datascience-notebook:2025-03-14'"
        )
    return value


ImageRef = Annotated[str, AfterValidator(_image)]

_SIZE_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)i?B?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: str | int) -> int:
    """Bytes in a size such as ``512M``, ``2G``, ``1.5GiB`` or a plain integer."""
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a size; write e.g. '512M' or '2G'")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


def _mem_limit(value: str | int) -> str:
    size = parse_size(value)
    if size < 128 * 1024**2:
        raise ValueError(f"{value!r} is below 128M, too little for a notebook server")
    if size > 4 * 1024**4:
        raise ValueError(f"{value!r} is above 4T")
    # A canonical form docker and systemd both accept.
    for unit in ("G", "M", "K"):
        if size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return str(size)


MemSize = Annotated[str | int, AfterValidator(_mem_limit)]


def _abs_path(value: str) -> str:
    if not value.startswith("/") or "/../" in value + "/" or "\n" in value or "\0" in value:
        raise ValueError(f"{value!r} must be an absolute path without '..'")
    if not re.match(r"^[A-Za-z0-9_./@+-]+$", value):
        raise ValueError(f"{value!r}: use only letters, digits and _ . / @ + - in paths")
    return value


AbsPath = Annotated[str, AfterValidator(_abs_path)]


class _Model(BaseModel):
    """Unknown keys are errors (a typo must not silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sections -----------------------------------------------------------------------------------


class Versions(_Model):
    """Pinned component versions; the defaults live in bakery/versions.py."""

    jupyterhub: Version = versions.JUPYTERHUB
    dockerspawner: Version = versions.DOCKERSPAWNER
    configurable_http_proxy: Version = versions.CONFIGURABLE_HTTP_PROXY
    idle_culler: Version = versions.JUPYTERHUB_IDLE_CULLER
    systemdspawner: Version = versions.JUPYTERHUB_SYSTEMDSPAWNER
    jupyterlab: Version = versions.JUPYTERLAB


class Hub(_Model):
    """How the hub itself is installed on the VM."""

    install: Literal["venv", "conda"] = "venv"
    versions: Versions = Versions()


class Users(_Model):
    """Trainee and admin accounts: Linux users that log in to the hub with a password."""

    prefix: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]{0,27}$")] = "training"
    count: Annotated[int, Field(ge=1, le=1000)] | None = None
    names: list[Username] = []
    admins: Annotated[list[Username], Field(max_length=50)] = ["instructor"]
    password: Literal["random", "shared"] = "random"  # noqa: S105 (a mode, not a password)
    password_length: Annotated[int, Field(ge=8, le=64)] = 12

    @model_validator(mode="after")
    def _unique(self) -> Users:
        seen: set[str] = set()
        for name in self.all_names():
            _username(name)
            if name in seen:
                raise ValueError(f"user {name!r} is listed twice (trainees and admins together)")
            seen.add(name)
        if len(self.trainees()) > 1000:
            raise ValueError(f"{len(self.trainees())} trainees is more than the 1000 supported")
        return self

    def trainees(self) -> list[str]:
        """Trainee names: the explicit list, then PREFIX01..PREFIXnn (30 when nothing is set)."""
        count = self.count if self.count is not None else (0 if self.names else 30)
        width = max(2, len(str(count)))
        return [*self.names, *(f"{self.prefix}{i:0{width}d}" for i in range(1, count + 1))]

    def all_names(self) -> list[str]:
        """Every account bakery creates: trainees first, then admins."""
        return [*self.trainees(), *self.admins]


class CustomImage(_Model):
    """Extra packages layered onto the user image with a Dockerfile built on the VM at bake time."""

    apt: list[AptPackage] = []
    conda: list[PackageSpec] = []
    pip: list[PackageSpec] = []


def _archive_path(value: str) -> str:
    if not value or "\n" in value or "\0" in value or not re.match(r"^[A-Za-z0-9_./@+~-]+$", value):
        raise ValueError(
            f"{value!r}: use only letters, digits and _ . / @ + ~ - in the archive's path"
        )
    return value


# A path on the machine that bakes: absolute, ~/..., or relative to workshop.yaml's folder.
ArchivePath = Annotated[str, AfterValidator(_archive_path)]
# ENTRYPOINT/CMD words and ENV values restated for `docker import --change` (no line breaks).
_ImportWord = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{1,1000}$")]
_EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
_EnvValue = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_./:,+=@%-]{0,4000}$")]


class ImageArchive(_Model):
    """A local user image, copied into the golden image and loaded there instead of a pull.

    ``docker-save``: a ``docker save`` tarball (``docker load``; tagged ``spawner.image`` if it
    holds one image under another name). ``rootfs``: a root filesystem tarball (``docker
    import``), which carries no image settings: ``entrypoint``, ``cmd`` and ``env`` restore them.
    """

    path: ArchivePath
    format: Literal["docker-save", "rootfs"] = "docker-save"
    entrypoint: list[_ImportWord] = []
    cmd: list[_ImportWord] = []
    env: dict[_EnvName, _EnvValue] = {}

    @model_validator(mode="after")
    def _check(self) -> ImageArchive:
        given = [f for f in ("entrypoint", "cmd", "env") if getattr(self, f)]
        if self.format == "docker-save" and given:
            raise ValueError(
                f"{', '.join(given)}: only for format: rootfs (a docker save archive keeps the "
                "image's own settings)"
            )
        if self.format == "rootfs" and not self.cmd:
            raise ValueError(
                "format rootfs needs cmd (e.g. [jupyterhub-singleuser]): docker import keeps no "
                "CMD, and the spawner starts the image's CMD"
            )
        return self

    def source(self, config_dir: Path) -> Path:
        """The archive on this machine: ``path`` with ``~`` expanded, relative to ``config_dir``."""
        return config_dir / Path(self.path).expanduser()


class Spawner(_Model):
    """Where each trainee's notebook server runs."""

    kind: Literal["docker", "systemd"] = "docker"
    image: ImageRef = versions.USER_IMAGE
    custom_image: CustomImage | None = None
    # Load the image from this archive (shipped in the golden image) instead of pulling it.
    image_archive: ImageArchive | None = None
    mem_limit: MemSize = "2G"
    cpu_limit: Annotated[float, Field(gt=0, le=256)] = 1.0
    idle_cull_minutes: Annotated[int, Field(ge=0, le=10080)] = 60
    # The user-defined docker network the containers join; the hub listens on its gateway.
    network_subnet: str = "172.30.0.0/24"
    default_url: Literal["/lab", "/tree"] = "/lab"

    @model_validator(mode="after")
    def _check(self) -> Spawner:
        try:
            net = ipaddress.IPv4Network(self.network_subnet)
        except ValueError as exc:
            raise ValueError(f"network_subnet: {exc}") from None
        if net.prefixlen > 28 or not net.is_private:
            raise ValueError("network_subnet must be a private IPv4 network of /28 or larger")
        if self.kind == "systemd" and self.custom_image is not None:
            raise ValueError("custom_image needs spawner.kind: docker")
        if self.kind == "systemd" and self.image_archive is not None:
            raise ValueError("image_archive needs spawner.kind: docker")
        return self

    @property
    def gateway(self) -> str:
        """The docker network's gateway: the address containers reach the hub on."""
        return str(next(ipaddress.IPv4Network(self.network_subnet).hosts()))


class Tls(_Model):
    """HTTPS in front of the hub; HTTP always redirects to it."""

    mode: Literal["self-signed", "letsencrypt"] = "self-signed"
    domain: Hostname | None = None
    email: Email | None = None

    @model_validator(mode="after")
    def _letsencrypt_needs(self) -> Tls:
        if self.mode == "letsencrypt":
            missing = [f for f in ("domain", "email") if getattr(self, f) is None]
            if missing:
                raise ValueError(
                    f"mode letsencrypt needs {' and '.join(missing)}: Let's Encrypt issues a "
                    "certificate for a DNS name that points at the VM and mails expiry notices"
                )
        return self


class Ssh(_Model):
    """Who may log in over ssh: only the image's admin login user, by key."""

    login_user: LoginName | None = None
    authorized_keys: list[
        Annotated[str, StringConstraints(pattern=r"^(ssh|ecdsa|sk)-[A-Za-z0-9@._+/=: -]+$")]
    ] = []


class ExtraFile(_Model):
    """A file written onto the VM at boot."""

    path: AbsPath
    content: str
    permissions: Annotated[str, StringConstraints(pattern=r"^0?[0-7]{3,4}$")] = "0644"
    owner: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]*:[a-z_][a-z0-9_-]*$")] = (
        "root:root"
    )


OsName = Literal["ubuntu-24.04", "ubuntu-22.04", "debian-12"]
DEFAULT_LOGIN_USER = {"ubuntu-24.04": "ubuntu", "ubuntu-22.04": "ubuntu", "debian-12": "debian"}


def _packer_text(value: str) -> str:
    # Packer escapes nothing for us: bakery writes these as escaped HCL strings, but Packer then
    # reads "{{" in builder settings as a Go template, so such values are refused outright.
    if not value or len(value) > 255:
        raise ValueError("use 1-255 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{value!r}: no control characters or line breaks")
    if "{{" in value or "}}" in value:
        raise ValueError(f"{value!r}: '{{{{' and '}}}}' are not allowed (Packer templates)")
    return value


# An OpenStack name or ID (image, flavor, network, security group) or a property value.
PackerText = Annotated[str, AfterValidator(_packer_text)]
# Glance image names become file names for the qemu source too: a safe alphabet.
ImageName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
# Glance property keys (os_distro, hw_disk_bus, ...); bakery_* is bakery's own record.
PropertyKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$")]
NetworkId = Annotated[
    str, StringConstraints(pattern=r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")
]


def _build_user(value: str) -> str:
    if not _USERNAME_RE.match(value) or value == "root":
        raise ValueError(
            f"{value!r} is not the image's default login user (a Linux user name, not root); "
            "bakery deletes this user from the image after the bake"
        )
    return value


BuildUser = Annotated[str, AfterValidator(_build_user)]


# OpenStack resource names and IDs: letters, digits and a few separators, no shell or YAML syntax.
CloudName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._:/@+-]{0,254}$")]


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not a network such as 203.0.113.0/24") from None


class OpenStack(_Model):
    """Where `bakery launch` puts the workshop: an OpenStack cloud from clouds.yaml."""

    cloud: CloudName | None = None  # a clouds.yaml entry; default: $OS_CLOUD
    flavor: CloudName = "auto"  # a flavor name or ID; auto: the smallest that fits `bakery size`
    image: CloudName | None = None  # image name or ID (`launch --image` overrides)
    networks: list[CloudName] = []  # network names or IDs; empty: the project's only network
    floating_ip_network: CloudName | None = None  # external network; none: no floating IP
    key_name: CloudName | None = None  # default bakery-<name>; made from public_key if missing
    public_key: str | None = None  # path to an ssh public key (~ allowed)
    security_group: CloudName | None = None  # default bakery-<name>
    admin_cidr: Annotated[str, AfterValidator(_cidr)] = "0.0.0.0/0"  # who may ssh (port 22)
    count: Annotated[int, Field(ge=1, le=50)] = 1  # servers; trainees are split among them
    boot_volume: bool = False  # boot from a new Cinder volume (deleted with the server)
    volume_size: Annotated[int, Field(ge=10, le=16384)] = 40  # GB, with boot_volume
    metadata: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,200}$")],
        Annotated[str, StringConstraints(max_length=255)],
    ] = {}
    hub_timeout_minutes: Annotated[int, Field(ge=1, le=240)] = 45
    # Sizing rules of `bakery size` (documented in bakery/sizing.py).
    data_gb_per_user: Annotated[float, Field(ge=0, le=1000)] = 0.05
    concurrency: Annotated[float, Field(gt=0, le=1)] = 1.0

    @model_validator(mode="after")
    def _check(self) -> OpenStack:
        reserved = sorted(k for k in self.metadata if k.startswith("bakery"))
        if reserved:
            raise ValueError(f"metadata: {', '.join(reserved)}: bakery* keys are bakery's own")
        return self


class Bake(_Model):
    """The golden image `bakery bake` builds with Packer: on OpenStack, or locally with qemu."""

    # The image's name: NAME-YYYYMMDD-hhmm (date, UTC at build), NAME-VERSION-CONFIGHASH, or NAME.
    image_name: ImageName | None = None  # default: bakery-<workshop name>
    image_suffix: Literal["date", "version", "none"] = "date"
    image_visibility: Literal["private", "shared", "community", "public"] = "private"
    # Extra Glance properties (e.g. os_distro: ubuntu); bakery adds bakery_* keys itself.
    image_properties: dict[PropertyKey, PackerText] = {}
    # -- source "openstack" --
    source_image: PackerText | None = None  # image name or ID; default: a guess from `os`
    flavor: PackerText = "m1.medium"
    networks: list[NetworkId] = []  # network UUIDs; empty: the project's only network
    floating_ip_network: PackerText | None = None  # external network for a floating IP
    security_groups: list[PackerText] = []  # must allow ssh (22) from where Packer runs
    ssh_user: BuildUser | None = None  # the source image's default user; default: from `os`
    volume_backed: bool = False  # boot the builder from a Cinder volume
    volume_size: Annotated[int, Field(ge=1, le=16384)] | None = None  # GB, with volume_backed
    # -- source "qemu" (local bake from a qcow2 cloud image with cloud-init's NoCloud) --
    qemu_base_image: AbsPath | None = None
    qemu_disk_size: Annotated[int, Field(ge=2, le=2048)] = 20  # GB
    qemu_memory: Annotated[int, Field(ge=512, le=262144)] = 2048  # MiB
    qemu_cpus: Annotated[int, Field(ge=1, le=64)] = 2
    qemu_accelerator: Literal["kvm", "tcg", "hvf", "whpx"] = "kvm"

    @model_validator(mode="after")
    def _check(self) -> Bake:
        if self.volume_size is not None and not self.volume_backed:
            raise ValueError("volume_size needs volume_backed: true")
        reserved = sorted(k for k in self.image_properties if k.startswith("bakery_"))
        if reserved:
            raise ValueError(f"image_properties: {', '.join(reserved)}: bakery_* keys are bakery's")
        return self


class Workshop(_Model):
    """A workshop: one hub on one VM (or several alike) for a class of trainees."""

    name: WorkshopName
    os: OsName = "ubuntu-24.04"
    hostname: Hostname | None = None
    hub: Hub = Hub()
    users: Users = Users()
    spawner: Spawner = Spawner()
    tls: Tls = Tls()
    ssh: Ssh = Ssh()
    packages: list[AptPackage] = []
    files: list[ExtraFile] = []
    bake: Bake = Bake()
    openstack: OpenStack = OpenStack()

    @model_validator(mode="after")
    def _cross_checks(self) -> Workshop:
        login = self.login_user
        if login in self.users.all_names():
            raise ValueError(
                f"users: {login!r} is the ssh login user; trainees and admins need other names"
            )
        paths = [f.path for f in self.files]
        dupes = sorted({p for p in paths if paths.count(p) > 1})
        if dupes:
            raise ValueError(f"files: {', '.join(dupes)} listed more than once")
        return self

    @property
    def login_user(self) -> str:
        """The admin ssh user: the image's default user unless set."""
        return self.ssh.login_user or DEFAULT_LOGIN_USER[self.os]

    @property
    def fqdn(self) -> str:
        """The VM's host name: tls.domain, else hostname, else the workshop name."""
        return self.tls.domain or self.hostname or self.name


# --- loading ------------------------------------------------------------------------------------


class _LineLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys (PyYAML would silently keep the last one)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {seen[key]})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_index(node: yaml.Node | None) -> dict[tuple[Any, ...], int]:
    """Map each key path (as pydantic reports it in ``loc``) to its 1-based line in the file."""
    index: dict[tuple[Any, ...], int] = {}

    def walk(n: yaml.Node, path: tuple[Any, ...]) -> None:
        index.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                index[(*path, k.value)] = k.start_mark.line + 1
                walk(v, (*path, k.value))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, (*path, i))

    if node is not None:
        walk(node, ())
    return index


def _fields_of(loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed where ``loc`` points (for "did you mean" hints)."""
    model: Any = Workshop
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if model is None:
            inner = [a for c in candidates for a in getattr(c, "__args__", ())]
            model = next(
                (c for c in inner if isinstance(c, type) and issubclass(c, BaseModel)), None
            )
        if model is None:
            return []
    return list(model.model_fields)


def _format_errors(path: Path, exc: ValidationError, lines: dict[tuple[Any, ...], int]) -> str:
    out: list[tuple[int, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        # Drop pydantic's internal union/function markers from the location.
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p == "")))
        line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
        where = f"{path}:{line}" if line else str(path)
        field = ".".join(str(p) for p in loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _fields_of(loc)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            msg = f"unknown key{hint} (allowed here: {', '.join(allowed)})"
        elif err["type"] == "missing":
            msg = "required field is missing"
        out.append((line or 0, f"{where}: {field}: {msg}"))
    return "\n".join(text for _, text in sorted(out, key=lambda item: item[0]))


def parse_config(text: str, path: Path) -> Workshop:
    """Validate workshop YAML ``text`` (read from ``path``, used in messages)."""
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty; `bakery init {path}` writes a starter")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping of settings (name: ..., users: ...)")
    try:
        return Workshop.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc, _line_index(node))) from None


def load_config(path: str | Path) -> Workshop:
    """Read and validate a workshop file.

    Raises:
        ConfigError: with ``file:line: field: message`` lines.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; `bakery init {path}` writes a starter") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_config(text, path)
