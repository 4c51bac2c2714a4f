"""The accelerator: the long-mode probe under TCG and KVM, its cached verdict, and the watchdog
that boots a VM again under TCG when KVM runs the boot loader but no kernel."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import require_tool

from bakery.errors import LocalVmError
from bakery.progress import Collector
from bakery.providers.local import kvm
from bakery.providers.local import vm as localvm


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test keeps its verdicts in its own folder (never the user's cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- the probe guest -----------------------------------------------------------------------------


def test_probe_boot_sector_is_one_bootable_sector() -> None:
    sector = kvm.probe_boot_sector()
    assert len(sector) == 512 and sector.endswith(b"\x55\xaa")
    assert kvm.PROBE_MARKER + b"\r\n\x00" in sector


def test_probe_guest_runs_under_tcg() -> None:
    """The probe guest itself must be right, or `auto` would wrongly reject a working KVM."""
    qemu = require_tool("qemu-system-x86_64")
    result = kvm.run_probe(qemu, "tcg", timeout=30)
    assert result.ok and result.reason == ""
    assert result.seconds < 30


def test_probe_needs_long_mode() -> None:
    """A CPU without long mode faults where a kernel would: the probe proves 64-bit paging ran."""
    qemu = require_tool("qemu-system-x86_64")
    result = kvm.run_probe(qemu, "tcg", timeout=30, cpu="qemu32")
    assert not result.ok
    assert "the guest stopped before printing" in result.reason


def test_probe_runs_on_a_cpu_without_cmpxchg16b() -> None:
    """The probe asks CPUID before its cmpxchg16b, as a kernel does: no false alarm on old CPUs."""
    qemu = require_tool("qemu-system-x86_64")
    assert kvm.run_probe(qemu, "tcg", timeout=30, cpu="max,-cx16").ok


def test_probe_under_kvm_where_available() -> None:
    """Under KVM the probe answers within its deadline either way, and says why when it fails."""
    qemu = require_tool("qemu-system-x86_64")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("no usable /dev/kvm here (the probe's KVM run needs one)")
    result = kvm.run_probe(qemu, "kvm")
    # the deadline, plus qemu's exit after a kill
    assert result.seconds < kvm.PROBE_DEADLINE + 1.0
    if not result.ok:
        assert result.reason
    ok, why = kvm.kvm_usable()
    assert ok == result.ok, why
    assert ("ran under KVM" in why) if ok else ("does not run under KVM here" in why)


def test_a_probe_that_cannot_start_says_why() -> None:
    qemu = require_tool("qemu-system-x86_64")
    result = kvm.run_probe(qemu, "tcg", timeout=10, cpu="no-such-cpu")
    assert not result.ok and "no-such-cpu" in result.reason
    with pytest.raises(ValueError, match="no-such-accel"):
        kvm.accel_args("no-such-accel")


def test_the_probe_and_the_vms_share_their_cpu_options(tmp_path: Path) -> None:
    state = localvm.VmState(
        run_dir=str(tmp_path), image="x", accel="kvm", accel_reason="", https_port=1,
        http_port=2, ssh_port=3, memory_mb=1024, cpus=1,
    )  # fmt: skip
    command = localvm.qemu_command(state)
    at = command.index("-accel")
    assert command[at : at + 4] == kvm.accel_args("kvm") == ["-accel", "kvm", "-cpu", "host"]
    assert kvm.accel_args("tcg")[:2] == ["-accel", "tcg,thread=multi,tb-size=512"]


# --- the verdict and its cache -------------------------------------------------------------------


@pytest.fixture
def fake_kvm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """/dev/kvm usable, a qemu on PATH, and a probe that records each run (and passes)."""
    runs: list[str] = []
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "qemu-system-x86_64").write_text("#!/bin/sh\nexit 1\n")
    (bindir / "qemu-system-x86_64").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    real_exists = os.path.exists
    monkeypatch.setattr(kvm.os.path, "exists", lambda path: path == "/dev/kvm" or real_exists(path))
    monkeypatch.setattr(kvm.os, "access", lambda path, mode: True)

    def probe(qemu: str, accel: str, timeout: float = 0.0, **_: object) -> kvm.ProbeResult:
        runs.append(accel)
        return kvm.ProbeResult(True, "", 0.4)

    monkeypatch.setattr(kvm, "run_probe", probe)
    return runs


def test_the_verdict_is_kept_per_host_and_qemu(fake_kvm: list[str], own_cache: Path) -> None:
    assert kvm.kvm_usable() == (True, "a long-mode probe guest ran under KVM in 0.4 s")
    assert kvm.kvm_usable()[0]
    assert fake_kvm == ["kvm"]  # the second answer came from the cache
    cache = own_cache / "bakery" / "kvm-verdicts.json"
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
    assert [entry["usable"] for entry in json.loads(cache.read_text()).values()] == [True]
    # another qemu (an upgrade changes its size and time): probed again
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu is not None
    Path(qemu).write_text("#!/bin/sh\nexit 2  # upgraded\n")
    os.utime(qemu, (time.time() + 5, time.time() + 5))
    kvm.kvm_usable()
    assert fake_kvm == ["kvm", "kvm"]


def test_a_broken_cache_only_costs_a_probe(fake_kvm: list[str], own_cache: Path) -> None:
    cache = own_cache / "bakery" / "kvm-verdicts.json"
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert kvm.kvm_usable()[0]
    assert fake_kvm == ["kvm"]
    assert json.loads(cache.read_text())


@pytest.mark.parametrize(
    ("requested", "usable", "accel", "reason"),
    [
        ("tcg", True, "tcg", "as requested"),
        ("kvm", True, "kvm", "as requested"),
        ("auto", True, "kvm", "the probe guest ran"),
        ("auto", False, "tcg", "because /dev/kvm does not exist"),
    ],
)
def test_choose_accel(
    monkeypatch: pytest.MonkeyPatch, requested: kvm.Accel, usable: bool, accel: str, reason: str
) -> None:
    why = "the probe guest ran" if usable else "/dev/kvm does not exist"
    monkeypatch.setattr(kvm, "kvm_usable", lambda: (usable, why))
    choice = kvm.choose_accel(requested)
    assert choice.accel == accel and reason in choice.reason
    assert choice.requested == requested


def test_kvm_requested_but_unusable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kvm, "kvm_usable", lambda: (False, "/dev/kvm does not exist"))
    with pytest.raises(LocalVmError, match=r"--accel kvm: /dev/kvm does not exist; use --accel"):
        kvm.choose_accel("kvm")


def test_tcg_never_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> tuple[bool, str]:
        raise AssertionError("probed")

    monkeypatch.setattr(kvm, "kvm_usable", boom)
    assert kvm.choose_accel("tcg").accel == "tcg"


def test_a_fallback_is_remembered(fake_kvm: list[str]) -> None:
    choice = kvm.choose_accel("auto")
    assert choice.accel == "kvm"
    line = choice.fall_back("no kernel output 30 s after qemu started")
    assert line.startswith("KVM here does not run a Linux kernel: falling back to TCG, slow")
    assert choice.accel == "tcg" and "did not start a kernel" in choice.reason
    # the next run on this host goes straight to TCG, without a probe
    again = kvm.choose_accel("auto")
    assert again.accel == "tcg" and "a Linux kernel did not start under KVM" in again.reason
    assert fake_kvm == ["kvm"]


# --- the watchdog: a fake qemu whose KVM runs the boot loader and then nothing -----------------

# Prints what qemu's serial console shows: SeaBIOS, GRUB's menu and its hand-over; then, under
# TCG, the kernel's first lines; under KVM what FAKE_QEMU_KVM says (grub: nothing after GRUB;
# silent: no output at all; exit: qemu exits; kernel: a working KVM). It runs in the background
# as "qemu-system-x86_64" (so bakery's pid check takes it for qemu) until it is killed.
FAKE_QEMU = textwrap.dedent(
    r"""
    #!/bin/bash
    serial= pidfile= accel=
    while [ $# -gt 0 ]; do
        case $1 in
            -accel) accel=$2; shift ;;
            -serial) serial=${2#file:}; shift ;;
            -pidfile) pidfile=$2; shift ;;
        esac
        shift
    done
    echo "${accel%%,*}" >>"$FAKE_QEMU_LOG"
    mode=${FAKE_QEMU_KVM:-grub}
    [ "${accel%%,*}" = tcg ] && mode=kernel
    if [ "$mode" = exit ]; then
        true & wait; echo $! >"$pidfile"; exit 0
    fi
    bash -c 'exec -a qemu-system-x86_64 sleep 300' </dev/null >/dev/null 2>&1 &
    # as qemu -daemonize does, the pid file is written once the process is the VM's
    until tr '\0' ' ' </proc/$!/cmdline | grep -q '^qemu-system'; do sleep 0.01; done
    echo $! >"$pidfile"
    echo $! >>"$FAKE_QEMU_PIDS"
    [ "$mode" = silent ] && exit 0
    {
        printf '\033[2J\033[1;1HSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n'
        printf "      Booting \`Debian GNU/Linux 12'\r\n\r\n"
    } >"$serial"
    if [ "$mode" = kernel ]; then
        ( sleep 0.5; printf '[    0.000000] Linux version 6.1.0-28-cloud-amd64\r\n' >>"$serial" ) \
            </dev/null >/dev/null 2>&1 &
    fi
    exit 0
    """
).lstrip()


@pytest.fixture
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The fake qemu first on PATH; its log of accelerators; its processes killed afterwards."""
    qemu_img = require_tool("qemu-img")
    bindir = tmp_path / "fake-bin"
    bindir.mkdir()
    script = bindir / "qemu-system-x86_64"
    script.write_text(FAKE_QEMU)
    script.chmod(0o755)
    os.symlink(qemu_img, bindir / "qemu-img")
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    log, pids = tmp_path / "accels.log", tmp_path / "pids"
    monkeypatch.setenv("FAKE_QEMU_LOG", str(log))
    monkeypatch.setenv("FAKE_QEMU_PIDS", str(pids))
    monkeypatch.setattr(localvm, "KERNEL_AFTER_HANDOVER", 1.5)
    monkeypatch.setattr(localvm, "KERNEL_AFTER_START", 4.0)
    yield log
    for pid in pids.read_text().split() if pids.exists() else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), 9)


