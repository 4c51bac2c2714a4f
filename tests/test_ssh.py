"""bakery.ssh.Ssh.run against a stand-in ``ssh`` on PATH: a connection sshd did not take is tried
again (a VM that just booted, sshd restarting), any other ssh failure is reported at once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bakery import ssh as ssh_mod
from bakery.errors import BakeryError
from bakery.ssh import Ssh, Target

RESET = "kex_exchange_identification: read: Connection reset by peer"
DENIED = "ada@10.0.0.5: Permission denied (publickey)."


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``ssh`` that fails with $FAKE_SSH_ERR (exit 255) for its first $FAKE_SSH_FAILS calls,
    then prints ``ran``; each call is counted in ``calls``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    script = bin_dir / "ssh"
    script.write_text(
        "#!/bin/sh\n"
        f"echo x >> {calls}\n"
        f'if [ "$(wc -l < {calls})" -le "$FAKE_SSH_FAILS" ]; then\n'
        '  echo "$FAKE_SSH_ERR" >&2; exit 255\n'
        "fi\n"
        "echo ran\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(ssh_mod, "RETRY_WAIT", 0.0)
    return calls


def run(monkeypatch: pytest.MonkeyPatch, fails: int, err: str) -> bytes:
    monkeypatch.setenv("FAKE_SSH_FAILS", str(fails))
    monkeypatch.setenv("FAKE_SSH_ERR", err)
    ssh = Ssh("ada", None, Path("/nonexistent/known_hosts"))
    return bytes(ssh.run(Target("hub", "10.0.0.5"), ["true"]).stdout)


def test_a_reset_before_the_key_exchange_is_tried_again(
    fake_ssh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(monkeypatch, 2, RESET) == b"ran\n"
    assert len(fake_ssh.read_text().splitlines()) == 3


def test_a_refused_connection_is_tried_again(
    fake_ssh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(monkeypatch, 1, "ssh: connect to host 10.0.0.5 port 22: Connection refused") == (
        b"ran\n"
    )
    assert len(fake_ssh.read_text().splitlines()) == 2


def test_sshd_never_answering_is_reported_after_the_last_try(
    fake_ssh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = re.escape("hub: ssh ada@10.0.0.5:22 failed: kex_exchange")
    with pytest.raises(BakeryError, match=failed):
        run(monkeypatch, 99, RESET)
    assert len(fake_ssh.read_text().splitlines()) == ssh_mod.RETRIES + 1


def test_a_refused_key_is_reported_at_once(fake_ssh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BakeryError, match=r"Permission denied.*pass --identity"):
        run(monkeypatch, 99, DENIED)
    assert len(fake_ssh.read_text().splitlines()) == 1
