"""`bakery collect`: homes streamed as tar over "ssh" (a local shell standing in), resumable."""

from __future__ import annotations

import shlex
import tarfile
from pathlib import Path

import pytest

from bakery.day import collect
from bakery.errors import BakeryError, UsageError
from bakery.progress import Collector
from bakery.ssh import Ssh, Target

CONFIG = "name: intro\nusers:\n  names: [ada, bob, cy]\n  admins: [teacher]\n"


@pytest.fixture
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A /home stand-in; the "ssh" command runs locally against it (sudo dropped)."""
    root = tmp_path / "home"
    for name, files in {
        "ada": {"notebook.ipynb": b'{"cells": []}\n', "data/big.bin": bytes(range(256)) * 512},
        "bob": {"notes.txt": b"bob's notes\n"},
        "teacher": {"answers.ipynb": b"secret answers\n"},
    }.items():
        for rel, data in files.items():
            (root / name / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / name / rel).write_bytes(data)
    cache = root / "ada" / ".cache" / "pip"
    cache.mkdir(parents=True)
    (cache / "wheel.whl").write_bytes(b"x" * 1000)
    (root / "ada" / "data" / "__pycache__").mkdir()
    (root / "ada" / "data" / "__pycache__" / "m.pyc").write_bytes(b"pyc")

    def local_argv(self: Ssh, target: Target, command: list[str]) -> list[str]:
        words = [str(root) if w == "/home" else w for w in command if w != "sudo"]
        return ["sh", "-c", shlex.join(words)]

    monkeypatch.setattr(Ssh, "argv", local_argv)
    return root


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "workshop.yaml"
    path.write_text(CONFIG)
    return path


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        out = {}
        for m in tar.getmembers():
            if m.isfile():
                fh = tar.extractfile(m)
                assert fh is not None
                out[m.name] = fh.read()
        return out


def test_every_trainee_home_is_collected_byte_identical_without_caches(
    homes: Path, config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "work"
    progress = Collector()
    result = collect.collect(config_path=config, out_dir=out, hosts=["vm"], progress=progress)
    assert sorted(result.collected) == ["ada", "bob"]
    assert result.skipped == {"cy": "no home on any server (never created)"}
    assert result.errors == {}
    ada = members(out / "ada.tar.gz")
    assert ada == {
        "ada/notebook.ipynb": (homes / "ada/notebook.ipynb").read_bytes(),
        "ada/data/big.bin": (homes / "ada/data/big.bin").read_bytes(),
    }
    assert members(out / "bob.tar.gz") == {"bob/notes.txt": b"bob's notes\n"}
    assert not (out / "teacher.tar.gz").exists()  # trainees only
    assert sorted(p.name for p in out.iterdir()) == ["ada.tar.gz", "bob.tar.gz"]
    assert any(m.startswith("ada: ") and "bytes from vm" in m for m in progress.messages)
    assert result.lines()[-1] == "2 collected, 1 skipped, 0 failed"


def test_a_second_run_resumes_and_a_partial_archive_is_fetched_again(
    homes: Path, config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "work"
    out.mkdir()
    (out / "ada.tar.gz").write_bytes(b"kept as it is")
    (out / "bob.tar.gz.part").write_bytes(b"interrupted")
    result = collect.collect(config_path=config, out_dir=out, hosts=["vm"])
    assert result.collected == {"bob": out / "bob.tar.gz"}
    assert "ada" in result.skipped and "exists" in result.skipped["ada"]
    assert (out / "ada.tar.gz").read_bytes() == b"kept as it is"
    assert members(out / "bob.tar.gz") == {"bob/notes.txt": b"bob's notes\n"}
    assert not (out / "bob.tar.gz.part").exists()


def test_an_archive_over_the_limit_is_dropped(homes: Path, config: Path, tmp_path: Path) -> None:
    out = tmp_path / "work"
    result = collect.collect(config_path=config, out_dir=out, hosts=["vm"], max_size="200")
    assert "over the size limit of 200 bytes" in result.errors["ada"]
    assert not (out / "ada.tar.gz").exists() and not (out / "ada.tar.gz.part").exists()
    with pytest.raises(UsageError, match="--max-size"):
        collect.collect(config_path=config, out_dir=out, hosts=["vm"], max_size="lots")


def test_a_failing_tar_is_reported(
    homes: Path, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collect, "tar_command", lambda name: ["tar", "-cf", "-", "/nonexistent"])
    result = collect.collect(config_path=config, out_dir=tmp_path / "w", hosts=["vm"])
    assert set(result.errors) == {"ada", "bob"}
    assert "tar exited 2" in result.errors["ada"]


def test_destroy_collect_refuses_to_go_on_after_a_failure(
    homes: Path, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collect, "tar_command", lambda name: ["sh", "-c", "exit 1"])
    # destroy reaches the workshop's servers in the cloud: here, one stand-in.
    monkeypatch.setattr(collect, "targets", lambda cfg, hosts: [Target("intro-1", "vm")])
    with pytest.raises(BakeryError, match="collect failed for ada, bob; nothing deleted"):
        collect.collect_before_destroy(config_path=config, out_dir=tmp_path / "w")


def test_tar_command_excludes_caches() -> None:
    command = collect.tar_command("ada")
    assert command[:4] == ["sudo", "tar", "-C", "/home"]
    assert "--exclude=.cache" in command and "--exclude=__pycache__" in command
    assert command[-2:] == ["--", "ada"]
