"""Trainee passwords: generated once into a mode-600 CSV next to the config, hashed for user-data.

The sheet is the source of truth. Its third column keeps each password's SHA-512-crypt hash so that
the same sheet always renders byte-identical user-data (a crypt hash has a random salt). The fourth
is a cheap checksum of the row: a password edited by hand no longer matches it, and its hash is made
anew, without paying for 5,000 rounds of SHA-512 per account at every render.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from bakery import sha512crypt
from bakery.config import Workshop
from bakery.errors import CredentialsError

# No look-alikes (0/O, 1/l/I): passwords are read off a printed sheet.
ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
HEADER = ["username", "password", "sha512_crypt", "check"]


@dataclass(frozen=True)
class Account:
    """One login: its name, its plaintext password (sheet only) and the hash (user-data only)."""

    username: str
    password: str
    hash: str


def credentials_path(config_path: str | Path) -> Path:
    """The sheet that belongs to a config: ``workshop.yaml`` -> ``workshop.credentials.csv``."""
    config_path = Path(config_path)
    return config_path.with_name(config_path.stem + ".credentials.csv")


def new_password(length: int) -> str:
    """A random password from an alphabet that survives being read aloud or off paper."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _row_check(username: str, password: str, digest: str) -> str:
    """A checksum tying a hash to its row (not a secret: the row holds the password itself)."""
    return hashlib.sha256(f"{username}\0{password}\0{digest}".encode()).hexdigest()[:16]


def _read(path: Path) -> dict[str, tuple[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot read: {exc}") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip() for c in rows[0][:2]] != HEADER[:2]:
        raise CredentialsError(
            f"{path}:1: not a bakery credentials sheet (expected the header "
            f"'{','.join(HEADER)}'); move it away or fix the header"
        )
    found: dict[str, tuple[str, str]] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not row[0].strip() or not row[1]:
            raise CredentialsError(f"{path}:{lineno}: expected 'username,password[,hash,check]'")
        name, password = row[0].strip(), row[1]
        if name in found:
            raise CredentialsError(f"{path}:{lineno}: {name!r} appears twice")
        if any(c in password for c in ":\n\r") or len(password) < 8:
            raise CredentialsError(
                f"{path}:{lineno}: the password of {name!r} must be at least 8 characters, "
                "without ':' or line breaks"
            )
        digest = row[2].strip() if len(row) > 2 else ""
        check = row[3].strip() if len(row) > 3 else ""
        # A hash whose row checksum is off (edited password) is dropped and made anew.
        found[name] = (password, digest if check == _row_check(name, password, digest) else "")
    return found


def _write(path: Path, accounts: list[Account]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(
        [a.username, a.password, a.hash, _row_check(a.username, a.password, a.hash)]
        for a in accounts
    )
    # Written to a private temporary file and renamed: never world-readable, never half-written.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(buf.getvalue())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CredentialsError(f"{path}: cannot write: {exc}") from None


def ensure_credentials(cfg: Workshop, path: str | Path) -> list[Account]:
    """Load the sheet at ``path``, adding a password for every account the config names.

    Existing passwords are never changed; accounts no longer in the config stay in the sheet
    (they are simply not rendered). The file is (re)written only when something was added.
    """
    path = Path(path)
    known = _read(path)
    if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o600)
    names = cfg.users.all_names()
    shared = None
    if cfg.users.password == "shared":  # noqa: S105 (the mode)
        existing = [known[n][0] for n in names if n in known]
        shared = existing[0] if existing else new_password(cfg.users.password_length)
    changed = False
    accounts: dict[str, Account] = {}
    for name in [*known, *(n for n in names if n not in known)]:
        password, old_hash = known.get(
            name, (shared or new_password(cfg.users.password_length), "")
        )
        if old_hash:
            digest = old_hash
        else:
            digest = sha512crypt.hash_password(password)
            changed = True
        accounts[name] = Account(name, password, digest)
    if changed or not path.exists():
        _write(path, list(accounts.values()))
    return [accounts[n] for n in names]


def preview_accounts(cfg: Workshop) -> list[Account]:
    """Throwaway accounts for checks that must not write a sheet (`bakery validate`)."""
    password = new_password(cfg.users.password_length)
    return [
        Account(n, password, sha512crypt.hash_password(password)) for n in cfg.users.all_names()
    ]
