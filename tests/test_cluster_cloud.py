"""A swarm cluster (cluster.engine: swarm) against the fake cloud: launch, status, scale, destroy.

The cloud is tests/fakecloud.py (the real openstacksdk over registered HTTP answers). The swarm is
``FakeSwarm``: what `docker` on the manager answers over ssh, standing in for
``bakery.cluster.manager_shell``; the program bakery runs there is checked on its own against a
fake ``docker`` executable.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests_mock as rm
import yaml
from fakecloud import (
    QUOTA_MESSAGE,
    FakeCloud,
    use_fake_cloud,
    user_data,
    write_cluster_workshop,
    write_workshop,
)
from typer.testing import CliRunner

from bakery.cli.main import app
from bakery.errors import BakeryError, CloudError, QuotaError, UsageError
from bakery.layout import CLUSTER_META_MANAGER, CLUSTER_META_SECRET, CLUSTER_PORTS
from bakery.progress import Collector
from bakery.providers.openstack import launch as launch_mod
from bakery.providers.openstack import scale as scale_mod
from bakery.providers.openstack import servers as servers_mod
from bakery.providers.openstack import swarm as cluster
from bakery.providers.openstack.resources import state_path

SERVERS = r"/servers$"
WRITES = r"/(servers|os-keypairs|security-groups|security-group-rules|floatingips)$"


@pytest.fixture
def fake(requests_mock: rm.Mocker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCloud:
    return use_fake_cloud(requests_mock, tmp_path, monkeypatch)


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    asked: list[float] = []
    monkeypatch.setattr(time, "sleep", asked.append)
    return asked


@pytest.fixture
def hub_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers_mod, "hub_health", lambda ip, timeout=5: "ok")
    # `status` asks each server over ssh whether it matches the file: here nothing answers.
    monkeypatch.setattr("bakery.day.update.config_states", lambda *a: {"*": "matches (stand-in)"})


def invoke(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(app, list(args), input=stdin)


def launch(path: Path, **kwargs: Any) -> launch_mod.LaunchResult:
    kwargs.setdefault("wait", False)
    return launch_mod.launch(config_path=path, **kwargs)


def by_name(fake: FakeCloud) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in fake.servers.values()}


def position(fake: FakeCloud, request: Any) -> int:
    return next(i for i, r in enumerate(fake.mock.request_history) if r is request)


def raw_user_data(request: Any) -> str:
    raw = base64.b64decode(request.json()["server"]["user_data"])
    return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()


# --- the swarm on the manager, as ssh would find it -----------------------------------------------


class FakeSwarm:
    """`docker` on the manager: the cloud's servers as nodes, trainees' tasks on them.

    Every command is kept in ``commands`` with the number of cloud requests made before it, so a
    test sees what happened first. A drained node's tasks stop after ``polls`` looks.
    """

    def __init__(self, fake: FakeCloud, polls: int = 2) -> None:
        self.fake = fake
        self.polls = polls
        self.nodes: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, list[str]] = {}
        self.draining: dict[str, int] = {}
        self.commands: list[tuple[int, list[str]]] = []
        for server in sorted(fake.servers.values(), key=lambda s: s["name"]):
            self.join(server["name"])

    def join(self, name: str, state: str = "ready") -> str:
        server = by_name(self.fake)[name]
        node_id = f"node{len(self.nodes) + 1}"
        manager = name.endswith("-manager")
        self.nodes[node_id] = {
            "ID": node_id,
            "Description": {
                "Hostname": name,
                "Resources": {"NanoCPUs": 2_000_000_000, "MemoryBytes": 4096 * 2**20},
            },
            "Status": {
                "State": state,
                "Addr": "0.0.0.0" if manager else server["addresses"]["private"][0]["addr"],
            },
            "Spec": {"Role": "manager" if manager else "worker", "Availability": "active"},
            **(
                {"ManagerStatus": {"Addr": f"{server['addresses']['private'][0]['addr']}:2377"}}
                if manager
                else {}
            ),
        }
        self.tasks[node_id] = []
        return node_id

    def node(self, name: str) -> str:
        return next(i for i, n in self.nodes.items() if n["Description"]["Hostname"] == name)

    def __call__(self, argv: list[str]) -> str:
        self.commands.append((self.fake.mock.call_count, list(argv)))
        if argv[:2] == ["python3", "-c"]:
            assert argv[2] == cluster.SWARM_PROGRAM
            return json.dumps(
                {
                    "nodes": list(self.nodes.values()),
                    "tasks": {
                        i: [
                            {"Name": f"jupyter-{t}.1", "CurrentState": "Running 3 minutes ago"}
                            for t in tasks
                        ]
                        for i, tasks in self.tasks.items()
                    },
                    "load": [0.52, 0.4, 0.31],
                }
            )
        match argv:
            case ["docker", "node", "update", "--availability", "drain", node_id]:
                self.nodes[node_id]["Spec"]["Availability"] = "drain"
                self.draining[node_id] = self.polls
                return node_id + "\n"
            case ["docker", "node", "ps", node_id, "--format", "{{.CurrentState}}"]:
                if self.draining.get(node_id, 0) > 0:
                    self.draining[node_id] -= 1
                    return "".join("Running 1 minute ago\n" for _ in self.tasks[node_id])
                self.tasks[node_id] = []
                return "Shutdown 2 seconds ago\n"
            case ["docker", "node", "rm", "--force", node_id]:
                assert self.nodes[node_id]["Spec"]["Availability"] == "drain"
                assert self.tasks[node_id] == []
                # The node goes while its server still exists: drained first, deleted after.
                name = self.nodes[node_id]["Description"]["Hostname"]
                assert name in by_name(self.fake)
                del self.nodes[node_id]
                return node_id + "\n"
        raise AssertionError(f"unexpected command on the manager: {argv}")


@pytest.fixture(autouse=True)
def joined_swarm(fake: FakeCloud, monkeypatch: pytest.MonkeyPatch) -> list[FakeSwarm]:
    """``manager_shell`` answered by a FakeSwarm of the servers there are when it is first asked
    (every worker joined and Ready), so no test reaches for a real ssh; ``swarm_shell`` and tests
    of their own replace it."""
    made: list[FakeSwarm] = []

    def shell(*args: Any, **kwargs: Any) -> FakeSwarm:
        if not made:
            made.append(FakeSwarm(fake))
        return made[0]

    monkeypatch.setattr(cluster, "manager_shell", shell)
    return made


@pytest.fixture
def ssh_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """``manager_shell`` whose every command fails as ssh without the right key does."""

    def refused(argv: list[str]) -> str:
        raise BakeryError("intro-manager: ssh debian@203.0.113.10:22 failed: Permission denied")

    monkeypatch.setattr(cluster, "manager_shell", lambda *a, **k: refused)


@pytest.fixture
def swarm_shell(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``manager_shell`` answered by the FakeSwarm put in ``["swarm"]`` (and the host asked)."""
    seen: dict[str, Any] = {}

    def shell(cfg: Any, config_path: Path, name: str, host: str, identity: Any = None) -> Any:
        seen["host"] = host
        return seen["swarm"]

    monkeypatch.setattr(cluster, "manager_shell", shell)
    return seen


