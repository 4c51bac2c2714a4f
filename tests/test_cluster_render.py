"""cluster.engine swarm: the config's refusals and the manager's and workers' documents."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import EXAMPLES
from traitlets.config import Config

from bakery.config import workshop as config_module
from bakery.config.workshop import Workshop, load_config
from bakery.errors import ConfigError, RenderError
from bakery.layout import (
    CLUSTER_META_SECRET,
    CLUSTER_PORTS,
    HUB_PORT,
    USER_IMAGE_ARCHIVE,
    USER_IMAGE_CMD,
)
from bakery.templates import render
from bakery.vm.userdata import build_cloud_config
from bakery.workshop.accounts import credentials_path, ensure_credentials

CLUSTER = next(e for e in EXAMPLES if e.stem == "cluster")


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[Any, list[Any]]:
    config = tmp_path / "cluster.yaml"
    shutil.copy(CLUSTER, config)
    cfg = load_config(config)
    return cfg, ensure_credentials(cfg, credentials_path(config))


def parse_config(data: dict[str, Any]) -> Workshop:
    return config_module.parse_config(yaml.safe_dump(data), Path("workshop.yaml"))


def files(doc: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["content"] for f in doc["write_files"]}


def test_swarm_needs_the_docker_spawner_and_excludes_count() -> None:
    base = {"name": "cw", "cluster": {"engine": "swarm"}}
    with pytest.raises(ConfigError, match=r"cluster\.engine.*spawner\.kind: docker"):
        parse_config(base | {"spawner": {"kind": "systemd"}})
    with pytest.raises(ConfigError, match=r"openstack\.count.*one or the other"):
        parse_config(base | {"openstack": {"count": 2}})
    with pytest.raises(ConfigError, match=r"cluster\.workers"):
        parse_config(base | {"cluster": {"engine": "swarm", "workers": 0}})
    assert parse_config(base).cluster.swarm
    assert not parse_config({"name": "cw"}).cluster.swarm


@pytest.mark.parametrize(
    "key, value", [("workers", 4), ("worker_flavor", "m1.large"), ("manager_runs_servers", True)]
)
def test_a_cluster_key_without_the_swarm_engine_is_refused(key: str, value: object) -> None:
    # Forgetting engine: swarm would launch one VM for a class that was meant to spread.
    for cluster in ({key: value}, {"engine": "none", key: value}):
        with pytest.raises(ConfigError, match=rf"cluster\.{key}: .*set cluster\.engine: swarm"):
            parse_config({"name": "cw", "spawner": {"kind": "docker"}, "cluster": cluster})
    assert not parse_config({"name": "cw", "cluster": {"engine": "none"}}).cluster.swarm


def test_one_bake_stage_serves_both_roles(cluster: tuple[Any, list[Any]]) -> None:
    cfg, _ = cluster
    manager = build_cloud_config(cfg, stage="bake")
    assert build_cloud_config(cfg, stage="bake", role="worker") == manager
    baked = files(manager)
    assert "nfs-kernel-server" in manager["packages"]
    for path in (
        "/usr/local/lib/bakery/cluster.sh",
        "/usr/local/lib/bakery/swarm-token.py",
        "/usr/local/lib/bakery/bakery_swarmspawner.py",
        "/etc/systemd/system/bakery-cluster.service",
        "/etc/systemd/system/bakery-swarm-token.service",
    ):
        assert path in baked, path
    # The single-VM docker network is not the cluster's: the hub starts without it.
    assert "/usr/local/lib/bakery/docker-network.sh" not in baked
    assert "docker-network.sh" not in baked["/etc/systemd/system/jupyterhub.service"]
    # The hub's units and Debian's nginx and NFS server stay off where the worker file exists.
    for unit in ("jupyterhub", "configurable-http-proxy", "jupyterhub-secrets", "bakery-tls"):
        assert (
            "ConditionPathExists=!/etc/bakery/cluster-worker"
            in baked[f"/etc/systemd/system/{unit}.service"]
        ), unit
    for unit in ("nginx", "nfs-server"):
        dropin = baked[f"/etc/systemd/system/{unit}.service.d/bakery-cluster.conf"]
        assert "ConditionPathExists=!/etc/bakery/cluster-worker" in dropin


def test_the_worker_has_no_hub_no_accounts_and_keeps_its_cloud_name(
    cluster: tuple[Any, list[Any]],
) -> None:
    cfg, accounts = cluster
    worker = build_cloud_config(cfg, stage="boot", accounts=accounts, role="worker")
    assert build_cloud_config(cfg, stage="boot", role="worker") == worker
    assert "hostname" not in worker and "fqdn" not in worker
    assert worker["users"] == ["default"]
    text = yaml.safe_dump(worker)
    assert "$6$" not in text and not any(a.password in text for a in accounts)
    assert set(files(worker)) == {
        "/etc/bakery/cluster-worker",
        "/etc/ssh/sshd_config.d/10-bakery.conf",
    }
    enabled = worker["runcmd"][-1]
    assert enabled[:3] == ["systemctl", "enable", "--now"]
    assert "bakery-cluster.service" in enabled and "jupyterhub.service" not in enabled


def test_the_manager_runs_the_hub_with_the_swarm_spawner(
    cluster: tuple[Any, list[Any]],
) -> None:
    cfg, accounts = cluster
    manager = files(build_cloud_config(cfg, stage="boot", accounts=accounts))
    assert manager["/etc/bakery/cluster-manager"] == "manager\nservers=workers\n"
    hub = manager["/etc/jupyterhub/jupyterhub_config.py"]
    assert 'c.JupyterHub.spawner_class = "bakery_swarmspawner.BakerySwarmSpawner"' in hub
    assert "host_homedir_format_string = '/srv/cluster/home/{username}'" in hub
    assert "c.BakerySwarmSpawner.workers_only = True" in hub
    assert 'c.BakerySwarmSpawner.host_ip = _cluster["address"]' in hub
    compile(hub, "jupyterhub_config.py", "exec")
    full = files(build_cloud_config(cfg, stage="full", accounts=accounts))
    # The hub waits for its requirements' target (hub-start.py), which requires the cluster.
    unit = full["/etc/systemd/system/jupyterhub.service"]
    assert "\nRequires=jupyterhub-ready.target " in unit
    ready = full["/etc/systemd/system/jupyterhub-ready.target"]
    assert "bakery-cluster.service" in ready.split("\nRequires=")[1].splitlines()[0]
    assert "cluster-worker" in full["/usr/local/lib/bakery/hub-start.py"]


def test_a_worker_role_without_a_cluster_is_refused(tmp_path: Path) -> None:
    cfg = parse_config({"name": "single"})
    with pytest.raises(RenderError, match="role worker"):
        build_cloud_config(cfg, stage="boot", role="worker")
    with pytest.raises(RenderError, match="unknown role"):
        build_cloud_config(cfg, stage="bake", role="boss")  # type: ignore[arg-type]


def test_the_secret_is_metadata_never_user_data(cluster: tuple[Any, list[Any]]) -> None:
    cfg, accounts = cluster
    for role in ("manager", "worker"):
        doc = build_cloud_config(cfg, stage="full", accounts=accounts, role=role)  # type: ignore[arg-type]
        script = files(doc)["/usr/local/lib/bakery/cluster.sh"]
        # Read from the server's metadata at boot, root only, into a root-only file.
        assert f"SECRET=$(meta {CLUSTER_META_SECRET})" in script
        assert "umask 077" in script
        assert "SECRET" not in yaml.safe_dump({k: v for k, v in doc.items() if k != "write_files"})


def test_the_firewall_keeps_cluster_ports_to_the_cluster(cluster: tuple[Any, list[Any]]) -> None:
    cfg, _ = cluster
    firewall = files(build_cloud_config(cfg, stage="bake"))["/usr/local/lib/bakery/firewall.sh"]
    tcp = sorted(str(p) for p, proto in CLUSTER_PORTS if proto == "tcp" and p != HUB_PORT)
    udp = sorted(str(p) for p, proto in CLUSTER_PORTS if proto == "udp")
    for proto, ports in (("tcp", tcp), ("udp", udp)):
        rule = next(line for line in firewall.splitlines() if f'! -s "$NET" -p {proto}' in line)
        assert sorted(rule.split("--dports ")[1].split()[0].split(",")) == ports
        # Before the cluster's network is known: closed to everyone.
        assert f"-A BAKERY-INPUT -p {proto} -m multiport --dports" in firewall
    # Containers reach the manager's hub API and nothing else of the cluster's network.
    assert '-i docker_gwbridge -d "$MANAGER" -p tcp --dport 8081 -j RETURN' in firewall
    assert '-i docker_gwbridge -d "$NET" -j REJECT' in firewall
    assert "-t raw -I PREROUTING ! -i lo -p tcp --dport 30000:32767 -j DROP" in firewall


def test_the_manager_loads_the_notebook_image_even_without_servers() -> None:
    """dockerspawner reads the image's command on the hub's own daemon (inspect_image, before the
    service is made): a manager without the image fails every spawn with "no such image" (seen on
    the test cloud when a manager skipped the load)."""
    cfg = parse_config(
        {
            "name": "cw",
            "spawner": {"kind": "docker", "image_archive": {"path": "/srv/img.tar"}},
            "cluster": {"engine": "swarm", "manager_runs_servers": False},
        }
    )
    baked = files(build_cloud_config(cfg, stage="bake"))
    unit = baked["/etc/systemd/system/bakery-user-image.service"]
    assert "cluster-manager" not in unit and "cluster-worker" not in unit
    assert "rm -f /var/lib/bakery/user-image.tar" not in baked["/usr/local/lib/bakery/cluster.sh"]


def _run_user_image(tmp_path: Path, cfg: Workshop, role: str | None, archive: bytes) -> list[str]:
    """Run the rendered user-image.sh against a fake docker, its paths moved into ``tmp_path``;
    returns the docker commands it ran (the image is never loaded before)."""
    script = files(build_cloud_config(cfg, stage="bake"))["/usr/local/lib/bakery/user-image.sh"]
    for path in (USER_IMAGE_ARCHIVE, USER_IMAGE_CMD, "/etc/bakery/cluster-manager"):
        script = script.replace(path, str(tmp_path / Path(path).name))
    tmp_path.mkdir()
    (tmp_path / "user-image.tar").write_bytes(archive)
    if role is not None:
        (tmp_path / "cluster-manager").write_text(role)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(
        '#!/bin/sh\necho "$*" >> "$(dirname "$0")/calls"\n'
        'case "$1 $2" in "image inspect") exit 1;; esac\n'
        '[ "$1" = load ] && echo "Loaded image: bakery/nb:1"\nexit 0\n'
    )
    docker.chmod(0o755)
    (tmp_path / "user-image.sh").write_text(script)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    subprocess.run(["bash", str(tmp_path / "user-image.sh")], env=env, check=True)
    calls = bin_dir / "calls"
    return calls.read_text().splitlines() if calls.exists() else []


def _docker_save(config: dict[str, Any], tags: list[str]) -> bytes:
    """A docker save archive's skeleton: manifest.json and the image's config."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in (
            ("blobs/sha256/abc", json.dumps(config).encode()),
            (
                "manifest.json",
                json.dumps([{"Config": "blobs/sha256/abc", "RepoTags": tags}]).encode(),
            ),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_manager_without_servers_reads_the_command_and_loads_no_image(tmp_path: Path) -> None:
    # The hub needs only the image's command (dockerspawner inspects the image for nothing else):
    # the manager skips the import that took minutes at every cluster's first boot.
    cfg = parse_config(
        {
            "name": "cw",
            "spawner": {"kind": "docker", "image_archive": {"path": "/srv/nb.tar"}},
            "cluster": {"engine": "swarm"},
        }
    )
    # A worker joins the swarm (and gets servers) only once its copy is loaded.
    unit = files(build_cloud_config(cfg, stage="bake"))[
        "/etc/systemd/system/bakery-cluster.service"
    ]
    assert "After=bakery-user-image.service" in unit
    archive = _docker_save({"config": {"Cmd": ["start-notebook.py"]}}, [cfg.spawner.image])
    calls = _run_user_image(tmp_path / "m", cfg, "manager\nservers=workers\n", archive)
    assert json.loads((tmp_path / "m" / "user-image-cmd.json").read_text()) == ["start-notebook.py"]
    assert not any(c.startswith(("load", "import")) for c in calls), calls
    assert (tmp_path / "m" / "user-image.tar").exists()  # kept: nothing loaded it
    # A manager that runs servers, and a worker, load it as before (and the archive goes).
    for role, where in (("manager\nservers=all\n", "all"), (None, "worker")):
        calls = _run_user_image(tmp_path / where, cfg, role, archive)
        assert "load --input " + str(tmp_path / where / "user-image.tar") in calls, calls
        assert not (tmp_path / where / "user-image.tar").exists()
    # No command in the image: nothing is guessed, the manager loads it for the hub to inspect.
    bare = _docker_save({"config": {"Entrypoint": ["tini"]}}, [cfg.spawner.image])
    calls = _run_user_image(tmp_path / "bare", cfg, "manager\nservers=workers\n", bare)
    assert not (tmp_path / "bare" / "user-image-cmd.json").exists()
    assert any(c.startswith("load") for c in calls), calls


