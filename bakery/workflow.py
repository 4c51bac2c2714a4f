"""What the CLI's local commands do, as keyword-only functions usable without the CLI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bakery.config import load_config
from bakery.credentials import credentials_path, ensure_credentials
from bakery.errors import BakeryError, RenderError
from bakery.render import STAGES, Stage, UserData, render_user_data


def _note(message: str) -> None:
    print(f"bakery: {message}", file=sys.stderr)


def user_data_for(*, config_path: Path, stage: Stage, gzip_data: bool | None = None) -> UserData:
    """Load the config and its credentials sheet (made on first use) and render ``stage``."""
    if stage not in STAGES:
        raise BakeryError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    cfg = load_config(config_path)
    accounts = None
    if stage != "bake":
        sheet = credentials_path(config_path)
        existed = sheet.exists()
        accounts = ensure_credentials(cfg, sheet)
        if not existed:
            _note(f"made passwords for {len(accounts)} accounts in {sheet} (mode 600)")
    return render_user_data(cfg, stage=stage, accounts=accounts, gzip_data=gzip_data)


def _looks_like_ours(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(16)
    return head.startswith((b"#cloud-config", b"\x1f\x8b")) or not head


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only (it holds hashes)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def render_to(
    *,
    config_path: Path,
    stage: Stage = "full",
    gzip_data: bool | None = None,
    output: Path | None = None,
    force: bool = False,
) -> UserData:
    """Render user-data to ``output`` (standard output when None)."""
    result = user_data_for(config_path=config_path, stage=stage, gzip_data=gzip_data)
    if result.gzipped and gzip_data is None:
        _note(f"gzipped the {stage} user-data to fit Nova's limit ({result.encoded_size:,} chars)")
    if output is None:
        if result.gzipped and sys.stdout.isatty():
            raise RenderError("gzipped user-data is binary: redirect it or use -o FILE")
        sys.stdout.buffer.write(result.data)
        sys.stdout.flush()
        return result
    if output.is_dir():
        raise BakeryError(f"{output} is a directory; give a file name")
    if output.exists() and not force and not _looks_like_ours(output):
        raise BakeryError(f"{output} exists and is not bakery user-data; use --force to replace it")
    try:
        write_private(output, result.data)
    except OSError as exc:
        raise BakeryError(f"{output}: cannot write: {exc}") from None
    _note(f"wrote {output} ({stage} stage, {result.encoded_size:,} base64 chars)")
    return result


def credentials_sheet(*, config_path: Path, as_csv: bool = False) -> str:
    """The login sheet to hand out: one line per account, trainees first."""
    cfg = load_config(config_path)
    accounts = ensure_credentials(cfg, credentials_path(config_path))
    admins = set(cfg.users.admins)
    if as_csv:
        return "username,password\n" + "".join(f"{a.username},{a.password}\n" for a in accounts)
    width = max(len(a.username) for a in accounts)
    where = f"https://{cfg.tls.domain}/" if cfg.tls.domain else "https://<the VM's address>/"
    lines = [f"Workshop {cfg.name}: {where}", ""]
    lines += [
        f"{a.username:<{width}}  {a.password}{'  (admin)' if a.username in admins else ''}"
        for a in accounts
    ]
    return "\n".join(lines) + "\n"
