"""Helpers the tests import (kept out of conftest.py: tests/e2e has a conftest of its own)."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from bakery.vm.validate import find_tool

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def require_tool(name: str) -> str:
    """The tool's path; in CI a missing validator fails the test, elsewhere it skips it."""
    path = find_tool(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/run must install it")
        pytest.skip(f"{name} is not installed")
    return path


def config_error(text: str, line: int, words: list[str]) -> str:
    """Parse ``text`` as ws.yaml; assert one ConfigError at ``line`` naming ``words``."""
    from bakery.config.workshop import parse_config
    from bakery.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("ws.yaml"))
    message = str(info.value)
    assert message.startswith(f"ws.yaml:{line}:"), message
    for word in words:
        assert word in message, message
    assert info.value.exit_code == 2
    return message


def fake_lock(config: Path) -> Path:
    """A lock for ``config``'s trainees' packages, as `bakery lock` would write it but without
    the index: each requested ``name==version`` pinned (others at 1.0) with a made-up sha256.
    For render tests only: nothing installs from it."""
    import hashlib

    from bakery.config.lockfile import Lock, LockedEnv, Pin, format_lock, inputs_digest, lock_path
    from bakery.config.workshop import load_config
    from bakery.workshop import software

    cfg = load_config(config)
    requested = software.trainee_requested(cfg)
    python = software.trainee_python(cfg)
    pins = []
    for spec in requested:
        name, _, version = spec.partition("==")
        name = name.split("[")[0].split(">")[0].split("<")[0]
        version = version or "1.0"
        digest = hashlib.sha256(f"{name} {version}".encode()).hexdigest()
        pins.append(Pin(name.lower(), version, (digest,)))
    env = LockedEnv(inputs_digest(requested, python), python, tuple(sorted(requested)), tuple(pins))
    path = lock_path(config)
    path.write_text(format_lock(Lock(trainees=env)))
    return path


def importable_warm(cfg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """``cfg``'s bakery_warm.py (its bake stage) as the boot stage's jupyterhub_config.py imports
    it on the VM, its settings file under ``tmp_path`` (never the host's /etc)."""
    from bakery.layout import SCRIPT_DIR
    from bakery.vm.userdata import build_cloud_config

    files = {f["path"]: f["content"] for f in build_cloud_config(cfg, stage="bake")["write_files"]}
    module = types.ModuleType("bakery_warm")
    module.__file__ = f"{SCRIPT_DIR}/bakery_warm.py"
    exec(compile(files[module.__file__], "bakery_warm.py", "exec"), module.__dict__)
    module.SETTINGS = str(tmp_path / "warm.json")
    monkeypatch.setitem(sys.modules, "bakery_warm", module)
    return module


def cloud_config(data: bytes) -> dict[str, Any]:
    """A ``#cloud-config`` document as cloud-init reads it: plain, or gzipped (bakery gzips one
    whose base64 would not fit Nova's 65,535 characters)."""
    import gzip

    import yaml

    text = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    assert text.startswith(b"#cloud-config\n"), text[:80]
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def send_json(handler: Any, status: int, body: Any = None) -> None:
    """A stand-in HTTP server's answer (a BaseHTTPRequestHandler's): ``body`` as JSON, none for
    None (as JupyterHub's activity API answers)."""
    import json

    data = b"" if body is None else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def rendered_auth(cfg: Any, tmp_path: Path) -> tuple[types.ModuleType, dict[str, str]]:
    """``cfg``'s bakery_auth.py (auth.kind oidc or github) as its boot stage writes it, its
    registry and discovery cache under ``tmp_path`` (never the host's /srv), and the boot
    stage's files by path."""
    from bakery.layout import AUTH_MODULE
    from bakery.vm.userdata import build_cloud_config

    doc = build_cloud_config(cfg, stage="boot", accounts=[])
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    module = types.ModuleType("bakery_auth")
    exec(compile(files[AUTH_MODULE], "bakery_auth.py", "exec"), module.__dict__)
    module.IDENTITIES = str(tmp_path / "identities.json")
    module.DISCOVERY_CACHE = str(tmp_path / "discovery.json")
    return module, files
