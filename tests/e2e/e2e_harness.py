"""Shared helpers of the end-to-end tests: timings, the e2e workshop, golden image, VM cleanup."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bakery.progress import ConsoleReporter

GOLDEN_CACHE = Path(os.environ.get("BAKERY_GOLDEN_CACHE", "/var/cache/bakery/golden"))
# Golden images kept beside the one in use (each 1-2 GB; a CI run uses about 5).
GOLDEN_KEEP = int(os.environ.get("BAKERY_GOLDEN_KEEP", "8"))
# Phase name -> seconds, printed at the end of the session (and written to BAKERY_E2E_TIMINGS).
TIMINGS: dict[str, float] = {}


def record(phase: str, seconds: float) -> None:
    """Remember a phase timing and show it at once (visible with -s)."""
    TIMINGS[phase] = round(seconds, 1)
    print(f"[e2e timing] {phase}: {seconds:.1f} s", file=sys.stderr)


def tagged(tag: str) -> ConsoleReporter:
    """bakery's reporter as in a pipe, its lines tagged ``[tag]`` on stderr (visible with -s).

    A wait polled every few seconds is one line per stage, not one per poll.
    """
    return ConsoleReporter(sys.stderr, live=False, prefix=f"[{tag}] ")


def require(condition: bool, why: str) -> None:
    """Skip when something this machine lacks is missing; in CI (env CI set) fail instead."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"e2e prerequisite missing in CI: {why}", pytrace=False)
    pytest.skip(why)


@dataclass
class Workshop:
    """The e2e workshop: its files, accounts and the booted VM."""

    dir: Path
    config: Path
    name: str
    passwords: dict[str, str]
    trainees: list[str]
    admin: str
    login_user: str
    ssh_key: Path
    https_port: int
    http_port: int
    ssh_port: int
    run_dir: Path
    host: str = "127.0.0.1"  # where the hub and sshd answer (a floating IP on the test cloud)


CONFIG = """\
name: {name}
os: debian-12
# Far ahead: the expiry machinery is on the VM; test_try's last test moves the dates close.
ends: 2099-01-01T00:00:00Z
users:
  count: 2
  admins: [teacher]
spawner:
  kind: systemd
  # test_k's memory bomb (3x this) must hit the unit's limit well before the 3 GiB VM runs out.
  mem_limit: 512M
  # test_j fills a home to its quota.
  disk_limit: 64M
  idle_cull_minutes: 0
# test_b2: a trainee runs an R cell (IRkernel from Debian's packages, installed at bake).
kernels: [r]
# test_tls: certbot gets the hub's certificate from pebble on the host (pebble_server.py), whose
# CA write_config adds as ca_certificates; until then (and if pebble never runs) the
# self-signed one serves, as the other tests (127.0.0.1, no verification) expect.
tls:
  mode: letsencrypt
  domain: hub.bakery.test
  email: e2e@bakery.test
  acme_server: https://10.0.2.2:14000/dir
ssh:
  authorized_keys:
    - {key}
# test_s*: shared data and course material from the folders write_config makes beside this file.
shared_data:
  from: ./shared
course:
  from: ./course
# test_b6: the trainees' own environment from a Binder-style folder, locked (LOCKS).
environment:
  from: ./env
"""
# The folders' files (name -> text): test_s* read them on the VM.
SHARED_FILES = {"README.txt": "shared data baked into the image\n", "data/numbers.csv": "n\n1\n"}
COURSE_FILES = {
    "01-intro.ipynb": '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n',
    "data/table.csv": "a,b\n1,2\n",
}


