"""The NoCloud seed: meta-data as YAML, and an ISO that cloud-init's NoCloud datasource finds."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pycdlib
import pytest
import yaml
from helpers import require_tool

from bakery import seed

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
