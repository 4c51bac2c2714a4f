"""The KVM probe: its guest really runs (under TCG here), and the accelerator choice follows it."""

from __future__ import annotations

import pytest
from helpers import require_tool

from bakery import kvm
from bakery.errors import LocalVmError


def test_probe_boot_sector_is_one_bootable_sector() -> None:
    sector = kvm.probe_boot_sector()
    assert len(sector) == 512 and sector.endswith(b"\x55\xaa")
    assert kvm.PROBE_MARKER + b"\r\n\x00" in sector


def test_probe_guest_runs_under_tcg() -> None:
    """The probe guest itself must be right, or `auto` would wrongly reject a working KVM."""
    qemu = require_tool("qemu-system-x86_64")
    assert kvm.run_probe(qemu, "tcg", timeout=30) == (True, "")


def test_a_probe_that_cannot_start_says_why() -> None:
    qemu = require_tool("qemu-system-x86_64")
    ok, why = kvm.run_probe(qemu, "no-such-accel", timeout=10)  # type: ignore[arg-type]
    assert not ok and why


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
    monkeypatch.setattr(kvm, "kvm_usable", lambda: (usable, "/dev/kvm does not exist"))
    got, why = kvm.choose_accel(requested)
    assert got == accel and reason in why


def test_kvm_requested_but_unusable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kvm, "kvm_usable", lambda: (False, "/dev/kvm does not exist"))
    with pytest.raises(LocalVmError, match=r"--accel kvm: /dev/kvm does not exist; use --accel"):
        kvm.choose_accel("kvm")


def test_tcg_never_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> tuple[bool, str]:
        raise AssertionError("probed")

    monkeypatch.setattr(kvm, "kvm_usable", boom)
    assert kvm.choose_accel("tcg")[0] == "tcg"
