"""The NoCloud seed: cloud-init's meta-data and the `cidata` ISO carrying it with user-data."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pycdlib
import yaml

from bakery.errors import LocalVmError

# cloud-init's NoCloud datasource looks for a filesystem with exactly this label.
VOLUME_LABEL = "cidata"


def meta_data(instance_id: str, hostname: str, extra: dict[str, str] | None = None) -> str:
    """NoCloud ``meta-data`` text for ``instance_id`` and ``hostname``, plus ``extra`` keys.

    A new ``instance_id`` makes cloud-init treat the boot as a first boot and run everything.
    ``extra`` carries what only root may read on the VM (``cloud-init query ds.meta_data``), such
    as a cluster's secret: meta-data, unlike user-data, is not in the world-readable instance
    data. An extra key may not replace ``instance-id`` or ``local-hostname``.

    Raises:
        ValueError: ``extra`` names ``instance-id`` or ``local-hostname``.
    """
    data = {"instance-id": instance_id, "local-hostname": hostname}
    clash = sorted(set(data) & set(extra or {}))
    if clash:
        raise ValueError(f"extra meta-data may not replace {', '.join(clash)}")
    data |= extra or {}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


@dataclass(frozen=True)
class Nic:
    """One NIC of a local VM as the seed's ``network-config`` sets it up, found by its MAC."""

    name: str
    mac: str
    address: str | None = None  # with its prefix, e.g. 10.77.0.10/24; None: DHCP
    mtu: int | None = None


def network_config(nics: Sequence[Nic]) -> str:
    """A cloud-init network config (version 2) for ``nics``: DHCP or a static address each.

    Each NIC is matched by MAC and renamed to its ``name`` (cloud-init renames at every boot), so
    the guest's names do not depend on PCI slots. Only a DHCP NIC gets a default route.
    """
    ethernets: dict[str, dict[str, object]] = {}
    for nic in nics:
        eth: dict[str, object] = {"match": {"macaddress": nic.mac.lower()}, "set-name": nic.name}
        if nic.address is None:
            eth["dhcp4"] = True
        else:
            eth |= {"dhcp4": False, "addresses": [nic.address]}
        if nic.mtu is not None:
            eth["mtu"] = nic.mtu
        ethernets[nic.name] = eth
    return yaml.safe_dump(
        {"version": 2, "ethernets": ethernets}, sort_keys=False, default_flow_style=False
    )


def _iso9660_name(name: str) -> str:
    # Level-3 ISO 9660 names allow only A-Z, 0-9 and _; readers use the Joliet/Rock Ridge names.
    return "/" + name.replace("-", "_").upper() + ".;1"


def write_seed_iso(
    path: Path, user_data: bytes, meta_data: str, network_config: str | None = None
) -> Path:
    """Write a NoCloud seed ISO (volume label ``cidata``) holding ``user-data`` and ``meta-data``.

    With ``network_config`` (a cloud-init network config, e.g. from :func:`network_config`) the
    ISO also holds ``network-config``, which replaces cloud-init's fallback (DHCP on the first
    NIC). Every name is stored as Rock Ridge and Joliet names, which is what Linux mounts show
    and what cloud-init reads.

    Returns:
        ``path``.

    Raises:
        LocalVmError: ``path`` cannot be written.
    """
    path = Path(path)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL)
    files = [("user-data", user_data), ("meta-data", meta_data.encode("utf-8"))]
    if network_config is not None:
        files.append(("network-config", network_config.encode("utf-8")))
    try:
        for name, blob in files:
            iso.add_fp(
                io.BytesIO(blob), len(blob), _iso9660_name(name), rr_name=name,
                joliet_path="/" + name,
            )  # fmt: skip
        iso.write(str(path))
        path.chmod(0o600)  # meta-data may hold a secret (a cluster's, an OAuth client's)
    except OSError as exc:
        raise LocalVmError(f"cannot write the seed ISO {path}: {exc.strerror or exc}") from None
    finally:
        iso.close()
    return path
