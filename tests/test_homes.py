"""The trainees' homes: their own XFS filesystem and a quota each (issue 26), and what sets them.

homes.py (cloudinit/homes.py.j2) runs here against a folder standing in for /home, with the
commands it runs (mount, mkfs.xfs, xfs_quota, ...) recorded instead of run; the VMs of the e2e
tier run it for real (test_try's test_j, test_docker, test_cluster).
"""

from __future__ import annotations

import json
import os
import subprocess
import types
from pathlib import Path
from typing import Any

import pytest

from bakery.config.workshop import parse_config
from bakery.errors import ConfigError
from bakery.layout import HOMES_FILE, HOMES_UNIT, SCRIPT_DIR, UNITS
from bakery.templates import render
from bakery.topology import size_estimate
from bakery.vm.context import context
from bakery.vm.files import homes_files
from bakery.vm.userdata import build_cloud_config
from bakery.workshop.accounts import preview_accounts
from bakery.workshop.sizing import home_bytes

BASE = "name: qz\nusers: {names: [ada, bob], admins: [teacher]}\n"


def cfg_of(extra: str = "") -> Any:
    return parse_config(BASE + extra, Path("w.yaml"))


# --- the config and the estimate ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("", 550_000_000),  # auto: 0.5 GB plus the default 0.05 GB of data
        ("openstack: {data_gb_per_user: 1.5}\n", 2_000_000_000),
        ("spawner: {disk_limit: 3G}\n", 3 * 1024**3),
        ("spawner: {disk_limit: 64M}\n", 64 * 1024**2),
        ("spawner: {disk_limit: none}\n", None),
    ],
)
def test_the_limit_per_home(extra: str, expected: int | None) -> None:
    assert home_bytes(cfg_of(extra)) == expected


@pytest.mark.parametrize(("value", "words"), [("1M", "below 16M"), ("lots", "not a size")])
def test_a_bad_disk_limit_is_refused(value: str, words: str) -> None:
    with pytest.raises(ConfigError, match=rf"w\.yaml:4: spawner\.disk_limit: .*{words}"):
        cfg_of(f"spawner:\n  disk_limit: {value}\n")


def test_bakery_size_counts_the_limit() -> None:
    plain = size_estimate(cfg_of())
    big = size_estimate(cfg_of("spawner: {disk_limit: 10G}\n"))
    # 3 homes (2 trainees, 1 admin): 20 GB + 3 x 10.74 GB, against 20 + 3 x 0.55.
    assert (plain.disk_gb, big.disk_gb) == (22, 53)


# --- what the VM gets -----------------------------------------------------------------------------


def test_the_boot_stage_says_the_limit_and_who_is_exempt() -> None:
    cfg = cfg_of("spawner: {disk_limit: 2G}\n")
    assert json.loads(homes_files(cfg)[0].content) == {
        "limit_bytes": 2 * 1024**3,
        "exempt": sorted({cfg.login_user, "teacher"}),
    }
    doc = build_cloud_config(cfg, stage="full", accounts=preview_accounts(cfg))
    paths = {f["path"] for f in doc["write_files"]}
    assert {HOMES_FILE, f"{SCRIPT_DIR}/homes.py", f"/etc/systemd/system/{HOMES_UNIT}"} <= paths
    assert "xfsprogs" in doc["packages"]
    enabled = next(c for c in doc["runcmd"] if c[:3] == ["systemctl", "enable", "--now"])
    assert enabled[3] == HOMES_UNIT == UNITS[0]  # first: NFS and cloud-final's runcmd wait for it


def test_without_a_limit_the_homes_stay_where_they_are() -> None:
    cfg = cfg_of("spawner: {disk_limit: none}\n")
    doc = build_cloud_config(cfg, stage="boot", accounts=preview_accounts(cfg))
    assert HOMES_FILE not in {f["path"] for f in doc["write_files"]}  # homes.py: nothing to do
    assert size_estimate(cfg).disk_gb == size_estimate(cfg_of()).disk_gb


def test_a_worker_gets_no_homes_of_its_own() -> None:
    cfg = cfg_of("spawner: {kind: docker}\ncluster: {engine: swarm}\n")
    doc = build_cloud_config(cfg, stage="boot", role="worker")
    assert HOMES_FILE not in {f["path"] for f in doc["write_files"]}
    unit = render(f"cloudinit/{HOMES_UNIT}.j2", **context(cfg))
    assert "ConditionPathExists=!/etc/bakery/cluster-worker" in unit
    assert "Before=cloud-final.service nfs-server.service bakery-cluster.service" in unit
    # The hub does not wait for the homes (its servers do: bakery_warm.homes_first); it waits
    # (hub-start.py, through its requirements' target) for cloud-init's init stage, which writes
    # its config and the accounts.
    assert "jupyterhub.service" not in unit and "jupyterhub-ready" not in unit
    hub = render("cloudinit/jupyterhub.service.j2", **context(cfg_of()))
    ready = render("cloudinit/jupyterhub-ready.target.j2", **context(cfg_of()))
    assert "\nRequires=jupyterhub-ready.target " in hub and HOMES_UNIT not in hub
    assert "\nAfter=cloud-init.service " in ready and HOMES_UNIT not in ready


# --- homes.py, against a folder standing in for /home ---------------------------------------------