def test_the_hub_takes_the_command_from_the_file_when_there_is_one(tmp_path: Path) -> None:
    archive = {"path": "nb.tar", "format": "rootfs", "cmd": ["jupyterhub-singleuser"]}
    cfg = parse_config(
        {
            "name": "cw",
            "spawner": {"kind": "docker", "image": "bakery/nb:1", "image_archive": archive},
            "cluster": {"engine": "swarm", "manager_runs_servers": True},
        }
    )
    accounts = ensure_credentials(cfg, tmp_path / "credentials.yaml")
    doc = build_cloud_config(cfg, stage="full", accounts=accounts)
    assert files(doc)["/etc/bakery/cluster-manager"] == "manager\nservers=all\n"
    calls = _run_user_image(tmp_path / "m", cfg, "manager\nservers=workers\n", b"rootfs")
    assert calls == []  # nothing asked of docker: the command is the config's
    assert json.loads((tmp_path / "m" / "user-image-cmd.json").read_text()) == [
        "jupyterhub-singleuser"
    ]
    hub = files(doc)["/etc/jupyterhub/jupyterhub_config.py"]
    block = "try:\n" + hub.split("\ntry:\n", 1)[1].split("\n\n", 1)[0].split("\nc.", 1)[0]
    for present in (True, False):
        cmd_file = tmp_path / "m" / "user-image-cmd.json"
        if not present:
            cmd_file.unlink()
        c = Config()
        exec(block.replace(USER_IMAGE_CMD, str(cmd_file)), {"c": c, "json": json})
        # Without the file the trait stays unset: dockerspawner asks docker, as before.
        assert c.BakerySwarmSpawner.get("cmd") == (["jupyterhub-singleuser"] if present else None)