def golden(tmp_path: Path) -> Path:
    image = tmp_path / "golden.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1G"], check=True)
    return image


def start(tmp_path: Path, accel: kvm.Accelerator, progress: Collector) -> localvm.VmState:
    return localvm.start_vm(
        image=golden(tmp_path), user_data=b"#cloud-config\n", run_dir=tmp_path / "run",
        https_port=18943, ssh_port=12922, memory="1G", accel=accel, progress=progress,
    )  # fmt: skip


def test_kvm_that_stops_after_the_boot_loader_falls_back_to_tcg(
    tmp_path: Path, fake_qemu: Path, own_cache: Path
) -> None:
    progress = Collector()
    choice = kvm.Accelerator("auto", "kvm", "KVM (hardware virtualisation): the probe ran")
    started = time.monotonic()
    state = start(tmp_path, choice, progress)
    took = time.monotonic() - started
    assert fake_qemu.read_text().split() == ["kvm", "tcg"]
    assert state.accel == "tcg" and choice.accel == "tcg"
    assert localvm.VmState.load(Path(state.run_dir)).accel == "tcg"  # status shows it
    [line] = [m for m in progress.messages if "falling back" in m]
    assert line == (
        "KVM here does not run a Linux kernel: falling back to TCG, slow "
        "(the boot loader handed over; no kernel output within 1.5 s)"
    )
    assert 1.5 <= took < 4.0  # the hand-over deadline, not the start deadline
    # the second boot's console is its own: the kernel of the TCG boot prints
    assert localvm.watch_kernel(state) is None
    assert "Linux version" in localvm.console_text(Path(state.run_dir))
    # and this host is known now: the next run skips KVM at once
    assert "did not start under KVM" in json.dumps(
        json.loads((own_cache / "bakery" / "kvm-verdicts.json").read_text())
    )
    localvm.kill_vm(state)


