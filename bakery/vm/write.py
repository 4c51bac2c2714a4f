"""What the CLI's local commands do, as keyword-only functions usable without the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bakery.config.workshop import load_config
from bakery.errors import BakeryError, OutputError, RenderError, UsageError
from bakery.files import check_target, write_private
from bakery.vm.stages import STAGES, Role, Stage
from bakery.vm.userdata import UserData, render_user_data
from bakery.workshop.accounts import credentials_path, ensure_credentials


def _note(message: str) -> None:
    print(f"bakery: {message}", file=sys.stderr)


def user_data_for(
    *, config_path: Path, stage: Stage, gzip_data: bool | None = None, role: Role = "manager"
) -> UserData:
    """Load the config and its credentials sheet (made on first use) and render ``stage``.

    ``role``: a swarm cluster's manager or worker (a worker's document creates no accounts).
    """
    if stage not in STAGES:
        raise BakeryError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    cfg = load_config(config_path)
    if role == "worker" and not cfg.cluster.swarm:
        raise UsageError(
            f"--role worker: {config_path} has no cluster (set cluster.engine: swarm, or leave "
            "out --role)"
        )
    accounts = None
    if stage != "bake" and role == "manager":
        sheet = credentials_path(config_path)
        existed = sheet.exists()
        accounts = ensure_credentials(cfg, sheet)
        if not existed:
            _note(f"made passwords for {len(accounts)} accounts in {sheet} (mode 600)")
    return render_user_data(cfg, stage=stage, accounts=accounts, gzip_data=gzip_data, role=role)


def _looks_like_ours(path: Path) -> bool:
    # Only called on a regular file (check_target): never blocks on a FIFO or a device.
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise OutputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return head.startswith((b"#cloud-config", b"\x1f\x8b")) or not head


def render_to(
    *,
    config_path: Path,
    stage: Stage = "full",
    gzip_data: bool | None = None,
    output: Path | None = None,
    force: bool = False,
    role: Role = "manager",
) -> UserData:
    """Render user-data to ``output`` (standard output when None)."""
    result = user_data_for(config_path=config_path, stage=stage, gzip_data=gzip_data, role=role)
    what = f"{stage} stage" if role == "manager" else f"{stage} stage, {role}"
    if result.gzipped and gzip_data is None:
        _note(f"gzipped the {what} user-data to fit Nova's limit ({result.encoded_size:,} chars)")
    if output is None:
        if result.gzipped and sys.stdout.isatty():
            raise RenderError("gzipped user-data is binary: redirect it or use -o FILE")
        sys.stdout.buffer.write(result.data)
        sys.stdout.flush()
        return result
    # A link, device, FIFO or folder is refused before anything is read or written.
    if check_target(output) and not force and not _looks_like_ours(output):
        raise BakeryError(f"{output} exists and is not bakery user-data; use --force to replace it")
    write_private(output, result.data)
    _note(f"wrote {output} ({what}, {result.encoded_size:,} base64 chars)")
    return result


def credentials_sheet(*, config_path: Path, as_csv: bool = False, as_json: bool = False) -> str:
    """The login sheet to hand out: one line per account, trainees first.

    ``as_csv`` gives ``username,password`` lines; ``as_json`` a list of ``{"username",
    "password", "admin"}`` objects (for mail merges and scripts).
    """
    if as_csv and as_json:
        raise UsageError("--csv and --json: choose one")
    cfg = load_config(config_path)
    accounts = ensure_credentials(cfg, credentials_path(config_path))
    admins = set(cfg.users.admins)
    if as_json:
        rows = [
            {"username": a.username, "password": a.password, "admin": a.username in admins}
            for a in accounts
        ]
        return json.dumps(rows, indent=2) + "\n"
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
