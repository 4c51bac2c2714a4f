"""The Workshop model (workshop.yaml whole, its cross-checks), loaded with clear errors."""

from __future__ import annotations

import base64
import datetime
import gzip
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from bakery import layout
from bakery.config.auth import Auth
from bakery.config.certificates import PemCertificate
from bakery.config.content import Course, SharedData
from bakery.config.environment import Environment
from bakery.config.fields import AptPackage, Hostname, Kernel, StrictModel, WorkshopName
from bakery.config.infra import NOVA_USER_DATA_LIMIT, Bake, OpenStack
from bakery.config.messages import format_errors
from bakery.config.sections import Cluster, ExtraFile, Hub, Spawner, Ssh, Tls, Users
from bakery.config.units import Duration, EndsAt, WarmAt
from bakery.config.yamlload import load_yaml
from bakery.errors import ConfigError, FieldError

__all__ = ["Workshop", "load_config", "parse_config"]


OsName = Literal["ubuntu-24.04", "ubuntu-22.04", "debian-12"]
DEFAULT_LOGIN_USER = {"ubuntu-24.04": "ubuntu", "ubuntu-22.04": "ubuntu", "debian-12": "debian"}


class Workshop(StrictModel):
    """A workshop: one hub on one VM (or several alike) for a class of trainees."""

    name: WorkshopName = Field(
        description="The workshop's name: host name, cloud tags, file names (a DNS label)."
    )
    os: OsName = Field("ubuntu-24.04", description="The VM's operating system image.")
    hostname: Hostname | None = Field(
        None, description="The VM's host name; default: tls.domain, else the name."
    )
    hub: Hub = Field(Hub(), description="How the hub is installed.")
    users: Users = Field(Users(), description="Trainee and admin accounts.")
    auth: Auth = Field(
        Auth(),
        description="Who logs in: bakery's accounts (default), an OpenID Connect provider or "
        "GitHub.",
    )
    spawner: Spawner = Field(Spawner(), description="Where trainees' servers run.")
    tls: Tls = Field(Tls(), description="HTTPS certificate.")
    ssh: Ssh = Field(Ssh(), description="Admin ssh access.")
    packages: list[AptPackage] = Field([], description="Extra apt packages on the VM.")
    kernels: list[Kernel] = Field(
        [],
        description="Notebook kernels beside Python, for spawner.kind systemd: r (R with "
        "IRkernel, the distro's r-base-core and r-cran-irkernel, installed at bake). julia is "
        "refused: no registry bakery uses has it. With spawner.kind docker the kernels are the "
        "image's (the default datascience-notebook has Python, R and Julia), so kernels is "
        "refused there.",
    )
    environment: Environment | None = Field(
        None,
        description="The course's software for both spawners: PyPI packages (locked by "
        "`bakery lock`), apt and R packages, from a Binder-style folder or listed here.",
    )
    files: list[ExtraFile] = Field([], description="Extra files written on the VM at boot.")
    shared_data: SharedData | None = Field(
        None, description="A shared data folder: read-only for trainees, read-write for admins."
    )
    course: Course | None = Field(
        None, description="Course material in every trainee's ~/course (a folder or a git repo)."
    )
    ca_certificates: Annotated[list[PemCertificate], Field(max_length=20)] = Field(
        [],
        description="Up to 20 CA certificates added to the VM's trust store before anything "
        "is downloaded (a site's TLS-inspecting proxy or internal CA): apt, curl, the hub's pip "
        "(venv) and Node.js use it; conda keeps its own. Each a `|` block of PEM, public (never "
        "a key); baked into a golden image.",
    )
    cluster: Cluster = Field(
        Cluster(), description="One hub over several VMs (a Docker swarm), for a large class."
    )
    bake: Bake = Field(Bake(), description="The golden image (`bakery bake`).")
    openstack: OpenStack = Field(OpenStack(), description="The cloud (`bakery launch`).")
    ends: EndsAt | None = Field(
        None,
        description="When the workshop ends, with its UTC offset (2026-12-01T18:00:00+01:00) or "
        "a time zone name (2026-12-01 18:00 Europe/Berlin): "
        "the VM shows a banner from an hour before, refuses trainees' new logins from then on, "
        "and powers off after grace; `launch` refuses an ended workshop.",
    )
    grace: Duration = Field(
        7200,
        description="How long after ends trainees may still download their work before the "
        "servers stop and the VM powers off (90s, 30m, 2h; at most 24h).",
    )
    warm: WarmAt = Field(
        "none",
        description="Start every trainee's server before they arrive: boot (once the hub is "
        "up), a time (2026-12-07T08:30:00+01:00 or 2026-12-07 08:30 Europe/Berlin; before "
        "ends), or none. Started at the rate the VM sustains and never past its server limit "
        "(what is left cold is said, with why); the idle culler leaves a warmed server alone "
        "until its trainee has logged in once. `bakery warm` does it on a running hub.",
    )

    # The file the workshop was read from: its lock and environment folder are beside it.
    _path: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _cross_checks(self) -> Workshop:
        self._check_login_user()
        self._check_files()
        self._check_kernels()
        self._check_environment()
        self._check_cluster()
        self._check_ends()
        self._check_warm()
        self._check_auth()
        if self.tls.mode == "letsencrypt" and self.openstack.count > 1:
            raise FieldError(
                ("openstack", "count"),
                f"tls.mode letsencrypt names one domain ({self.tls.domain}), which cannot point "
                f"at {self.openstack.count} servers; use count: 1 or tls.mode: self-signed",
            )
        return self

    def _check_cluster(self) -> None:
        if not self.cluster.swarm:
            return
        if self.spawner.kind != "docker":
            raise FieldError(
                ("cluster", "engine"),
                "a swarm runs the trainees' servers as docker services: set spawner.kind: docker "
                "(or cluster.engine: none)",
            )
        if self.openstack.count > 1:
            raise FieldError(
                ("openstack", "count"),
                f"cluster.engine swarm is one hub over {self.cluster.workers} workers; "
                f"openstack.count {self.openstack.count} is several separate hubs: use one or "
                "the other (count: 1 with the cluster)",
            )

    def _check_auth(self) -> None:
        if not self.auth.oauth:
            return
        kind = self.auth.kind
        for field in ("names", "admins", "password", "password_length", "prefix"):
            # (A default written out, as `bakery init` and `config show` do, is let through.)
            if getattr(self.users, field) != Users.model_fields[field].default:
                raise FieldError(
                    ("users", field),
                    f"with auth.kind {kind} people log in with the provider's accounts, made on "
                    "the VM at their first login: remove users."
                    f"{field} (admins go in auth.admin_users; users.count is the class's size, "
                    "for sizing)",
                )
        if self.openstack.count > 1:
            raise FieldError(
                ("openstack", "count"),
                f"auth.kind {kind} registers one hub (its redirect URL) with the provider: use "
                "count: 1, or a swarm cluster for a large class",
            )
        if self.warm != "none":
            raise FieldError(
                ("warm",),
                f"with auth.kind {kind} nobody has an account before they log in, so no server "
                "can be started for them ahead: remove warm",
            )

    def _check_warm(self) -> None:
        if not isinstance(self.warm, datetime.datetime) or self.ends is None:
            return
        if self.warm >= self.ends:
            raise FieldError(
                ("warm",),
                f"{self.warm.isoformat()} is not before ends ({self.ends.isoformat()}): the "
                "servers would start after the class; write a time before it, or boot",
            )

    def _check_ends(self) -> None:
        # A workshop ends in this century or the next: a year near 1 or 9999 is a typo, and
        # ends + grace would overflow Python's dates later (at render, status, expiry).
        if self.ends is not None and not 2000 <= self.ends.year <= 2199:
            raise FieldError(
                ("ends",),
                f"{self.ends.isoformat()}: write the workshop's end in the years 2000-2199, "
                "e.g. 2026-12-01T18:00:00+01:00",
            )

    def _check_kernels(self) -> None:
        for i, kernel in enumerate(self.kernels):
            if kernel in self.kernels[:i]:
                raise FieldError(("kernels", i), f"{kernel} is listed twice")
        if self.kernels and self.spawner.kind == "docker":
            raise FieldError(
                ("kernels",),
                "with spawner.kind docker the kernels come from the user image (the default "
                "quay.io/jupyter/datascience-notebook has Python, R and Julia): remove kernels, "
                "or use spawner.kind: systemd to install them on the VM",
            )

    def _check_environment(self) -> None:
        env = self.environment
        if env is None:
            return
        if self.spawner.kind == "systemd":
            if env.conda:
                raise FieldError(
                    ("environment", "conda"),
                    "conda packages need spawner.kind: docker (the image's mamba); for a systemd "
                    "workshop list PyPI packages under pip and Debian's under apt",
                )
            if env.python is not None:
                raise FieldError(
                    ("environment", "python"),
                    "with spawner.kind systemd the Python is the VM's: remove environment.python",
                )
            if env.r and "r" not in self.kernels:
                raise FieldError(
                    ("environment", "r"), "R packages need the R kernel: add kernels: [r]"
                )
        elif env.r and self.spawner.image.startswith("quay.io/jupyter/"):
            raise FieldError(
                ("environment", "r"),
                f"{self.spawner.image}'s R is conda's, which Debian's r-cran-* packages do not "
                "reach: list them under conda as r-NAME (e.g. r-ggplot2)",
            )

    @property
    def source_path(self) -> Path | None:
        """The workshop file this was read from (None for one made in code)."""
        return self._path

    def _check_login_user(self) -> None:
        login = self.login_user
        if login in self.users.all_names():
            raise FieldError(
                ("ssh", "login_user") if self.ssh.login_user else ("users",),
                f"{login!r} is the ssh login user; trainees and admins need other names",
            )
        if self.creates_login_user and not self.ssh.authorized_keys:
            raise FieldError(
                ("ssh", "login_user"),
                f"{login!r} is not the {self.os} image's user ({DEFAULT_LOGIN_USER[self.os]}): "
                "bakery creates it with the keys of ssh.authorized_keys; list at least one",
            )

    def _check_files(self) -> None:
        seen: set[str] = set()
        for i, f in enumerate(self.files):
            if f.path in seen:
                raise FieldError(("files", i, "path"), f"{f.path} is listed more than once")
            seen.add(f.path)
        if not self.files:
            return
        files, folders = managed_paths(self)
        for i, f in enumerate(self.files):
            why = _managed_reason(f.path, files, folders)
            if why:
                raise FieldError(("files", i, "path"), why)
            packed = len(base64.b64encode(gzip.compress(f.content.encode(), mtime=0)))
            if len(f.content) > 40_000 and packed > NOVA_USER_DATA_LIMIT:
                raise FieldError(
                    ("files", i, "content"),
                    f"{f.path}: {len(f.content):,} characters cannot fit Nova's user-data "
                    f"limit of {NOVA_USER_DATA_LIMIT:,} base64 characters even gzipped "
                    f"({packed:,}); copy large files to the VM another way (a package, the "
                    "image, scp)",
                )

    @property
    def login_user(self) -> str:
        """The admin ssh user: the image's default user unless set."""
        return self.ssh.login_user or DEFAULT_LOGIN_USER[self.os]

    @property
    def creates_login_user(self) -> bool:
        """Whether bakery must create the login user (it is not the image's own)."""
        return self.login_user != DEFAULT_LOGIN_USER[self.os]

    @property
    def fqdn(self) -> str:
        """The VM's host name: tls.domain, else hostname, else the workshop name."""
        return self.tls.domain or self.hostname or self.name


