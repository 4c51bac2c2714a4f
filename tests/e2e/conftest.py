"""Fixtures of the end-to-end tests: base image, chroot-baked golden image, a booted workshop VM."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import baseimage
import pytest
from e2e_harness import (
    TIMINGS,
    Workshop,
    build_golden,
    dump_console,
    e2e_ssh_key,
    prune_cache,
    record,
    require,
    tagged,
    with_stop,
    workshop_for,
    write_config,
)

# The heaviest module last: the cluster boots two VMs at once under TCG (the longest boot of the
# run). In CI the test cloud's first install runs in the background for its first ~15 min; the
# single-VM modules, with more headroom in their boot timeouts, share the 2 cores with it instead.
LAST = ("test_cluster.py",)
# BAKERY_E2E_ACCEL=kvm|tcg forces an accelerator; auto (the default) is what `bakery try` does.
E2E_ACCEL = os.environ.get("BAKERY_E2E_ACCEL", "auto")
assert E2E_ACCEL in ("auto", "kvm", "tcg"), f"BAKERY_E2E_ACCEL={E2E_ACCEL}: auto, kvm or tcg"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name in LAST)  # stable: the order within stays


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("e2e phase timings")
    for phase, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{phase:<40} {seconds:8.1f} s")
    out = os.environ.get("BAKERY_E2E_TIMINGS")
    if out:
        Path(out).write_text(json.dumps(TIMINGS, indent=2) + "\n")


@pytest.fixture(scope="session")
def e2e_tools() -> None:
    for tool, pkg in (
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("qemu-img", "qemu-utils"),
        ("genisoimage", "genisoimage"),
        ("debootstrap", "debootstrap"),
        ("sfdisk", "fdisk"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
    ):
        require(shutil.which(tool) is not None, f"{tool} not installed (apt-get install {pkg})")
    require(os.geteuid() == 0, "needs root (debootstrap, loop devices, chroot)")
    require((baseimage.VMIMAGE_DIR / "build-base.sh").is_file(), "vmimage/build-base.sh missing")
    # The accelerator's verdict once per run, as `bakery try` prints it: every VM below starts
    # from it (and the watchdog may still move a VM to TCG: its boot line names the accelerator).
    from bakery.providers.local.kvm import choose_accel

    start = time.monotonic()
    choice = choose_accel(E2E_ACCEL)  # type: ignore[arg-type]
    record(f"accelerator: {choice.accel}", time.monotonic() - start)
    print(f"[e2e] accelerator: {choice.reason}", file=sys.stderr)


@pytest.fixture(scope="session")
def base_image(e2e_tools: None) -> Path:
    cached = baseimage.cached_image_path().is_file()
    start = time.monotonic()
    path = baseimage.ensure_base_image()
    record("base image" + (" (cached)" if cached else " (built)"), time.monotonic() - start)
    prune_cache(baseimage.CACHE_ROOT, path.parent, keep=2)
    return path


@pytest.fixture(scope="session")
def user_image(e2e_tools: None) -> Path:
    """The docker spawner's notebook image archive (userimage.py: no registry), built once and
    cached by its recipe; test_docker and test_cluster share it."""
    import userimage

    start = time.monotonic()
    cached = userimage.cached_archive_path().is_file()
    path = userimage.ensure_user_image()
    record("user image" + (" (cached)" if cached else " (built)"), time.monotonic() - start)
    prune_cache(userimage.CACHE_ROOT, path.parent, keep=2)
    return path


@pytest.fixture(scope="session")
def workshop_files(tmp_path_factory: pytest.TempPathFactory, e2e_tools: None) -> Workshop:

    # BAKERY_E2E_ATTACH=DIR reuses the workshop dir (and running VM) of a run kept with
    # BAKERY_E2E_KEEP_VM=1: for iterating on the tests without booting again.
    attach = os.environ.get("BAKERY_E2E_ATTACH")
    d = Path(attach) if attach else tmp_path_factory.mktemp("workshop")
    key = e2e_ssh_key()
    config = d / "workshop.yaml"
    if not attach:
        write_config(config, "e2e-workshop", key.with_suffix(".pub").read_text().strip())
    return workshop_for(
        config,
        key=key,
        https_port=int(os.environ.get("BAKERY_E2E_PORT", "18443")),
        ssh_port=int(os.environ.get("BAKERY_E2E_SSH_PORT", "12222")),
    )


@pytest.fixture(scope="session")
def golden_image(base_image: Path, workshop_files: Workshop) -> Path:
    """The bake stage applied in a chroot to the base image."""
    return build_golden(
        base_image, workshop_files.config, force=bool(os.environ.get("BAKERY_E2E_REBAKE"))
    )


@pytest.fixture(scope="session")
def vm(golden_image: Path, workshop_files: Workshop) -> Iterator[Workshop]:
    """The workshop booted from the golden image with the boot stage, hub answering."""
    from bakery.providers.local import health, trial

    if os.environ.get("BAKERY_E2E_ATTACH"):
        assert health.vm_status(workshop_files.run_dir).hub_status == 200
        yield workshop_files
        return
    start = time.monotonic()
    try:
        result = trial.up(
            workshop_files.config,
            image=golden_image,
            stage="boot",
            https_port=workshop_files.https_port,
            ssh_port=workshop_files.ssh_port,
            memory="3G",
            cpus=2,
            accel=E2E_ACCEL,  # type: ignore[arg-type]
            run_dir=workshop_files.run_dir,
            progress=tagged("try"),
        )
    except Exception:
        dump_console(workshop_files.run_dir)
        with_stop(workshop_files.run_dir)
        raise
    record(f"boot to login page ({result.state.accel})", time.monotonic() - start)
    assert result.url == f"https://127.0.0.1:{workshop_files.https_port}/"
    assert result.credentials.is_file()
    yield workshop_files
    if os.environ.get("BAKERY_E2E_KEEP_VM"):
        print(f"[e2e] VM left running: {workshop_files.run_dir}", file=sys.stderr)
        return
    start = time.monotonic()
    with_stop(workshop_files.run_dir)
    record("clean shutdown", time.monotonic() - start)
