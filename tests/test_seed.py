"""The NoCloud seed: meta-data as YAML, and an ISO that cloud-init's NoCloud datasource finds."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pycdlib
import pytest
import yaml
from helpers import require_tool

from bakery.providers.local import seed

USER_DATA = b"#cloud-config\nfinal_message: 'bakery: x full stage done'\n"


def _read(iso: pycdlib.PyCdlib, **where: str) -> bytes:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **where)
    return out.getvalue()


@pytest.mark.parametrize(
    ("instance_id", "hostname"),
    [("iid-bakery-1", "python"), ("iid: 'quoted' #x", "a-b"), ("1234", "yes")],
)
def test_meta_data_is_yaml_that_round_trips(instance_id: str, hostname: str) -> None:
    text = seed.meta_data(instance_id, hostname)
    assert yaml.safe_load(text) == {"instance-id": instance_id, "local-hostname": hostname}


def test_seed_iso_is_what_nocloud_looks_for(tmp_path: Path) -> None:
    meta = seed.meta_data("iid-bakery-7", "python")
    path = seed.write_seed_iso(tmp_path / "seed.iso", USER_DATA, meta)
    assert path == tmp_path / "seed.iso"
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert iso.pvd.volume_identifier.rstrip(b" ") == b"cidata"
        for where in ("rr_path", "joliet_path"):
            assert _read(iso, **{where: "/user-data"}) == USER_DATA
            assert _read(iso, **{where: "/meta-data"}) == meta.encode()
        names = {
            child.rock_ridge.name()
            for child in iso.list_children(iso_path="/")
            if child.rock_ridge is not None and not (child.is_dot() or child.is_dotdot())
        }
        assert names == {b"user-data", b"meta-data"}
    finally:
        iso.close()


def test_seed_iso_reads_back_with_isoinfo(tmp_path: Path) -> None:
    """A second, independent reader (genisoimage's isoinfo) agrees where it is installed."""
    isoinfo = require_tool("isoinfo")
    iso = seed.write_seed_iso(tmp_path / "seed.iso", USER_DATA, "instance-id: x\n")
    info = subprocess.run([isoinfo, "-d", "-i", str(iso)], capture_output=True, text=True)
    assert "Volume id: cidata" in info.stdout
    for name, want in (("user-data", USER_DATA), ("meta-data", b"instance-id: x\n")):
        for flag in ("-R", "-J"):
            got = subprocess.run(
                [isoinfo, flag, "-x", f"/{name}", "-i", str(iso)], capture_output=True
            ).stdout
            assert got == want, (name, flag)


def test_an_unwritable_seed_path_is_a_local_vm_error(tmp_path: Path) -> None:
    with pytest.raises(seed.LocalVmError, match="cannot write the seed ISO"):
        seed.write_seed_iso(tmp_path / "missing" / "seed.iso", USER_DATA, "instance-id: x\n")


# --- cluster VMs: extra meta-data, network-config -----------------------------------------------


def test_meta_data_carries_extra_keys_after_the_standard_ones() -> None:
    text = seed.meta_data("iid-1", "m", {"bakery_cluster_secret": "s3cr3t", "bakery_manager": "x"})
    assert list(yaml.safe_load(text).items()) == [
        ("instance-id", "iid-1"), ("local-hostname", "m"),
        ("bakery_cluster_secret", "s3cr3t"), ("bakery_manager", "x"),
    ]  # fmt: skip
    assert seed.meta_data("iid-1", "m", {}) == seed.meta_data("iid-1", "m")


@pytest.mark.parametrize("key", ["instance-id", "local-hostname"])
def test_extra_meta_data_cannot_replace_the_instance(key: str) -> None:
    with pytest.raises(ValueError, match=f"may not replace {key}"):
        seed.meta_data("iid-1", "m", {key: "other"})


def test_network_config_finds_nics_by_mac_dhcp_and_static_with_mtu() -> None:
    text = seed.network_config(
        [
            seed.Nic("lan0", "52:54:00:12:34:0A"),
            seed.Nic("cluster0", "52:54:00:77:00:0a", "10.77.0.10/24", 1450),
        ]
    )
    assert yaml.safe_load(text) == {
        "version": 2,
        "ethernets": {
            "lan0": {
                "match": {"macaddress": "52:54:00:12:34:0a"}, "set-name": "lan0", "dhcp4": True,
            },
            "cluster0": {
                "match": {"macaddress": "52:54:00:77:00:0a"}, "set-name": "cluster0",
                "dhcp4": False, "addresses": ["10.77.0.10/24"], "mtu": 1450,
            },
        },
    }  # fmt: skip


# cloud-init's own parser and its ifupdown renderer (what the Debian 12 guests use), run by the
# Python that has cloud-init installed: the interfaces file the guest will get.
RENDER_ENI = """
import sys, yaml
from cloudinit.net import eni, network_state
state = network_state.parse_net_config_data(yaml.safe_load(sys.stdin.read()))
print(eni.Renderer()._render_interfaces(state))
for nic in state.iter_interfaces():
    print("MAC", nic["name"], nic["mac_address"])
"""


def test_network_config_as_cloud_init_renders_it(tmp_path: Path) -> None:
    cloud_init = Path(require_tool("cloud-init"))
    python = cloud_init.read_text(errors="replace").splitlines()[0].removeprefix("#!").split()[0]
    text = seed.network_config(
        [
            seed.Nic("lan0", "52:54:00:12:34:0b"),
            seed.Nic("cluster0", "52:54:00:77:00:0b", "10.77.0.11/24", 1450),
        ]
    )
    proc = subprocess.run(
        [python, "-c", RENDER_ENI], input=text, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    stanzas: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("iface "):
            options = stanzas.setdefault(line, [])
        elif line.startswith("    "):
            options.append(line.strip())
    assert stanzas["iface lan0 inet dhcp"] == []
    assert stanzas["iface cluster0 inet static"] == ["address 10.77.0.11/24", "mtu 1450"]
    macs = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("MAC ")]
    assert sorted(macs) == [["cluster0", "52:54:00:77:00:0b"], ["lan0", "52:54:00:12:34:0b"]]


def test_seed_iso_holds_network_config_only_when_given(tmp_path: Path) -> None:
    network = seed.network_config([seed.Nic("lan0", "52:54:00:12:34:0a")])
    with_net = seed.write_seed_iso(tmp_path / "a.iso", USER_DATA, "instance-id: x\n", network)
    without = seed.write_seed_iso(tmp_path / "b.iso", USER_DATA, "instance-id: x\n")
    iso = pycdlib.PyCdlib()
    iso.open(str(with_net))
    try:
        for where in ("rr_path", "joliet_path"):
            assert _read(iso, **{where: "/network-config"}) == network.encode()
    finally:
        iso.close()
    iso.open(str(without))
    try:
        with pytest.raises(pycdlib.pycdlibexception.PyCdlibInvalidInput):
            _read(iso, rr_path="/network-config")
    finally:
        iso.close()
