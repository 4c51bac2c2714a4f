"""The NoCloud seed: cloud-init's meta-data and the `cidata` ISO carrying it with user-data."""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib
import yaml

from bakery.errors import LocalVmError

# cloud-init's NoCloud datasource looks for a filesystem with exactly this label.
VOLUME_LABEL = "cidata"


def meta_data(instance_id: str, hostname: str) -> str:
    """NoCloud ``meta-data`` text for ``instance_id`` and ``hostname``.

    A new ``instance_id`` makes cloud-init treat the boot as a first boot and run everything.
    """
    return yaml.safe_dump(
        {"instance-id": instance_id, "local-hostname": hostname},
        sort_keys=False,
        default_flow_style=False,
    )


def _iso9660_name(name: str) -> str:
    # Level-3 ISO 9660 names allow only A-Z, 0-9 and _; readers use the Joliet/Rock Ridge names.
    return "/" + name.replace("-", "_").upper() + ".;1"


def write_seed_iso(path: Path, user_data: bytes, meta_data: str) -> Path:
    """Write a NoCloud seed ISO (volume label ``cidata``) holding ``user-data`` and ``meta-data``.

    Both names are stored as Rock Ridge and Joliet names, which is what Linux mounts show and
    what cloud-init reads.

    Returns:
        ``path``.

    Raises:
        LocalVmError: ``path`` cannot be written.
    """
    path = Path(path)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL)
    try:
        for name, blob in (("user-data", user_data), ("meta-data", meta_data.encode("utf-8"))):
            iso.add_fp(
                io.BytesIO(blob), len(blob), _iso9660_name(name), rr_name=name,
                joliet_path="/" + name,
            )  # fmt: skip
        iso.write(str(path))
    except OSError as exc:
        raise LocalVmError(f"cannot write the seed ISO {path}: {exc.strerror or exc}") from None
    finally:
        iso.close()
    return path
