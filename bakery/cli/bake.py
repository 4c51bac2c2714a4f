"""Golden-image commands: packer, bake, image upload and image delete."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from bakery.cli.app import (
    ConfigArg,
    _err,
    app,
    command,
    progress,
)

# --- bakery packer / bakery bake (golden image with Packer; library: bakery/packer.py) ----------


class BakeSource(str, Enum):
    """The Packer sources `bakery bake --only` can pick."""

    openstack = "openstack"
    qemu = "qemu"


@command("packer")
def packer_(
    config: ConfigArg,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder to write the Packer build into.")
    ] = Path("build/packer"),
    packer_version: Annotated[
        str | None,
        typer.Option(
            "--packer-version",
            help="Write for this Packer (e.g. 1.6.6); default: the installed one, else >= 1.7.",
        ),
    ] = None,
) -> None:
    """Write the golden image's Packer build (HCL, variables, bake user-data); no credentials."""
    from bakery.bake.packer import write_packer
    from bakery.config.workshop import load_config

    written = write_packer(
        load_config(config),
        out_dir=output,
        packer_version=packer_version,
        config_dir=Path(config).parent,
    )
    for path in written:
        typer.echo(path)
    _err(f"bakery: wrote {len(written)} files; build with: cd {output} && packer build .")


class BakeBuilder(str, Enum):
    """How `bakery bake` builds the image (see bakery.bake.builders)."""

    packer = "packer"
    openstacksdk = "openstacksdk"
    chroot = "chroot"


@command()
def bake(
    config: ConfigArg,
    only: Annotated[
        BakeSource | None,
        typer.Option("--only", help="Packer: build one source: openstack, or qemu (local qcow2)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="packer: its folder (default: build/packer/NAME); chroot: the golden qcow2 "
            "(default: build/NAME-golden.qcow2).",
        ),
    ] = None,
    builder: Annotated[
        BakeBuilder,
        typer.Option(
            "--builder",
            help="packer; openstacksdk: no Packer (boot a builder server, let it seal itself, "
            "snapshot it); chroot: install into bake.qemu_base_image's filesystem at native "
            "speed (root).",
        ),
    ] = BakeBuilder.packer,
    upload: Annotated[
        bool,
        typer.Option(
            "--upload",
            help="Put the image file made (chroot, or Packer's qemu) into the config's cloud "
            "(as `bakery image upload` does).",
        ),
    ] = False,
) -> None:
    """Bake the golden image (Packer by default), streaming progress; prints the images made."""
    from bakery.bake.builders import bake as bake_image

    results = bake_image(
        config_path=config,
        builder=builder.value,
        output=output,
        only=only.value if only else None,
        upload=upload,
        progress=progress(),
    )
    for r in results:
        typer.echo(f"{r.builder}: {r.image_name} {r.where}")


image_app = typer.Typer(
    name="image",
    help="Golden images in the cloud: upload a baked file, delete one.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(image_app)


@command()
def lock(config: ConfigArg) -> None:
    """Pin every Python package of the hub and of the trainees (environment:) with the sha256 of
    its files, in NAME.lock.json beside the workshop; bakes install from it, hash-checked.

    Run it again after changing environment: or hub.versions (render, bake and validate say when
    the lock no longer matches); commit the lock with the workshop.
    """
    from bakery.bake.lock import lock_workshop

    path, changed = lock_workshop(config_path=config, progress=progress())
    _err(f"bakery: {'wrote' if changed else 'unchanged:'} {path}")


class DiskFormat(str, Enum):
    """The disk formats `image upload` sends (bakery.bake.upload.DISK_FORMATS)."""

    qcow2 = "qcow2"
    raw = "raw"


@command("upload", group=image_app)
def image_upload(
    config: ConfigArg,
    image_file: Annotated[
        Path,
        typer.Argument(
            help="A qcow2 baked by `bakery bake --builder chroot` (or Packer's qemu), with its "
            "FILE.bakery.json beside it.",
            show_default=False,
            metavar="FILE",
        ),
    ],
    disk_format: Annotated[
        DiskFormat | None,
        typer.Option(
            "--disk-format",
            help="Upload as this format (converted with qemu-img). Default: the file's where "
            "Glance takes it, else one it takes. A Ceph-backed cloud boots raw copy-on-write.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Upload a baked image file into Glance as the golden image (same name, record, properties).

    An image of that name with the same checksum is reused, not sent again.
    """
    from bakery.bake.upload import upload as do_upload

    result = do_upload(
        config_path=config,
        image_file=image_file,
        progress=progress(),
        disk_format=disk_format.value if disk_format is not None else None,
    )
    typer.echo(f"{result.image_name} {result.image_id}")
    _err(f"bakery: launch it: bakery launch {config} --image {result.image_name}")


@command("delete", group=image_app)
def image_delete(
    config: ConfigArg,
    name_or_id: Annotated[
        str, typer.Argument(help="The image's name or ID.", show_default=False, metavar="IMAGE")
    ],
) -> None:
    """Delete one of this workshop's golden images from Glance (never one bakery did not bake)."""
    from bakery.bake.upload import delete_image

    delete_image(config_path=config, name_or_id=name_or_id, progress=progress())
