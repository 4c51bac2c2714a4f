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

from bakery.config.workshop import Workshop
from bakery.errors import CredentialsError, OutputError
from bakery.files import check_target, write_private
from bakery.workshop import sha512crypt

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


# A sheet is a few kB; anything far larger is not one (and must not fill memory).
MAX_SHEET_BYTES = 4 * 1024 * 1024
MAX_CELL = 1024


def _check_sheet(path: Path) -> bool:
    """Whether the sheet exists; a link, device, FIFO or folder is refused (never followed)."""
    try:
        return check_target(path)
    except OutputError as exc:
        raise CredentialsError(f"credentials sheet: {exc}") from None


def _read_text(path: Path) -> str | None:
    if not _check_sheet(path):
        return None
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SHEET_BYTES + 1)
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_SHEET_BYTES:
        raise CredentialsError(f"{path}: larger than {MAX_SHEET_BYTES:,} bytes: not a sheet")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CredentialsError(
            f"{path}:{line}: not UTF-8 text; save the sheet as UTF-8 (or move it away to make "
            "new passwords)"
        ) from None


def _rows(path: Path, text: str) -> list[list[str]]:
    rows = []
    reader = csv.reader(io.StringIO(text))
    try:
        for row in reader:
            if any(len(cell) > MAX_CELL for cell in row):
                raise CredentialsError(
                    f"{path}:{reader.line_num}: a cell longer than {MAX_CELL} characters; "
                    "not a credentials sheet"
                )
            rows.append(row)
    except csv.Error as exc:
        raise CredentialsError(f"{path}:{reader.line_num}: not valid CSV: {exc}") from None
    return rows


def _read(path: Path) -> dict[str, tuple[str, str]]:
    text = _read_text(path)
    if text is None:
        return {}
    rows = _rows(path, text)
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
        if ":" in password or len(password) < 8 or not password.isprintable():
            raise CredentialsError(
                f"{path}:{lineno}: the password of {name!r} must be at least 8 characters, "
                "without ':', line breaks or other control characters"
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
    # A private temporary file made exclusively, then renamed: never world-readable, never
    # half-written, never through a planted link.
    try:
        write_private(path, buf.getvalue())
    except OutputError as exc:
        raise CredentialsError(f"credentials sheet: {exc}") from None


def sheet_order(path: str | Path) -> list[str]:
    """The accounts of the sheet at ``path`` in its order: the order they were made, since new
    accounts are appended (empty without a sheet). Servers are dealt trainees in this order."""
    return list(_read(Path(path)))


def account_names(cfg: Workshop) -> list[str]:
    """The accounts bakery makes before the class: trainees, then admins; none when a provider
    logs people in (auth.kind oidc or github: the hub makes each account at its first login)."""
    return [] if cfg.auth.oauth else cfg.users.all_names()


def login_line(sheet: Path, config_path: Path) -> str:
    """What `launch` and `try` print about logins: the sheet, or (a provider's logins: no sheet)
    where the slips come from."""
    if sheet.exists():
        return f"credentials: {sheet}  (print them: bakery credentials {config_path})"
    return (
        f"logins: through the provider (auth:); slips with the address: bakery credentials "
        f"{config_path} --slips slips.html"
    )


def ensure_credentials(cfg: Workshop, path: str | Path) -> list[Account]:
    """Load the sheet at ``path``, adding a password for every account the config names.

    Existing passwords are never changed; accounts no longer in the config stay in the sheet
    (they are simply not rendered). The file is (re)written only when something was added. With
    a provider's logins (auth.kind oidc, github) there are no accounts and no sheet.
    """
    path = Path(path)
    if cfg.auth.oauth:
        return []
    known = _read(path)
    _tighten(path)
    names = cfg.users.all_names()
    length = cfg.users.password_length
    trainees = set(cfg.users.trainees())
    shared = None
    if cfg.users.password == "shared":  # noqa: S105 (the mode)
        existing = [known[n][0] for n in names if n in known and n in trainees]
        shared = existing[0] if existing else new_password(length)
        # Admins never share the trainees' password (a trainee could log in as the instructor):
        # a sheet that gave them the shared one (bakery < 0.2) gets a new one for them.
        known = {
            n: v for n, v in known.items() if n in trainees or n not in names or v[0] != shared
        }
    changed = False
    accounts: dict[str, Account] = {}
    for name in [*known, *(n for n in names if n not in known)]:
        fresh = shared if shared is not None and name in trainees else new_password(length)
        password, old_hash = known.get(name, (fresh, ""))
        if old_hash:
            digest = old_hash
        else:
            digest = sha512crypt.hash_password(password)
            changed = True
        accounts[name] = Account(name, password, digest)
    if changed or not path.exists():
        _write(path, list(accounts.values()))
    return [accounts[n] for n in names]


def _tighten(path: Path) -> None:
    """Make an existing sheet owner-only (it was checked to be a regular file, not a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot open: {exc.strerror or exc}") from None
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot make it private: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def preview_accounts(cfg: Workshop) -> list[Account]:
    """Throwaway accounts for checks that must not write a sheet (`bakery validate`)."""
    password = new_password(cfg.users.password_length)
    return [Account(n, password, sha512crypt.hash_password(password)) for n in account_names(cfg)]


def reset_passwords(cfg: Workshop, path: str | Path, names: list[str]) -> list[Account]:
    """Give ``names`` new passwords in the sheet (everyone else keeps theirs); their accounts.

    Raises:
        CredentialsError: a name the config or the sheet does not have.
    """
    path = Path(path)
    known = _read(path)
    missing = [n for n in names if n not in known or n not in cfg.users.all_names()]
    if missing:
        raise CredentialsError(
            f"{', '.join(missing)}: not an account of this workshop (in the config and {path}); "
            "`bakery users add` makes new ones"
        )
    accounts = {
        n: Account(n, pw, digest or sha512crypt.hash_password(pw))
        for n, (pw, digest) in known.items()
    }
    for name in names:
        password = new_password(cfg.users.password_length)
        accounts[name] = Account(name, password, sha512crypt.hash_password(password))
    _write(path, list(accounts.values()))
    return [accounts[n] for n in names]
