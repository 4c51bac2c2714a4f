"""Packer rendering and `bakery bake --builder packer`: the HCL build, its files, running Packer."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import gzip
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from bakery import layout
from bakery.bake.folder import VARS_FILE, claim_folder, write_file
from bakery.config.workshop import DEFAULT_LOGIN_USER, Workshop, load_config
from bakery.errors import BuildError, ConfigError, RenderError, ToolMissing, UsageError
from bakery.progress import Reporter, quiet
from bakery.providers.local import seed
from bakery.templates import render as render_template
from bakery.version import __version__
from bakery.vm import image
from bakery.vm import userdata as render
from bakery.vm.image import BakeResult

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
INSTALL_ADVICE = (
    "Packer is not installed (no `packer` on PATH). Install it: `apt-get install packer` "
    "(Debian 12: 1.6.6), or HashiCorp's package from "
    "https://developer.hashicorp.com/packer/install (bakery then runs `packer init`)."
)

# --- Packer itself ------------------------------------------------------------------------------


def installed_packer_version(packer: str = "packer") -> str | None:
    """The installed Packer's version (``"1.6.6"``), or None when ``packer`` is not found."""
    exe = shutil.which(packer)
    if exe is None:
        return None
    proc = subprocess.run([exe, "version"], capture_output=True, text=True, check=False)
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", proc.stdout)
    if proc.returncode != 0 or match is None:
        raise BuildError(f"cannot tell the version of {exe}: {proc.stdout}{proc.stderr}".strip())
    return match.group(0)


def _version_tuple(version: str) -> tuple[int, ...]:
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", version.strip())
    if match is None:
        raise UsageError(f"--packer-version {version!r} is not a Packer version; write e.g. 1.6.6")
    return tuple(int(p) for p in match.groups())


def needs_plugins(version: str | None) -> bool:
    """Whether Packer ``version`` needs ``required_plugins`` and ``packer init`` (>= 1.7)."""
    return version is None or _version_tuple(version) >= PLUGINS_MIN_VERSION


# --- rendering ----------------------------------------------------------------------------------


def _source_image(cfg: Workshop) -> tuple[str, str]:
    """``(source_image, source_image_name)``: the configured or guessed image, ID or name."""
    source = cfg.bake.source_image or image.SOURCE_IMAGE_NAMES[cfg.os]
    is_id = re.fullmatch(r"[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}", source)
    return (source, "") if is_id else ("", source)


def _variables(cfg: Workshop, rec: dict[str, Any], name: str, config_dir: Path) -> dict[str, Any]:
    """The values of the build (``bakery.auto.pkrvars.json``); bakery.pkr.hcl describes each."""
    b = cfg.bake
    source_id, source_name = _source_image(cfg)
    variables: dict[str, Any] = {
        "image_name": name,
        "image_visibility": b.image_visibility,
        "image_metadata": image.properties(cfg, rec),
        "source_image": source_id,
        "source_image_name": source_name,
        "flavor": b.flavor,
        "networks": list(b.networks),
        "floating_ip_network": b.floating_ip_network or "",
        "security_groups": list(b.security_groups),
        "ssh_username": b.ssh_user or DEFAULT_LOGIN_USER[cfg.os],
        "use_blockstorage_volume": b.volume_backed,
        "volume_size": b.volume_size or 0,
    }
    if b.qemu_base_image is not None:
        variables |= {
            "qemu_base_image": b.qemu_base_image,
            "qemu_disk_size": f"{b.qemu_disk_size * 1024}M",
            "qemu_memory": b.qemu_memory,
            "qemu_cpus": b.qemu_cpus,
            "qemu_accelerator": b.qemu_accelerator,
        }
    archive = cfg.spawner.image_archive
    if cfg.spawner.kind == "docker" and archive is not None:
        variables["user_image_archive"] = str(archive.source(config_dir).absolute())
    return variables


