"""Fast checks of the local-VM and chroot helpers that need no VM (console parsing, seed, probe)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from bakery import chroot, localvm

CONSOLE = """\
[    0.000000] Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org)
[   38.1] cloud-init[201]: Cloud-init v. 22.4.2 running 'init-local' at Fri, 27 Nov 2026.
[   52.3] cloud-init[240]: Cloud-init v. 22.4.2 running 'init' at Fri, 27 Nov 2026.
[   70.0] cloud-init[300]: Cloud-init v. 22.4.2 running 'modules:config' at Fri, 27 Nov 2026.
[   80.0] cloud-init[320]: Cloud-init v. 22.4.2 running 'modules:final' at Fri, 27 Nov 2026.
[   85.0] cloud-init[320]: cc_scripts_user.py[WARNING]: Failed to run module scripts-user
[FAILED] Failed to start \x1b[0;1;39mjupyterhub.service\x1b[0m - JupyterHub.
[   90.0] cloud-init[320]: bakery: e2e-workshop boot stage done after 90.01 seconds
e2e-workshop login:
"""


def test_scan_console_finds_stages_failures_and_the_end() -> None:
    assert not localvm.scan_console(CONSOLE).finished  # a custom final_message replaces the default
    scan = localvm.scan_console(CONSOLE, ("bakery: e2e-workshop boot stage done after",))
    assert scan.kernel_started and scan.login_prompt
    assert scan.stages == ["init-local", "init", "modules:config", "modules:final"]
    assert scan.finished
    assert any("scripts-user" in line for line in scan.failures)
    assert "[FAILED] Failed to start jupyterhub.service - JupyterHub." in scan.failures


def test_scan_console_default_final_message() -> None:
    line = "cloud-init[9]: Cloud-init v. 22.4.2 finished at Fri, 27 Nov 2026. Up 95.1 seconds"
    assert localvm.scan_console(line).finished


def test_scan_console_not_finished_midway() -> None:
    scan = localvm.scan_console(CONSOLE.split("modules:final")[0], ("stage done",))
    assert not scan.finished and scan.failures == []


@pytest.mark.parametrize(
    ("item", "noop"),
    [
        (["systemctl", "daemon-reload"], True),
        ("systemctl daemon-reload", True),
        (["systemctl", "enable", "--now", "x.service"], False),
        (["systemctl", "restart", "nginx"], False),
    ],
)
def test_only_daemon_reload_is_skipped_in_a_chroot(item: object, noop: bool) -> None:
    assert chroot._offline_noop(item) is noop


@pytest.mark.parametrize(
    ("item", "content"),
    [
        ({"content": "plain\n"}, b"plain\n"),
        ({"content": "aGk=", "encoding": "b64"}, b"hi"),
        ({"content": "H4sIAAAAAAACA8sAAOcGa5EBAAAA", "encoding": "gz+b64"}, b"h"),
    ],
)
def test_write_files_encodings(item: dict[str, str], content: bytes) -> None:
    assert chroot._file_content({"path": "/x", **item}) == content


def test_unsupported_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(chroot.ChrootError, match="users"):
        chroot.apply_cloud_config(tmp_path, {"users": ["default"], "packages": []})


def test_seed_iso_is_labelled_cidata(tmp_path: Path) -> None:
    if shutil.which("genisoimage") is None and shutil.which("isoinfo") is None:
        pytest.skip("genisoimage not installed")
    iso = localvm.make_seed_iso(tmp_path / "seed.iso", b"#cloud-config\n{}\n", "instance-id: x\n")
    info = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True)
    assert "Volume id: cidata" in info.stdout
    listing = subprocess.run(
        ["isoinfo", "-R", "-l", "-i", str(iso)], capture_output=True, text=True
    )
    assert "user-data" in listing.stdout and "meta-data" in listing.stdout


def test_probe_boot_sector_runs_under_tcg(tmp_path: Path) -> None:
    """The KVM probe guest itself must be right, or `auto` would wrongly reject a working KVM."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("qemu-system-x86_64 not installed")
    disk, out = tmp_path / "probe.img", tmp_path / "serial.out"
    disk.write_bytes(localvm._probe_boot_sector())
    disk.write_bytes(disk.read_bytes() + bytes(1024 * 1024 - 512))
    proc = subprocess.Popen(
        [qemu, "-accel", "tcg", "-machine", "q35", "-m", "64", "-display", "none",
         "-monitor", "none", "-serial", f"file:{out}", "-drive", f"file={disk},format=raw"],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            out.exists() and b"BAKERY-KVM-OK" in out.read_bytes()
        ):
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    assert b"BAKERY-KVM-OK" in out.read_bytes()


def test_start_refuses_a_busy_port(tmp_path: Path) -> None:
    import socket

    if shutil.which("qemu-system-x86_64") is None or shutil.which("qemu-img") is None:
        pytest.skip("qemu not installed")
    image = tmp_path / "img.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1G"], check=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(localvm.LocalVmError, match="already in use"):
            localvm.start_vm(image=image, user_data=b"", run_dir=tmp_path / "run", ssh_port=port)


def test_status_without_a_vm_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(localvm.LocalVmError, match="no local VM"):
        localvm.vm_status(tmp_path)


@pytest.mark.parametrize(("incompat", "clean"), [(0x2C2, True), (0x2C6, False)])
def test_an_unclean_filesystem_is_refused(tmp_path: Path, incompat: int, clean: bool) -> None:
    raw = tmp_path / "fs.raw"  # a bare ext4 superblock, no partition table
    sb = bytearray(1024)
    sb[0x38:0x3A] = (0xEF53).to_bytes(2, "little")
    sb[0x60:0x64] = incompat.to_bytes(4, "little")
    raw.write_bytes(bytes(1024) + bytes(sb) + bytes(4096))
    if clean:
        chroot._check_clean(raw)
    else:
        with pytest.raises(chroot.ChrootError, match="needs recovery"):
            chroot._check_clean(raw)


def test_seed_iso_with_pycdlib_when_no_iso_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pycdlib")
    if shutil.which("isoinfo") is None:
        pytest.skip("isoinfo (genisoimage) not installed to read the result")
    real_which = shutil.which
    no_iso_tools = {"genisoimage", "mkisofs", "xorriso"}
    monkeypatch.setattr(
        localvm.shutil, "which", lambda name: None if name in no_iso_tools else real_which(name)
    )
    iso = localvm.make_seed_iso(tmp_path / "seed.iso", b"#cloud-config\n{}\n", "instance-id: x\n")
    info = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True)
    assert "Volume id: cidata" in info.stdout
    user_data = subprocess.run(
        ["isoinfo", "-R", "-x", "/user-data", "-i", str(iso)], capture_output=True
    ).stdout
    assert user_data == b"#cloud-config\n{}\n"


def test_chroot_bake_of_docker_needs_an_image_archive(tmp_path: Path) -> None:
    config = tmp_path / "workshop.yaml"
    config.write_text("name: dock\nbake: {qemu_base_image: /nonexistent/base.qcow2}\n")
    with pytest.raises(chroot.ChrootError, match=r"set spawner\.image_archive"):
        chroot.bake_golden(config_path=config)


def test_copy_into_refuses_paths_outside_and_symlinks(tmp_path: Path) -> None:
    src = tmp_path / "a.tar"
    src.write_bytes(b"x")
    root = tmp_path / "root"
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lib/bakery").symlink_to("/etc")
    with pytest.raises(chroot.ChrootError, match=r"without '\.\.'"):
        chroot.copy_into(root, {"/var/../../etc/x": src})
    with pytest.raises(chroot.ChrootError, match="symlink"):
        chroot.copy_into(root, {"/var/lib/bakery": src})
