"""`bakery render`: a workshop's user-data for one stage and role, written safely to a file."""

from __future__ import annotations

from pathlib import Path

from bakery.config.workshop import load_config
from bakery.errors import BakeryError, OutputError, UsageError
from bakery.files import check_target, write_private
from bakery.progress import Reporter, quiet
from bakery.topology import topology
from bakery.vm.stages import STAGES, Role, Stage
from bakery.vm.userdata import UserData, render_user_data
from bakery.workshop.accounts import credentials_path, ensure_credentials
from bakery.workshop.expiry import refuse_if_ended


def user_data_for(
    *,
    config_path: Path,
    stage: Stage,
    gzip_data: bool | None = None,
    role: Role = "manager",
    progress: Reporter = quiet,
) -> UserData:
    """Load the config and its credentials sheet (made on first use) and render ``stage``.

    ``role``: a swarm cluster's manager or worker (a worker's document creates no accounts).
    """
    if stage not in STAGES:
        raise BakeryError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    cfg = load_config(config_path)
    if stage != "bake":
        refuse_if_ended(cfg)  # a VM booted from it would refuse its trainees and power off
    if role == "worker" and not topology(cfg).workers:
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
            progress(f"made passwords for {len(accounts)} accounts in {sheet} (mode 600)")
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
    progress: Reporter = quiet,
) -> UserData:
    """Render user-data and write it to ``output`` (mode 600); with no ``output`` only render
    (the CLI prints it).

    Raises:
        BakeryError: ``output`` exists and is not bakery user-data (without ``force``).
        OutputError: ``output`` is a link, a device, a FIFO or a folder.
    """
    result = user_data_for(
        config_path=config_path, stage=stage, gzip_data=gzip_data, role=role, progress=progress
    )
    what = f"{stage} stage" if role == "manager" else f"{stage} stage, {role}"
    if result.gzipped and gzip_data is None:
        progress(
            f"gzipped the {what} user-data to fit Nova's limit ({result.encoded_size:,} chars)"
        )
    if output is None:
        return result
    # A link, device, FIFO or folder is refused before anything is read or written.
    if check_target(output) and not force and not _looks_like_ours(output):
        raise BakeryError(f"{output} exists and is not bakery user-data; use --force to replace it")
    write_private(output, result.data)
    progress(f"wrote {output} ({what}, {result.encoded_size:,} base64 chars)")
    return result