def test_every_worker_powers_off_with_the_workshop(cluster: tuple[Any, list[Any]]) -> None:
    """Issue 26: only the manager had the expiry timer; workers ran (and cost) after the class."""
    from bakery.layout import EXPIRY_FILE, EXPIRY_UNITS, SCRIPT_DIR

    cfg, _ = cluster
    ended = cfg.model_copy(update={"ends": datetime.fromisoformat("2031-05-01T17:00:00+02:00")})
    doc = build_cloud_config(ended, stage="boot", role="worker")
    written = files(doc)
    assert json.loads(written[EXPIRY_FILE])["power_off"] > 0
    assert f"{SCRIPT_DIR}/expiry.py" in written
    assert all(f"/etc/systemd/system/{unit}" in written for unit in EXPIRY_UNITS)
    assert ["systemctl", "enable", "--now", EXPIRY_UNITS[1]] in doc["runcmd"]
    # Without ends, nothing of it.
    plain = build_cloud_config(cfg, stage="boot", role="worker")
    assert EXPIRY_FILE not in files(plain)
    assert all(EXPIRY_UNITS[1] not in cmd for cmd in plain["runcmd"])


def test_a_swarm_node_holds_its_engine_back(cluster: tuple[Any, list[Any]]) -> None:
    """Issue 26: a docker restart (an unattended upgrade) stops every server of a swarm node."""
    cfg, _ = cluster
    runcmd = build_cloud_config(cfg, stage="bake")["runcmd"]
    assert ["apt-mark", "hold", "docker.io", "containerd", "runc"] in runcmd
    plain = cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update={"engine": "none"})})
    assert all(c[:1] != ["apt-mark"] for c in build_cloud_config(plain, stage="bake")["runcmd"])


