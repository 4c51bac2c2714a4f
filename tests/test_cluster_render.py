"""cluster.engine swarm: the config's refusals and the manager's and workers' documents."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import EXAMPLES

from bakery import config as config_module
from bakery.config import Workshop, load_config
from bakery.credentials import credentials_path, ensure_credentials
from bakery.errors import ConfigError, RenderError
from bakery.layout import CLUSTER_META_SECRET, CLUSTER_PORTS, HUB_PORT
from bakery.render import build_cloud_config

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
    assert manager["/etc/bakery/cluster-manager"] == "manager\n"
    hub = manager["/etc/jupyterhub/jupyterhub_config.py"]
    assert 'c.JupyterHub.spawner_class = "bakery_swarmspawner.BakerySwarmSpawner"' in hub
    assert "host_homedir_format_string = '/srv/cluster/home/{username}'" in hub
    assert "c.BakerySwarmSpawner.workers_only = True" in hub
    assert 'c.BakerySwarmSpawner.host_ip = _cluster["address"]' in hub
    compile(hub, "jupyterhub_config.py", "exec")
    full = files(build_cloud_config(cfg, stage="full", accounts=accounts))
    unit = full["/etc/systemd/system/jupyterhub.service"]
    assert "Requires=" in unit and "bakery-cluster.service" in unit.split("Requires=")[1]


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
