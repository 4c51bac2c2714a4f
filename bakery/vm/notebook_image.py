"""The trainees' notebook image from an archive: the settings ``docker import`` must restore (the
layer ``environment:`` adds is bakery.workshop.software's)."""

from __future__ import annotations

import json

from bakery.config.workshop import Workshop


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
