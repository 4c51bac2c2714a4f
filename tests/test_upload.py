"""`bakery image upload/delete`, `bake --upload` and launch's timeouts, against the fake cloud."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests_mock as rm
import yaml
from fakecloud import BAKED_IMAGE, STOCK_IMAGE, FakeCloud, use_fake_cloud, write_workshop
from typer.testing import CliRunner

from bakery.bake import upload
from bakery.cli import main as cli
from bakery.config.units import parse_duration
from bakery.config.workshop import load_config
from bakery.errors import CloudError, SidecarError, UsageError
from bakery.progress import Collector
from bakery.providers.openstack import launch as launch_mod
from bakery.providers.openstack import servers as servers_mod
from bakery.providers.openstack import steps
from bakery.vm import image
from bakery.vm.image import image_stage

DATA = b"QFI\xfb" + bytes(range(256)) * 9000  # ~2.3 MB: several upload chunks


@pytest.fixture
def fake(requests_mock: rm.Mocker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCloud:
    return use_fake_cloud(requests_mock, tmp_path, monkeypatch)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = write_workshop(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["os"] = "debian-12"
    doc["bake"] = {"image_suffix": "none", "image_properties": {"course": "intro-2024"}}
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def golden(tmp_path: Path, config: Path) -> Path:
    """A baked file image with its sidecar, as the chroot builder leaves it."""
    path = tmp_path / "golden.qcow2"
    path.write_bytes(DATA)
    cfg = load_config(config)
    image.write_sidecar(path, image.sidecar(cfg, image.record(cfg), image.image_name(cfg), "qcow2"))
    return path


def glance(fake: FakeCloud, name: str) -> list[dict[str, Any]]:
    return [i for i in fake.images.values() if i["name"] == name]


def test_upload_gives_the_record_properties_and_verifies_the_checksum(
    fake: FakeCloud, config: Path, golden: Path
) -> None:
    said = Collector()
    result = upload.upload(config_path=config, image_file=golden, progress=said)

    (stored,) = glance(fake, "bakery-intro")
    assert result.image_id == stored["id"] and result.image_name == "bakery-intro"
    assert fake.uploaded[stored["id"]] == DATA
    assert stored["checksum"] == hashlib.md5(DATA).hexdigest()
    assert (stored["disk_format"], stored["container_format"]) == ("qcow2", "bare")
    assert stored["visibility"] == "private"
    cfg = load_config(config)
    rec = image.record(cfg)
    # The same bakery_* properties the Packer and openstacksdk builders give, and Nova's hints.
    for key, value in image.properties(cfg, rec).items():
        assert stored[key] == value, key
    assert stored["course"] == "intro-2024"
    assert (stored["os_distro"], stored["os_version"]) == ("debian", "12")
    assert stored["hw_disk_bus"] == "virtio" and stored["hw_vif_model"] == "virtio"
    assert image.record_from_properties(stored) == rec == result.record
    # The upload's single PUT carried the whole file, with its length.
    (put,) = fake.calls("PUT", r"/v2/images/[^/]+/file$")
    assert put.headers["Content-Length"] == str(len(DATA))
    assert any("%" in m and "MiB" in m for m in said.messages)
    assert "checksum verified" in said.messages[-1]
    assert "upload" in result.timings


def test_launch_recognises_an_uploaded_image(fake: FakeCloud, config: Path, golden: Path) -> None:
    result = upload.upload(config_path=config, image_file=golden)
    from bakery.providers.openstack.api import connect, find_image

    conn = connect(load_config(config))
    assert image_stage(find_image(conn, str(result.image_id))) == "boot"


def test_same_checksum_is_not_uploaded_again(fake: FakeCloud, config: Path, golden: Path) -> None:
    first = upload.upload(config_path=config, image_file=golden)
    said = Collector()
    again = upload.upload(config_path=config, image_file=golden, progress=said)
    assert again.image_id == first.image_id
    assert len(fake.calls("PUT", r"/file$")) == 1
    assert len(glance(fake, "bakery-intro")) == 1
    assert "not uploaded" in said.messages[-1]


def test_same_name_other_content_is_refused(fake: FakeCloud, config: Path, golden: Path) -> None:
    upload.upload(config_path=config, image_file=golden)
    golden.write_bytes(DATA + b"changed")
    with pytest.raises(CloudError, match=r"exists .* with other content; delete it"):
        upload.upload(config_path=config, image_file=golden)
    assert len(glance(fake, "bakery-intro")) == 1


def test_an_unfinished_earlier_upload_is_replaced(
    fake: FakeCloud, config: Path, golden: Path
) -> None:
    fake.images["stale"] = {
        **fake.images[BAKED_IMAGE],
        "id": "stale",
        "name": "bakery-intro",
        "status": "queued",
    }
    result = upload.upload(config_path=config, image_file=golden)
    assert "stale" not in fake.images
    assert [i["id"] for i in glance(fake, "bakery-intro")] == [result.image_id]


def test_a_checksum_mismatch_deletes_the_upload(
    fake: FakeCloud, config: Path, golden: Path
) -> None:
    fake.corrupt_uploads = True
    with pytest.raises(CloudError, match=r"checksum .* is not the file's"):
        upload.upload(config_path=config, image_file=golden)
    assert glance(fake, "bakery-intro") == []


def test_a_failed_upload_deletes_the_image(fake: FakeCloud, config: Path, golden: Path) -> None:
    fake.fail("PUT", r"/file$", 503, {"code": 503, "title": "Service Unavailable"}, times=None)
    with pytest.raises(CloudError, match="503"):
        upload.upload(config_path=config, image_file=golden)
    assert glance(fake, "bakery-intro") == []
    assert len(fake.calls("PUT", r"/file$")) == 1  # the file is sent once, never blindly again


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ("no-sidecar", "cannot read the bake sidecar"),
        ("other-workshop", "baked for workshop 'other', not 'intro'"),
        ("no-file", "no such image file"),
    ],
)
def test_upload_refuses(
    fake: FakeCloud, config: Path, golden: Path, change: str, error: str
) -> None:
    if change == "no-sidecar":
        image.sidecar_path(golden).unlink()
    elif change == "other-workshop":
        cfg = load_config(config).model_copy(update={"name": "other"})
        image.write_sidecar(golden, image.sidecar(cfg, image.record(cfg), "bakery-other", "qcow2"))
    else:
        golden.unlink()
    with pytest.raises((UsageError, CloudError, Exception), match=error):
        upload.upload(config_path=config, image_file=golden)
    assert fake.calls("POST", r"/v2/images$") == []


def test_bake_upload_uploads_the_file_made(
    fake: FakeCloud, config: Path, golden: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bakery.bake import builders, chroot

    def fake_bake(*, config_path: Path, output: Path | None, progress: Any) -> list[Any]:
        cfg = load_config(config_path)
        rec = image.record(cfg)
        return [image.BakeResult("chroot", "bakery-intro", rec, path=golden, timings={"x": 1.0})]

    monkeypatch.setattr(chroot, "bake", fake_bake)
    (result,) = builders.bake(config_path=config, builder="chroot", output=golden, upload=True)
    assert result.builder == "chroot" and result.image_id in fake.images
    assert set(result.timings) == {"x", "upload"}
    assert result.where == result.image_id


def test_cli_image_upload_and_delete(fake: FakeCloud, config: Path, golden: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(cli.app, ["image", "upload", str(config), str(golden)])
    assert out.exit_code == 0, out.output
    name, image_id = out.stdout.split()
    assert name == "bakery-intro" and image_id in fake.images
    out = runner.invoke(cli.app, ["image", "delete", str(config), name])
    assert out.exit_code == 0, out.output
    assert image_id not in fake.images


@pytest.mark.parametrize(
    ("ref", "error"),
    [
        (STOCK_IMAGE, "was not baked by bakery"),
        ("ubuntu-24.04", "was not baked by bakery"),
        ("no-such-image", "not found"),
    ],
)
def test_image_delete_refuses_what_is_not_bakerys(
    fake: FakeCloud, config: Path, ref: str, error: str
) -> None:
    before = set(fake.images)
    out = CliRunner().invoke(cli.app, ["image", "delete", str(config), ref])
    assert out.exit_code == 2, out.output
    assert error in out.output
    assert set(fake.images) == before
    assert fake.calls("DELETE", r"/v2/images/") == []


def test_image_delete_refuses_another_workshops_image(fake: FakeCloud, config: Path) -> None:
    fake.images[BAKED_IMAGE]["bakery_workshop"] = "advanced"
    with pytest.raises(UsageError, match="belongs to workshop 'advanced'"):
        upload.delete_image(config_path=config, name_or_id=BAKED_IMAGE)
    assert BAKED_IMAGE in fake.images


# --- launch: timeouts, config drive, the stage while waiting --------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("1.5h", 5400), (45, 45), ("2 M", 120)],
)
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5", "1d", "ten", "5 minutes", True, None])
def test_bad_durations(text: Any) -> None:
    with pytest.raises(ValueError, match=r"duration|at least 1 s"):
        parse_duration(text)


def test_timeouts_from_config_and_options(tmp_path: Path) -> None:
    path = write_workshop(tmp_path, hub_timeout="20m", active_timeout=120)
    cfg = load_config(path)
    assert (cfg.openstack.hub_timeout, cfg.openstack.active_timeout) == (1200, 120)
    assert load_config(write_workshop(tmp_path)).openstack.hub_timeout == 45 * 60
    over = steps.with_timeouts(cfg, "1h", None)
    assert (over.openstack.hub_timeout, over.openstack.active_timeout) == (3600, 120)
    with pytest.raises(UsageError, match="--hub-timeout: 'soon' is not a duration"):
        steps.with_timeouts(cfg, "soon", None)


def test_bad_timeout_in_config_names_the_field(tmp_path: Path) -> None:
    from bakery.errors import ConfigError

    with pytest.raises(ConfigError, match="hub_timeout"):
        load_config(write_workshop(tmp_path, hub_timeout="forever"))


@pytest.mark.parametrize("drive", [True, False, None])
def test_config_drive_reaches_nova(
    fake: FakeCloud, tmp_path: Path, drive: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers_mod, "hub_health", lambda ip, timeout=5: "ok")
    monkeypatch.setattr(time, "sleep", lambda s: None)
    extra = {} if drive is None else {"config_drive": drive}
    launch_mod.launch(config_path=write_workshop(tmp_path, **extra))
    (create,) = fake.calls("POST", r":8774/v2\.1/servers$")
    sent = create.json()["server"]
    if drive is None:
        assert "config_drive" not in sent  # the cloud's own default
    else:
        assert sent["config_drive"] is drive


def test_wait_shows_the_cloud_init_stage_then_the_url(
    fake: FakeCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(["unreachable (ConnectTimeout)", "HTTP 502", "ok"])

    def health(ip: str, timeout: float = 5) -> str:
        answer = next(answers)
        if answer == "HTTP 502":  # the stage's line has scrolled out of the console's last lines
            fake.console = "Get:1 http://deb.debian.org/debian bookworm InRelease\n"
        return answer

    monkeypatch.setattr(servers_mod, "hub_health", health)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    fake.console = "Linux version 6.1.0\nCloud-init v. 22.4 running 'modules:final' at now.\n"
    said: list[tuple[str, bool]] = []
    result = launch_mod.launch(
        config_path=write_workshop(tmp_path),
        progress=lambda m, *, transient=False: said.append((m, transient)),
    )
    live = [m for m, transient in said if transient and "hub:" in m]
    assert live == [
        "server intro-1: cloud-init: final stage (packages, runcmd); "
        "hub: unreachable (ConnectTimeout)",
        "server intro-1: cloud-init: final stage (packages, runcmd); hub: HTTP 502",
    ]
    fip = result.servers[0].floating_ip
    assert said[-1][0].startswith(f"server intro-1: hub answers at https://{fip}/")
    assert result.servers[0].hub == "ok"


def test_hub_timeout_reports_seconds_and_how_to_wait_longer(
    fake: FakeCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter(range(0, 10_000, 30))
    monkeypatch.setattr(servers_mod.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(servers_mod.time, "sleep", lambda s: None)
    monkeypatch.setattr(servers_mod, "hub_health", lambda ip, timeout=5: "HTTP 502")
    fake.console = "Cloud-init v. 22.4 running 'init' at now.\n"
    with pytest.raises(CloudError, match=r"within 90 s .*--hub-timeout 1h"):
        launch_mod.launch(config_path=write_workshop(tmp_path), hub_timeout="90s")
    assert fake.servers == {}  # what this run created is gone


def test_active_timeout_reaches_the_waiter(
    fake: FakeCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[float] = []

    def wait_active(conn: Any, server: Any, timeout: float, progress: Any) -> Any:
        asked.append(timeout)
        raise CloudError("server intro-1 still not ACTIVE")

    monkeypatch.setattr(steps, "wait_active", wait_active)
    with pytest.raises(CloudError):
        launch_mod.launch(config_path=write_workshop(tmp_path), active_timeout="2m")
    assert asked == [120]


def test_cli_launch_takes_duration_options(
    fake: FakeCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_launch(**kwargs: Any) -> Any:
        seen.update(kwargs)
        return launch_mod.LaunchResult([], [], tmp_path / "sheet.csv")

    monkeypatch.setattr(launch_mod, "launch", fake_launch)
    config = write_workshop(tmp_path)
    out = CliRunner().invoke(
        cli.app, ["launch", str(config), "--hub-timeout", "1h", "--active-timeout", "600"]
    )
    assert out.exit_code == 0, out.output
    assert (seen["hub_timeout"], seen["active_timeout"]) == ("1h", "600")
    assert f"bakery credentials {config}" in out.stdout


# --- issue 26: an upload takes only what bakery baked ---------------------------------------------


def test_a_file_that_is_not_qcow2_is_not_uploaded(fake: FakeCloud, golden: Path) -> None:
    """An HTML page saved as golden.qcow2 (a failed download) once went to Glance."""
    golden.write_bytes(b"<!DOCTYPE html><html>404 Not Found</html>\n")
    with pytest.raises(UsageError, match="not a qcow2 image") as exc:
        upload.upload(config_path=golden.parent / "workshop.yaml", image_file=golden)
    assert exc.value.exit_code == 2
    assert fake.calls("POST", r"/images$") == []


def test_a_fifo_sidecar_is_refused_without_hanging(golden: Path) -> None:
    sidecar = image.sidecar_path(golden)
    sidecar.unlink()
    os.mkfifo(sidecar)
    with pytest.raises(SidecarError, match="not a bake sidecar"):
        image.read_sidecar(golden)


def test_a_sidecar_whose_record_is_not_an_object_is_bad_input(golden: Path) -> None:
    sidecar = image.sidecar_path(golden)
    data = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**data, "record": "oops"}))
    with pytest.raises(SidecarError, match="record and properties as objects") as exc:
        image.read_sidecar(golden)
    assert exc.value.exit_code == 2


@pytest.fixture
def real_qcow2(tmp_path: Path, config: Path) -> Path:
    """A real (small) qcow2 with data at its start and its end, and its sidecar."""
    path = tmp_path / "real.qcow2"
    raw = tmp_path / "made.raw"
    with raw.open("wb") as fh:
        fh.write(b"bakery-start")
        fh.seek(8 * 2**20 - 10)
        fh.write(b"bakery-end")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, path], check=True)
    raw.unlink()
    cfg = load_config(config)
    image.write_sidecar(path, image.sidecar(cfg, image.record(cfg), image.image_name(cfg), "qcow2"))
    return path


def test_a_raw_only_glance_gets_the_image_converted_to_raw(
    fake: FakeCloud, config: Path, real_qcow2: Path
) -> None:
    """A Ceph-backed Glance allowed raw only: the qcow2 is converted (qemu-img) and sent as raw,
    its whole virtual size; the copy is kept for the next upload."""
    fake.disk_formats = ["raw"]
    said = Collector()
    result = upload.upload(config_path=config, image_file=real_qcow2, progress=said)
    (stored,) = glance(fake, result.image_name)
    assert stored["disk_format"] == "raw"
    data = fake.uploaded[stored["id"]]
    assert len(data) == 8 * 2**20 and data.startswith(b"bakery-start")
    assert data.endswith(b"bakery-end")
    assert any("converted to raw" in m for m in said.messages), said.messages
    assert any("uploaded 8 MiB (raw)" in m for m in said.messages), said.messages
    again = upload.upload(config_path=config, image_file=real_qcow2, progress=said)
    assert again.image_id == result.image_id  # the same bytes: not sent twice
    assert any("raw copy real.qcow2.raw is up to date" in m for m in said.messages)


def test_disk_format_asked_for_and_refused(fake: FakeCloud, config: Path, real_qcow2: Path) -> None:
    result = CliRunner().invoke(
        cli.app, ["image", "upload", str(config), str(real_qcow2), "--disk-format", "raw"]
    )
    assert result.exit_code == 0, result.output
    (stored,) = glance(fake, image.image_name(load_config(config)))
    assert stored["disk_format"] == "raw"  # Glance takes qcow2 too, but raw was asked for
    fake.disk_formats = ["raw", "vmdk"]
    refused = CliRunner().invoke(
        cli.app, ["image", "upload", str(config), str(real_qcow2), "--disk-format", "qcow2"]
    )
    assert refused.exit_code == 2, refused.output
    assert "--disk-format qcow2: this cloud's Glance takes raw, vmdk" in refused.output
    assert "Traceback" not in refused.output


def test_a_glance_that_takes_qcow2_gets_the_file_as_it_is(
    fake: FakeCloud, config: Path, golden: Path
) -> None:
    result = upload.upload(config_path=config, image_file=golden)
    (stored,) = glance(fake, result.image_name)
    assert stored["disk_format"] == "qcow2" and fake.uploaded[stored["id"]] == DATA
    assert not golden.with_name(golden.name + ".raw").exists()
