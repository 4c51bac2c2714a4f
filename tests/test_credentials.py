"""The credentials sheet: made once, mode 600, reused, hashes that match their passwords."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from bakery import sha512crypt
from bakery.config import load_config
from bakery.credentials import ALPHABET, credentials_path, ensure_credentials
from bakery.errors import CredentialsError


def test_sheet_is_private_and_reused(write_config: Callable[[str], Path]) -> None:
    path = write_config("name: ok\nusers: {count: 3, admins: [boss]}\n")
    cfg = load_config(path)
    sheet = credentials_path(path)
    assert sheet.name == "workshop.credentials.csv"
    first = ensure_credentials(cfg, sheet)
    assert stat.S_IMODE(sheet.stat().st_mode) == 0o600
    assert [a.username for a in first] == ["training01", "training02", "training03", "boss"]
    assert len({a.password for a in first}) == 4
    assert all(len(a.password) == 12 and set(a.password) <= set(ALPHABET) for a in first)
    assert all(sha512crypt.verify(a.password, a.hash) for a in first)
    before = sheet.read_bytes()
    assert ensure_credentials(cfg, sheet) == first
    assert sheet.read_bytes() == before


def test_new_users_added_old_kept_and_edits_rehashed(write_config: Callable[[str], Path]) -> None:
    path = write_config("name: ok\nusers: {count: 2}\n")
    sheet = credentials_path(path)
    first = ensure_credentials(load_config(path), sheet)
    # The instructor edits a password by hand and adds a trainee in the config.
    text = sheet.read_text().replace(first[0].password, "Hand-Edited-9")
    sheet.write_text(text)
    sheet.chmod(0o644)
    path.write_text("name: ok\nusers: {count: 3}\n")
    second = ensure_credentials(load_config(path), sheet)
    assert stat.S_IMODE(sheet.stat().st_mode) == 0o600
    assert second[0].password == "Hand-Edited-9"
    assert sha512crypt.verify("Hand-Edited-9", second[0].hash)
    assert second[1] == first[1]
    assert second[2].username == "training03"


def test_shared_password_mode(write_config: Callable[[str], Path]) -> None:
    path = write_config("name: ok\nusers: {count: 4, password: shared}\n")
    accounts = ensure_credentials(load_config(path), credentials_path(path))
    assert len({a.password for a in accounts}) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user,pass\n", "not a bakery credentials sheet"),
        ("username,password\ntraining01\n", ":2: expected 'username,password"),
        ("username,password\nada,secret1234\nada,other12345\n", ":3: 'ada' appears twice"),
        ("username,password\nada,short\n", ":2: the password of 'ada' must be"),
    ],
)
def test_bad_sheets(write_config: Callable[[str], Path], content: str, message: str) -> None:
    path = write_config("name: ok\n")
    credentials_path(path).write_text(content)
    with pytest.raises(CredentialsError, match=message):
        ensure_credentials(load_config(path), credentials_path(path))
