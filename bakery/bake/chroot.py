"""Bake a golden image at native speed: mount the image's filesystem, change it in a chroot, clean.

Applying the cloud-config itself (what cloud-init would do) is :mod:`bakery.bake.chroot_apply`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bakery.bake.chroot_apply import _run, apply_cloud_config
from bakery.config.workshop import Workshop, load_config
from bakery.errors import ChrootError, ToolMissing
from bakery.progress import Reporter, quiet
from bakery.vm import image
from bakery.vm.image import BakeResult


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise ToolMissing(f"the chroot builder needs {tool}: apt-get install {package}")


# --- mounting an image --------------------------------------------------------------------------


def _root_partition_offset(raw: Path) -> int:
    """Byte offset of the image's root filesystem: the largest Linux partition, or 0 if none."""
    proc = subprocess.run(
        ["sfdisk", "--json", str(raw)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        return 0  # a bare filesystem image
    table = json.loads(proc.stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    linux = {"83", "0fc63daf-8483-4772-8e79-3d69d8477de4"}
    parts = [p for p in table.get("partitions", []) if str(p.get("type", "")).lower() in linux]
    if not parts:
        raise ChrootError(f"{raw}: no Linux partition found in its partition table")
    best = max(parts, key=lambda p: int(p["size"]))
    return int(best["start"]) * sector


def _kill_processes_in(root: Path) -> list[int]:
    """SIGKILL processes whose root directory is inside ``root`` (daemons a package script left)."""
    killed = []
    real = os.path.realpath(root)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            proc_root = os.readlink(proc / "root")
        except OSError:
            continue
        if proc_root == real or proc_root.startswith(real + "/"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
    if killed:
        time.sleep(1)
    return killed


@contextlib.contextmanager
def _mounted(raw: Path, mountpoint: Path) -> Iterator[Path]:
    offset = _root_partition_offset(raw)
    loop = _run(
        ["losetup", "--find", "--show", "--offset", str(offset), str(raw)], "losetup"
    ).strip()
    try:
        _run(["mount", loop, str(mountpoint)], f"mounting {loop}")
        try:
            yield mountpoint
        finally:
            subprocess.run(["fstrim", str(mountpoint)], capture_output=True, check=False)
            _run(["umount", str(mountpoint)], f"unmounting {mountpoint}")
    finally:
        subprocess.run(["losetup", "--detach", loop], capture_output=True, check=False)


@contextlib.contextmanager
def prepared_root(root: Path) -> Iterator[Path]:
    """Make ``root`` fit for running package scripts, and undo everything afterwards.

    Binds /proc, /dev and /dev/pts, mounts a tmpfs on /run, copies the host's resolv.conf in
    and installs a policy-rc.d that exits 101 so no package starts a service. On exit (even
    after a failure) the mounts go (lazily) and resolv.conf and policy-rc.d are put back.
    """
    mounts: list[Path] = []
    saved: dict[Path, tuple[str, bytes | str | None]] = {}

    def save(path: Path) -> None:
        if path.is_symlink():
            saved[path] = ("link", os.readlink(path))
        elif path.exists():
            saved[path] = ("file", path.read_bytes())
        else:
            saved[path] = ("none", None)

    try:
        for sub, args in (
            ("proc", ["--bind", "/proc"]),
            ("dev", ["--bind", "/dev"]),
            ("dev/pts", ["--bind", "/dev/pts"]),
            ("run", ["-t", "tmpfs", "tmpfs"]),
        ):
            target = root / sub
            target.mkdir(parents=True, exist_ok=True)
            _run(["mount", *args, str(target)], f"mounting {target}")
            mounts.append(target)
        resolv = root / "etc/resolv.conf"
        save(resolv)
        if resolv.is_symlink() or resolv.exists():
            resolv.unlink()
        shutil.copyfile("/etc/resolv.conf", resolv)
        policy = root / "usr/sbin/policy-rc.d"
        save(policy)
        if policy.is_symlink():
            policy.unlink()
        policy.write_text("#!/bin/sh\n# bakery chroot build: start no services\nexit 101\n")
        policy.chmod(0o755)
        yield root
    finally:
        _kill_processes_in(root)
        for target in reversed(mounts):
            subprocess.run(["umount", "--lazy", str(target)], capture_output=True, check=False)
        for path, (kind, value) in saved.items():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            if kind == "link":
                os.symlink(str(value), path)
            elif kind == "file":
                assert isinstance(value, bytes)
                path.write_bytes(value)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _check_baked(root: Path) -> None:
    """What clean.sh checks in a builder VM: the record is there, no secret is."""
    rec = root / image.RECORD_PATH.lstrip("/")
    if not rec.is_file() or rec.stat().st_size == 0:
        raise ChrootError(f"{image.RECORD_PATH} is missing: the bake stage wrote no bake record")
    for secret in image.secret_paths():
        if (root / secret.lstrip("/")).exists():
            raise ChrootError(
                f"{secret} exists after the bake stage; a golden image must not carry it"
            )


def clean_for_first_boot(root: Path) -> None:
    """Make the image at ``root`` reusable, as ``packer/clean.sh`` does in a builder VM.

    Checks the bake record is there and no secret is, removes :data:`bakery.vm.image.CLEAN_GLOBS`
    (cloud-init state, ssh host keys, caches ...), empties :data:`bakery.vm.image.EMPTIED` (the
    machine-id: systemd makes one at boot), removes rotated logs and truncates the others.

    Raises:
        ChrootError: no record, a secret, or ssh host keys left.
    """
    _check_baked(root)
    kept = {root / k for k in image.KEPT}
    for pattern in image.CLEAN_GLOBS:
        for path in root.glob(pattern):
            if path not in kept:
                _remove(path)
    for name in image.EMPTIED:
        path = root / name
        if path.exists() or path.is_symlink():
            path.unlink()
        path.write_text("")
    for path in kept:
        path.mkdir(parents=True, exist_ok=True)
    logs = root / "var/log"
    for pattern in image.ROTATED_LOGS:
        for path in [p for p in logs.rglob(pattern) if p.is_file() and not p.is_symlink()]:
            path.unlink()
    for path in [p for p in logs.rglob("*") if p.is_file() and not p.is_symlink()]:
        os.truncate(path, 0)
    leftovers = sorted(str(p.relative_to(root)) for p in root.glob("etc/ssh/ssh_host_*"))
    if leftovers:
        raise ChrootError(f"ssh host keys left in the image: {', '.join(leftovers)}")


def copy_into(root: Path, files: dict[str, Path]) -> None:
    """Copy host files into the image (image path -> host path), root-owned, mode 0600.

    For what cannot ride in user-data (a user image archive); the target's parent directories
    are made inside the image, and a symlink at the target is refused.
    """
    for target, source in files.items():
        if not target.startswith("/") or ".." in Path(target).parts:
            raise ChrootError(f"copy into the image: {target!r} must be absolute, without '..'")
        dest = root / target.lstrip("/")
        if dest.is_symlink():
            raise ChrootError(f"copy into the image: {target} is a symlink in the image")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        os.chown(dest, 0, 0)
        dest.chmod(0o600)


def apply_to_raw(
    raw: Path,
    mnt: Path,
    user_data: dict[str, Any],
    progress: Reporter,
    copies: dict[str, Path] | None = None,
) -> dict[str, float]:
    """Mount ``raw``'s root, copy ``copies`` in, apply ``user_data``, clean, flush, unmount."""
    with _mounted(raw, mnt) as root:
        timings: dict[str, float] = {}
        if copies:
            start = time.monotonic()
            progress(f"copying {', '.join(copies)} into the image")
            copy_into(root, copies)
            timings["copy in"] = round(time.monotonic() - start, 1)
        with prepared_root(root):
            timings |= apply_cloud_config(root, user_data, progress=progress)
        start = time.monotonic()
        clean_for_first_boot(root)
        subprocess.run(["sync", "-f", str(root)], check=False)
        timings["clean"] = round(time.monotonic() - start, 1)
    return timings


def _apply_isolated(
    raw: Path,
    mnt: Path,
    user_data: dict[str, Any],
    tmp: Path,
    progress: Reporter,
    copies: dict[str, Path] | None = None,
) -> dict[str, float]:
    """Run `apply_to_raw` in a private mount namespace (``unshare --mount``).

    Mounts made in the host's namespace propagate into other namespaces (services with their
    own), which then keep the filesystem alive after our umount: the image would be converted
    while its journal still needs recovery. In a private namespace nobody else sees them.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        return apply_to_raw(raw, mnt, user_data, progress, copies)
    (tmp / "user-data.json").write_text(json.dumps(user_data))
    (tmp / "copies.json").write_text(json.dumps({k: str(v) for k, v in (copies or {}).items()}))
    cmd = [unshare, "--mount", "--propagation", "private", sys.executable, "-m",
           "bakery.bake.chroot_worker", str(raw), str(mnt), str(tmp / "user-data.json"),
           str(tmp / "timings.json"), str(tmp / "copies.json")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        progress(line.rstrip("\n"))
    err = proc.stderr.read()
    if proc.wait() != 0:
        raise ChrootError(err.strip() or f"the chroot worker failed (exit {proc.returncode})")
    data = json.loads((tmp / "timings.json").read_text())
    return {str(k): float(v) for k, v in data.items()}


def _check_clean(raw: Path) -> None:
    """Fail when the image's filesystem was not cleanly unmounted (journal needs recovery)."""
    with raw.open("rb") as fh:
        fh.seek(_root_partition_offset(raw) + 1024)
        sb = fh.read(1024)
    ext_magic = int.from_bytes(sb[0x38:0x3A], "little")
    incompat = int.from_bytes(sb[0x60:0x64], "little")
    if ext_magic == 0xEF53 and incompat & 0x4:  # EXT3_FEATURE_INCOMPAT_RECOVER
        raise ChrootError(
            f"{raw}: the filesystem was not cleanly unmounted (journal needs recovery); "
            "something outside the build still holds it"
        )


def bake_chroot(
    user_data: dict[str, Any],
    *,
    base: Path,
    output: Path,
    progress: Reporter = quiet,
    workdir: Path | None = None,
    copies: dict[str, Path] | None = None,
) -> dict[str, float]:
    """Produce the golden image ``output`` (qcow2) from ``base`` with a bake-stage cloud-config.

    ``copies`` (image path -> host file) are copied in before the cloud-config applies.

    ``base`` is only read: it is converted to a raw copy, whose root partition is loop-mounted,
    prepared (`prepared_root`), changed (`apply_cloud_config`), cleaned (`clean_for_first_boot`),
    unmounted and converted back. Needs root, qemu-img, losetup, sfdisk.

    Returns:
        Seconds per step (``convert``, each apply step, ``clean``, ``convert back``).

    Raises:
        ChrootError: not root, a tool is missing, or a step failed; nothing is left mounted.
    """
    if os.geteuid() != 0:
        raise ChrootError("the chroot builder needs root (loop devices, mount, chroot)")
    for tool, pkg in (("qemu-img", "qemu-utils"), ("losetup", "mount"), ("sfdisk", "fdisk")):
        _need(tool, pkg)
    base, output = Path(base), Path(output)
    if not base.is_file():
        raise ChrootError(f"{base}: no such base image")
    for target, source in (copies or {}).items():
        if not Path(source).is_file():
            raise ChrootError(f"{source}: no such file (to copy into the image at {target})")
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(
        prefix="bakery-chroot-", dir=workdir or output.parent
    ) as tmp_name:
        tmp = Path(tmp_name)
        raw, mnt = tmp / "disk.raw", tmp / "root"
        mnt.mkdir()
        start = time.monotonic()
        progress(f"converting {base} to a raw working copy")
        _run(["qemu-img", "convert", "-O", "raw", str(base), str(raw)], "qemu-img convert")
        timings["convert"] = round(time.monotonic() - start, 1)
        timings |= _apply_isolated(raw, mnt, user_data, tmp, progress, copies)
        _check_clean(raw)
        start = time.monotonic()
        progress(f"writing {output}")
        partial = output.with_name(output.name + ".partial")
        try:
            _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(partial)], "qemu-img convert")
        except ChrootError:
            partial.unlink(missing_ok=True)  # a half-written image is only lost disk space
            raise
        os.replace(partial, output)
        timings["convert back"] = round(time.monotonic() - start, 1)
    return timings


def bake_output(config_path: Path, cfg: Workshop, output: Path | None) -> Path:
    """The golden qcow2: ``output``, else ``build/NAME-golden.qcow2`` beside the config."""
    return output or Path(config_path).parent / "build" / f"{cfg.name}-golden.qcow2"


def _copies(
    cfg: Workshop, config_path: Path, workdir: Path, progress: Reporter = quiet
) -> dict[str, Path]:
    """Files copied into the image before the bake stage: the user image archive, and the shared
    data and course folders packed as tars in ``workdir`` (bakery.content)."""
    from bakery.layout import USER_IMAGE_ARCHIVE
    from bakery.workshop import content

    copies: dict[str, Path] = {}
    if cfg.spawner.kind == "docker":
        if cfg.spawner.image_archive is None:
            raise ChrootError(
                "the chroot builder cannot pull the user image (no Docker daemon runs in a "
                "chroot): set spawner.image_archive (loaded at first boot), use --builder packer "
                "or openstacksdk, or spawner.kind: systemd"
            )
        # No daemon in a chroot: bakery-user-image.service loads the archive at first boot.
        copies[USER_IMAGE_ARCHIVE] = cfg.spawner.image_archive.source(Path(config_path).parent)
    for packed in content.pack_all(cfg, Path(config_path).parent, workdir):
        progress(f"packed {content.describe(packed)}")
        copies[packed.target] = packed.path
    return copies


def bake(
    *, config_path: str | Path, output: str | Path | None = None, progress: Reporter = quiet
) -> list[BakeResult]:
    """`bakery bake --builder chroot`: the workshop's bake stage into a golden qcow2.

    The base is ``bake.qemu_base_image``; the output defaults to ``build/NAME-golden.qcow2``
    beside the config. The bake stage writes the bake record into the image (as in every
    builder); the sidecar ``OUTPUT.bakery.json`` carries it with the image's name and Glance
    properties, for an upload.

    Returns:
        One result: the file, its name, the record, seconds per step.

    Raises:
        ChrootError: no base image, a docker workshop without an image archive, a failed step.
    """
    from bakery.vm.userdata import build_cloud_config

    config_path = Path(config_path)
    cfg = load_config(config_path)
    if cfg.bake.qemu_base_image is None:
        raise ChrootError(
            f"{config_path}: bake.qemu_base_image: the chroot builder needs a base qcow2 cloud "
            "image with cloud-init"
        )
    out = bake_output(config_path, cfg, Path(output) if output else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    name = image.image_name(cfg)
    with tempfile.TemporaryDirectory(prefix="bakery-content-", dir=out.parent) as packdir:
        timings = bake_chroot(
            build_cloud_config(cfg, stage="bake"),
            base=Path(cfg.bake.qemu_base_image),
            output=out,
            progress=progress,
            copies=_copies(cfg, config_path, Path(packdir), progress),
        )
    rec = image.record(cfg)
    image.write_sidecar(out, image.sidecar(cfg, rec, name, "qcow2"))
    progress(f"baked {name} in {sum(timings.values()):.0f} s: {out}")
    return [BakeResult("chroot", name, rec, path=out, timings=timings)]
