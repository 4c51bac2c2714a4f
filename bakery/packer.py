"""Packer rendering and `bakery bake`: the golden image's HCL build, its files, running Packer."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml

from bakery import __version__, render
from bakery.config import DEFAULT_LOGIN_USER, Workshop
from bakery.errors import BakeryError, ConfigError, RenderError
from bakery.templates import environment
from bakery.templates import render as render_template

Source = Literal["openstack", "qemu"]
SOURCES: tuple[Source, ...] = ("openstack", "qemu")

# Packer >= 1.7 installs builders as plugins (`packer init`); 1.6 has them built in.
PLUGINS = {
    "openstack": ("github.com/hashicorp/openstack", "~> 1.1"),
    "qemu": ("github.com/hashicorp/qemu", "~> 1.1"),
}
PLUGINS_MIN_VERSION = (1, 7, 0)
# The throwaway user the qemu build logs in as; deleted as the build VM powers off.
QEMU_BUILD_USER = "packer"
# Inside the image: how it was baked (the bake stage's own record is render.BAKE_RECORD).
IMAGE_RECORD = "/etc/bakery/image.json"
# What removing the build user leaves behind: its sudo rule, and shadow's backups (which still
# list it) of the account files.
_USER_TRACES = "/etc/sudoers.d/90-cloud-init-users " + " ".join(
    f"/etc/{f}-" for f in ("passwd", "shadow", "group", "gshadow", "subuid", "subgid")
)
# A guess at the source image's name per OS (override with bake.source_image).
SOURCE_IMAGE_NAMES = {
    "ubuntu-24.04": "Ubuntu 24.04",
    "ubuntu-22.04": "Ubuntu 22.04",
    "debian-12": "Debian 12",
}
INSTALL_ADVICE = (
    "Packer is not installed (no `packer` on PATH). Install it: `apt-get install packer` "
    "(Debian 12: 1.6.6), or HashiCorp's package from "
    "https://developer.hashicorp.com/packer/install (bakery then runs `packer init`)."
)

# --- HCL strings -------------------------------------------------------------------------------

_HCL_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def hcl_string(value: str) -> str:
    """``value`` as a quoted HCL string literal that Packer reads back as exactly ``value``.

    Quotes, backslashes and control characters are escaped, and the template sequences ``${``
    and ``%{`` become ``$${`` and ``%%{`` so nothing in ``value`` is ever interpolated.
    """
    out = []
    for ch in value:
        if ch in _HCL_ESCAPES:
            out.append(_HCL_ESCAPES[ch])
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    text = "".join(out).replace("${", "$${").replace("%{", "%%{")
    return f'"{text}"'


def _hcl_value(value: Any, indent: int = 0) -> str:
    """An HCL expression of ``value``: strings escaped, lists inline, maps aligned like fmt."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if "{{" in value:
            # Packer reads "{{" in builder settings as a Go template, escaped in HCL or not.
            raise RenderError(f"{value!r}: '{{{{' cannot be passed to Packer")
        return hcl_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_hcl_value(v, indent) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        keys = {k: hcl_string(str(k)) for k in value}
        width = max(len(k) for k in keys.values())
        pad = " " * (indent + 2)
        lines = [
            f"{pad}{keys[k].ljust(width)} = {_hcl_value(v, indent + 2)}" for k, v in value.items()
        ]
        return "{\n" + "\n".join(lines) + "\n" + " " * indent + "}"
    raise TypeError(f"no HCL form for {type(value).__name__}")


environment().filters["hcl"] = _hcl_value

# --- Packer itself ------------------------------------------------------------------------------


class PackerMissing(BakeryError):
    """No Packer to run: the message says how to install it."""

    exit_code = 2


def installed_packer_version(packer: str = "packer") -> str | None:
    """The installed Packer's version (``"1.6.6"``), or None when ``packer`` is not found."""
    exe = shutil.which(packer)
    if exe is None:
        return None
    proc = subprocess.run([exe, "version"], capture_output=True, text=True, check=False)
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", proc.stdout)
    if proc.returncode != 0 or match is None:
        raise BakeryError(f"cannot tell the version of {exe}: {proc.stdout}{proc.stderr}".strip())
    return match.group(0)


def _version_tuple(version: str) -> tuple[int, ...]:
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version.strip())
    if match is None:
        raise ValueError(f"{version!r} is not a Packer version")
    return tuple(int(p) for p in match.groups())


def needs_plugins(version: str | None) -> bool:
    """Whether Packer ``version`` needs ``required_plugins`` and ``packer init`` (>= 1.7)."""
    return version is None or _version_tuple(version) >= PLUGINS_MIN_VERSION


# --- rendering ----------------------------------------------------------------------------------


def image_name(cfg: Workshop) -> str:
    """The image name before any date suffix (the ``version`` suffix is part of it)."""
    name = cfg.bake.image_name or f"bakery-{cfg.name}"
    if cfg.bake.image_suffix == "version":
        name = f"{name}-{__version__}-{render.config_digest(cfg)[:8]}"
    return name


def bake_record(cfg: Workshop, user_data: bytes) -> dict[str, Any]:
    """What the image holds and how it was made: written inside it and as Glance properties."""
    v = cfg.hub.versions
    components = {
        "jupyterhub": v.jupyterhub,
        "configurable-http-proxy": v.configurable_http_proxy,
        "jupyterhub-idle-culler": v.idle_culler,
    }
    if cfg.spawner.kind == "docker":
        components["dockerspawner"] = v.dockerspawner
        components["user-image"] = render.custom_image_tag(cfg) or cfg.spawner.image
    else:
        components["jupyterhub-systemdspawner"] = v.systemdspawner
        components["jupyterlab"] = v.jupyterlab
    return {
        "bakery_version": __version__,
        "workshop": cfg.name,
        "os": cfg.os,
        "config_sha256": render.config_digest(cfg),
        "user_data_sha256": hashlib.sha256(user_data).hexdigest(),
        "components": components,
    }


def image_metadata(cfg: Workshop, record: dict[str, Any]) -> dict[str, str]:
    """Glance properties: the workshop's own, then ``bakery_*`` ones from the bake record."""
    meta = dict(cfg.bake.image_properties)
    for key, value in record.items():
        if key == "components":
            for name, version in value.items():
                meta["bakery_" + name.replace("-", "_")] = str(version)
        else:
            meta[key if key.startswith("bakery_") else "bakery_" + key] = str(value)
    return meta


def _variables(
    cfg: Workshop, record: dict[str, Any], config_dir: Path
) -> dict[str, tuple[str, Any]]:
    """The variables file's entries: name -> (comment, value)."""
    b = cfg.bake
    source = b.source_image or SOURCE_IMAGE_NAMES[cfg.os]
    is_id = re.fullmatch(r"[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}", source)
    variables: dict[str, tuple[str, Any]] = {
        "image_name": ("bake.image_name (and the version suffix)", image_name(cfg)),
        "image_date_suffix": ("bake.image_suffix is date", b.image_suffix == "date"),
        "image_visibility": ("bake.image_visibility", b.image_visibility),
        "image_metadata": (
            "bake.image_properties and bakery's record",
            image_metadata(cfg, record),
        ),
        "source_image": ("bake.source_image when it is an ID", source if is_id else ""),
        "source_image_name": ("bake.source_image when it is a name", "" if is_id else source),
        "flavor": ("bake.flavor", b.flavor),
        "networks": ("bake.networks", list(b.networks)),
        "floating_ip_network": ("bake.floating_ip_network", b.floating_ip_network or ""),
        "security_groups": ("bake.security_groups", list(b.security_groups)),
        "ssh_username": ("bake.ssh_user", b.ssh_user or DEFAULT_LOGIN_USER[cfg.os]),
        "use_blockstorage_volume": ("bake.volume_backed", b.volume_backed),
        "volume_size": ("bake.volume_size (0: the source image's)", b.volume_size or 0),
    }
    if b.qemu_base_image is not None:
        variables |= {
            "qemu_base_image": ("bake.qemu_base_image", b.qemu_base_image),
            "qemu_disk_size": ("bake.qemu_disk_size", f"{b.qemu_disk_size * 1024}M"),
            "qemu_memory": ("bake.qemu_memory (MiB)", b.qemu_memory),
            "qemu_cpus": ("bake.qemu_cpus", b.qemu_cpus),
            "qemu_accelerator": ("bake.qemu_accelerator", b.qemu_accelerator),
        }
    archive = cfg.spawner.image_archive
    if cfg.spawner.kind == "docker" and archive is not None:
        variables["user_image_archive"] = (
            f"spawner.image_archive ({archive.format}), on this machine",
            str(archive.source(config_dir).absolute()),
        )
    return variables


def _cloud_config_part(data: bytes) -> list[email.message.Message]:
    """The MIME part(s) of a user-data document (cloud-config text, gzipped or multipart)."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data.startswith(b"#cloud-config"):
        part = email.message.Message()
        part.set_payload(data.decode())
        part["Content-Type"] = 'text/cloud-config; charset="utf-8"'
        return [part]
    if data.lower().startswith(b"content-type: multipart/"):
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data)
        return [p for p in msg.walk() if not p.is_multipart()]
    raise RenderError("the bake user-data is neither #cloud-config nor MIME multipart")


def qemu_user_data(bake_user_data: bytes, ssh_public_key: str | None) -> bytes:
    """The qemu build's NoCloud user-data: the bake stage plus a throwaway sudo build user.

    The build user's part appends to the bake stage's lists (``Merge-Type``) instead of replacing
    them; without a key (``bakery packer``) the part is left out and nobody can log in.
    """
    outer = email.message.Message()
    outer["Content-Type"] = "multipart/mixed"
    outer["MIME-Version"] = "1.0"
    for part in _cloud_config_part(bake_user_data):
        outer.attach(part)
    if ssh_public_key:
        user = {
            "name": QEMU_BUILD_USER,
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "shell": "/bin/sh",
            "lock_passwd": True,
            "ssh_authorized_keys": [ssh_public_key.strip()],
        }
        part = email.message.Message()
        part["Content-Type"] = 'text/cloud-config; charset="utf-8"'
        part["Merge-Type"] = "list(append)+dict(recurse_array)+str()"
        doc = {"users": [user]}
        part.set_payload("#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False))
        outer.attach(part)
    return outer.as_bytes(policy=email.policy.compat32)


def _write(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _clean_context() -> dict[str, Any]:
    """What clean.sh needs: where the bake record goes, which files must not exist."""
    return {
        "bakery_version": __version__,
        "user_traces": _USER_TRACES,
        "record_dir": str(Path(IMAGE_RECORD).parent),
        "record_path": IMAGE_RECORD,
        "secret_paths": [
            f"{render.STATE_DIR}/jupyterhub_cookie_secret",
            f"{render.STATE_DIR}/jupyterhub.sqlite",
            render.PROXY_ENV,
            f"{render.TLS_DIR}/key.pem",
        ],
    }


def clean_script() -> str:
    """The clean-for-reuse script (``packer/clean.sh.j2``), also used by the openstacksdk bake."""
    return render_template("packer/clean.sh.j2", **_clean_context())


def write_packer(
    cfg: Workshop,
    *,
    out_dir: str | Path,
    packer_version: str | None = None,
    bake_user_data: bytes | None = None,
    ssh_public_key: str | None = None,
    config_dir: str | Path = ".",
) -> list[Path]:
    """Write the Packer build of ``cfg``'s golden image into ``out_dir``.

    Writes ``bakery.pkr.hcl`` (sources ``openstack``, and ``qemu`` when ``bake.qemu_base_image``
    is set), ``bakery.auto.pkrvars.hcl`` (the values), ``plugins.pkr.hcl`` (Packer >= 1.7 only),
    ``bake-user-data``, ``qemu-seed/{user-data,meta-data}``, ``image.json`` and ``scripts/``.
    Nothing secret: no credentials (Packer reads OS_CLOUD / OS_*), no passwords, no keys.

    Args:
        cfg: the workshop.
        out_dir: the folder to write (created; bakery's files in it are replaced).
        packer_version: the Packer the files are for, e.g. ``"1.6.6"``; None: the installed one,
            or a current one (>= 1.7) when Packer is not installed.
        bake_user_data: the builder's user-data; None renders the workshop's bake stage.
        ssh_public_key: the qemu build user's key (``bake`` makes a throwaway one).
        config_dir: the folder of workshop.yaml (a relative ``spawner.image_archive.path`` is
            relative to it).

    Returns:
        The files written.
    """
    out = Path(out_dir)
    if packer_version is None:
        packer_version = installed_packer_version()
    if bake_user_data is None:
        bake_user_data = render.render_user_data(cfg, stage="bake").data
    record = bake_record(cfg, bake_user_data)
    qemu = cfg.bake.qemu_base_image is not None
    ctx: dict[str, Any] = {
        **_clean_context(),
        "workshop": cfg.name,
        "qemu": qemu,
        "sources": [s for s in SOURCES if s == "openstack" or qemu],
        "qemu_user": QEMU_BUILD_USER,
        "qemu_shutdown": (
            f"sudo sh -c 'userdel -f -r {QEMU_BUILD_USER}; rm -f {_USER_TRACES}; shutdown -P now'"
        ),
        "plugins": PLUGINS,
        "variables": _variables(cfg, record, Path(config_dir)),
        "user_image_archive": (
            cfg.spawner.kind == "docker" and cfg.spawner.image_archive is not None
        ),
        "archive_upload": "/tmp/bakery-user-image.tar",  # noqa: S108 (the build user's upload)
        "archive_commands": [
            "sudo install -D -o root -g root -m 0600 /tmp/bakery-user-image.tar "
            + render.USER_IMAGE_ARCHIVE,
            "sudo rm -f /tmp/bakery-user-image.tar",
            f"sudo {render.SCRIPT_DIR}/user-image.sh",
        ],
    }
    written = [
        _write(out / "bakery.pkr.hcl", render_template("packer/bakery.pkr.hcl.j2", **ctx)),
        _write(
            out / "bakery.auto.pkrvars.hcl",
            render_template("packer/bakery.auto.pkrvars.hcl.j2", **ctx),
        ),
    ]
    plugins = out / "plugins.pkr.hcl"
    if needs_plugins(packer_version):
        written.append(_write(plugins, render_template("packer/plugins.pkr.hcl.j2", **ctx)))
    else:
        plugins.unlink(missing_ok=True)  # left from a render for a newer Packer
    written.append(_write(out / "bake-user-data", bake_user_data))
    written.append(_write(out / "image.json", json.dumps(record, indent=2, sort_keys=True) + "\n"))
    for script in ("wait-cloud-init.sh", "clean.sh"):
        text = render_template(f"packer/{script}.j2", **ctx)
        written.append(_write(out / "scripts" / script, text, 0o755))
    seed = out / "qemu-seed"
    if qemu:
        meta = {"instance-id": f"bakery-{cfg.name}-build", "local-hostname": f"{cfg.name}-build"}
        written.append(_write(seed / "meta-data", yaml.safe_dump(meta, sort_keys=False)))
        written.append(_write(seed / "user-data", qemu_user_data(bake_user_data, ssh_public_key)))
    else:
        shutil.rmtree(seed, ignore_errors=True)
    return written


# --- baking -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BakeResult:
    """One image Packer made: the source it came from, its name and ID or file."""

    source: str
    image_name: str
    artifact_id: str
    files: tuple[str, ...] = ()


def _run(cmd: Sequence[str], *, cwd: Path, out: TextIO) -> None:
    """Run ``cmd``, streaming its output line by line to ``out``; raise on failure."""
    out.write(f"bakery: running {' '.join(cmd)}\n")
    out.flush()
    with subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            out.flush()
        rc = proc.wait()
    if rc != 0:
        raise BakeryError(f"`{' '.join(cmd)}` failed (exit {rc}); its output is above")


def _results(out_dir: Path) -> list[BakeResult]:
    """The images of the last run in Packer's manifest."""
    manifest = out_dir / "packer-manifest.json"
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        raise BakeryError(f"{manifest}: Packer wrote no readable manifest: {exc}") from None
    run = data.get("last_run_uuid")
    results = []
    for build in data.get("builds", []):
        if build.get("packer_run_uuid") != run:
            continue
        source = str(build.get("builder_type", "?"))
        files = tuple(os.path.normpath(out_dir / f["name"]) for f in build.get("files") or [])
        name = str((build.get("custom_data") or {}).get("image_name", ""))
        results.append(BakeResult(source, name, str(build.get("artifact_id", "")), files))
    return results


def bake(
    cfg: Workshop,
    *,
    config_path: str | Path,
    only: str | None = None,
    builder: Literal["packer"] = "packer",
    out_dir: str | Path | None = None,
    bake_user_data: bytes | None = None,
    packer: str = "packer",
    out: TextIO | None = None,
) -> list[BakeResult]:
    """Bake ``cfg``'s golden image with Packer, streaming Packer's output.

    Args:
        cfg: the workshop.
        config_path: its file (the default ``out_dir`` is ``build/packer/<name>`` beside it).
        only: build one source, ``openstack`` or ``qemu``; None builds every rendered source.
        builder: only ``packer`` here.
        out_dir: where the Packer files and qemu images go.
        bake_user_data: override the builder's user-data (tests, cut-down proofs).
        packer: the Packer executable.
        out: where progress goes (default stderr).

    Returns:
        The images made, from Packer's manifest.

    Raises:
        BakeryError: Packer is missing (exit code 2) or failed.
    """
    stream = out or sys.stderr
    if builder != "packer":
        raise ConfigError(f"builder {builder!r} is not available here; use packer")
    if only is not None and only not in SOURCES:
        raise ConfigError(f"--only {only!r}: use one of {', '.join(SOURCES)}")
    if only == "qemu" and cfg.bake.qemu_base_image is None:
        raise ConfigError(
            f"{config_path}: bake.qemu_base_image: required for a qemu bake (a qcow2 cloud image "
            "with cloud-init, e.g. Debian's generic or one built by vmimage/build-base.sh)"
        )
    version = installed_packer_version(packer)
    if version is None:
        raise PackerMissing(INSTALL_ADVICE)
    exe = shutil.which(packer) or packer
    folder = Path(out_dir) if out_dir else Path(config_path).parent / "build" / "packer" / cfg.name
    qemu = cfg.bake.qemu_base_image is not None
    sources = [only] if only else [s for s in SOURCES if s == "openstack" or qemu]
    with tempfile.TemporaryDirectory(prefix="bakery-key-") as keydir:
        args = [exe, "build"]
        if not stream.isatty():
            args.append("-color=false")
        public_key = None
        if "qemu" in sources:
            key = Path(keydir) / "build_ed25519"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bakery", "-f", str(key)],
                check=True,
            )
            public_key = key.with_suffix(".pub").read_text()
            args += ["-var", f"qemu_ssh_private_key_file={key}"]
        write_packer(
            cfg,
            out_dir=folder,
            packer_version=version,
            bake_user_data=bake_user_data,
            ssh_public_key=public_key,
            config_dir=Path(config_path).parent,
        )
        stream.write(f"bakery: Packer {version}, files in {folder}\n")
        if needs_plugins(version):
            _run([exe, "init", "."], cwd=folder, out=stream)
        if only:
            args.append(f"-only={only}.golden")
        env_hint = "OS_CLOUD" in os.environ or "OS_AUTH_URL" in os.environ
        if "openstack" in sources and not env_hint:
            stream.write("bakery: note: neither OS_CLOUD nor OS_AUTH_URL is set\n")
        _run([*args, "."], cwd=folder, out=stream)
    results = _results(folder)
    for r in results:
        stream.write(f"bakery: baked {r.source} image {r.image_name} ({r.artifact_id})\n")
    return results
