"""Build or reuse a small notebook image without any registry: a rootfs tarball for docker import.

Debian 12 minbase (debootstrap, Debian's packages only) + python3-venv, R with IRkernel
(``r-base-core``, ``r-cran-irkernel``: Debian ships its kernelspec in
/usr/share/jupyter/kernels/ir, on the venv's Jupyter path), a venv at /opt/notebook with
jupyterhub (the hub's version: its ``jupyterhub-singleuser``) and jupyterlab from PyPI, and a
docker-stacks-style entrypoint: started as root (SystemUserSpawner with ``run_as_root = True``)
it creates NB_USER with NB_UID/NB_GID and drops to that user, as the real quay.io/jupyter
images' ``start.sh`` does, so one hub config serves both.

Packed with ``tar -C ROOT -c .`` into
``/var/cache/bakery/user-image/<sha256 of the recipe>/notebook-rootfs.tar``; ``docker import``
loses ENTRYPOINT/CMD/ENV, which the workshop config restates (``IMPORT_SETTINGS``).
"""

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

from bakery import versions

CACHE_ROOT = Path(os.environ.get("BAKERY_USER_IMAGE_CACHE", "/var/cache/bakery/user-image"))
MIRROR = os.environ.get("MIRROR", "http://deb.debian.org/debian")
DEB_CACHE = Path(os.environ.get("DEB_CACHE", "/var/cache/bakery-vmimage/debs"))
ARCHIVE_NAME = "notebook-rootfs.tar"
VENV = "/opt/notebook"
# nbgitpuller (and git, below) for test_docker's course.git, as a custom image needs them.
PIP_SPECS = [
    f"jupyterhub=={versions.JUPYTERHUB}",
    f"jupyterlab=={versions.JUPYTERLAB}",
    f"nbgitpuller=={versions.NBGITPULLER}",
]
# debootstrap's --include resolves Depends only (no Recommends: r-base-core's would add r-base-dev,
# a compiler and the HTML manuals).
APT = ["python3", "python3-venv", "ca-certificates", "r-base-core", "r-cran-irkernel", "git"]
# Removed after the build: package lists and docs, and what a notebook kernel never reads
# (every package's message translations, R's manuals): 48 MiB with R.
JUNK = ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/locale")
R_JUNK = ("usr/lib/R/library/translations", "usr/share/R/doc")

# What `docker import --change` must restore (spawner.image_archive's rootfs settings).
IMPORT_SETTINGS = {
    "entrypoint": ["/usr/local/bin/start-notebook.sh"],
    "cmd": ["jupyterhub-singleuser"],
    "env": {"PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
}

# The docker-stacks contract SystemUserSpawner relies on (dockerspawner 14: run_as_root starts
# the container as user 0 with NB_USER, NB_UID, NB_GID and HOME set, working dir HOME).
START_SCRIPT = """\
#!/bin/sh
# Entrypoint of bakery's e2e notebook image: as root with NB_USER set (SystemUserSpawner,
# run_as_root), become that user with NB_UID/NB_GID, like docker-stacks' start.sh; else run as is.
set -e
if [ "$(id -u)" = 0 ] && [ -n "${NB_USER:-}" ]; then
    NB_UID=${NB_UID:-1000}
    NB_GID=${NB_GID:-$NB_UID}
    getent group "$NB_GID" >/dev/null || groupadd --gid "$NB_GID" "$NB_USER"
    getent passwd "$NB_USER" >/dev/null || useradd --uid "$NB_UID" --gid "$NB_GID" \\
        --home-dir "${HOME:-/home/$NB_USER}" --no-create-home --shell /bin/bash "$NB_USER"
    export USER="$NB_USER" LOGNAME="$NB_USER"
    exec setpriv --reuid="$NB_UID" --regid="$NB_GID" --init-groups -- "$@"
fi
exec "$@"
"""


def recipe_hash() -> str:
    """The cache key: this module's source (the recipe) and the pinned versions it installs."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(repr((PIP_SPECS, APT, MIRROR)).encode())
    return h.hexdigest()[:24]


def cached_archive_path() -> Path:
    """Where the archive for the current recipe lives (built or not)."""
    return CACHE_ROOT / recipe_hash() / ARCHIVE_NAME


def _run(cmd: list[str], log: Path) -> None:
    with log.open("ab") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_bytes().decode(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"{cmd[:4]} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def build(root: Path, log: Path) -> None:
    """debootstrap, the venv and the entrypoint into ``root``."""
    from bakery.bake.chroot import prepared_root
    from bakery.bake.chroot_apply import chroot_cmd

    DEB_CACHE.mkdir(parents=True, exist_ok=True)
    _run(
        ["debootstrap", "--variant=minbase", f"--cache-dir={DEB_CACHE}",
         f"--include={','.join(APT)}", "bookworm", str(root), MIRROR],
        log,
    )  # fmt: skip
    # Trust the CAs this host trusts (its egress may re-sign TLS), for pip inside the chroot.
    cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    for ca in cas:
        shutil.copy(ca, root / "usr/local/share/ca-certificates" / ca.name)
    with prepared_root(root):
        if cas:
            _run(chroot_cmd(root, ["update-ca-certificates"]), log)
        _run(chroot_cmd(root, ["python3", "-m", "venv", VENV]), log)
        pip = [f"{VENV}/bin/pip", "install", "--no-cache-dir", "--disable-pip-version-check"]
        _run(
            chroot_cmd(
                root, ["env", "PIP_CERT=/etc/ssl/certs/ca-certificates.crt", *pip, *PIP_SPECS]
            ),
            log,
        )
    start = root / "usr/local/bin/start-notebook.sh"
    start.write_text(START_SCRIPT)
    start.chmod(0o755)
    for junk in (*JUNK, *R_JUNK):
        shutil.rmtree(root / junk, ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)


def ensure_user_image(*, log: bool = True) -> Path:
    """Return the cached rootfs tarball, building it first if missing (locked, atomic)."""
    final = cached_archive_path()
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_file():
            return final
        work = final.parent.with_name(final.parent.name + ".tmp")
        shutil.rmtree(work, ignore_errors=True)
        root = work / "root"
        root.mkdir(parents=True)
        start = time.monotonic()
        # A failed build stays in WORK for a look (its build.log); the next run starts afresh.
        build(root, work / "build.log")
        _run(["tar", "-C", str(root), "--numeric-owner", "-cf",
              str(work / ARCHIVE_NAME), "."], work / "build.log")  # fmt: skip
        shutil.rmtree(root)
        shutil.rmtree(final.parent, ignore_errors=True)
        work.rename(final.parent)
        if log:
            size = final.stat().st_size / 2**20
            print(
                f"user image built in {time.monotonic() - start:.0f} s: {final} ({size:.0f} MiB)",
                file=sys.stderr,
            )
        return final


def main() -> None:
    """Print the archive's path, building it if needed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path-only", action="store_true", help="print the path only")
    args = parser.parse_args()
    print(cached_archive_path() if args.path_only else ensure_user_image())


if __name__ == "__main__":
    main()
