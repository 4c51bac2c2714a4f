"""`bakery lock`: resolve an environment's requirements to pinned versions and hashed files.

uv resolves (``uv pip compile`` for the target Python on an x86_64 manylinux machine, whatever the
machine running bakery is); then the package index is asked for each pinned release's files, and
the lock keeps the sha256 of every file pip on the VM may pick: the wheels whose tags fit the
target Python on x86_64 Linux, else the source archive. Only the files' hashes are kept, not the
index's answer, so the same resolution is the same lock, byte for byte.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from bakery.config.lockfile import (
    DEFAULT_INDEX,
    LOCK_PLATFORM,
    LockedEnv,
    Pin,
    inputs_digest,
    normalize,
)
from bakery.errors import BuildError, UsageError
from bakery.progress import Reporter, quiet

# manylinux wheels up to this glibc are kept: pip on any supported OS picks among them.
MAX_GLIBC_MINOR = 40
_LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_PIN_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
# uv's annotations under a pin: "# via NAME", or "# via" then one "#   NAME" line each.
_VIA_RE = re.compile(r"#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)$")
FETCH_TIMEOUT = 60
# Optional packages a dependency pulls in through an extra, left out of every lock (with what
# only they need) unless asked for by name: each costs every server start and the hub's start
# more than it gives. Measured on the hub's environment (docs/architecture.md, "server start").
LEFT_OUT = {
    # jsonschema's "iri" format check, via jupyter-events' jsonschema[format-nongpl]: it builds
    # a Lark parser when imported, 1.1 s of a 2.1 s JupyterLab start on a native CPU. jsonschema
    # skips that check when it is missing, and no Jupyter event schema uses the format.
    "rfc3987-syntax",
}


def target_tags(python: str) -> frozenset[Tag]:
    """The wheel tags pip accepts for CPython ``python`` (``3.11``) on x86_64 Linux."""
    major, minor = (int(p) for p in python.split("."))
    platforms: list[str] = []
    for glibc in range(MAX_GLIBC_MINOR, 4, -1):
        platforms.append(f"manylinux_2_{glibc}_x86_64")
        if glibc in _LEGACY:
            platforms.append(f"{_LEGACY[glibc]}_x86_64")
    platforms.append("linux_x86_64")
    tags = set(cpython_tags((major, minor), platforms=platforms))
    tags |= set(
        compatible_tags((major, minor), interpreter=f"cp{major}{minor}", platforms=platforms)
    )
    return frozenset(tags)


def _uv() -> str:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise UsageError(
                "bakery lock needs uv (it resolves the requirements): pip install uv"
            ) from None
        return found


def compile_pins(requested: list[str], python: str, index_url: str) -> list[tuple[str, str]]:
    """``uv pip compile``: every package ``requested`` needs, as (name, version), sorted.

    Raises:
        BuildError: uv could not resolve them (its message, which names the conflict).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_"))}
    argv = [
        _uv(),
        "pip",
        "compile",
        "-",
        "--quiet",
        "--no-config",
        "--no-header",
        "--python-version",
        python,
        "--python-platform",
        LOCK_PLATFORM,
        "--index-url",
        index_url,
    ]
    done = subprocess.run(
        argv, input="".join(f"{r}\n" for r in requested), capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        detail = "\n".join(done.stderr.strip().splitlines()[-12:])
        raise BuildError(f"resolving {', '.join(requested)} for Python {python} failed:\n{detail}")
    return sorted(set(_kept(done.stdout, {normalize(Requirement(r).name) for r in requested})))


def _kept(compiled: str, requested: set[str]) -> list[tuple[str, str]]:
    """The pins of uv's annotated output, without LEFT_OUT and what only they need."""
    pins: dict[str, str] = {}
    needed_by: dict[str, set[str]] = {}
    name = ""
    for line in compiled.splitlines():
        if m := _PIN_RE.match(line.strip()):
            name = normalize(m.group(1))
            pins[name] = m.group(2)
            needed_by[name] = set()
        elif name and (via := _VIA_RE.match(line.strip())) and line.strip() != "# via":
            needed_by[name].add(normalize(via.group(1)))
    dropped = {n for n in LEFT_OUT if n in pins and n not in requested}
    while more := {
        n
        for n, by in needed_by.items()
        if n not in dropped and n not in requested and by and by <= dropped
    }:
        dropped |= more
    return [(n, v) for n, v in pins.items() if n not in dropped]


class _Links(HTMLParser):
    """The files of a PEP 503 (HTML) project page: (file name, sha256)."""

    def __init__(self) -> None:
        super().__init__()
        self.files: list[dict[str, Any]] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""

    def handle_data(self, data: str) -> None:
        if self._href is not None and "#sha256=" in self._href:
            digest = self._href.split("#sha256=", 1)[1]
            self.files.append({"filename": data.strip(), "hashes": {"sha256": digest}})

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._href = None


def project_files(index_url: str, name: str) -> list[dict[str, Any]]:
    """The files of project ``name`` on the index (PEP 691 JSON, else PEP 503 HTML).

    Raises:
        BuildError: the index cannot be reached or does not know the project.
    """
    url = f"{index_url.rstrip('/')}/{name}/"
    if url.startswith("file:"):
        url += "index.html"
    request = urllib.request.Request(  # noqa: S310 (https, or file: for a local index)
        url, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
    )
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as resp:  # noqa: S310
            kind = resp.headers.get("Content-Type", "") if hasattr(resp, "headers") else ""
            body = resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        raise BuildError(
            f"the package index {index_url} could not be read for {name}: {exc}"
        ) from None
    if "json" in kind:
        files = json.loads(body).get("files", [])
        return [f for f in files if isinstance(f, dict)]
    links = _Links()
    links.feed(body)
    return links.files


def _release(filename: str) -> tuple[Version, frozenset[Tag] | None] | None:
    """A file's version and, for a wheel, its tags (None: a source archive; None whole: other)."""
    try:
        if filename.endswith(".whl"):
            _, version, _, tags = parse_wheel_filename(filename)
            return version, tags
        _, version = parse_sdist_filename(filename)
        return version, None
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


def file_hashes(files: list[dict[str, Any]], version: str, tags: frozenset[Tag]) -> list[str]:
    """The sha256 of each file of ``version`` pip may take on the target: every fitting wheel,
    else the source archives."""
    wanted = Version(version)
    wheels: set[str] = set()
    sdists: set[str] = set()
    for f in files:
        release = _release(str(f.get("filename", "")))
        digest = (f.get("hashes") or {}).get("sha256")
        if release is None or release[0] != wanted or not isinstance(digest, str):
            continue
        if release[1] is None:
            sdists.add(digest.lower())
        elif release[1] & tags:
            wheels.add(digest.lower())
    return sorted(wheels or sdists)


def resolve(
    requested: list[str], python: str, index_url: str, progress: Reporter = quiet
) -> LockedEnv:
    """The lock of ``requested`` for CPython ``python`` on x86_64 Linux.

    Raises:
        BuildError: no resolution, an unreachable index, or a release with no file to install.
    """
    progress(f"resolving {len(requested)} requirement(s) for Python {python}")
    pins = compile_pins(requested, python, index_url)
    tags = target_tags(python)
    locked = []
    for name, version in pins:
        hashes = file_hashes(project_files(index_url, name), version, tags)
        if not hashes:
            raise BuildError(
                f"{name} {version} has no file for Python {python} on x86_64 Linux on "
                f"{index_url}; pin another version"
            )
        locked.append(Pin(name, version, tuple(hashes)))
    progress(f"locked {len(locked)} package(s) for Python {python}")
    return LockedEnv(
        inputs=inputs_digest(requested, python),
        python=python,
        requested=tuple(sorted(requested)),
        pins=tuple(locked),
    )


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` (a new file renamed over it) unless it already holds it."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        pass
    if path.is_symlink():
        raise UsageError(f"{path} is a symbolic link: remove it, bakery writes its lock itself")
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with open(tmp, "x", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return True


# --- the locks bakery ships (`make lock-hub`) and the workshop's (`bakery lock`) ----------------

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "locks"


def refresh_shipped(progress: Reporter = quiet) -> list[Path]:
    """Resolve the hub's default environments (each spawner kind, each OS's Python) again and
    write them to bakery/locks/ (`make lock-hub`); return the files that changed."""
    from bakery import versions
    from bakery.config.lockfile import format_env, shipped_name
    from bakery.config.workshop import Workshop
    from bakery.workshop.software import hub_requested

    pythons = sorted({*versions.OS_PYTHON.values(), versions.CONDA_PYTHON})
    changed = []
    SHIPPED_DIR.mkdir(exist_ok=True)
    for kind in ("docker", "systemd"):
        cfg = Workshop.model_validate({"name": "hub-lock", "spawner": {"kind": kind}})
        for python in pythons:
            env = resolve(hub_requested(cfg), python, DEFAULT_INDEX, progress)
            path = SHIPPED_DIR / shipped_name(kind, python)
            if write_if_changed(path, format_env(env)):
                changed.append(path)
    return changed


def lock_workshop(*, config_path: Path, progress: Reporter = quiet) -> tuple[Path, bool]:
    """`bakery lock`: resolve the hub's and the trainees' environments and write the workshop's
    lock beside it; return its path and whether it changed.

    Raises:
        BuildError: a resolution failed or the index could not be read (nothing written).
    """
    from bakery.config.lockfile import Lock, format_lock, lock_path
    from bakery.config.workshop import load_config
    from bakery.workshop import software

    cfg = load_config(config_path)
    index = software.index_url(cfg)
    hub = software.shipped_hub(cfg)  # bakery's own versions: its shipped lock, as it is
    if hub is None:
        hub = resolve(software.hub_requested(cfg), software.hub_python(cfg), index, progress)
    requested = software.trainee_requested(cfg)
    trainees = None
    if requested:
        trainees = resolve(requested, software.trainee_python(cfg), index, progress)
    path = lock_path(config_path)
    return path, write_if_changed(path, format_lock(Lock(hub=hub, trainees=trainees)))