def test_kvm_with_no_console_at_all_falls_back_after_the_start_deadline(
    tmp_path: Path, fake_qemu: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU_KVM", "silent")
    progress = Collector()
    state = start(tmp_path, kvm.Accelerator("auto", "kvm", "probe ran"), progress)
    assert state.accel == "tcg"
    assert any("no kernel output 4 s after qemu started" in m for m in progress.messages)
    localvm.kill_vm(state)


def test_kvm_asked_for_is_an_error_not_a_fallback(tmp_path: Path, fake_qemu: Path) -> None:
    choice = kvm.Accelerator("kvm", "kvm", "KVM as requested")
    with pytest.raises(LocalVmError, match=r"^--accel kvm: KVM here does not run a Linux kernel"):
        start(tmp_path, choice, Collector())
    assert fake_qemu.read_text().split() == ["kvm"]  # no second boot
    pid = int((tmp_path / "pids").read_text().split()[0])
    assert not localvm.qemu.alive(pid)  # the hung VM was stopped


def test_a_working_kvm_keeps_its_vm(
    tmp_path: Path, fake_qemu: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU_KVM", "kernel")
    progress = Collector()
    state = start(tmp_path, kvm.Accelerator("auto", "kvm", "probe ran"), progress)
    assert state.accel == "kvm" and fake_qemu.read_text().split() == ["kvm"]
    assert not any("falling back" in m for m in progress.messages)
    localvm.kill_vm(state)


def test_qemu_exiting_under_kvm_is_seen_at_once(
    tmp_path: Path, fake_qemu: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU_KVM", "exit")
    progress = Collector()
    started = time.monotonic()
    state = start(tmp_path, kvm.Accelerator("auto", "kvm", "probe ran"), progress)
    assert time.monotonic() - started < 1.5
    assert state.accel == "tcg"
    assert any("qemu exited before the kernel printed" in m for m in progress.messages)
    localvm.kill_vm(state)
