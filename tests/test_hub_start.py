"""hub-start.py, jupyterhub.service's program: JupyterHub imported early in the boot, run once
its requirements are reached; the OAuth client secret read from cloud-init's instance data."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import types
from pathlib import Path

import pytest

from bakery.config.workshop import parse_config
from bakery.templates import render
from bakery.vm.context import context

KEY = "bakery_auth_secret"


def hub_start(tmp_path: Path, extra: str = "spawner: {kind: docker}\n") -> types.ModuleType:
    """The rendered script, imported (the host has JupyterHub and dockerspawner, not
    systemdspawner), without its change of this process's priority."""
    cfg = parse_config("name: qz\nusers: {names: [ada]}\n" + extra, Path("w.yaml"))
    script = tmp_path / "hub-start.py"
    script.write_text(render("cloudinit/hub-start.py.j2", **context(cfg)))
    spec = importlib.util.spec_from_file_location("hub_start", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "setpriority", lambda *args: None)
        spec.loader.exec_module(module)
    return module


def instance_data(tmp_path: Path, meta: dict[str, object]) -> Path:
    data = tmp_path / "instance-data.json"
    data.write_text(json.dumps({"ds": {"meta_data": meta}}))
    data.chmod(0o644)
    return data


def test_the_secret_is_written_root_only_and_the_instance_data_closed(tmp_path: Path) -> None:
    module = hub_start(tmp_path)
    data = instance_data(tmp_path, {"meta": {KEY: " s3cret \n"}, "uuid": "x"})
    secret = tmp_path / "oauth-client-secret"
    module.oauth_secret(str(data), str(secret))
    assert secret.read_text() == "s3cret\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    # cloud-init's copy is world-readable: closed, secret and all.
    assert stat.S_IMODE(data.stat().st_mode) == 0o600
    assert not (tmp_path / "oauth-client-secret.tmp").exists()


def test_a_secret_already_there_is_kept(tmp_path: Path) -> None:
    """`bakery update` may have sent a newer one: the first boot's metadata does not undo it."""
    module = hub_start(tmp_path)
    data = instance_data(tmp_path, {KEY: "old"})
    secret = tmp_path / "oauth-client-secret"
    secret.write_text("newer\n")
    module.oauth_secret(str(data), str(secret))
    assert secret.read_text() == "newer\n"


@pytest.mark.parametrize(
    "content",
    [json.dumps({"ds": {"meta_data": {"uuid": "x"}}}), '{"ds": {"meta_data": {"' + KEY + '": ',
     json.dumps({"ds": {"meta_data": {KEY: ["not", "a", "string"]}}}), ""],
)  # fmt: skip
def test_no_secret_no_file_and_no_crash(tmp_path: Path, content: str) -> None:
    module = hub_start(tmp_path)
    data = tmp_path / "instance-data.json"
    data.write_text(content)
    secret = tmp_path / "oauth-client-secret"
    module.oauth_secret(str(data), str(secret))
    module.oauth_secret(str(tmp_path / "missing.json"), str(secret))
    assert not secret.exists()


def test_it_imports_the_spawner_the_config_names_and_waits_for_the_target(
    tmp_path: Path,
) -> None:
    for extra, spawner in (
        ("spawner: {kind: systemd}\n", "systemdspawner"),
        ("spawner: {kind: docker}\n", "dockerspawner"),
    ):
        cfg = parse_config("name: qz\nusers: {names: [ada]}\n" + extra, Path("w.yaml"))
        text = render("cloudinit/hub-start.py.j2", **context(cfg))
        compile(text, "hub-start.py", "exec")
        assert f"importlib.import_module('{spawner}')" in text
        assert '["systemctl", "start", READY]' in text
        # JupyterHub is imported before the wait, not after it.
        assert text.index("from jupyterhub.app import main") < text.index("def main()")
    # A swarm worker's hub gives up once cloud-init has written its role.
    swarm = parse_config(
        "name: qz\nusers: {names: [ada]}\nspawner: {kind: docker}\ncluster: {engine: swarm}\n",
        Path("w.yaml"),
    )
    assert "/etc/bakery/cluster-worker" in render("cloudinit/hub-start.py.j2", **context(swarm))


def test_the_main_program_stops_when_the_requirements_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target failed (the firewall, say): exit 3, which the unit does not restart on, and
    no hub started."""
    module = hub_start(tmp_path)
    calls: list[list[str]] = []

    def run(cmd: list[str], check: bool = False) -> types.SimpleNamespace:
        calls.append(cmd)
        return types.SimpleNamespace(returncode=1)

    monkeypatch.setattr(module.subprocess, "run", run)
    monkeypatch.setattr(module.os, "setpriority", lambda *args: pytest.fail("reniced"))
    monkeypatch.setattr(module, "jupyterhub_main", lambda: pytest.fail("the hub started"))
    assert module.main() == 3
    assert calls == [["systemctl", "start", "jupyterhub-ready.target"]]
    cfg = parse_config("name: qz\n", Path("w.yaml"))
    unit = render("cloudinit/jupyterhub.service.j2", **context(cfg))
    assert "\nRestartPreventExitStatus=3\n" in unit


def test_the_boot_stage_starts_the_hub_not_its_target() -> None:
    """The hub's unit requires the target (nothing to enable for it at boot), so the boot stage
    also still boots an image baked before the target existed."""
    from bakery.layout import HUB_READY
    from bakery.vm.userdata import build_cloud_config
    from bakery.workshop.accounts import preview_accounts

    cfg = parse_config("name: qz\nusers: {names: [ada]}\n", Path("w.yaml"))
    boot = build_cloud_config(cfg, stage="boot", accounts=preview_accounts(cfg))
    (enable,) = [c for c in boot["runcmd"] if c[:3] == ["systemctl", "enable", "--now"]]
    assert "jupyterhub.service" in enable and HUB_READY not in enable
    bake = build_cloud_config(cfg, stage="bake")
    assert HUB_READY in bake["runcmd"][-1]  # enabled, with the hub, in the image
