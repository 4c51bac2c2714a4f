"""The chroot builder's offline parts: write_files encodings, refused keys, clean filesystems."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery.bake import chroot, chroot_apply
from bakery.errors import ChrootError


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
    assert chroot_apply._offline_noop(item) is noop


@pytest.mark.parametrize(
    ("item", "content"),
    [
        ({"content": "plain\n"}, b"plain\n"),
        ({"content": "aGk=", "encoding": "b64"}, b"hi"),
        ({"content": "H4sIAAAAAAACA8sAAOcGa5EBAAAA", "encoding": "gz+b64"}, b"h"),
    ],
)
def test_write_files_encodings(item: dict[str, str], content: bytes) -> None:
    assert chroot_apply._file_content({"path": "/x", **item}) == content


def test_unsupported_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ChrootError, match="users"):
        chroot_apply.apply_cloud_config(tmp_path, {"users": ["default"], "packages": []})


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
        with pytest.raises(ChrootError, match="needs recovery"):
            chroot._check_clean(raw)


def test_chroot_bake_of_docker_needs_an_image_archive(tmp_path: Path) -> None:
    config = tmp_path / "workshop.yaml"
    config.write_text("name: dock\nbake: {qemu_base_image: /nonexistent/base.qcow2}\n")
    with pytest.raises(ChrootError, match=r"set spawner\.image_archive"):
        chroot.bake(config_path=config)


def test_copy_into_refuses_paths_outside_and_symlinks(tmp_path: Path) -> None:
    src = tmp_path / "a.tar"
    src.write_bytes(b"x")
    root = tmp_path / "root"
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lib/bakery").symlink_to("/etc")
    with pytest.raises(ChrootError, match=r"without '\.\.'"):
        chroot.copy_into(root, {"/var/../../etc/x": src})
    with pytest.raises(ChrootError, match="symlink"):
        chroot.copy_into(root, {"/var/lib/bakery": src})