def _refuse_go_templates(value: Any, where: str) -> None:
    """Packer reads ``{{`` in builder settings as a Go template, however it is encoded."""
    if isinstance(value, str) and "{{" in value:
        raise RenderError(f"{where}: {value!r}: '{{{{' cannot be passed to Packer")
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_go_templates(key, where)
            _refuse_go_templates(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for item in value:
            _refuse_go_templates(item, where)


def variables_json(variables: dict[str, Any]) -> str:
    """The variables file: JSON, which Packer reads back literally; ``{{`` is refused."""
    for name, value in variables.items():
        _refuse_go_templates(value, name)
    return json.dumps(variables, indent=2, ensure_ascii=False) + "\n"


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


def _context(cfg: Workshop, variables: dict[str, Any]) -> dict[str, Any]:
    """What bakery.pkr.hcl.j2 and plugins.pkr.hcl.j2 need."""
    qemu = cfg.bake.qemu_base_image is not None
    traces = " ".join("/" + t for t in image.BUILD_USER_TRACES)
    return {
        "bakery_version": __version__,
        "workshop": cfg.name,
        "qemu": qemu,
        "source_refs": [f"source.{s}.golden" for s in SOURCES if s == "openstack" or qemu],
        "qemu_user": QEMU_BUILD_USER,
        "qemu_shutdown": (
            f"sudo sh -c 'userdel -f -r {QEMU_BUILD_USER}; rm -f {traces}; shutdown -P now'"
        ),
        "plugins": PLUGINS,
        "user_image_archive": "user_image_archive" in variables,
        "archive_upload": "/tmp/bakery-user-image.tar",  # noqa: S108 (the build user's upload)
        "archive_commands": [
            "sudo install -D -o root -g root -m 0600 /tmp/bakery-user-image.tar "
            + layout.USER_IMAGE_ARCHIVE,
            "sudo rm -f /tmp/bakery-user-image.tar",
            f"sudo {layout.SCRIPT_DIR}/user-image.sh",
        ],
    }


def _content_context(cfg: Workshop, config_dir: Path, out: Path) -> dict[str, Any]:
    """Shared data and course folders: packed into ``out/content``, uploaded, unpacked in place."""
    from bakery.workshop import content

    folder = out / "content"
    shutil.rmtree(folder, ignore_errors=True)
    packed = content.pack_all(cfg, config_dir, folder)
    uploads = [
        {"name": p.path.name, "upload": f"/tmp/bakery-{p.path.name}", "target": p.target}  # noqa: S108
        for p in packed
    ]
    commands = [
        f"sudo install -D -o root -g root -m 0600 {u['upload']} {u['target']}" for u in uploads
    ]
    commands += [f"sudo rm -f {u['upload']}" for u in uploads]
    return {
        "content_uploads": uploads,
        "content_commands": [*commands, f"sudo {layout.SCRIPT_DIR}/content.sh"],
    }


def write_packer(
    cfg: Workshop,
    *,
    out_dir: str | Path,
    packer_version: str | None = None,
    bake_user_data: bytes | None = None,
    ssh_public_key: str | None = None,
    config_dir: str | Path = ".",
    image_name: str | None = None,
) -> list[Path]:
    """Write the Packer build of ``cfg``'s golden image into ``out_dir``.

    Writes ``bakery.pkr.hcl`` (sources ``openstack``, and ``qemu`` when ``bake.qemu_base_image``
    is set), ``bakery.auto.pkrvars.json`` (the values), ``plugins.pkr.hcl`` (Packer >= 1.7 only),
    ``bake-user-data``, ``qemu-seed/{user-data,meta-data}``, ``image.json`` (the bake record the
    bake stage writes into the image) and ``scripts/``. Nothing secret: no credentials (Packer
    reads OS_CLOUD / OS_*), no passwords, no keys.

    Args:
        cfg: the workshop.
        out_dir: the folder to write (created; bakery's files in it are replaced).
        packer_version: the Packer the files are for, e.g. ``"1.6.6"``; None: the installed one,
            or a current one (>= 1.7) when Packer is not installed.
        bake_user_data: the builder's user-data; None renders the workshop's bake stage.
        ssh_public_key: the qemu build user's key (``bake`` makes a throwaway one).
        config_dir: the folder of workshop.yaml (a relative ``spawner.image_archive.path`` is
            relative to it).
        image_name: the image's final name; None: :func:`bakery.vm.image.image_name` now.

    Returns:
        The files written.
    """
    out = Path(out_dir)
    claim_folder(out)
    if packer_version is None:
        packer_version = installed_packer_version()
    if bake_user_data is None:
        bake_user_data = render.render_user_data(cfg, stage="bake").data
    rec = image.record(cfg)
    variables = _variables(cfg, rec, image_name or image.image_name(cfg), Path(config_dir))
    ctx = _context(cfg, variables) | _content_context(cfg, Path(config_dir), out)
    (out / "bakery.auto.pkrvars.hcl").unlink(missing_ok=True)  # bakery < 0.2 wrote HCL values
    written = [
        write_file(out / "bakery.pkr.hcl", render_template("packer/bakery.pkr.hcl.j2", **ctx)),
        write_file(out / VARS_FILE, variables_json(variables)),
    ]
    plugins = out / "plugins.pkr.hcl"
    if needs_plugins(packer_version):
        written.append(write_file(plugins, render_template("packer/plugins.pkr.hcl.j2", **ctx)))
    else:
        plugins.unlink(missing_ok=True)  # left from a render for a newer Packer
    written.append(write_file(out / "bake-user-data", bake_user_data))
    written.append(write_file(out / "image.json", image.record_json(rec)))
    written.append(write_file(out / "scripts" / "wait-cloud-init.sh", image.wait_script(), 0o755))
    written.append(write_file(out / "scripts" / "clean.sh", image.clean_script(), 0o755))
    written += [out / "content" / Path(u["target"]).name for u in ctx["content_uploads"]]
    return written + _write_seed(
        cfg, out / "qemu-seed", ctx["qemu"], bake_user_data, ssh_public_key
    )


def _write_seed(
    cfg: Workshop, folder: Path, qemu: bool, bake_user_data: bytes, ssh_public_key: str | None
) -> list[Path]:
    """The qemu source's NoCloud seed (the bake stage plus the build user); none without it."""
    if not qemu:
        shutil.rmtree(folder, ignore_errors=True)
        return []
    meta = seed.meta_data(f"bakery-{cfg.name}-build", f"{cfg.name}-build")
    return [
        write_file(folder / "meta-data", meta),
        write_file(folder / "user-data", qemu_user_data(bake_user_data, ssh_public_key)),
    ]


# --- baking -------------------------------------------------------------------------------------


def _run(
    cmd: Sequence[str], *, cwd: Path, progress: Reporter, env: dict[str, str] | None = None
) -> None:
    """Run ``cmd``, reporting each line of its output; raise on failure."""
    progress(f"running {' '.join(cmd)}")
    with subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            progress(line.rstrip("\n"))
        rc = proc.wait()
    if rc != 0:
        raise BuildError(f"`{' '.join(cmd)}` failed (exit {rc}); its output is above")


def _cloud_env(cfg: Workshop, sources: Sequence[str]) -> dict[str, str] | None:
    """Packer's environment: ``openstack.cloud`` reaches Packer as OS_CLOUD (clouds.yaml)."""
    if "openstack" in sources and cfg.openstack.cloud:
        return {**os.environ, "OS_CLOUD": cfg.openstack.cloud}
    return None


def _results(
    cfg: Workshop, out_dir: Path, rec: dict[str, Any], timings: dict[str, float]
) -> list[BakeResult]:
    """The images of the last run in Packer's manifest; a qemu image gets its sidecar."""
    manifest = out_dir / "packer-manifest.json"
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        raise BuildError(f"{manifest}: Packer wrote no readable manifest: {exc}") from None
    run = data.get("last_run_uuid")
    results = []
    for build in data.get("builds", []):
        if build.get("packer_run_uuid") != run:
            continue
        source = str(build.get("builder_type", "?"))
        files = [Path(os.path.normpath(out_dir / f["name"])) for f in build.get("files") or []]
        name = str((build.get("custom_data") or {}).get("image_name", ""))
        if files:
            image.write_sidecar(files[0], image.sidecar(cfg, rec, name, "qcow2"))
            result = BakeResult(f"packer:{source}", name, rec, path=files[0], timings=timings)
        else:
            artifact = str(build.get("artifact_id", ""))
            result = BakeResult(f"packer:{source}", name, rec, image_id=artifact, timings=timings)
        results.append(result)
    return results


def _check_sources(cfg: Workshop, config_path: Path, only: str | None) -> list[str]:
    """The sources to build; ``only`` checked against the config."""
    if only is not None and only not in SOURCES:
        raise ConfigError(f"--only {only!r}: use one of {', '.join(SOURCES)}")
    if only == "qemu" and cfg.bake.qemu_base_image is None:
        raise ConfigError(
            f"{config_path}: bake.qemu_base_image: required for a qemu bake (a qcow2 cloud image "
            "with cloud-init, e.g. Debian's generic or one built by vmimage/build-base.sh)"
        )
    qemu = cfg.bake.qemu_base_image is not None
    return [only] if only else [s for s in SOURCES if s == "openstack" or qemu]


def _throwaway_key(keydir: str) -> tuple[Path, str]:
    """A passphrase-less ed25519 key for the qemu build user: (private key file, public key)."""
    key = Path(keydir) / "build_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bakery", "-f", str(key)],
        check=True,
    )
    return key, key.with_suffix(".pub").read_text()


