"""The e2e harness's golden image cache: a stable key across runs, least recently used pruning.

A key that held the temporary directory of the run made every CI run bake (and keep) a new
1-2 GB image for the same workshop, until the disk was full."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "e2e"))

import e2e_harness


def workshop(d: Path, note: str = "hello") -> Path:
    (d / "course").mkdir(parents=True)
    (d / "course" / "intro.md").write_text(note)
    config = d / "workshop.yaml"
    config.write_text("name: cachekey\nos: debian-12\ncourse:\n  from: ./course\n")
    return config


def test_the_golden_key_does_not_depend_on_where_the_workshop_lives(tmp_path: Path) -> None:
    base = tmp_path / "base" / "abc123" / "debian-12-base.qcow2"
    one, _ = e2e_harness.golden_path(base, workshop(tmp_path / "run1"))
    two, _ = e2e_harness.golden_path(base, workshop(tmp_path / "run2"))
    changed, _ = e2e_harness.golden_path(base, workshop(tmp_path / "run3", "edited"))
    assert one == two
    assert changed != one  # a changed course folder still rebakes


def test_prune_keeps_the_newest_and_the_one_in_use(tmp_path: Path) -> None:
    entries = []
    for age, name in enumerate(["aa01", "aa02", "aa03", "aa04", "aa05"]):
        entry = tmp_path / name
        entry.mkdir()
        (entry / "golden.qcow2").write_bytes(b"x")
        os.utime(entry, (1000 - age * 10, 1000 - age * 10))  # aa01 newest, aa05 oldest
        entries.append(entry)
    (tmp_path / "e2e-ssh-key").mkdir()
    (tmp_path / ".lock").write_text("")
    oldest = entries[-1]
    removed = e2e_harness.prune_cache(tmp_path, oldest, keep=3)
    assert sorted(p.name for p in removed) == ["aa03", "aa04"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".lock", "aa01", "aa02", "aa05", "e2e-ssh-key"]
    assert (oldest / "golden.qcow2").exists()
