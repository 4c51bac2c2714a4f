"""The cluster's spawner (cloudinit/bakery_swarmspawner.py) against a fake Docker Engine API.

A real docker-py client talks HTTP to a fake daemon on loopback, which records what a swarm manager
would receive: the service spec (user, working directory, mounts, resources, placement). The fake
daemon refuses unknown create-service fields as dockerd does, so the pitfall the subclass exists
for (SystemUserSpawner's ``user``/``working_dir`` create kwargs, dockerspawner #497/#276) is shown
failing without it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import tomllib
from helpers import send_json

from bakery import versions

dockerspawner = pytest.importorskip("dockerspawner")
objects = pytest.importorskip("jupyterhub.objects")
docker_errors = pytest.importorskip("docker.errors")

ROOT = Path(__file__).resolve().parents[1]
API = "1.41"  # Debian 12's docker.io (20.10)


def _load_spawner_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "bakery_swarmspawner", ROOT / "cloudinit" / "bakery_swarmspawner.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bakery_swarmspawner"] = module
    spec.loader.exec_module(module)
    return module


swarm = _load_spawner_module()

# What POST /services/create accepts at the top level (Docker Engine API 1.41, ServiceSpec).
SERVICE_SPEC_FIELDS = {"Name", "Labels", "TaskTemplate", "Mode", "UpdateConfig",
                       "RollbackConfig", "Networks", "EndpointSpec"}  # fmt: skip


class FakeDocker:
    """The part of a swarm manager's Engine API that a spawner uses, in memory."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.services: dict[str, dict[str, Any]] = {}
        self.removed: list[str] = []
        self.task_state = "running"
        self.has_image = True  # a manager that runs no servers has none (user-image.sh)

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        path = re.sub(rf"^/v{re.escape(API)}", "", path)
        if method == "GET" and path == "/version":
            return 200, {"ApiVersion": API, "Version": "20.10.24"}
        if method == "GET" and path.startswith("/images/") and path.endswith("/json"):
            if not self.has_image:
                return 404, {"message": f"No such image: {path.split('/')[2]}"}
            return 200, {"Config": {"Cmd": ["start-notebook.py"]}}
        if method == "POST" and path == "/services/create":
            unknown = set(body) - SERVICE_SPEC_FIELDS
            if unknown:  # dockerd: json: unknown field
                return 400, {"message": f"json: unknown field {sorted(unknown)[0]!r}"}
            self.created.append(body)
            ports = [{"TargetPort": 8888, "PublishedPort": 30001}]
            service = {
                "ID": f"svc{len(self.created):09d}",
                "Spec": body,
                "Endpoint": {"Ports": ports},
            }
            self.services[body["Name"]] = service
            return 201, {"ID": service["ID"]}
        if method == "GET" and path.startswith("/services/"):
            name = path.split("/")[2]
            for service in self.services.values():
                if name in (service["ID"], service["Spec"]["Name"]):
                    return 200, service
            return 404, {"message": f"service {name} not found"}
        if method == "DELETE" and path.startswith("/services/"):
            ident = path.split("/")[2]
            self.removed.append(ident)
            self.services = {k: v for k, v in self.services.items() if v["ID"] != ident}
            return 200, {}
        if method == "GET" and path == "/tasks":
            filters = json.loads(query.get("filters", ["{}"])[0])
            names = filters.get("service", [])
            names = list(names) if isinstance(names, (list, dict)) else [names]
            if not any(n in self.services for n in names):
                return 200, []
            return 200, [{"ID": "task1", "NodeID": "worker1", "Status": {"State": self.task_state}}]
        return 404, {"message": f"fake docker: no {method} {path}"}


@pytest.fixture
def fake_docker() -> Iterator[tuple[FakeDocker, str]]:
    fake = FakeDocker()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, method: str) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, payload = fake.handle(method, url.path, parse_qs(url.query), body)
            send_json(self, status, payload)

        def do_GET(self) -> None:
            self._reply("GET")

        def do_POST(self) -> None:
            self._reply("POST")

        def do_DELETE(self) -> None:
            self._reply("DELETE")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"tcp://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class FakeUser:
    """What a spawner reads of JupyterHub's User."""

    def __init__(self, name: str, *, admin: bool = False) -> None:
        self.name = self.escaped_name = self.json_escaped_name = name
        self.admin = admin
        self.id = 7
        self.url = self.base_url = f"/user/{name}/"
        self.settings: dict[str, Any] = {}
        self.spawners: dict[str, Any] = {}
        self.server = None


def make_spawner(cls: type, base_url: str, name: str = "ana", **config: Any) -> Any:
    cls._client = None  # one client per class: a new fake daemon per test
    settings: dict[str, Any] = dict(
        user=FakeUser(name), hub=objects.Hub(ip="10.0.0.5", port=8081, base_url="/hub/"),
        api_token="not-a-secret", oauth_client_id=f"jupyterhub-user-{name}",
        image="bakery/notebook:1", mem_limit="512M", cpu_limit=1.0, run_as_root=True,
        host_ip="127.0.0.1", use_internal_ip=False, user_id=1001, group_id=1001,
        client_kwargs={"base_url": base_url, "version": API},
    )  # fmt: skip
    settings.update(config)
    spawner = cls(**settings)
    spawner.server = objects.Server(base_url=f"/user/{name}/")
    return spawner


