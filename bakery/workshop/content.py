"""Shared data and course material: local folders packed into deterministic tars for a bake.

A bake copies each tar into the image (the chroot builder's copies, Packer's file provisioner);
the bake stage's ``content.sh`` unpacks it where it belongs and deletes it. The same folder always
gives the same bytes: sorted names, mtime 0, owner root, modes 0644 (files) and 0755 (folders).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from bakery.config.workshop import Workshop
from bakery.errors import ConfigError
from bakery.layout import COURSE_TAR, SHARED_DATA_TAR

__all__ = ["Folder", "Packed", "folder_bytes", "folders", "pack", "pack_all", "scan"]


@dataclass(frozen=True)
class Folder:
    """A local folder a bake ships: its config key (for messages), the folder, the tar's target."""

    key: str
    source: Path
    target: str


@dataclass(frozen=True)
class Entry:
    """One member of a folder: its name in the tar, the file, its kind."""

    name: str
    path: Path
    kind: str  # "dir", "file" or "link"
    size: int = 0
    link: str = ""


@dataclass(frozen=True)
class Packed:
    """A written tar: where it goes in the image, the file, its members, bytes of content, hash."""

    target: str
    path: Path
    files: int
    size: int
    sha256: str


def folders(cfg: Workshop, config_dir: Path) -> list[Folder]:
    """The folders ``cfg`` ships in its golden image (shared_data.from, course.from)."""
    out = []
    if cfg.shared_data is not None and (src := cfg.shared_data.source(config_dir)) is not None:
        out.append(Folder("shared_data.from", src, SHARED_DATA_TAR))
    if cfg.course is not None and (src := cfg.course.source(config_dir)) is not None:
        out.append(Folder("course.from", src, COURSE_TAR))
    return out


def _inside(root: Path, link: Path) -> str | None:
    """The symlink's target if it stays inside ``root`` (relative), else None."""
    target = os.readlink(link)
    if os.path.isabs(target):
        return None
    resolved = os.path.normpath(os.path.join(os.path.dirname(link), target))
    if resolved != str(root) and not resolved.startswith(str(root) + os.sep):
        return None
    return target


def scan(folder: Folder) -> list[Entry]:
    """The folder's members, sorted by name.

    Raises:
        ConfigError: the folder is missing, or holds a symlink leading out of it (or absolute),
            a device, a pipe or a socket.
    """
    root = Path(os.path.normpath(folder.source.absolute()))
    if not root.is_dir():
        raise ConfigError(f"{folder.key}: {folder.source}: no such folder (to copy into the image)")
    entries: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                target = _inside(root, path)
                if target is None:
                    raise ConfigError(
                        f"{folder.key}: {path} is a symlink to {os.readlink(path)}, outside "
                        f"{folder.source}: copy the file in instead"
                    )
                entries.append(Entry(rel, path, "link", link=target))
            elif stat.S_ISDIR(mode):
                entries.append(Entry(rel, path, "dir"))
            elif stat.S_ISREG(mode):
                entries.append(Entry(rel, path, "file", size=path.lstat().st_size))
            else:
                raise ConfigError(
                    f"{folder.key}: {path} is a device, pipe or socket: only files, folders and "
                    "symlinks inside the folder can be copied"
                )
    return sorted(entries, key=lambda e: e.name)


def _info(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
    if entry.kind == "dir":
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    elif entry.kind == "link":
        info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, entry.link
    else:
        info.type, info.mode, info.size = tarfile.REGTYPE, 0o644, entry.size
    return info


def pack(folder: Folder, dest: Path) -> Packed:
    """Write ``folder`` as a deterministic tar at ``dest`` (replaced atomically)."""
    entries = scan(folder)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = _info(entry)
            if entry.kind == "file":
                with entry.path.open("rb") as fh:
                    if os.fstat(fh.fileno()).st_size != entry.size:
                        raise ConfigError(f"{folder.key}: {entry.path} changed while packing")
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    digest = hashlib.sha256()
    with partial.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    os.replace(partial, dest)
    files = sum(e.kind == "file" for e in entries)
    size = sum(e.size for e in entries)
    return Packed(folder.target, dest, files, size, digest.hexdigest())


def pack_all(cfg: Workshop, config_dir: Path, out_dir: Path) -> list[Packed]:
    """Pack every folder of ``cfg`` into ``out_dir`` (one tar each, named after its target)."""
    return [pack(f, out_dir / Path(f.target).name) for f in folders(cfg, config_dir)]


def folder_bytes(cfg: Workshop, config_dir: Path) -> dict[str, int]:
    """Bytes of file content per folder key (``shared_data.from``, ``course.from``).

    A folder missing here is left out (a launch from an image baked elsewhere); the bake refuses it.
    """
    return {
        f.key: sum(e.size for e in scan(f)) for f in folders(cfg, config_dir) if f.source.is_dir()
    }


def describe(packed: Packed) -> str:
    """``course.tar: 12 files, 3.4 MB`` for progress lines."""
    return f"{Path(packed.target).name}: {packed.files} files, {packed.size / 1e6:.1f} MB"