# --- launch ---------------------------------------------------------------------------------------


def test_launch_makes_the_manager_first_then_the_workers_side_by_side(
    fake: FakeCloud, tmp_path: Path
) -> None:
    path = write_cluster_workshop(tmp_path, workers=3)
    fake.mock.get("https://203.0.113.10/hub/health", json={})

    result = invoke("launch", str(path))

    assert result.exit_code == 0, result.output
    posts = fake.calls("POST", SERVERS)
    assert [p.json()["server"]["name"] for p in posts] == [
        "intro-manager",
        "intro-worker-1",
        "intro-worker-2",
        "intro-worker-3",
    ]
    servers = by_name(fake)
    manager = servers["intro-manager"]
    # The manager was seen ACTIVE (with its address) before the first worker was asked for.
    manager_polls = fake.calls("GET", rf"/servers/{manager['id']}$")
    assert position(fake, manager_polls[0]) < position(fake, posts[1])
    # Every worker was created before any worker was waited on: they boot side by side.
    worker_ids = [servers[f"intro-worker-{n}"]["id"] for n in (1, 2, 3)]
    worker_polls = [r for i in worker_ids for r in fake.calls("GET", rf"/servers/{i}$")]
    assert worker_polls
    assert position(fake, posts[-1]) < min(position(fake, r) for r in worker_polls)

    secret = manager["metadata"][CLUSTER_META_SECRET]
    assert len(secret) >= 40
    assert manager["metadata"] == {
        "course": "intro-2024",
        "bakery_workshop": "intro",
        "bakery_stage": "full",
        CLUSTER_META_SECRET: secret,
    }
    address = manager["addresses"]["private"][0]["addr"]
    for n in (1, 2, 3):
        meta = servers[f"intro-worker-{n}"]["metadata"]
        assert meta[CLUSTER_META_SECRET] == secret
        assert meta[CLUSTER_META_MANAGER] == address
        assert meta["bakery_workshop"] == "intro"
    # Flavors: the manager's is openstack.flavor, the workers' auto from `bakery size`.
    flavors = {p.json()["server"]["name"]: p.json()["server"]["flavorRef"] for p in posts}
    assert flavors["intro-manager"] == "4"  # m1.large
    assert {flavors[f"intro-worker-{n}"] for n in (1, 2, 3)} == {"3"}  # m1.medium

    # One floating IP, the manager's; one URL.
    fip = fake.calls("POST", r"/floatingips$")
    assert len(fip) == 1
    port = fip[0].json()["floatingip"]["port_id"]
    assert fake.ports[port]["device_id"] == manager["id"]
    assert result.stdout.count("https://") == 1
    assert "intro-manager: https://203.0.113.10/  (hub: ok)" in result.stdout
    assert "workers: intro-worker-1, intro-worker-2, intro-worker-3" in result.stdout

    # The manager has the accounts; a worker none.
    docs = {p.json()["server"]["name"]: user_data(p) for p in posts}
    manager_users = [u["name"] for u in docs["intro-manager"]["users"] if isinstance(u, dict)]
    assert "ada" in manager_users and "teacher" in manager_users
    worker_users = [
        u.get("name") for u in docs["intro-worker-1"].get("users", []) if isinstance(u, dict)
    ]
    assert "ada" not in worker_users and "teacher" not in worker_users

    # The secret is nowhere but in the servers' metadata.
    assert secret not in result.output
    assert secret not in state_path(path).read_text()
    assert secret not in (tmp_path / "workshop.credentials.csv").read_text()
    for post in posts:
        assert secret not in raw_user_data(post)