# The trainees' packages (issue 27): a version the hub's environment does not have (packaging),
# one it has not at all (tabulate), an R package from Debian (jsonlite).
ENV_FILES = {
    "requirements.txt": "tabulate==0.9.0\npackaging==24.1  # older than the hub's\n",
    "install.R": 'install.packages("jsonlite")\n',
}
# The docker workshop's (test_docker's CONFIG): the same, layered onto the e2e image.
DOCKER_ENVIRONMENT = """\
environment:
  pip: [tabulate==0.9.0]
  r: [jsonlite]
  python: "3.11"
"""
# The docker workshop `make lock` resolves (test_docker's CONFIG has the same environment).
DOCKER_WORKSHOP = "name: e2e-docker\nos: debian-12\nspawner: {kind: docker, image: e2e/nb:1}\n"
# The e2e workshops' locks (`make lock` writes them: `python tests/e2e/e2e_harness.py --lock`),
# copied beside each config: the same lock, the same golden image, run after run.
LOCKS = Path(__file__).resolve().parent / "locks"


def copy_lock(config: Path, kind: str) -> None:
    """Put the committed lock of the e2e workshop ``kind`` beside ``config``."""
    from bakery.config.lockfile import lock_path

    lock_path(config).write_bytes((LOCKS / f"{kind}.lock.json").read_bytes())


def write_folder(folder: Path, files: dict[str, str]) -> None:
    """Write ``files`` (relative name -> text) under ``folder``."""
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def e2e_ssh_key() -> Path:
    """The e2e runs' throwaway admin key (private key path), made once and kept with the images."""
    key = GOLDEN_CACHE / "e2e-ssh-key" / "id_ed25519"
    if not key.is_file():
        key.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bakery-e2e", "-f", str(key)],
            check=True,
        )
    return key


def workshop_for(config: Path, *, key: Path, https_port: int, ssh_port: int) -> Workshop:
    """The Workshop record of a written config: its accounts (sheet made beside it) and ports."""
    from bakery.config.workshop import load_config
    from bakery.workshop.accounts import credentials_path, ensure_credentials

    cfg = load_config(config)
    accounts = ensure_credentials(cfg, credentials_path(config))
    return Workshop(
        dir=config.parent,
        config=config,
        name=cfg.name,
        passwords={a.username: a.password for a in accounts},
        trainees=cfg.users.trainees(),
        admin=cfg.users.admins[0],
        login_user=cfg.login_user,
        ssh_key=key,
        https_port=https_port,
        http_port=https_port + 1,
        ssh_port=ssh_port,
        run_dir=config.parent / "vm",
    )


def write_config(path: Path, name: str, pubkey: str) -> None:
    """Write the e2e workshop config (the bake document does not depend on the key) with the
    CA of the e2e ACME server (cached: the same in every run)."""
    from pebble_server import ca_pem

    ca = "".join(f"    {line}\n" for line in ca_pem().splitlines())
    path.write_text(CONFIG.format(name=name, key=pubkey) + "ca_certificates:\n  - |\n" + ca)
    write_folder(path.parent / "shared", SHARED_FILES)
    write_folder(path.parent / "course", COURSE_FILES)
    write_folder(path.parent / "env", ENV_FILES)
    copy_lock(path, "systemd")


def refresh_locks() -> None:
    """`make lock`: resolve the e2e workshops' environments again into LOCKS."""
    import tempfile

    from bakery.bake.lock import lock_workshop
    from bakery.config.lockfile import lock_path

    LOCKS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        systemd = Path(tmp) / "systemd" / "workshop.yaml"
        systemd.parent.mkdir()
        key = (
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ1c3RlcmJha2VyeWV4YW1wbGVrZXlvbmx5Zm9yZG9jcw e2e"
        )
        systemd.write_text(CONFIG.format(name="e2e-workshop", key=key))
        write_folder(systemd.parent / "env", ENV_FILES)
        docker = Path(tmp) / "docker" / "workshop.yaml"
        docker.parent.mkdir()
        docker.write_text(DOCKER_WORKSHOP + DOCKER_ENVIRONMENT)
        for kind, config in (("systemd", systemd), ("docker", docker)):
            lock_workshop(config_path=config)
            (LOCKS / f"{kind}.lock.json").write_bytes(lock_path(config).read_bytes())
    write_update_lock("systemd")
    write_update_lock("docker")


