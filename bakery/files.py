"""Writing files the user gets: atomically, privately, never through a link or onto a device."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from bakery.errors import OutputError


def check_target(path: Path) -> bool:
    """Whether ``path`` exists; refuse a target bakery must not replace.

    Raises:
        OutputError: ``path`` is a symbolic link (its target would be replaced by a copy, or
            written through), or not a regular file (a device, a FIFO, a socket, a folder).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OutputError(f"{path}: cannot inspect: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(
            f"{path} is a symbolic link; bakery does not write through links: give the real path"
        )
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{path} is a folder; give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(
            f"{path} is not a regular file (a device, pipe or socket); write to a file, or leave "
            "out -o to write to standard output"
        )
    return True


def write_private(path: str | Path, data: bytes | str, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically, with ``mode`` (owner-only by default).

    The temporary file is created exclusively in the same folder (``mkstemp``: never an existing
    file, never a planted link) and given ``mode`` before any byte is written; a reader sees the
    old file or the whole new one.

    Raises:
        OutputError: the target is a link or not a regular file, or the folder is not writable.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    check_target(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(
            f"{path}: cannot write in {folder}: {exc.strerror or exc}; choose another folder"
        ) from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None
