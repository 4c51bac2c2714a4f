"""What a workshop installs from PyPI, for which Python, and the lock that pins it.

Two environments: the hub's own (JupyterHub, its spawner and culler; with the systemd spawner also
JupyterLab, which serves the trainees) and, with ``environment:`` packages, the trainees' (systemd:
an environment of their own whose kernel is the default one; docker: layered onto the image). Each
is installed from a lock (bakery.config.lockfile): the workshop's ``NAME.lock.json`` when it
matches, else, for the hub, the lock bakery ships for its default versions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bakery import versions
from bakery.config.environment import Packages, packages
from bakery.config.lockfile import (
    DEFAULT_INDEX,
    LockedEnv,
    inputs_digest,
    lock_path,
    read_lock,
    shipped_hub_lock,
)
from bakery.config.workshop import Workshop
from bakery.errors import ConfigError
from bakery.templates import render
from bakery.version import __version__

# The default image's Python (quay.io/jupyter images), which docker locks are made for.
DOCKER_PYTHON = "3.12"


def config_dir(cfg: Workshop) -> Path:
    """The folder of the workshop file (relative paths in it start there)."""
    return cfg.source_path.parent if cfg.source_path else Path(".")


def environment_packages(cfg: Workshop) -> Packages:
    """Everything ``environment:`` installs (its folder's files, then its lists).

    Raises:
        ConfigError: a folder or file that cannot be read (file and line).
    """
    return packages(cfg.environment, config_dir(cfg))


def index_url(cfg: Workshop) -> str:
    """The package index for the lock and the VM's pip: ``environment.index_url`` or PyPI."""
    env = cfg.environment
    return env.index_url if env is not None and env.index_url else DEFAULT_INDEX


def hub_python(cfg: Workshop) -> str:
    """The Python of the hub's environment: the OS's (venv) or Miniforge's (conda)."""
    return versions.CONDA_PYTHON if cfg.hub.install == "conda" else versions.OS_PYTHON[cfg.os]


def hub_requested(cfg: Workshop) -> list[str]:
    """The hub's environment as requested: its parts at their pinned versions."""
    v = cfg.hub.versions
    specs = [
        f"jupyterhub=={v.jupyterhub}",
        f"jupyterhub-idle-culler=={v.idle_culler}",
        f"oauthenticator=={v.oauthenticator}",
    ]
    if cfg.spawner.kind == "docker":
        return [*specs, f"dockerspawner=={v.dockerspawner}"]
    # Servers run on the host: JupyterLab and its server beside the hub, and nbgitpuller (small,
    # always: one lock serves a course.git workshop and one without).
    return [
        *specs,
        f"jupyterhub-systemdspawner=={v.systemdspawner}",
        f"jupyterlab=={v.jupyterlab}",
        f"jupyter-server=={versions.JUPYTER_SERVER}",
        f"nbgitpuller=={versions.NBGITPULLER}",
    ]


def trainee_python(cfg: Workshop) -> str:
    """The Python the trainees' packages run on: the hub's (systemd) or the image's (docker)."""
    if cfg.spawner.kind == "systemd":
        return hub_python(cfg)
    env = cfg.environment
    return env.python if env is not None and env.python else DOCKER_PYTHON


def trainee_requested(cfg: Workshop, pkgs: Packages | None = None) -> list[str]:
    """The trainees' PyPI packages as requested (empty: no environment of their own).

    systemd: with the kernel (ipykernel) their environment needs. docker: what the image gets.
    """
    pkgs = environment_packages(cfg) if pkgs is None else pkgs
    if cfg.spawner.kind == "systemd":
        return [f"ipykernel=={versions.IPYKERNEL}", *pkgs.pip] if pkgs.pip else []
    return list(pkgs.pip)


def _workshop_lock_hint(cfg: Workshop) -> str:
    path = cfg.source_path or Path("workshop.yaml")
    return f"run `bakery lock {path}` (it writes {lock_path(path).name} beside it)"


def shipped_hub(cfg: Workshop) -> LockedEnv | None:
    """bakery's own lock of the hub's environment, if the workshop asks for what it pins."""
    python = hub_python(cfg)
    shipped = shipped_hub_lock(cfg.spawner.kind, python)
    if shipped is not None and shipped.inputs == inputs_digest(hub_requested(cfg), python):
        return shipped
    return None


def hub_lock(cfg: Workshop) -> LockedEnv:
    """The lock the hub's environment installs from.

    Raises:
        ConfigError: the versions asked for are not bakery's own and no lock of the workshop's
            matches them.
    """
    python = hub_python(cfg)
    digest = inputs_digest(hub_requested(cfg), python)
    lock = read_lock(lock_path(cfg.source_path)) if cfg.source_path else None
    if lock is not None and lock.hub is not None and lock.hub.inputs == digest:
        return lock.hub
    shipped = shipped_hub(cfg)
    if shipped is not None:
        return shipped
    raise ConfigError(
        f"hub.versions asks for versions bakery has no lock of (for Python {python}): "
        f"{_workshop_lock_hint(cfg)}, or remove hub.versions"
    )


def trainee_lock(cfg: Workshop) -> LockedEnv | None:
    """The lock the trainees' packages install from (None: they have none).

    Raises:
        ConfigError: packages are asked for and the workshop's lock is missing or was made for
            other packages.
    """
    requested = trainee_requested(cfg)
    if not requested:
        return None
    python = trainee_python(cfg)
    path = lock_path(cfg.source_path) if cfg.source_path else None
    lock = read_lock(path) if path else None
    if lock is not None and lock.trainees is not None:
        if lock.trainees.inputs == inputs_digest(requested, python):
            return lock.trainees
        problem = f"{path} was made for other packages (or another Python)"
    else:
        problem = f"{path or 'the workshop'} has no lock of the trainees' packages"
    raise ConfigError(
        f"environment: {problem}; every PyPI package is installed pinned and hash-checked: "
        f"{_workshop_lock_hint(cfg)}"
    )


def lock_problem(cfg: Workshop) -> str | None:
    """Why the workshop cannot be installed from its locks as it stands (None: it can)."""
    try:
        hub_lock(cfg)
        trainee_lock(cfg)
    except ConfigError as exc:
        return str(exc)
    return None


# --- docker: the layer environment: adds to the trainees' image -------------------------------


@dataclass(frozen=True)
class ImageLayer:
    """The workshop's layer on spawner.image: its Dockerfile, the PyPI lock it installs, its tag."""

    dockerfile: str
    requirements: str | None
    tag: str


def image_layer(cfg: Workshop) -> ImageLayer | None:
    """The layer ``environment:`` adds to the user image (None: the image as it is, or no docker).

    Raises:
        ConfigError: as :func:`trainee_lock`.
    """
    if cfg.spawner.kind != "docker":
        return None
    pkgs = environment_packages(cfg)
    lock = trainee_lock(cfg)
    apt = [*pkgs.apt, *pkgs.r_debs()]
    lines = lock.requirements() if lock is not None else ""
    if (
        cfg.course is not None
        and cfg.course.git is not None
        and not (lock is not None and lock.version_of("nbgitpuller"))
    ):
        # course.git: nbgitpuller in the image (the default one has none), hash-checked.
        lines += (
            f"nbgitpuller=={versions.NBGITPULLER} --hash=sha256:{versions.NBGITPULLER_SHA256}\n"
        )
    if not (apt or pkgs.conda or lines):
        return None
    dockerfile = render(
        "cloudinit/Dockerfile.j2",
        bakery_version=__version__,
        base_image=cfg.spawner.image,
        apt=apt,
        conda=list(pkgs.conda),
        pip=bool(lines),
        index_url=index_url(cfg),
    )
    requirements = lines or None
    digest = hashlib.sha256((dockerfile + (requirements or "")).encode()).hexdigest()[:12]
    return ImageLayer(dockerfile, requirements, f"bakery/{cfg.name}-notebook:{digest}")