# test_l (`bakery update`): a package the course forgot, added during the class: the systemd
# workshop's lock with this one pin more (the others as they are: the update installs only it).
UPDATE_PACKAGE = ("termcolor", "2.5.0")
# The same package added to the docker workshop's (test_4d: update builds the layer again).
DOCKER_UPDATE_ENVIRONMENT = DOCKER_ENVIRONMENT.replace(
    "pip: [tabulate==0.9.0]", f"pip: [tabulate==0.9.0, {'=='.join(UPDATE_PACKAGE)}]"
)


def write_update_lock(kind: str = "systemd") -> Path:
    """`make lock`: LOCKS' ``kind`` lock plus UPDATE_PACKAGE, resolved from the index (its files'
    hashes), as `bakery lock` would write it for that workshop's environment with it added."""
    import dataclasses
    import tempfile

    from bakery.bake.lock import file_hashes, project_files, target_tags
    from bakery.config.lockfile import Pin, format_lock, inputs_digest, read_lock
    from bakery.config.workshop import load_config
    from bakery.workshop import software

    lock = read_lock(LOCKS / f"{kind}.lock.json")
    assert lock is not None and lock.trainees is not None
    name, version = UPDATE_PACKAGE
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "workshop.yaml"
        if kind == "systemd":
            key = (
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ1c3RlcmJha2VyeWV4YW1wbGVrZXlvbmx5Zm9yZG9jcw"
            )
            config.write_text(CONFIG.format(name="e2e-workshop", key=key))
            write_folder(config.parent / "env", update_env_files())
        else:
            config.write_text(DOCKER_WORKSHOP + DOCKER_UPDATE_ENVIRONMENT)
        cfg = load_config(config)
        requested = software.trainee_requested(cfg)
        python = lock.trainees.python
        index = software.index_url(cfg)
    hashes = file_hashes(project_files(index, name), version, target_tags(python))
    pins = (*lock.trainees.pins, Pin(name, version, tuple(hashes)))
    pins = tuple(sorted(pins, key=lambda p: p.name))
    trainees = dataclasses.replace(
        lock.trainees,
        inputs=inputs_digest(requested, python),
        requested=tuple(sorted(requested)),
        pins=pins,
    )
    out = LOCKS / f"{kind}-update.lock.json"
    out.write_text(format_lock(dataclasses.replace(lock, trainees=trainees)))
    return out


def update_env_files() -> dict[str, str]:
    """ENV_FILES with UPDATE_PACKAGE added to the requirements."""
    name, version = UPDATE_PACKAGE
    return {**ENV_FILES, "requirements.txt": ENV_FILES["requirements.txt"] + f"{name}=={version}\n"}


def golden_copies(config: Path) -> dict[str, Path]:
    """Files the chroot builder copies into the image for ``config``: its image archive, and its
    shared data and course folders packed (deterministic tars, in build/content beside it)."""
    from bakery.config.workshop import load_config
    from bakery.layout import USER_IMAGE_ARCHIVE
    from bakery.workshop import content

    cfg = load_config(config)
    archive = cfg.spawner.image_archive
    copies = {USER_IMAGE_ARCHIVE: archive.source(config.parent)} if archive else {}
    for packed in content.pack_all(cfg, config.parent, config.parent / "build" / "content"):
        copies[packed.target] = packed.path
    return copies


def prune_cache(root: Path, used: Path, *, keep: int) -> list[Path]:
    """Remove the least recently used entries of the cache ``root`` beyond the ``keep`` newest
    (``used``, the entry in use, is touched first and so always stays). An entry is a directory
    named by a hex key; anything else in ``root`` (locks, the e2e SSH key) is left alone.
    Without this every change to the bake leaves 1-2 GB behind until the disk is full."""
    import shutil

    used.mkdir(parents=True, exist_ok=True)
    os.utime(used)
    entries = [
        e for e in root.iterdir() if e.is_dir() and all(c in "0123456789abcdef" for c in e.name)
    ]
    entries.sort(key=lambda e: e.stat().st_mtime, reverse=True)
    removed = [e for e in entries[keep:] if e != used]
    for entry in removed:
        shutil.rmtree(entry, ignore_errors=True)
        print(f"[e2e] cache: removed {entry} (least recently used)", file=sys.stderr)
    return removed


