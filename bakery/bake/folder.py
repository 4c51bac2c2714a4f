"""Packer's build folder as bakery's: claimed with a marker, written without following links."""

from __future__ import annotations

from pathlib import Path

from bakery.errors import OutputError
from bakery.files import write_private

# The output folder is bakery's only where it says so: this file marks it, and lists what bakery
# writes there (replaced at every write); Packer's own outputs may sit beside them. Anything else
# in the folder is the user's: bakery refuses the folder rather than touch it.
MARKER = ".bakery-packer"
# The values of the build; Packer (1.6 too) reads *.auto.pkrvars.json by itself and takes its
# strings literally (no ${} or %{} interpolation), so json.dumps is the whole encoder.
VARS_FILE = "bakery.auto.pkrvars.json"
WRITTEN = frozenset(
    {MARKER, "bakery.pkr.hcl", VARS_FILE, "bakery.auto.pkrvars.hcl", "plugins.pkr.hcl",
     "bake-user-data", "image.json", "scripts", "content", "qemu-seed"}
)  # fmt: skip
PACKER_OUTPUTS = frozenset({"images", "packer-manifest.json", "packer_cache", "crash.log"})
# What an unmarked folder (bakery's before the marker) may hold: bakery's file names, none of
# the folders it replaces whole (a user's own content/ must never be taken for bakery's).
UNMARKED = WRITTEN - {MARKER, "scripts", "content", "qemu-seed"}


def claim_folder(out: Path) -> None:
    """Make ``out`` bakery's Packer folder: new, empty, or marked by an earlier write.

    Raises:
        OutputError: ``out`` is a link or not a folder, holds files bakery did not write, or one
            of bakery's own names there is a link (it would be written through).
    """
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputError(f"-o {out}: not a folder (or a link); give a new or empty folder")
    if out.exists():
        marked = (out / MARKER).is_file() and not (out / MARKER).is_symlink()
        entries = {p.name for p in out.iterdir()}
        others = sorted(entries - PACKER_OUTPUTS - (WRITTEN if marked else UNMARKED))
        if others:
            listed = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise OutputError(
                f"-o {out}: it holds {listed}, which bakery did not write there; give a new or "
                "empty folder (bakery replaces only what it wrote, and never deletes the rest)"
            )
        links = sorted(n for n in entries & WRITTEN if (out / n).is_symlink())
        if links:
            raise OutputError(f"-o {out}: {', '.join(links)} is a link; remove it and run again")
    out.mkdir(parents=True, exist_ok=True)
    write_file(
        out / MARKER, "bakery writes here (bakery packer / bake); it replaces only its own files\n"
    )


def write_file(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
    """Replace ``path`` with ``data`` (atomically, never through a link)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, data, mode=mode)
    return path