def test_the_join_token_is_rotated_once_the_workers_are_quiet(
    cluster: tuple[Any, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 26: the worker join token is rotated once no worker has asked for a while."""
    import types

    from bakery.vm.context import context

    cfg, _ = cluster
    code = render("cloudinit/swarm-token.py.j2", **context(cfg))
    token = types.ModuleType("swarm_token")
    exec(compile(code, "swarm-token.py", "exec"), token.__dict__)
    clock = [1000.0]
    ran: list[list[str]] = []
    token.time = types.SimpleNamespace(monotonic=lambda: clock[0], sleep=lambda s: None)
    token.subprocess = types.SimpleNamespace(
        run=lambda argv, **kw: ran.append(argv) or subprocess.CompletedProcess(argv, 0, "", "")
    )
    rotation = token.ROTATION
    assert not rotation.due(clock[0])  # nothing handed out yet: nothing to rotate
    rotation.note()
    clock[0] += token.ROTATE_AFTER - 1
    assert not rotation.due(clock[0])  # a worker may still be joining with it
    clock[0] += 2
    assert rotation.due(clock[0]) and not rotation.due(clock[0])  # once
    rotation.note()
    clock[0] += token.ROTATE_AFTER + 1
    calls = iter([None])
    token.time.sleep = lambda s: next(calls)  # one look, then stop the loop
    with pytest.raises(StopIteration):
        token.rotate_when_quiet()
    assert ran == [["docker", "swarm", "join-token", "--rotate", "--quiet", "worker"]]