def golden_path(base_image: Path, config: Path) -> tuple[Path, dict[str, object]]:
    """Where the golden image for ``config`` lives: keyed by base, bake document, builder code
    and the files copied in: the user image by its cached path (which holds its recipe hash),
    packed folders by their bytes (their path is a new temporary directory in every run)."""
    from bakery.bake import chroot, chroot_apply
    from bakery.config.workshop import load_config
    from bakery.layout import CONTENT_DIR
    from bakery.vm.userdata import build_cloud_config

    doc = build_cloud_config(load_config(config), stage="bake")
    key = hashlib.sha256()
    key.update(base_image.parent.name.encode())
    key.update(json.dumps(doc, sort_keys=True).encode())
    for module in (chroot, chroot_apply):
        key.update(Path(module.__file__).read_bytes())
    for target, source in sorted(golden_copies(config).items()):
        if target.startswith(CONTENT_DIR):  # the tar is small and deterministic
            key.update(f"{target}=".encode() + hashlib.sha256(source.read_bytes()).digest())
        else:
            key.update(f"{target}={source}:{source.stat().st_size}".encode())
    return GOLDEN_CACHE / key.hexdigest()[:24] / "golden.qcow2", doc


def build_golden(base_image: Path, config: Path, *, force: bool = False) -> Path:
    """Bake (or reuse) the golden image of ``config`` with the chroot builder."""
    from bakery.bake import chroot
    from bakery.config.workshop import load_config
    from bakery.vm import image

    out, doc = golden_path(base_image, config)
    prune_cache(GOLDEN_CACHE, out.parent, keep=GOLDEN_KEEP)
    if out.is_file() and not force:
        record("bake (cached golden image)", 0.0)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()

    progress = tagged("bake")
    # chroot.bake without its config lookup of the base image: the harness picks the base.
    steps = chroot.bake_chroot(
        doc, base=base_image, output=out, progress=progress, copies=golden_copies(config)
    )
    cfg = load_config(config)
    rec = image.record(cfg)
    image.write_sidecar(out, image.sidecar(cfg, rec, image.image_name(cfg), "qcow2"))
    record("bake (chroot)", time.monotonic() - start)
    for step, seconds in steps.items():
        record(f"  bake: {step}", seconds)
    return out


def with_stop(run_dir: Path) -> None:
    from bakery.errors import LocalVmError
    from bakery.providers.local import vm as localvm

    try:
        localvm.stop_vm(run_dir, timeout=90)
    except LocalVmError as exc:
        print(f"[e2e] stop: {exc}", file=sys.stderr)


def dump_console(run_dir: Path) -> None:
    log = run_dir / "serial.log"
    if log.exists():
        text = log.read_bytes().decode(errors="replace").splitlines()
        print("[e2e] serial console tail:\n" + "\n".join(text[-80:]), file=sys.stderr)


@contextlib.contextmanager
def mounted_readonly(image: Path, workdir: Path) -> Iterator[Path]:
    """Mount a raw copy of ``image``'s root partition read-only (the image itself is untouched)."""
    from bakery.bake import chroot

    raw, mnt = workdir / "inspect.raw", workdir / "inspect"
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    offset = chroot._root_partition_offset(raw)
    loop = subprocess.run(
        ["losetup", "--find", "--show", "--read-only", "--offset", str(offset), str(raw)],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    try:
        subprocess.run(["mount", "-o", "ro", loop, str(mnt)], check=True)
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run(["losetup", "--detach", loop], check=False)
        raw.unlink(missing_ok=True)


if __name__ == "__main__":
    if sys.argv[1:] != ["--lock"]:
        sys.exit("usage: e2e_harness.py --lock  (the e2e workshops' locks, tests/e2e/locks/)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    refresh_locks()
