"""A file image into Glance (named, recorded, checked as a cloud bake would be); image delete."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from bakery.config.workshop import Workshop, load_config
from bakery.errors import BakeryError, BuildError, CloudError, UsageError
from bakery.progress import Reporter, quiet
from bakery.providers.openstack.api import api, connect, find_image, glance_formats
from bakery.providers.openstack.resources import create_once
from bakery.vm import image
from bakery.vm.image import image_properties

if TYPE_CHECKING:
    from openstack.connection import Connection

__all__ = [
    "Checksums",
    "delete_image",
    "file_checksums",
    "upload",
    "upload_file",
]

CHUNK = 1 << 20
# Glance states of an upload that never finished (an interrupted earlier run): safe to replace.
UNFINISHED = ("queued", "saving", "uploading", "importing", "killed")


@dataclass(frozen=True)
class Checksums:
    """The two digests Glance computes of an image's data (``checksum`` and ``os_hash_value``)."""

    md5: str
    sha512: str
    size: int


def file_checksums(path: Path, progress: Reporter = quiet) -> Checksums:
    """md5 and sha512 of ``path`` in one pass (what Glance reports once the data is stored)."""
    md5, sha512 = hashlib.md5(usedforsecurity=False), hashlib.sha512()
    size, total, shown = 0, path.stat().st_size, -1
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            md5.update(chunk)
            sha512.update(chunk)
            size += len(chunk)
            percent = size * 100 // max(total, 1)
            if percent // 10 != shown:
                shown = percent // 10
                progress(f"checksumming {path.name}: {percent} %", transient=True)
    return Checksums(md5.hexdigest(), sha512.hexdigest(), size)


def matches(img: Any, sums: Checksums) -> bool:
    """Whether Glance's digests of ``img`` are those of the local file (sha512 when Glance has it,
    md5 always)."""
    if img.checksum != sums.md5:
        return False
    algo, value = getattr(img, "hash_algo", None), getattr(img, "hash_value", None)
    return not (algo == "sha512" and value and value != sums.sha512)


class _Reader:
    """The image file as the upload's body: reports bytes and percent as requests reads it."""

    def __init__(self, fh: BinaryIO, size: int, name: str, progress: Reporter) -> None:
        self._fh, self._size, self._name, self._progress = fh, size, name, progress
        self._sent, self._shown, self._start = 0, -1, time.monotonic()

    def __len__(self) -> int:  # requests sends a Content-Length (Glance then knows the size)
        return self._size

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._sent += len(data)
        percent = self._sent * 100 // max(self._size, 1)
        if percent // 5 != self._shown:  # every 5 %: a pipe gets 20 lines, not 100
            self._shown = percent // 5
            rate = self._sent / max(time.monotonic() - self._start, 1e-3) / 2**20
            self._progress(
                f"uploading {self._name}: {self._sent / 2**20:.0f} of {self._size / 2**20:.0f} MiB "
                f"({percent} %, {rate:.0f} MiB/s)",
                transient=True,
            )
        return data


def _existing(conn: Connection, name: str, sums: Checksums, progress: Reporter) -> Any | None:
    """The finished image ``name`` with this content (None: upload); an earlier run's unfinished
    upload is deleted, an image of that name with other content stops the upload."""
    found = None
    for img in api(f"list images named {name}", lambda: list(conn.image.images(name=name))):
        if (
            img.status in UNFINISHED
            and image.record_from_properties(image_properties(img)) is not None
        ):
            progress(f"image {name}: deleting an unfinished upload ({img.id}, {img.status})")
            api(f"delete image {img.id}", conn.image.delete_image, img, ignore_missing=True)
        elif img.status == "active" and matches(img, sums):
            found = img
        else:
            raise CloudError(
                f"image {name!r} exists ({img.id}, {img.status}) with other content; delete it "
                f"(bakery image delete CONFIG {img.id}) or bake again for a new name"
            )
    return found


def _verify(conn: Connection, img: Any, sums: Checksums) -> Any:
    """The image as Glance has it after the upload, checked against the local digests."""
    stored = api(f"get image {img.id}", conn.image.get_image, img.id)
    if stored.status != "active":
        raise CloudError(f"image {stored.name}: {stored.status} after the upload, not active")
    if not matches(stored, sums):
        raise CloudError(
            f"image {stored.name}: Glance's checksum {stored.checksum} is not the file's "
            f"{sums.md5}: the data was changed on the way; upload again"
        )
    return stored