class Machine:
    """The commands homes.py runs, recorded; a few answer as the real ones would."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.calls: list[list[str]] = []
        self.mounted = False
        self.projects: dict[str, int] = {}
        self.refuse = ""  # a command that fails (as mount does on a kernel without XFS quotas)

    def run(self, args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        argv = list(args)
        self.calls.append(argv)
        if argv[0] == self.refuse:
            raise subprocess.CalledProcessError(32, args)
        out = ""
        if argv[0] == "findmnt":
            out = "xfs\n" if self.mounted else ""
        elif argv[0] == "mount" and argv[-1] == str(self.home):
            self.mounted = True
        elif argv[0] == "umount":
            # What was written through the mount is in the image, not in the folder below it.
            for entry in Path(argv[1]).iterdir():
                entry.unlink()
        elif argv[0] == "mkfs.xfs":
            Path(argv[-1]).write_bytes(b"XFSB")
        elif argv[0] == "xfs_io":
            project = self.projects.get(argv[-1])
            out = f"projid = {project}\n" if project is not None else ""
        elif argv[0] == "xfs_quota" and argv[3].startswith("project -s -p "):
            _, _, _, path, uid = argv[3].split()
            self.projects[path] = int(uid)
        return subprocess.CompletedProcess(argv, 0, out, "")


def load_homes(tmp_path: Path, settings: dict[str, Any] | None) -> tuple[Any, Machine]:
    home = tmp_path / "home"
    for name in ("ada", "bob", "teacher", "debian"):
        (home / name).mkdir(parents=True)
    (home / ".hidden").mkdir()
    (tmp_path / "fstab").write_text("LABEL=root / ext4 defaults 0 1\n")
    if settings is not None:
        (tmp_path / "homes.json").write_text(json.dumps(settings))
    code = render(
        "cloudinit/homes.py.j2",
        name="q",
        bakery_version="test",
        homes_file=str(tmp_path / "homes.json"),
        homes_image=str(tmp_path / "img" / "homes.xfs"),
    )
    # No folder for the image: a workshop with nothing else under /var/lib/bakery has none.
    module = types.ModuleType("homes")
    exec(compile(code, "homes.py", "exec"), module.__dict__)
    module.HOME, module.FSTAB, module.MIN_UID = str(home), str(tmp_path / "fstab"), 0
    machine = Machine(home)
    module.subprocess = types.SimpleNamespace(
        run=machine.run, CalledProcessError=subprocess.CalledProcessError
    )
    return module, machine


SETTINGS = {"limit_bytes": 64 * 1024**2, "exempt": ["debian", "teacher"]}


def test_first_boot_makes_the_filesystem_copies_the_homes_and_sets_the_quotas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    homes, machine = load_homes(tmp_path, SETTINGS)
    monkeypatch.setattr(homes.sys, "argv", ["homes.py"])
    assert homes.main() == 0
    ran = [c[0] for c in machine.calls]
    assert "mkfs.xfs" in ran
    staging_mount = next(c for c in machine.calls if c[:3] == ["mount", "-o", "loop,prjquota"])
    copy = next(c for c in machine.calls if c[0] == "cp")
    assert copy == ["cp", "-a", f"{machine.home}/.", staging_mount[-1]]
    image = f"{tmp_path}/img/homes.xfs"
    mounted = machine.calls.index(["mount", "-o", "loop,prjquota", image, str(machine.home)])
    assert ran.index("cp") < ran.index("umount") < mounted
    fstab = (tmp_path / "fstab").read_text()
    assert fstab.count(f"{tmp_path}/img/homes.xfs {machine.home} xfs loop,prjquota,nofail") == 1
    quotas = [c[3] for c in machine.calls if c[0] == "xfs_quota"]
    uid = os.getuid()
    assert quotas == [
        f"project -s -p {machine.home}/ada {uid}",
        f"limit -p bhard={64 * 1024**2} {uid}",
        f"project -s -p {machine.home}/bob {uid}",
        f"limit -p bhard={64 * 1024**2} {uid}",
    ]  # neither the login user, an admin, nor a dot folder


def test_a_later_boot_only_sets_the_limits_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    homes, machine = load_homes(tmp_path, SETTINGS)
    monkeypatch.setattr(homes.sys, "argv", ["homes.py"])
    homes.main()
    machine.calls.clear()
    homes.main()
    assert [c[0] for c in machine.calls if c[0] in ("mkfs.xfs", "cp", "mount")] == []
    assert all(not c[3].startswith("project") for c in machine.calls if c[0] == "xfs_quota")
    assert (tmp_path / "fstab").read_text().count("homes.xfs") == 1


def test_users_add_only_sets_quotas_and_a_worker_does_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    homes, machine = load_homes(tmp_path, SETTINGS)
    monkeypatch.setattr(homes.sys, "argv", ["homes.py", "quota"])
    assert homes.main() == 1  # /home is not the homes' filesystem: said, not hidden
    assert [c[0] for c in machine.calls] == ["findmnt"]
    worker, machine = load_homes(tmp_path / "w", None)
    assert worker.main() == 0 and machine.calls == []


def test_a_kernel_without_xfs_quotas_is_said_and_the_homes_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    homes, machine = load_homes(tmp_path, SETTINGS)
    machine.refuse = "mount"
    monkeypatch.setattr(homes.sys, "argv", ["homes.py"])
    (machine.home / "ada" / "work.ipynb").write_text("{}")
    assert homes.main() == 1
    assert "XFS quota support" in capsys.readouterr().err
    assert (machine.home / "ada" / "work.ipynb").read_text() == "{}"
    assert "homes.xfs" not in (tmp_path / "fstab").read_text()  # no line that fails each boot