def test_launch_waits_for_the_workers_to_join_and_says_so(
    fake: FakeCloud, tmp_path: Path, hub_ok: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker joins once its image is loaded, minutes after the hub answers: launch returns
    when the class can start on every worker, showing how many are Ready meanwhile."""
    path = write_cluster_workshop(tmp_path)
    monkeypatch.setattr(cluster, "READY_POLL_SECONDS", 0)
    asks = []

    def shell(*args: Any, **kwargs: Any) -> Callable[[list[str]], str]:
        swarm = FakeSwarm(fake)
        asks.append(swarm)
        # The first two asks: worker 2 has not joined; the third: it has.
        if len(asks) < 3:
            del swarm.nodes[swarm.node("intro-worker-2")]
        return swarm

    monkeypatch.setattr(cluster, "manager_shell", shell)
    result = invoke("launch", str(path))
    assert result.exit_code == 0, result.output
    assert len(asks) == 3
    # Two asks in the same state: said once (a state, not a log line per poll).
    assert result.stderr.count("swarm: 1 of 2 workers Ready (a worker joins once") == 1
    assert "swarm: 2 of 2 workers Ready" in result.stderr
    assert "not all Ready" not in result.output


def test_launch_stops_waiting_for_a_worker_at_the_hub_timeout(
    fake: FakeCloud, tmp_path: Path, hub_ok: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_cluster_workshop(tmp_path, hub_timeout="1s")
    monkeypatch.setattr(cluster, "READY_POLL_SECONDS", 0.2)

    def shell(*args: Any, **kwargs: Any) -> FakeSwarm:
        swarm = FakeSwarm(fake)
        swarm.nodes[swarm.node("intro-worker-2")]["Status"]["State"] = "down"
        return swarm

    monkeypatch.setattr(cluster, "manager_shell", shell)
    result = invoke("launch", str(path))
    assert result.exit_code == 0, result.output
    assert "workers: not all Ready: 1 of 2 workers Ready after 1 s." in result.stderr
    assert set(by_name(fake)) == {"intro-manager", "intro-worker-1", "intro-worker-2"}


def test_launch_whose_swarm_cannot_be_asked_keeps_everything_and_says_why(
    fake: FakeCloud,
    tmp_path: Path,
    hub_ok: None,
    monkeypatch: pytest.MonkeyPatch,
    ssh_refused: None,
) -> None:
    path = write_cluster_workshop(tmp_path)
    monkeypatch.setattr(cluster, "READY_POLL_SECONDS", 0)
    result = invoke("launch", str(path))
    assert result.exit_code == 0, result.output
    assert "intro-manager: https://203.0.113.10/  (hub: ok)" in result.stdout
    assert "workers: not all Ready: the swarm could not be asked" in result.stderr
    assert "Permission denied" in result.stderr
    assert fake.calls("DELETE", ".") == []
    assert set(by_name(fake)) == {"intro-manager", "intro-worker-1", "intro-worker-2"}


def test_launch_survives_the_clouds_api_failing_while_it_waits_for_workers(
    fake: FakeCloud, tmp_path: Path, hub_ok: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_cluster_workshop(tmp_path)
    monkeypatch.setattr(cluster, "READY_POLL_SECONDS", 0)

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise CloudError("compute API: 503 Service Unavailable")

    monkeypatch.setattr(cluster, "swarm_status", failing)
    result = invoke("launch", str(path))
    assert result.exit_code == 0, result.output
    assert "the swarm could not be asked (compute API: 503" in result.stderr
    assert set(by_name(fake)) == {"intro-manager", "intro-worker-1", "intro-worker-2"}


def test_the_group_opens_the_cluster_ports_to_its_own_members_only(
    fake: FakeCloud, tmp_path: Path, hub_ok: None
) -> None:
    path = write_cluster_workshop(tmp_path)
    launch(path)

    (group_id,) = fake.groups
    ingress = [r for r in fake.rules.values() if r["direction"] == "ingress"]
    public = sorted(
        (r["port_range_min"], r["remote_ip_prefix"]) for r in ingress if not r["remote_group_id"]
    )
    assert public == [(22, "192.0.2.0/24"), (80, "0.0.0.0/0"), (443, "0.0.0.0/0")]
    intra = [r for r in ingress if r["remote_group_id"]]
    assert sorted((r["port_range_min"], r["protocol"]) for r in intra) == sorted(CLUSTER_PORTS)
    for rule in intra:
        assert rule["remote_group_id"] == group_id
        assert rule["remote_ip_prefix"] is None
        assert rule["port_range_min"] == rule["port_range_max"]
        assert rule["ethertype"] == "IPv4"
    cluster_ports = {port for port, _ in CLUSTER_PORTS}
    for rule in ingress:
        if rule["port_range_min"] in cluster_ports:
            assert rule["remote_ip_prefix"] not in ("0.0.0.0/0", "::/0"), rule
            assert rule["remote_ip_prefix"] is None, rule

    # A second launch recognises every rule: none added, none removed, nothing created.
    fake.since = fake.mock.call_count
    again = launch(path)
    assert again.created == []
    assert fake.calls("POST", WRITES) == [] and fake.calls("DELETE", ".") == []


def test_a_relaunch_reuses_the_cluster_and_its_secret(
    fake: FakeCloud, tmp_path: Path, hub_ok: None
) -> None:
    path = write_cluster_workshop(tmp_path)
    first = launch(path, wait=True)
    assert [t.label for t in first.created] == [
        "key pair bakery-intro",
        "security group bakery-intro",
        "server intro-manager",
        "server intro-worker-1",
        "server intro-worker-2",
        "floating IP 203.0.113.10",
    ]
    assert json.loads(state_path(path).read_text()) == {"keypair": "bakery-intro"}
    secret = by_name(fake)["intro-manager"]["metadata"][CLUSTER_META_SECRET]
    fake.since = fake.mock.call_count

    again = launch(path, wait=True)

    assert again.created == [] and fake.calls("POST", WRITES) == []
    assert [(s.name, s.url, s.hub) for s in again.servers] == [
        ("intro-manager", "https://203.0.113.10/", "ok")
    ]
    assert [w.name for w in again.workers] == ["intro-worker-1", "intro-worker-2"]
    assert by_name(fake)["intro-manager"]["metadata"][CLUSTER_META_SECRET] == secret


def test_a_failed_worker_removes_what_the_run_made(fake: FakeCloud, tmp_path: Path) -> None:
    path = write_cluster_workshop(tmp_path)
    original = fake._create_server

    def create(*, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if body["server"]["name"] == "intro-worker-2":
            return 403, {"forbidden": {"code": 403, "message": QUOTA_MESSAGE}}
        return original(query=query, body=body)

    fake.routes = [(m, p, create if h == original else h) for m, p, h in fake.routes]

    with pytest.raises(QuotaError, match="create server intro-worker-2: quota exceeded"):
        launch(path)

    made = [p.json()["server"]["name"] for p in fake.calls("POST", SERVERS)]
    assert made == ["intro-manager", "intro-worker-1", "intro-worker-2"]
    assert fake.servers == fake.groups == fake.keypairs == fake.fips == {}


# --- refused combinations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cluster_config", "args", "message"),
    [
        (True, ["launch", "--count", "2"], "--count 2: workshop intro is a swarm cluster"),
        (True, ["launch", "--count", "1", "--dry-run"], "--count 1: workshop intro is a swarm"),
        (True, ["check", "--count", "2"], "--count 2: workshop intro is a swarm cluster"),
        (False, ["scale", "--workers", "2"], "scale: workshop intro is not a cluster"),
        (True, ["scale", "--workers", "0"], "--workers 0: a cluster keeps at least 1 worker"),
        (True, ["scale", "--workers", "-3"], "--workers -3: a cluster keeps at least 1 worker"),
        (True, ["scale", "--workers", "500"], "--workers 500: a cluster keeps at least 1 worker"),
        (True, ["launch", "--hub-timeout", "48h"], "--hub-timeout: '48h': at most 24 h"),
    ],
)
def test_bad_combinations_are_refused_before_anything_is_made(
    fake: FakeCloud, tmp_path: Path, cluster_config: bool, args: list[str], message: str
) -> None:
    path = write_cluster_workshop(tmp_path) if cluster_config else write_workshop(tmp_path)

    result = invoke(args[0], str(path), *args[1:])

    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert fake.calls("POST", WRITES) == [] and fake.calls("DELETE", ".") == []


def test_scale_without_a_manager_says_to_launch_first(fake: FakeCloud, tmp_path: Path) -> None:
    path = write_cluster_workshop(tmp_path)
    with pytest.raises(UsageError, match="no server intro-manager: `bakery launch"):
        scale_mod.scale(config_path=path, workers=3)


# --- scale ----------------------------------------------------------------------------------------


def test_scale_up_adds_workers_with_the_managers_secret_and_image(
    fake: FakeCloud, tmp_path: Path, hub_ok: None, swarm_shell: dict[str, Any]
) -> None:
    path = write_cluster_workshop(tmp_path)
    launch(path)
    manager = by_name(fake)["intro-manager"]
    fake.since = fake.mock.call_count
    said = Collector()

    plan = scale_mod.scale(config_path=path, workers=4, progress=said)

    assert (plan.add, plan.remove) == (["intro-worker-3", "intro-worker-4"], [])
    posts = fake.calls("POST", SERVERS)
    assert [p.json()["server"]["name"] for p in posts] == ["intro-worker-3", "intro-worker-4"]
    for post in posts:
        server = post.json()["server"]
        assert server["imageRef"] == manager["image"]["id"]
        assert server["metadata"][CLUSTER_META_SECRET] == manager["metadata"][CLUSTER_META_SECRET]
        assert server["metadata"][CLUSTER_META_MANAGER] == "10.0.0.5"
        assert server["security_groups"] == [{"name": "bakery-intro"}]
        assert server["key_name"] == "bakery-intro"
    assert fake.calls("POST", r"/floatingips$") == []
    assert "swarm" not in swarm_shell  # no ssh needed to add
    secret = manager["metadata"][CLUSTER_META_SECRET]
    assert not [m for m in said.messages if secret in m]
    assert any("set it to 4" in m for m in said.messages)


def test_scale_down_drains_the_highest_workers_before_deleting_them(
    fake: FakeCloud, tmp_path: Path, hub_ok: None, swarm_shell: dict[str, Any]
) -> None:
    path = write_cluster_workshop(tmp_path, workers=3)
    launch(path)
    swarm = swarm_shell["swarm"] = FakeSwarm(fake)
    swarm.tasks[swarm.node("intro-worker-3")] = ["ada", "training01"]
    swarm.tasks[swarm.node("intro-worker-2")] = ["training02"]
    swarm.tasks[swarm.node("intro-worker-1")] = ["training03"]
    going = {n: swarm.node(n) for n in ("intro-worker-3", "intro-worker-2")}
    ids = {n: by_name(fake)[n]["id"] for n in going}
    asked: list[scale_mod.ScalePlan] = []
    fake.since = fake.mock.call_count

    plan = scale_mod.scale(config_path=path, workers=1, confirm=lambda p: asked.append(p) or True)

    assert plan.remove == ["intro-worker-3", "intro-worker-2"] and plan.add == []
    assert asked == [plan] and plan.warning and "files stay" in plan.warning
    assert swarm_shell["host"] == "203.0.113.10"  # the manager, through its floating IP
    docker = [argv for _, argv in swarm.commands if argv[0] == "docker"]
    drains = [argv[-1] for argv in docker if argv[2] == "update"]
    removals = [argv[-1] for argv in docker if argv[2] == "rm"]
    assert drains == [going["intro-worker-3"], going["intro-worker-2"]]
    assert removals == drains
    # Every drain comes before the first removal; each removal after its node's tasks stopped.
    order = [(argv[2], argv[3] if argv[2] == "ps" else argv[-1]) for argv in docker]
    assert max(order.index(("update", d)) for d in drains) < min(
        order.index(("rm", r)) for r in removals
    )
    for node_id in removals:
        polls = [i for i, (what, n) in enumerate(order) if what == "ps" and n == node_id]
        assert len(polls) == 3 and max(polls) < order.index(("rm", node_id))
    # The servers are deleted after their nodes left the swarm (FakeSwarm checks the other way).
    last_rm = max(count for count, argv in swarm.commands if argv[:3] == ["docker", "node", "rm"])
    deletes = fake.calls("DELETE", r"/servers/[^/]+$")
    assert sorted(d.url.rsplit("/", 1)[1] for d in deletes) == sorted(ids.values())
    assert all(position(fake, d) >= last_rm for d in deletes)
    assert sorted(by_name(fake)) == ["intro-manager", "intro-worker-1"]
    assert swarm.tasks[swarm.node("intro-worker-1")] == ["training03"]  # untouched


def test_scale_down_asks_first_and_a_no_removes_nothing(
    fake: FakeCloud,
    tmp_path: Path,
    hub_ok: None,
    swarm_shell: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_cluster_workshop(tmp_path)
    launch(path)
    swarm = swarm_shell["swarm"] = FakeSwarm(fake)
    fake.since = fake.mock.call_count
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)

    result = invoke("scale", str(path), "--workers", "1", stdin="n\n")

    assert result.exit_code == 1, result.output
    assert "drain and remove intro-worker-2" in result.output
    assert "files stay" in result.output
    assert "not confirmed; nothing removed" in result.stderr
    assert swarm.commands == [] and fake.calls("DELETE", ".") == []

    # Not a terminal and no --yes: refused the same way.
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    result = invoke("scale", str(path), "--workers", "1")
    assert result.exit_code == 1 and "pass --yes" in result.stderr
    assert swarm.commands == [] and fake.calls("DELETE", ".") == []

    result = invoke("scale", str(path), "--workers", "1", "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(by_name(fake)) == ["intro-manager", "intro-worker-1"]


def test_scale_dry_run_plans_and_changes_nothing(
    fake: FakeCloud, tmp_path: Path, hub_ok: None, swarm_shell: dict[str, Any]
) -> None:
    path = write_cluster_workshop(tmp_path)
    launch(path)
    swarm = swarm_shell["swarm"] = FakeSwarm(fake)
    fake.since = fake.mock.call_count

    up = invoke("scale", str(path), "--workers", "3", "--dry-run")
    down = invoke("scale", str(path), "--workers", "1", "--dry-run")
    same = invoke("scale", str(path), "--workers", "2", "--dry-run")

    assert up.exit_code == down.exit_code == same.exit_code == 0, up.output + down.output
    assert "  add intro-worker-3 (m1.medium)" in up.stdout
    assert "  drain and remove intro-worker-2" in down.stdout
    assert "nothing to do: 2 workers already" in same.stdout
    assert swarm.commands == []
    assert fake.calls("POST", WRITES) == [] and fake.calls("DELETE", ".") == []


def test_a_drain_that_does_not_finish_deletes_nothing(
    fake: FakeCloud, tmp_path: Path, hub_ok: None, swarm_shell: dict[str, Any]
) -> None:
    path = write_cluster_workshop(tmp_path)
    launch(path)
    swarm = swarm_shell["swarm"] = FakeSwarm(fake, polls=10**6)
    swarm.tasks[swarm.node("intro-worker-2")] = ["ada"]
    clock = iter(range(0, 10**6, 100))
    real = time.monotonic
    fake.since = fake.mock.call_count
    try:
        time.monotonic = lambda: float(next(clock))  # type: ignore[assignment]
        with pytest.raises(BakeryError, match=r"still run .* nothing was deleted"):
            scale_mod.scale(config_path=path, workers=1)
    finally:
        time.monotonic = real  # type: ignore[assignment]
    assert fake.calls("DELETE", ".") == []
    assert not [argv for _, argv in swarm.commands if argv[:3] == ["docker", "node", "rm"]]


# --- status ---------------------------------------------------------------------------------------


def test_status_shows_the_members_the_nodes_and_the_trainees_per_node(
    fake: FakeCloud, tmp_path: Path, hub_ok: None, swarm_shell: dict[str, Any]
) -> None:
    path = write_cluster_workshop(tmp_path)
    launch(path)
    swarm = swarm_shell["swarm"] = FakeSwarm(fake)
    swarm.tasks[swarm.node("intro-worker-1")] = ["ada", "training01"]
    swarm.nodes[swarm.node("intro-worker-2")]["Status"]["State"] = "down"

    result = invoke("status", str(path))

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(x.startswith("intro-manager  ACTIVE  203.0.113.10  hub: ok") for x in lines)
    assert any(x.startswith("intro-worker-1  ACTIVE  10.0.0.6  hub: none") for x in lines)
    assert "swarm: 3 nodes (the manager's load: 0.52 0.40 0.31)" in lines
    assert (
        "  intro-worker-1 (10.0.0.6)  worker  Ready  active  2 of 7 servers: ada, training01"
        in (lines)
    )
    assert any(x.startswith("  intro-worker-2 (10.0.0.7)  worker  Down  active  0") for x in lines)
    assert "  intro-manager (10.0.0.5)  manager  Ready  active  the hub (no trainees' servers)" in (
        lines
    )
    assert "  1 of 2 workers not Ready" in lines

    doc = json.loads(invoke("status", str(path), "--json").stdout)
    assert [s["name"] for s in doc["servers"]] == [
        "intro-manager",
        "intro-worker-1",
        "intro-worker-2",
    ]
    nodes = {n["server"]: n for n in doc["swarm"]["nodes"]}
    assert nodes["intro-worker-1"]["trainees"] == ["ada", "training01"]
    assert nodes["intro-worker-2"]["state"] == "down"
    assert doc["swarm"]["error"] is None


def test_status_without_ssh_shows_the_clouds_view_and_says_why(
    fake: FakeCloud, tmp_path: Path, hub_ok: None, ssh_refused: None
) -> None:
    path = write_cluster_workshop(tmp_path)
    launch(path)

    result = invoke("status", str(path))

    assert result.exit_code == 0, result.output
    assert "intro-worker-2  ACTIVE" in result.stdout
    assert "swarm: not asked (ssh to the manager: intro-manager: ssh" in result.stdout
    assert "Permission denied" in result.stdout
    assert "the cloud's view only" in result.stdout


def test_the_program_run_on_the_manager_reads_docker(tmp_path: Path) -> None:
    """SWARM_PROGRAM against a `docker` that answers as a two-node swarm does."""
    nodes = [
        {"ID": "m1", "Status": {"State": "ready", "Addr": "0.0.0.0"}},
        {"ID": "w1", "Status": {"State": "ready", "Addr": "10.0.0.6"}},
    ]
    tasks = {
        "m1": [],
        "w1": [{"Name": "jupyter-ada.1", "CurrentState": "Running 2 minutes ago"}],
    }
    docker = tmp_path / "bin" / "docker"
    docker.parent.mkdir()
    docker.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"nodes, tasks = {nodes!r}, {tasks!r}\n"
        "a = sys.argv[1:]\n"
        "if a[:2] == ['node', 'ls']:\n"
        "    print('\\n'.join(json.dumps({'ID': n['ID']}) for n in nodes))\n"
        "elif a[:2] == ['node', 'inspect']:\n"
        "    assert a[2:4] == ['--format', '{{json .}}'], a\n"
        "    print('\\n'.join(json.dumps(n) for n in nodes if n['ID'] in a[4:]))\n"
        "elif a[:2] == ['node', 'ps']:\n"
        "    assert 'desired-state=running' in a, a\n"
        "    print('\\n'.join(json.dumps(t) for t in tasks[a[2]]))\n"
        "else: sys.exit('unexpected: ' + ' '.join(a))\n"
    )
    docker.chmod(0o755)
    env = {**os.environ, "PATH": f"{docker.parent}{os.pathsep}{os.environ['PATH']}"}

    def shell(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    found, load = cluster.swarm_state(shell)

    assert [(n.id, n.address, n.state, n.trainees) for n in found] == [
        ("m1", "0.0.0.0", "ready", []),
        ("w1", "10.0.0.6", "ready", ["ada"]),
    ]
    assert len(load) == 3


# --- dry run and destroy --------------------------------------------------------------------------


def test_launch_dry_run_shows_the_cluster_plan_and_its_quota(
    fake: FakeCloud, tmp_path: Path
) -> None:
    path = write_cluster_workshop(tmp_path, workers=3)

    result = invoke("launch", str(path), "--dry-run")

    assert result.exit_code == 0, result.output
    assert fake.calls("POST", WRITES) == [] and fake.calls("DELETE", ".") == []
    out = result.stdout
    for line in [
        "flavor: m1.large (4 vCPUs, 8192 MiB, 80 GB): openstack.flavor",
        "cluster: swarm, one hub on intro-manager, the trainees' servers on 3 workers",
        "worker flavor: m1.medium (2 vCPUs, 4096 MiB, 40 GB): auto: the smallest that holds a "
        "worker's share, 2 trainees' and 1 admins' servers",
        "  rule tcp 22 from 192.0.2.0/24 (IPv4): will add",
        "  rule tcp 2377 from the group's own members (IPv4): will add",
        "  rule udp 4789 from the group's own members (IPv4): will add",
        "  rule tcp 2049 from the group's own members (IPv4): will add",
        "  intro-manager: will be created; swarm manager (the hub), 6 accounts; user-data ",
        "  intro-worker-3: will be created; swarm worker (trainees' servers, no accounts); ",
        "  instances: needs 4, 8 free of 10: fits",
        "  vCPUs: needs 10, 16 free of 20: fits",
        "  RAM MiB: needs 20480, 43008 free of 51200: fits",
        "  floating IPs: needs 1, 1 free of 2: fits",
        f"  security group rules: needs {3 + len(CLUSTER_PORTS)}, 96 free of 100: fits",
    ]:
        assert line in out, line
    assert "0.0.0.0/0" not in "".join(x for x in out.splitlines() if "members" in x)


def test_destroy_removes_manager_workers_address_group_and_key(
    fake: FakeCloud, tmp_path: Path, hub_ok: None
) -> None:
    path = write_cluster_workshop(tmp_path)
    launch(path)

    listed = invoke("destroy", str(path), "--dry-run")
    assert listed.stdout.splitlines()[:6] == [
        "server intro-manager",
        "server intro-worker-1",
        "server intro-worker-2",
        "floating IP 203.0.113.10",
        "security group bakery-intro",
        "key pair bakery-intro",
    ]
    result = invoke("destroy", str(path), "--yes")

    assert result.exit_code == 0, result.output
    assert fake.servers == fake.fips == fake.groups == fake.keypairs == {}
    assert not state_path(path).exists()
    assert len(fake.calls("DELETE", r"/servers/[^/]+$")) == 3


def test_destroy_of_one_cluster_spares_a_workshop_whose_name_it_prefixes(
    fake: FakeCloud, tmp_path: Path, hub_ok: None
) -> None:
    path = write_cluster_workshop(tmp_path)
    launch(path)
    for name in ["intro-manager-x", "intro-advanced-worker-1", "intro-worker-1a"]:
        fake._create_server(
            query={},
            body={"server": {"name": name, "flavorRef": "4", "metadata": {}, "networks": []}},
        )
    other = tmp_path / "other"
    other.mkdir()
    doc = yaml.safe_load(path.read_text())
    doc["name"] = "intro-advanced"
    (other / "workshop.yaml").write_text(yaml.safe_dump(doc))

    assert invoke("destroy", str(path), "--yes").exit_code == 0

    assert sorted(by_name(fake)) == [
        "intro-advanced-worker-1",
        "intro-manager-x",
        "intro-worker-1a",
    ]


def test_size_flavors_names_the_managers_and_the_workers_flavor(
    fake: FakeCloud, tmp_path: Path
) -> None:
    path = write_cluster_workshop(tmp_path, workers=3)

    result = invoke("size", str(path), "--flavors")

    assert result.exit_code == 0, result.output
    assert fake.calls("POST", WRITES) == []
    out = result.stdout.splitlines()
    assert out[0].startswith("swarm cluster: ")
    assert any(line.startswith("the manager's smallest fitting flavor: ") for line in out), out
    assert (
        "worker flavor: m1.medium (2 vCPUs, 4096 MiB, 40 GB): auto: the smallest that holds a "
        "worker's share, 2 trainees' and 1 admins' servers"
    ) in result.stdout


# --- `bakery update`'s servers: the manager by its floating IP, the workers through it ----------


def test_update_reaches_the_workers_through_the_manager(fake: FakeCloud, tmp_path: Path) -> None:
    from bakery.config.workshop import load_config
    from bakery.day.targets import every_server
    from bakery.ssh import Ssh

    path = write_cluster_workshop(tmp_path, workers=2)
    launch(path)
    found = every_server(load_config(path))
    names = [t.name for t in found.reachable]
    assert names == ["intro-manager", "intro-worker-1", "intro-worker-2"]
    manager, worker = found.reachable[0], found.reachable[1]
    fip = by_name(fake)["intro-manager"]
    assert manager.via is None and manager.host != fip["addresses"]["private"][0]["addr"]
    assert worker.via == manager
    assert worker.host == by_name(fake)["intro-worker-1"]["addresses"]["private"][0]["addr"]
    argv = Ssh("debian", tmp_path / "id", tmp_path / "kh").argv(worker, ["true"])
    proxy = next(a for a in argv if a.startswith("ProxyCommand="))
    # The jump is ssh to the manager's floating IP with the same key and known_hosts.
    assert f"-W %h:%p debian@{manager.host}" in proxy
    assert f"UserKnownHostsFile={tmp_path}/kh" in proxy
    assert argv[-2] == f"debian@{worker.host}"