def _send(conn: Connection, img: Any, path: Path, size: int, progress: Reporter) -> None:
    """PUT the file as the image's data; no blind retry (the file is read once)."""
    with path.open("rb") as fh:
        body = _Reader(fh, size, path.name, progress)
        resp = api(
            f"upload {path.name}",
            conn.image.put,
            f"/images/{img.id}/file",
            data=body,
            headers={"Content-Type": "application/octet-stream"},
            connect_retries=0,
            status_code_retries=0,  # an empty retriable list would mean keystoneauth's default
        )
    if resp.status_code >= 400:
        raise CloudError(f"upload {path.name}: HTTP {resp.status_code}: {resp.text[:300]}")


# The formats a bake writes or converts to, in bakery's order of preference: qcow2 sends only
# the blocks in use; raw is what a Ceph-backed Glance boots copy-on-write.
DISK_FORMATS = ("qcow2", "raw")


def choose_format(have: str, allowed: list[str] | None, asked: str | None) -> str:
    """The format to upload ``have`` (the file's) as: ``asked`` (--disk-format), else the file's
    own where Glance takes it, else the first of DISK_FORMATS it takes.

    Raises:
        UsageError: --disk-format names one this Glance refuses, or none of DISK_FORMATS is.
    """
    takes = ", ".join(allowed or [])
    if asked is not None:
        if allowed is not None and asked not in allowed:
            raise UsageError(f"--disk-format {asked}: this cloud's Glance takes {takes}")
        return asked
    if allowed is None or have in allowed:
        return have
    for fmt in DISK_FORMATS:
        if fmt in allowed:
            return fmt
    raise UsageError(
        f"this cloud's Glance takes {takes}: none of bakery's ({', '.join(DISK_FORMATS)})"
    )


