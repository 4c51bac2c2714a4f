"""The golden image as one concept: name, record, properties, cleaning, and the builders alike."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests_mock as rm
import yaml
from fakecloud import FakeCloud, use_fake_cloud, write_workshop
from helpers import EXAMPLES, cloud_config, require_tool
from typer.testing import CliRunner

from bakery import layout
from bakery.bake import builders, chroot, packer
from bakery.bake import sdk as bake_openstack
from bakery.cli import main as cli
from bakery.config.workshop import load_config
from bakery.errors import BuildError, ChrootError, LeftBehind, UsageError
from bakery.progress import Collector
from bakery.vm import image
from bakery.vm import userdata as render
from bakery.vm.image import BakeResult

NOW = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)


# --- name, record, properties ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bake", "name"),
    [
        ("{}", "bakery-demo-20260304-0506"),
        ("{image_suffix: none}", "bakery-demo"),
        ("{image_name: golden, image_suffix: date}", "golden-20260304-0506"),
    ],
)
def test_image_name(write_config: Callable[[str], Path], bake: str, name: str) -> None:
    cfg = load_config(write_config(f"name: demo\nbake: {bake}\n"))
    assert image.image_name(cfg, now=NOW) == name


def test_image_name_with_version_suffix(write_config: Callable[[str], Path]) -> None:
    cfg = load_config(write_config("name: demo\nbake: {image_suffix: version}\n"))
    digest = image.config_digest(cfg)[:8]
    assert image.image_name(cfg, now=NOW) == f"bakery-demo-0.1.0-{digest}"


HUB_PARTS = {
    "jupyterhub", "configurable-http-proxy", "jupyterhub-idle-culler", "oauthenticator", "hub-lock"
}  # fmt: skip


@pytest.mark.parametrize(
    ("config", "components"),
    [
        (
            "name: dk\n",
            HUB_PARTS | {"dockerspawner", "user-image"},
        ),
        (
            "name: dk\nspawner: {image_archive: {path: nb.tar}}\n",
            HUB_PARTS | {"dockerspawner", "user-image", "user-image-archive"},
        ),
        (
            "name: sy\nos: debian-12\nhub: {install: conda}\nspawner: {kind: systemd}\n",
            HUB_PARTS | {"miniforge", "jupyterhub-systemdspawner", "jupyterlab"},
        ),
    ],
)
def test_record_keys(
    write_config: Callable[[str], Path], config: str, components: set[str]
) -> None:
    cfg = load_config(write_config(config))
    rec = image.record(cfg)
    assert list(rec) == [*image.RECORD_KEYS, "components"]
    assert set(rec["components"]) == components
    assert rec["config_sha256"] == image.config_digest(cfg)
    if "user-image-archive" in components:
        assert rec["components"]["user-image-archive"] == "docker-save"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_properties_round_trip(example: Path) -> None:
    cfg = load_config(example)
    rec = image.record(cfg)
    props = image.properties(cfg, rec)
    distro, version = cfg.os.split("-", 1)
    assert {k: v for k, v in props.items() if not k.startswith("bakery_")} == {
        "os_distro": distro,
        "os_version": version,
        **image.NOVA_HINTS,
        **cfg.bake.image_properties,
    }
    assert props["bakery_version"] == rec["bakery_version"]
    assert props["bakery_workshop"] == cfg.name
    assert props["bakery_jupyterhub"] == rec["components"]["jupyterhub"]
    # What launch (or an upload) reads back from Glance is the record itself.
    glance = {**props, "os_distro": "ubuntu", "min_disk": 0}
    assert image.record_from_properties(glance) == rec


def test_an_image_bakery_did_not_bake_has_no_record() -> None:
    assert image.record_from_properties({"os_distro": "ubuntu"}) is None


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_bake_stage_writes_the_record(example: Path) -> None:
    """Every builder applies the bake stage, so every golden image carries the same record."""
    cfg = load_config(example)
    doc = render.build_cloud_config(cfg, stage="bake")
    (entry,) = [f for f in doc["write_files"] if f["path"] == image.RECORD_PATH]
    assert json.loads(entry["content"]) == image.record(cfg)


def test_sidecar_round_trip_and_errors(write_config: Callable[[str], Path], tmp_path: Path) -> None:
    cfg = load_config(write_config("name: demo\nbake: {image_properties: {os_distro: debian}}\n"))
    qcow2 = tmp_path / "golden.qcow2"
    rec = image.record(cfg)
    path = image.write_sidecar(qcow2, image.sidecar(cfg, rec, "bakery-demo-x", "qcow2"))
    assert path == tmp_path / "golden.qcow2.bakery.json"
    data = image.read_sidecar(qcow2)
    assert data["record"] == rec and data["image_name"] == "bakery-demo-x"
    assert data["properties"]["os_distro"] == "debian"
    assert data["properties"]["bakery_config_sha256"] == rec["config_sha256"]
    path.write_text("{}")
    with pytest.raises(BuildError, match="not a bakery sidecar"):
        image.read_sidecar(qcow2)
    with pytest.raises(BuildError, match="cannot read"):
        image.read_sidecar(tmp_path / "other.qcow2")


# --- chroot and Packer bake the same record -------------------------------------------------------


def test_chroot_image_carries_the_same_record_as_a_packer_one(
    write_config: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(
        "name: same\nos: debian-12\nspawner: {kind: systemd}\n"
        "bake: {qemu_base_image: /srv/base.qcow2, image_properties: {os_distro: debian}}\n"
    )
    cfg = load_config(config)
    # Packer: the record file, its variables and the bake stage it boots.
    out = tmp_path / "packer"
    packer.write_packer(cfg, out_dir=out, packer_version="1.6.6")
    packer_record = json.loads((out / "image.json").read_text())
    packer_vars = json.loads((out / packer.VARS_FILE).read_text())
    packer_doc = cloud_config((out / "bake-user-data").read_bytes())
    # chroot: everything but the image work (that needs root and loop devices; see tests/e2e).
    applied: list[dict[str, Any]] = []

    def fake_bake_chroot(doc: dict[str, Any], *, output: Path, **_: Any) -> dict[str, float]:
        applied.append(doc)
        output.write_bytes(b"QFI\xfb")
        return {"convert": 1.0}

    sidecars: list[Path] = []
    real_write_sidecar = image.write_sidecar

    def spy(image_file: str | Path, data: dict[str, Any]) -> Path:
        sidecars.append(Path(image_file))
        return real_write_sidecar(image_file, data)

    monkeypatch.setattr(chroot, "bake_chroot", fake_bake_chroot)
    monkeypatch.setattr(image, "write_sidecar", spy)
    (result,) = chroot.bake(config_path=config, output=tmp_path / "golden.qcow2")

    assert sidecars == [tmp_path / "golden.qcow2"]
    assert result.record == packer_record == image.record(cfg)
    assert (result.builder, result.path, result.timings) == (
        "chroot",
        tmp_path / "golden.qcow2",
        {"convert": 1.0},
    )
    side = image.read_sidecar(tmp_path / "golden.qcow2")
    assert side["record"] == packer_record
    assert side["properties"] == packer_vars["image_metadata"]

    def record_in(doc: dict[str, Any]) -> dict[str, Any]:
        (entry,) = [f for f in doc["write_files"] if f["path"] == image.RECORD_PATH]
        return dict(json.loads(entry["content"]))

    assert record_in(applied[0]) == record_in(packer_doc) == packer_record


# --- clean for reuse: one list, two cleaners ------------------------------------------------------


def test_clean_script_removes_the_shared_list() -> None:
    script = image.clean_script()
    for glob in image.CLEAN_GLOBS:
        assert f"/{glob}" in script
    assert f"truncate -s 0 /{image.EMPTIED[0]}" in script
    assert image.RECORD_PATH in script


def _fake_root(root: Path) -> None:
    files = [
        image.RECORD_PATH.lstrip("/"),
        "var/lib/cloud/instance/boot-finished",
        "var/log/cloud-init.log",
        "etc/ssh/ssh_host_ed25519_key",
        "etc/machine-id",
        "var/lib/apt/lists/deb.debian.org_dists",
        "var/cache/apt/archives/nginx.deb",
        "root/.bash_history",
        "tmp/leftover",
        "var/log/dpkg.log",
        "var/log/syslog.1",
        "var/log/apt/history.log.gz",
        "etc/keep-me",
    ]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")


def test_chroot_clean_follows_the_shared_list(tmp_path: Path) -> None:
    _fake_root(tmp_path)
    chroot.clean_for_first_boot(tmp_path)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted(
        [image.RECORD_PATH.lstrip("/"), "etc/keep-me", "etc/machine-id", "var/log/dpkg.log"]
    )
    assert (tmp_path / "etc/machine-id").read_text() == ""
    assert (tmp_path / "var/log/dpkg.log").read_text() == ""
    assert (tmp_path / "var/lib/apt/lists/partial").is_dir()


def test_chroot_clean_refuses_an_image_without_record_or_with_a_secret(tmp_path: Path) -> None:
    _fake_root(tmp_path)
    (tmp_path / image.RECORD_PATH.lstrip("/")).unlink()
    with pytest.raises(ChrootError, match="no bake record"):
        chroot.clean_for_first_boot(tmp_path)
    _fake_root(tmp_path)
    secret = tmp_path / layout.PROXY_ENV.lstrip("/")
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("CONFIGPROXY_AUTH_TOKEN=x\n")
    with pytest.raises(ChrootError, match="must not carry it"):
        chroot.clean_for_first_boot(tmp_path)


# --- the openstacksdk builder -------------------------------------------------------------------


def test_builder_scripts_pass_shellcheck(tmp_path: Path) -> None:
    shellcheck = require_tool("shellcheck")
    scripts = {
        "seal.sh": bake_openstack.seal_script("ubuntu"),
        "clean.sh": image.clean_script(),
        "wait-cloud-init.sh": image.wait_script(),
    }
    for name, text in scripts.items():
        (tmp_path / name).write_text(text)
    proc = subprocess.run(
        [shellcheck, *(str(tmp_path / n) for n in scripts)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout


def test_builder_user_data_adds_the_seal(write_config: Callable[[str], Path]) -> None:
    cfg = load_config(write_config("name: sdk\n"))
    doc = cloud_config(bake_openstack.builder_user_data(cfg))
    paths = {f["path"]: f for f in doc["write_files"]}
    assert json.loads(paths[image.RECORD_PATH]["content"]) == image.record(cfg)
    assert paths[bake_openstack.WAIT_SCRIPT]["content"] == image.wait_script()
    assert paths[bake_openstack.CLEAN_SCRIPT]["content"] == image.clean_script()
    seal = paths[bake_openstack.SEAL_SCRIPT]["content"]
    assert seal == bake_openstack.seal_script(cfg.login_user)
    assert bake_openstack.WAIT_SCRIPT in seal and bake_openstack.CLEAN_SCRIPT in seal
    assert doc["runcmd"][-1][-1] == bake_openstack.SEAL_SCRIPT


@pytest.fixture
def fake(requests_mock: rm.Mocker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCloud:
    monkeypatch.setattr(time, "sleep", lambda s: None)
    return use_fake_cloud(requests_mock, tmp_path, monkeypatch)


def _sdk_config(tmp_path: Path) -> Path:
    path = write_workshop(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["bake"] = {"source_image": "ubuntu-24.04", "flavor": "m1.large", "image_suffix": "none"}
    path.write_text(yaml.safe_dump(doc))
    return path


SEAL_FAILED_CONSOLE = (
    "[  OK  ] Started bakery-seal.service\n"
    f"{bake_openstack.SEAL_FAILED}: cloud-init did not finish the bake stage\n"
    "  bakery: cloud-init failed (exit 1)\n"
)


def test_a_builder_that_cannot_be_deleted_fails_the_bake(fake: FakeCloud, tmp_path: Path) -> None:
    path = _sdk_config(tmp_path)
    fake.console = SEAL_FAILED_CONSOLE
    fake.fail("DELETE", r"/servers/[^/]+$", 500, {"message": "Internal Server Error"}, times=None)

    with pytest.raises(LeftBehind) as info:
        bake_openstack.bake(config_path=path)

    (server_id,) = fake.servers
    message = str(info.value)
    assert server_id in message and f"openstack server delete {server_id}" in message
    assert "the bake had failed before" in message and "cloud-init did not finish" in message
    assert info.value.exit_code == 1
    result = CliRunner().invoke(cli.app, ["bake", str(path), "--builder", "openstacksdk"])
    assert result.exit_code == 1 and "could not be deleted" in result.stderr


def test_a_failed_seal_fails_the_bake_and_deletes_the_builder(
    fake: FakeCloud, tmp_path: Path
) -> None:
    path = _sdk_config(tmp_path)
    fake.console = SEAL_FAILED_CONSOLE
    progress = Collector()

    with pytest.raises(BuildError, match="cloud-init did not finish"):
        bake_openstack.bake(config_path=path, progress=progress)

    assert fake.servers == {}
    assert "builder intro-builder: deleted" in progress.messages
    (post,) = fake.calls("POST", r"/servers$")
    meta = post.json()["server"]["metadata"]
    assert meta == {"bakery_workshop": "intro", "bakery_role": "builder"}


def test_openstacksdk_builder_has_no_output_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="Glance image"):
        bake_openstack.bake(config_path=tmp_path / "workshop.yaml", output=tmp_path / "x")


# --- one call shape, one result type --------------------------------------------------------------


@pytest.mark.parametrize(
    ("builder", "module"),
    [("packer", packer), ("openstacksdk", bake_openstack), ("chroot", chroot)],
)
def test_builders_dispatch_and_the_cli_prints_every_result(
    write_config: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
    builder: str,
    module: Any,
) -> None:
    config = write_config("name: demo\n")
    calls: list[dict[str, Any]] = []

    def fake_bake(**kwargs: Any) -> list[BakeResult]:
        calls.append(kwargs)
        return [
            BakeResult(builder, "img-a", {}, image_id="1234"),
            BakeResult(builder, "img-b", {}, path=Path("/x/b.qcow2")),
        ]

    monkeypatch.setattr(module, "bake", fake_bake)
    result = CliRunner().invoke(cli.app, ["bake", str(config), "--builder", builder, "-o", "out"])

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{builder}: img-a 1234", f"{builder}: img-b /x/b.qcow2"]
    (kwargs,) = calls
    assert kwargs["config_path"] == config and kwargs["output"] == Path("out")
    assert kwargs.get("only") is None


@pytest.mark.parametrize("builder", ["openstacksdk", "chroot"])
def test_only_is_for_packer(write_config: Callable[[str], Path], builder: Any) -> None:
    with pytest.raises(UsageError, match="only for --builder packer"):
        builders.bake(config_path=write_config("name: demo\n"), builder=builder, only="qemu")