def _check_cloud(cfg: Workshop, sources: list[str]) -> None:
    """The cloud is checked before Packer starts: a missing clouds.yaml entry or refused
    credentials is a clear error (exit 2) here, not a Packer failure minutes later."""
    if "openstack" in sources:
        from bakery.providers.openstack.api import connect

        connect(cfg)


def bake(
    *,
    config_path: str | Path,
    output: str | Path | None = None,
    only: str | None = None,
    progress: Reporter = quiet,
    bake_user_data: bytes | None = None,
    packer: str = "packer",
) -> list[BakeResult]:
    """Bake the golden image with Packer, reporting Packer's output line by line.

    Args:
        config_path: the workshop file (the default ``output`` is ``build/packer/NAME`` beside it).
        output: the folder of the Packer files and the qemu images.
        only: build one source, ``openstack`` or ``qemu``; None builds every rendered source.
        progress: where Packer's output and bakery's notes go.
        bake_user_data: override the builder's user-data (tests, cut-down proofs).
        packer: the Packer executable.

    Returns:
        The images made, from Packer's manifest (a qemu image with its sidecar).

    Raises:
        ToolMissing: Packer is not installed.
        BuildError: Packer failed.
    """
    config_path = Path(config_path)
    cfg = load_config(config_path)
    sources = _check_sources(cfg, config_path, only)
    version = installed_packer_version(packer)
    if version is None:
        raise ToolMissing(INSTALL_ADVICE)
    exe = shutil.which(packer) or packer
    _check_cloud(cfg, sources)
    folder = Path(output) if output else config_path.parent / "build" / "packer" / cfg.name
    name = image.image_name(cfg)
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bakery-key-") as keydir:
        args = [exe, "build", "-color=false"]
        public_key = None
        if "qemu" in sources:
            key, public_key = _throwaway_key(keydir)
            args += ["-var", f"qemu_ssh_private_key_file={key}"]
        write_packer(
            cfg, out_dir=folder, packer_version=version, bake_user_data=bake_user_data,
            ssh_public_key=public_key, config_dir=config_path.parent, image_name=name,
        )  # fmt: skip
        progress(f"Packer {version}, files in {folder}")
        if needs_plugins(version):
            _run([exe, "init", "."], cwd=folder, progress=progress)
        if only:
            args.append(f"-only={only}.golden")
        start = time.monotonic()
        _run([*args, "."], cwd=folder, progress=progress, env=_cloud_env(cfg, sources))
        timings["packer build"] = round(time.monotonic() - start, 1)
    return _results(cfg, folder, image.record(cfg), timings)