def managed_paths(cfg: Workshop) -> tuple[set[str], set[str]]:
    """The files bakery writes or edits on the VM outside its folders, and the folders it owns.

    ``cfg`` is not needed today (the set is the same for every workshop); render also refuses any
    path written twice, so a file missing from :mod:`bakery.layout`'s lists still cannot be
    replaced.
    """
    return set(layout.MANAGED_FILES), set(layout.MANAGED_DIRS)


def _managed_reason(path: str, files: set[str], folders: set[str]) -> str | None:
    if path in files:
        return f"{path} is one of bakery's own files; user files must not replace it"
    for folder in sorted(folders):
        if path == folder or path.startswith(folder + "/"):
            return f"{path} is in {folder}, which bakery manages; choose another place"
    for owned in sorted(files | folders):
        if owned.startswith(path + "/"):
            return f"{path} is a folder holding bakery's {owned}; give a file path"
    return None


# --- loading ------------------------------------------------------------------------------------


def parse_config(text: str, path: Path) -> Workshop:
    """Validate workshop YAML ``text`` (read from ``path``, used in messages).

    Raises:
        ConfigError: with ``file:line: field: message`` lines.
    """
    source = load_yaml(text, str(path))
    data = source.data
    if data is None:
        raise ConfigError(f"{path}: the file is empty; `bakery init {path}` writes a starter")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping of settings (name: ..., users: ...)")
    try:
        cfg = Workshop.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(path, exc, source, Workshop)) from None
    cfg._path = path
    return cfg


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
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_config(text, path)