def convert(image_file: Path, have: str, want: str, progress: Reporter = quiet) -> Path:
    """``image_file`` as ``want`` beside it (``FILE.raw``), made by qemu-img once and kept while
    it is newer than the file.

    Raises:
        BuildError: qemu-img is missing or fails.
    """
    out = image_file.with_name(f"{image_file.name}.{want}")
    if out.is_file() and out.stat().st_mtime >= image_file.stat().st_mtime:
        progress(f"{image_file.name}: {want} copy {out.name} is up to date")
        return out
    part = out.with_name(out.name + ".part")
    start = time.monotonic()
    argv = ["qemu-img", "convert", "-f", have, "-O", want, str(image_file), str(part)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise BuildError("qemu-img not found: install qemu-utils (it converts the image)") from None
    if done.returncode != 0:
        part.unlink(missing_ok=True)
        raise BuildError(f"qemu-img convert to {want}: {done.stderr.strip()[-400:]}")
    os.replace(part, out)
    progress(
        f"{image_file.name}: converted to {want} in {time.monotonic() - start:.0f} s "
        f"({image_file.stat().st_size / 2**20:.0f} MiB {have} -> "
        f"{out.stat().st_size / 2**20:.0f} MiB {want})"
    )
    return out


def _in_glance_format(
    conn: Connection,
    image_file: Path,
    data: dict[str, Any],
    asked: str | None,
    progress: Reporter,
) -> tuple[Path, str]:
    """The file to send and its format: ``image_file``, or its copy in a format Glance takes."""
    have = str(data.get("disk_format", "qcow2"))
    fmt = choose_format(have, glance_formats(conn), asked)
    return (convert(image_file, have, fmt, progress) if fmt != have else image_file), fmt


def upload_file(
    conn: Connection,
    image_file: Path,
    data: dict[str, Any],
    progress: Reporter = quiet,
    disk_format: str | None = None,
) -> image.BakeResult:
    """Upload ``image_file`` as its sidecar ``data`` says, in a format this Glance takes
    (``disk_format``: the one asked for; converted when it is not the file's); reuse an identical
    image of its name.

    Returns:
        The image, with ``timings["upload"]`` (0 when it was there already).

    Raises:
        CloudError: the cloud refused, the checksum differs, or the name holds other content.
        UsageError: a format this Glance refuses.
    """
    name, rec = str(data["image_name"]), dict(data["record"])
    image_file, fmt = _in_glance_format(conn, image_file, data, disk_format, progress)
    sums = file_checksums(image_file, progress)
    found = _existing(conn, name, sums, progress)
    if found is not None:
        progress(f"image {name}: already in Glance with this checksum ({found.id}), not uploaded")
        return image.BakeResult("upload", name, rec, image_id=str(found.id), path=image_file)
    # A sidecar written before the Nova hints joined image.properties still gets them.
    props = {**image.nova_properties(str(rec.get("os", ""))), **data["properties"]}
    start = time.monotonic()
    img = create_once(
        f"create image {name}",
        conn.image,
        lambda: conn.image.create_image(
            name=name,
            disk_format=fmt,
            container_format="bare",
            visibility=data.get("visibility", "private"),
            allow_duplicates=True,
            md5=sums.md5,  # openstacksdk records it (owner_specified.openstack.md5)
            **props,
        ),
        lambda: next((i for i in conn.image.images(name=name) if i.status == "queued"), None),
    )
    try:
        _send(conn, img, image_file, sums.size, progress)
        stored = _verify(conn, img, sums)
    except BaseException:
        # A half-made image must not be booted later: remove it, keep the first error.
        try:
            api(f"delete image {img.id}", conn.image.delete_image, img, ignore_missing=True)
        except BakeryError as exc:
            progress(f"image {name}: could not delete the failed upload {img.id}: {exc}")
        raise
    seconds = time.monotonic() - start
    progress(
        f"image {name}: uploaded {sums.size / 2**20:.0f} MiB ({fmt}) in {seconds:.0f} s "
        f"({stored.id}), checksum verified"
    )
    return image.BakeResult(
        "upload", name, rec, image_id=str(stored.id), path=image_file, timings={"upload": seconds}
    )


def _check_workshop(cfg: Workshop, rec: dict[str, Any], where: Path, progress: Reporter) -> None:
    if rec.get("workshop") != cfg.name:
        raise UsageError(
            f"{where}: baked for workshop {rec.get('workshop')!r}, not {cfg.name!r}: upload it "
            "with that workshop's file"
        )
    if rec.get("config_sha256") != image.config_digest(cfg):
        progress(
            f"note: {where} was baked from another version of {cfg.name}'s config (its hub, "
            "spawner, tls or packages differ); bake again if that matters"
        )


# The first bytes of a qcow2 image ("QFI" and 0xfb): what Glance would otherwise take on trust.
QCOW2_MAGIC = b"QFI\xfb"


def check_format(image_file: Path, disk_format: str) -> None:
    """Refuse a file that is not the image its sidecar says (an HTML page saved as .qcow2).

    Raises:
        UsageError: a qcow2 sidecar on a file without qcow2's magic bytes.
    """
    if disk_format != "qcow2":
        return
    with image_file.open("rb") as fh:
        head = fh.read(len(QCOW2_MAGIC))
    if head != QCOW2_MAGIC:
        raise UsageError(
            f"{image_file}: not a qcow2 image (its first bytes are {head!r}); upload the file "
            "`bakery bake --builder chroot` wrote, or bake again"
        )


def upload(
    *,
    config_path: Path,
    image_file: Path,
    progress: Reporter = quiet,
    disk_format: str | None = None,
) -> image.BakeResult:
    """Put a chroot- or qemu-baked ``image_file`` into the config's cloud as a golden image.

    Name, record and ``bakery_*`` properties come from its sidecar (``FILE.bakery.json``), so
    `launch` sees the same image a cloud bake would make; an identical image is not sent twice.
    """
    cfg = load_config(config_path)
    if not image_file.is_file():
        raise UsageError(f"{image_file}: no such image file (a regular file)")
    data = image.read_sidecar(image_file)
    check_format(image_file, str(data.get("disk_format", "qcow2")))
    _check_workshop(cfg, dict(data["record"]), image_file, progress)
    return upload_file(connect(cfg), image_file, data, progress, disk_format)


def upload_results(
    results: list[image.BakeResult], *, config_path: Path, progress: Reporter = quiet
) -> list[image.BakeResult]:
    """`bake --upload`: each file image of ``results`` uploaded (with the bake's timings)."""
    files = [r for r in results if r.path is not None and r.image_id is None]
    if not files:
        raise BuildError("--upload: this bake made no image file to upload")
    conn = connect(load_config(config_path))
    out = []
    for r in results:
        if r in files and r.path is not None:
            data = image.read_sidecar(r.path)
            up = upload_file(conn, r.path, data, progress)
            r = image.BakeResult(
                r.builder, up.image_name, r.record, up.image_id, r.path, {**r.timings, **up.timings}
            )
        out.append(r)
    return out


def delete_image(*, config_path: Path, name_or_id: str, progress: Reporter = quiet) -> str:
    """Delete a golden image of this workshop from Glance; returns its ID.

    Raises:
        UsageError: the image is not bakery's (no ``bakery_*`` properties) or another workshop's.
    """
    cfg = load_config(config_path)
    conn = connect(cfg)
    img = find_image(conn, name_or_id)
    rec = image.record_from_properties(image_properties(img))
    if rec is None:
        raise UsageError(
            f"image {img.name} ({img.id}) was not baked by bakery (no bakery_* properties): "
            "not deleted; use `openstack image delete` if you mean it"
        )
    if rec.get("workshop") != cfg.name:
        raise UsageError(
            f"image {img.name} ({img.id}) belongs to workshop {rec.get('workshop')!r}, not "
            f"{cfg.name!r}: not deleted"
        )
    api(f"delete image {img.name}", conn.image.delete_image, img)
    progress(f"image {img.name}: deleted ({img.id})")
    return str(img.id)