def test_service_spec_runs_the_trainee_in_their_home_under_limits_on_a_worker(
    fake_docker: tuple[FakeDocker, str],
) -> None:
    fake, url = fake_docker
    spawner = make_spawner(
        swarm.BakerySwarmSpawner,
        url,
        volumes={"/srv/shared": {"bind": "/srv/shared", "mode": "ro"}},
    )
    assert asyncio.run(spawner.start()) == ("127.0.0.1", 30001)
    [spec] = fake.created
    assert spec["Name"] == "jupyter-ana"
    container = spec["TaskTemplate"]["ContainerSpec"]
    # Root in the start script, which becomes NB_UID:NB_GID in HOME (the docker-stacks contract).
    assert container["User"] == "0"
    # Not the home: root may not enter a root-squashed NFS home (notebook_dir instead).
    assert container["Dir"] == "/"
    env = dict(e.split("=", 1) for e in container["Env"])
    assert (env["NB_USER"], env["NB_UID"], env["NB_GID"], env["HOME"]) == (
        "ana", "1001", "1001", "/home/ana",
    )  # fmt: skip
    assert env["JUPYTERHUB_API_URL"] == "http://10.0.0.5:8081/hub/api"
    assert container["Mounts"] == [
        {"Target": "/home/ana", "Source": "/home/ana", "Type": "bind", "ReadOnly": False},
        {"Target": "/srv/shared", "Source": "/srv/shared", "Type": "bind", "ReadOnly": True},
    ]
    limits = spec["TaskTemplate"]["Resources"]["Limits"]
    assert limits == {"NanoCPUs": 10**9, "MemoryBytes": 512 * 2**20, "Pids": 1024}
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.role == worker"]


def test_without_the_subclass_both_pitfalls_stop_the_spawn(
    fake_docker: tuple[FakeDocker, str],
) -> None:
    """The pitfalls themselves: SystemUserSpawner + SwarmSpawner as they come."""

    class Naive(dockerspawner.SystemUserSpawner, dockerspawner.SwarmSpawner):  # type: ignore[misc]
        pass

    class MountsFixed(Naive):
        mounts = swarm.BakerySwarmSpawner.mounts

    fake, url = fake_docker
    # SystemUserSpawner's home volume has no "mode", which SwarmSpawner's mounts read.
    with pytest.raises(KeyError, match="mode"):
        asyncio.run(make_spawner(Naive, url).start())
    # Its user/working_dir create kwargs are no arguments of a service (dockerspawner #497).
    with pytest.raises(TypeError, match=r"unexpected keyword argument '(user|working_dir)'"):
        asyncio.run(make_spawner(MountsFixed, url).start())
    assert not fake.created


def test_second_start_same_spec_and_manager_placement_when_allowed(
    fake_docker: tuple[FakeDocker, str],
) -> None:
    fake, url = fake_docker
    spawner = make_spawner(
        swarm.BakerySwarmSpawner, url, workers_only=False, pids_limit=0, home_workdir=True
    )
    asyncio.run(spawner.start())
    asyncio.run(spawner.stop())
    assert fake.removed == ["svc000000001"]
    spawner.api_token = "not-a-secret"  # the hub issues a token at every start; stop clears it
    asyncio.run(spawner.start())
    first, second = fake.created
    assert first == second
    assert first["TaskTemplate"]["ContainerSpec"]["User"] == "0"
    assert first["TaskTemplate"]["ContainerSpec"]["Dir"] == "/home/ana"
    for spec in (first, second):
        assert "Constraints" not in spec["TaskTemplate"].get("Placement", {})
        assert "Pids" not in spec["TaskTemplate"]["Resources"]["Limits"]


def test_worker_constraint_is_not_repeated_across_starts(
    fake_docker: tuple[FakeDocker, str],
) -> None:
    fake, url = fake_docker
    spawner = make_spawner(
        swarm.BakerySwarmSpawner, url, extra_placement_spec={"constraints": ["node.labels.x == 1"]}
    )
    for _ in range(2):
        asyncio.run(spawner.start())
        asyncio.run(spawner.stop())
    for spec in fake.created:
        assert spec["TaskTemplate"]["Placement"]["Constraints"] == [
            "node.labels.x == 1",
            "node.role == worker",
        ]


def test_a_manager_without_the_image_spawns_with_the_command_it_was_given(
    fake_docker: tuple[FakeDocker, str],
) -> None:
    """The cluster's manager loads no image (it runs no server): dockerspawner asks the manager's
    own daemon for the image's command unless ``cmd`` is set, which the hub's config does from
    user-image.sh's file. Without it every spawn fails (seen on the test cloud)."""
    fake, url = fake_docker
    fake.has_image = False
    with pytest.raises(docker_errors.ImageNotFound):
        asyncio.run(make_spawner(swarm.BakerySwarmSpawner, url).start())
    assert not fake.created
    spawner = make_spawner(swarm.BakerySwarmSpawner, url, cmd=["start-notebook.py"])
    assert asyncio.run(spawner.start()) == ("127.0.0.1", 30001)
    # The same service as on a manager that has the image and reads the command from it.
    fake.has_image = True
    asyncio.run(spawner.stop())
    asyncio.run(make_spawner(swarm.BakerySwarmSpawner, url).start())
    given, inspected = fake.created
    assert given["TaskTemplate"]["ContainerSpec"]["Args"][0] == "start-notebook.py"
    assert given == inspected


def test_the_test_environment_pins_what_the_vm_gets() -> None:
    """The spawner is tested against the dockerspawner and JupyterHub the manager installs."""
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    test_deps = pins["optional-dependencies"]["test"]
    assert f"dockerspawner=={versions.DOCKERSPAWNER}" in test_deps
    assert f"jupyterhub=={versions.JUPYTERHUB}" in test_deps
    assert dockerspawner.__version__ == versions.DOCKERSPAWNER
