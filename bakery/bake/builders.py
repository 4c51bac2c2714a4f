"""The three ways to bake a golden image, behind one call shape and one result type."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from bakery.bake import chroot, packer
from bakery.bake import sdk as bake_openstack
from bakery.errors import UsageError
from bakery.progress import Reporter, quiet
from bakery.vm.image import BakeResult

__all__ = ["BUILDERS", "BakeResult", "Builder", "bake"]

Builder = Literal["packer", "openstacksdk", "chroot"]
BUILDERS: tuple[Builder, ...] = ("packer", "openstacksdk", "chroot")


def _packer(only: str | None) -> Callable[..., list[BakeResult]]:
    def run(*, config_path: Path, output: Path | None, progress: Reporter) -> list[BakeResult]:
        return packer.bake(config_path=config_path, output=output, only=only, progress=progress)

    return run


def bake(
    *,
    config_path: str | Path,
    builder: Builder = "packer",
    output: str | Path | None = None,
    only: str | None = None,
    upload: bool = False,
    progress: Reporter = quiet,
) -> list[BakeResult]:
    """Bake ``config_path``'s golden image with ``builder``.

    Args:
        config_path: the workshop file.
        builder: ``packer`` (an OpenStack image, and a local qcow2 with ``bake.qemu_base_image``),
            ``openstacksdk`` (a Glance image, no Packer) or ``chroot`` (a local qcow2, as root).
        output: packer: its folder; chroot: the qcow2; openstacksdk: not used.
        only: packer only: build one source, ``openstack`` or ``qemu``.
        upload: put each image file made (chroot, Packer's qemu) into the config's cloud, as
            `bakery image upload` does.
        progress: where the builder's notes and states go.

    Returns:
        The images made: each with its name, Glance ID or file, bake record and timings.
    """
    if builder not in BUILDERS:
        raise UsageError(f"builder {builder!r}: use one of {', '.join(BUILDERS)}")
    if only is not None and builder != "packer":
        raise UsageError(f"--only {only}: only for --builder packer (its sources)")
    run = {
        "packer": _packer(only),
        "openstacksdk": bake_openstack.bake,
        "chroot": chroot.bake,
    }[builder]
    out = Path(output) if output is not None else None
    results: list[BakeResult] = run(config_path=Path(config_path), output=out, progress=progress)
    if upload:
        from bakery.bake.upload import upload_results

        results = upload_results(results, config_path=Path(config_path), progress=progress)
    return results
