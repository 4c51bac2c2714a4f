"""The credentials sheet: made once, mode 600, reused, hashes that match their passwords."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bakery.config.workshop import load_config
from bakery.errors import CredentialsError
from bakery.workshop import sha512crypt
from bakery.workshop.accounts import ALPHABET, credentials_path, ensure_credentials


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


def test_shared_password_mode_keeps_admins_apart(write_config: Callable[[str], Path]) -> None:
    path = write_config("name: ok\nusers: {count: 4, password: shared, admins: [boss, chef]}\n")
    accounts = ensure_credentials(load_config(path), credentials_path(path))
    trainees, admins = accounts[:4], accounts[4:]
    assert len({a.password for a in trainees}) == 1
    shared = trainees[0].password
    assert all(a.password != shared for a in admins)
    assert admins[0].password != admins[1].password


def test_an_old_sheet_sharing_the_admin_password_is_fixed(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config("name: ok\nusers: {count: 2, password: shared, admins: [boss]}\n")
    sheet = credentials_path(path)
    rows = ["training01,Shared-Pass-1", "training02,Shared-Pass-1", "boss,Shared-Pass-1"]
    sheet.write_text("username,password\n" + "\n".join(rows) + "\n")
    accounts = ensure_credentials(load_config(path), sheet)
    assert [a.password for a in accounts[:2]] == ["Shared-Pass-1"] * 2
    assert accounts[2].password != "Shared-Pass-1"
    assert f"boss,{accounts[2].password}," in sheet.read_text()


def test_symlinked_sheet_is_refused_not_replaced(write_config: Callable[[str], Path]) -> None:
    path = write_config("name: ok\nusers: {count: 1}\n")
    real = path.parent / "elsewhere.csv"
    real.write_text("username,password\n")
    credentials_path(path).symlink_to(real)
    with pytest.raises(CredentialsError, match="symbolic link"):
        ensure_credentials(load_config(path), credentials_path(path))
    assert credentials_path(path).is_symlink()
    assert real.read_text() == "username,password\n"


def test_planted_temp_file_link_is_not_followed(write_config: Callable[[str], Path]) -> None:
    path = write_config("name: ok\nusers: {count: 1}\n")
    victim = path.parent / "victim.txt"
    victim.write_text("untouched\n")
    # The old code wrote the passwords to `.NAME.tmp` through whatever was there.
    (path.parent / ".workshop.credentials.csv.tmp").symlink_to(victim)
    ensure_credentials(load_config(path), credentials_path(path))
    assert victim.read_text() == "untouched\n"
    assert stat.S_IMODE(credentials_path(path).stat().st_mode) == 0o600


def test_fifo_sheet_is_refused_without_hanging(write_config: Callable[[str], Path]) -> None:
    path = write_config("name: ok\n")
    os.mkfifo(credentials_path(path))
    with pytest.raises(CredentialsError, match="not a regular file"):
        ensure_credentials(load_config(path), credentials_path(path))


def test_read_only_folder_names_the_sheet(
    write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config("name: ok\nusers: {count: 1}\n")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path.parent / ".x.tmp"))

    # What a read-only folder does to any user but root (the tests may run as root).
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(CredentialsError) as info:
        ensure_credentials(load_config(path), credentials_path(path))
    message = str(info.value)
    assert "workshop.credentials.csv" in message and ".tmp" not in message, message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user,pass\n", "not a bakery credentials sheet"),
        ("username,password\ntraining01\n", ":2: expected 'username,password"),
        ("username,password\nada,secret1234\nada,other12345\n", ":3: 'ada' appears twice"),
        ("username,password\nada,short\n", ":2: the password of 'ada' must be"),
        (b"username,password\nad\xe9,secret1234\n", ":2: not UTF-8 text"),
        ("username,password\nada," + "x" * 5_000 + "\n", ":2: a cell longer than"),
        ("username,password\nada," + "x" * 200_000 + "\n", ":2: not valid CSV: field larger"),
        ('username,password\nada,"unterminated\n', "the password of 'ada' must be"),
        ("username,password\nada,\x00secret1234\n", "the password of 'ada' must be"),
    ],
)
def test_bad_sheets(
    write_config: Callable[[str], Path], content: str | bytes, message: str
) -> None:
    path = write_config("name: ok\n")
    if isinstance(content, bytes):
        credentials_path(path).write_bytes(content)
    else:
        credentials_path(path).write_text(content)
    with pytest.raises(CredentialsError, match=message):
        ensure_credentials(load_config(path), credentials_path(path))
