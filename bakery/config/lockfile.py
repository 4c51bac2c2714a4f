"""The lock: every Python package of an environment pinned with the hashes of its files.

``bakery lock workshop.yaml`` writes ``workshop.lock.json`` beside the workshop (bakery.bake.lock
resolves it); bakery ships the locks of the hub's default environments in ``bakery/locks/``. A
lock's ``inputs`` is the digest of what it was resolved from (the requirements as written, the
target Python, the index): when the workshop asks for something else, the lock is stale and
render, bake and validate say so. The index is not part of it: a mirror serves the same files,
which the hashes check.

The VM installs a lock with ``pip install --no-deps --require-hashes``: pip refuses any file whose
sha256 the lock does not list, and installs nothing the lock does not name.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from bakery.errors import ConfigError

LOCK_FORMAT = 1
LOCK_SUFFIX = ".lock.json"
# Locks are resolved for this machine type; its wheels (and pure-Python ones) are hashed.
LOCK_PLATFORM = "x86_64-manylinux_2_35"
DEFAULT_INDEX = "https://pypi.org/simple"
_NAME_RE = re.compile(r"[a-z0-9]+(?:[-_.][a-z0-9]+)*")
_VERSION_RE = re.compile(r"[A-Za-z0-9.+!-]+")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Pin:
    """One package: its name (normalised), version and the sha256 of each file pip may take."""

    name: str
    version: str
    hashes: tuple[str, ...]

    def line(self) -> str:
        """The pip requirement line: ``name==version --hash=sha256:...``."""
        hashes = " ".join(f"--hash=sha256:{h}" for h in self.hashes)
        return f"{self.name}=={self.version} {hashes}"


@dataclass(frozen=True)
class LockedEnv:
    """An environment's lock: what it was resolved from (``inputs``, a digest) and its pins."""

    inputs: str
    python: str
    requested: tuple[str, ...]
    pins: tuple[Pin, ...]

    def requirements(self) -> str:
        """The pip requirements file (one pinned, hashed line per package)."""
        return "".join(f"{pin.line()}\n" for pin in self.pins)

    def version_of(self, name: str) -> str | None:
        return next((p.version for p in self.pins if p.name == normalize(name)), None)


@dataclass(frozen=True)
class Lock:
    """A workshop's lock: the hub's environment and the trainees' (either may be absent)."""

    hub: LockedEnv | None = None
    trainees: LockedEnv | None = None


def normalize(name: str) -> str:
    """A package name as indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def inputs_digest(requested: list[str], python: str) -> str:
    """The digest of what a lock is resolved from: the requirements as written (sorted), the
    target Python and platform (not the index: a mirror serves the same files)."""
    canonical = json.dumps(
        {"requested": sorted(requested), "python": python, "platform": LOCK_PLATFORM},
        sort_keys=True,
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def lock_path(config_path: Path) -> Path:
    """The workshop's lock: ``workshop.yaml`` -> ``workshop.lock.json`` beside it."""
    return config_path.with_name(config_path.stem + LOCK_SUFFIX)


def _env_json(env: LockedEnv) -> dict[str, Any]:
    return {
        "inputs": env.inputs,
        "python": env.python,
        "platform": LOCK_PLATFORM,
        "requested": list(env.requested),
        "packages": [
            {"name": p.name, "version": p.version, "sha256": list(p.hashes)} for p in env.pins
        ],
    }


def format_lock(lock: Lock) -> str:
    """The lock file's text: JSON, keys and packages sorted, so the same lock is the same bytes."""
    doc: dict[str, Any] = {"bakery_lock": LOCK_FORMAT}
    for part in ("hub", "trainees"):
        env = getattr(lock, part)
        if env is not None:
            doc[part] = _env_json(env)
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def format_env(env: LockedEnv) -> str:
    """One environment's lock as a file of its own (the shipped hub locks)."""
    return (
        json.dumps({"bakery_lock": LOCK_FORMAT, **_env_json(env)}, indent=2, sort_keys=True) + "\n"
    )


def _bad(where: str, what: str) -> ConfigError:
    return ConfigError(
        f"{where}: {what}; it is bakery's file: make it again with `bakery lock` (do not edit it)"
    )


def _pin(raw: Any, where: str) -> Pin:
    if not isinstance(raw, dict):
        raise _bad(where, "a package entry is not an object")
    name, version, hashes = raw.get("name"), raw.get("version"), raw.get("sha256")
    if not (isinstance(name, str) and _NAME_RE.fullmatch(name)):
        raise _bad(where, f"package name {str(name)[:40]!r} is not a package name")
    if not (isinstance(version, str) and _VERSION_RE.fullmatch(version)):
        raise _bad(where, f"{name}: version {str(version)[:40]!r} is not a version")
    if not (isinstance(hashes, list) and hashes and all(isinstance(h, str) for h in hashes)):
        raise _bad(where, f"{name}: no sha256 list")
    if not all(_SHA256_RE.fullmatch(h) for h in hashes):
        raise _bad(where, f"{name}: a sha256 that is not 64 hex digits")
    return Pin(name, version, tuple(hashes))


def _env(raw: Any, where: str) -> LockedEnv:
    if not isinstance(raw, dict):
        raise _bad(where, "not an object")
    inputs, python, requested = raw.get("inputs"), raw.get("python"), raw.get("requested", [])
    packages = raw.get("packages")
    if not isinstance(inputs, str) or not isinstance(python, str):
        raise _bad(where, "no inputs or python")
    if not isinstance(requested, list) or not all(isinstance(r, str) for r in requested):
        raise _bad(where, "requested is not a list of requirements")
    if not isinstance(packages, list):
        raise _bad(where, "no packages list")
    pins = tuple(_pin(p, where) for p in packages)
    return LockedEnv(inputs, python, tuple(requested), pins)


def parse_lock(text: str, where: str) -> Lock:
    """A workshop's lock from its text.

    Raises:
        ConfigError: not a lock bakery wrote (with ``where``, the file).
    """
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise _bad(where, f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("bakery_lock") != LOCK_FORMAT:
        raise _bad(where, f"not a bakery lock of format {LOCK_FORMAT}")
    return Lock(
        hub=_env(doc["hub"], f"{where}: hub") if "hub" in doc else None,
        trainees=_env(doc["trainees"], f"{where}: trainees") if "trainees" in doc else None,
    )


def read_lock(path: Path) -> Lock | None:
    """The lock at ``path``, or None when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the lock: {exc}") from None
    return parse_lock(text, str(path))


def shipped_name(kind: str, python: str) -> str:
    """The file name of a shipped hub lock: ``hub-systemd-py3.11.json``."""
    return f"hub-{kind}-py{python}.json"


def shipped_hub_lock(kind: str, python: str) -> LockedEnv | None:
    """The hub lock bakery ships for a spawner kind and a Python (None if it has none)."""
    ref = resources.files("bakery") / "locks" / shipped_name(kind, python)
    try:
        text = ref.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return _env(json.loads(text), f"bakery's shipped lock {shipped_name(kind, python)}")
