"""The trainees' notebook image: its custom layer's Dockerfile and tag, an archive's settings."""

from __future__ import annotations

import hashlib
import json

from bakery.config.workshop import Workshop
from bakery.templates import render
from bakery.version import __version__


def custom_image_tag(cfg: Workshop) -> str | None:
    """The local tag of the workshop's custom image, named after its Dockerfile's content."""
    if cfg.spawner.custom_image is None:
        return None
    digest = hashlib.sha256(dockerfile(cfg).encode()).hexdigest()[:12]
    return f"bakery/{cfg.name}-notebook:{digest}"


def dockerfile(cfg: Workshop) -> str:
    """The Dockerfile that layers ``spawner.custom_image``'s packages on the user image."""
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
