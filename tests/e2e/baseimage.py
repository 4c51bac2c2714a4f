"""Build or reuse the Debian 12 test base image, cached by the sha256 of build-base.sh."""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# ../shared/vmimage beside the checkout (CI lays shared/ beside its clone).
_DEFAULT_VMIMAGE = Path(__file__).resolve().parents[3] / "shared" / "vmimage"
VMIMAGE_DIR = Path(os.environ.get("BAKERY_VMIMAGE_DIR", str(_DEFAULT_VMIMAGE)))
CACHE_ROOT = Path(os.environ.get("BAKERY_BASE_CACHE", "/var/cache/bakery/base"))
IMAGE_NAME = "debian-12-base.qcow2"


def script_hash(script: Path | None = None) -> str:
    """Return the sha256 hex digest of build-base.sh's content (the cache key)."""
    script = script or VMIMAGE_DIR / "build-base.sh"
    return hashlib.sha256(script.read_bytes()).hexdigest()


def cached_image_path(script: Path | None = None) -> Path:
    """Return where the base image for the current build-base.sh lives (built or not)."""
    return CACHE_ROOT / script_hash(script) / IMAGE_NAME


def ensure_base_image(*, log: bool = True) -> Path:
    """Return the cached base image, building it with build-base.sh first if missing.

    The build goes into a temporary sibling directory renamed into place on success, so
    an interrupted build never leaves a half-written image at the cache path. A lock file
    serialises concurrent callers (the Packer tests may want the same image).
    """
    script = VMIMAGE_DIR / "build-base.sh"
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found (set BAKERY_VMIMAGE_DIR)")
    final = cached_image_path(script)
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_file():
            return final
        tmp = final.parent.with_name(final.parent.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        start = time.monotonic()
        proc = subprocess.run(
            [str(script), str(tmp)],
            stdout=None if log else subprocess.DEVNULL,
            stderr=None if log else subprocess.PIPE,
            check=False,
        )
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            err = proc.stderr.decode(errors="replace")[-2000:] if proc.stderr else ""
            raise RuntimeError(f"build-base.sh failed (exit {proc.returncode}): {err}")
        shutil.rmtree(final.parent, ignore_errors=True)
        tmp.rename(final.parent)
        if log:
            print(f"base image built in {time.monotonic() - start:.0f} s: {final}", file=sys.stderr)
        return final


def main() -> None:
    """Print the base image path, building it if needed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path-only", action="store_true", help="print the path only")
    args = parser.parse_args()
    print(cached_image_path() if args.path_only else ensure_base_image())


if __name__ == "__main__":
    main()
