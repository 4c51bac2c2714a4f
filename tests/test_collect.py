"""`bakery collect`: homes streamed as tar over "ssh" (a local shell standing in), resumable."""

from __future__ import annotations

import shlex
import tarfile
from pathlib import Path

import pytest

from bakery.day import collect
from bakery.day.targets import Hubs
from bakery.errors import BakeryError, OutputError, UsageError
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
    monkeypatch.setattr(collect, "hubs", lambda cfg, hosts: Hubs([Target("intro-1", "vm")]))
    with pytest.raises(BakeryError, match="collect failed for ada, bob; nothing deleted"):
        collect.collect_before_destroy(config_path=config, out_dir=tmp_path / "w")


def test_tar_command_excludes_caches() -> None:
    command = collect.tar_command("ada")
    assert command[:4] == ["sudo", "tar", "-C", "/home"]
    assert "--exclude=.cache" in command and "--exclude=__pycache__" in command
    assert command[-2:] == ["--", "ada"]


# --- issue 26: nothing a trainee made is lost on the way to the archive --------------------------


def test_destroy_collect_ships_the_newer_work_and_keeps_the_earlier_archive(
    homes: Path, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's day: `collect -o work/` at the end, then `destroy --collect work/`: the work
    done between the two reaches the archive (it was taken as done before)."""
    out = tmp_path / "work"
    collect.collect(config_path=config, out_dir=out, hosts=["vm"])
    first = (out / "ada.tar.gz").read_bytes()
    (homes / "ada" / "after-the-first-collect.ipynb").write_bytes(b"the last hour's work\n")
    monkeypatch.setattr(collect, "hubs", lambda cfg, hosts: Hubs([Target("intro-1", "vm")]))
    said = Collector()
    collect.collect_before_destroy(config_path=config, out_dir=out, progress=said)
    ada = members(out / "ada.tar.gz")
    assert ada["ada/after-the-first-collect.ipynb"] == b"the last hour's work\n"
    kept = [p for p in out.iterdir() if p.name.startswith("ada.") and p.name != "ada.tar.gz"]
    assert len(kept) == 1 and kept[0].name.endswith(".tar.gz")
    assert kept[0].read_bytes() == first  # the earlier archive is there as it was
    assert any("the earlier archive kept as ada." in m for m in said.messages)


def test_destroy_collect_stops_at_a_server_it_cannot_reach(
    homes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hubs, one SHUTOFF: its trainees are failures (not "never created"), nothing goes."""
    config = tmp_path / "workshop.yaml"
    config.write_text(CONFIG + "openstack: {count: 2}\n")
    reached = Hubs([Target("intro-1", "vm")], {"intro-2": "SHUTOFF"})
    monkeypatch.setattr(collect, "hubs", lambda cfg, hosts: reached)
    result = collect.collect(config_path=config, out_dir=tmp_path / "w")
    assert "cy" in result.errors and "intro-2 is SHUTOFF" in result.errors["cy"]
    assert "never created" not in " ".join(result.skipped.values())
    with pytest.raises(BakeryError, match="nothing deleted"):
        collect.collect_before_destroy(config_path=config, out_dir=tmp_path / "w2")


def test_archives_are_private_and_a_planted_link_is_not_followed(
    homes: Path, config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "work"
    out.mkdir(mode=0o755)  # an existing folder others may read
    victim = tmp_path / "victim.txt"
    victim.write_text("must stay")
    (out / "ada.tar.gz.part").symlink_to(victim)
    result = collect.collect(config_path=config, out_dir=out, hosts=["vm"])
    assert sorted(result.collected) == ["ada", "bob"]
    assert victim.read_text() == "must stay"
    for archive in result.collected.values():
        assert oct(archive.stat().st_mode & 0o777) == "0o600"


def test_out_that_is_a_file_is_a_usage_error(homes: Path, config: Path, tmp_path: Path) -> None:
    target = tmp_path / "not-a-folder"
    target.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        collect.collect(config_path=config, out_dir=target, hosts=["vm"])
