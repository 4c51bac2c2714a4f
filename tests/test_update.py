"""`bakery update`: the plan's three groups, the live apply, refusals, dry runs and reruns.

The server side (cloudinit/bakery-update.py.j2) runs for real here, over a folder standing in
for a server's root: its boot files as `launch` wrote them, its image's bake record, a stand-in
hub API (admins) and stand-in ``systemctl``/``nginx`` that log what they were asked. The e2e
tier proves it on a VM (tests/e2e/test_try.py's update test: a kernel's variable through it).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import send_json
from typer.testing import CliRunner

from bakery.cli.main import app
from bakery.config.workshop import load_config
from bakery.day import drift
from bakery.day import update as upd
from bakery.errors import BakeryError
from bakery.layout import (
    API_TOKEN_FILE,
    EXPIRY_FILE,
    IMAGE_DIR,
    RECORD_PATH,
    TLS_DIR,
    WORKSHOP_REQUIREMENTS,
)
from bakery.ssh import Target
from bakery.topology import topology
from bakery.vm import image
from bakery.vm.context import context
from bakery.vm.files import tls_files
from bakery.workshop.accounts import credentials_path, ensure_credentials, sheet_order

# ends far ahead: a workshop whose end has passed refuses to launch, and the tests run any day.
BASE = """\
name: upd
os: debian-12
users: {count: 2, admins: [teacher]}
spawner: {kind: systemd, mem_limit: 1G, idle_cull_minutes: 60}
ends: 2099-12-07 18:00 Europe/Berlin
"""


class Hub:
    """The stand-in hub's API: its users (admin or not) and what it was asked."""

    def __init__(self) -> None:
        self.admins = {"teacher"}
        self.names = {"teacher", "training01", "training02"}
        self.asked: list[str] = []


@pytest.fixture
def hub() -> Iterator[tuple[Hub, str]]:
    state = Hub()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.asked.append(f"GET {self.path}")
            if self.path.startswith("/hub/api/users?"):
                users = [
                    {"name": n, "admin": n in state.admins, "servers": {}}
                    for n in sorted(state.names)
                ]
                send_json(self, 200, users if "offset=0" in self.path else [])
                return
            send_json(self, 200, {"version": "5"})

        def do_PATCH(self) -> None:
            state.asked.append(f"PATCH {self.path}")
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            name = self.path.rsplit("/", 1)[1]
            if body.get("admin") is False:
                state.admins.discard(name)
            send_json(self, 200, {"name": name})

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    server.shutdown()


DOCKER_STUB = """#!{python}
import os, sys
args, images = sys.argv[1:], {images!r}
have = open(images).read().split() if os.path.exists(images) else []
if args[:2] == ["image", "inspect"]:
    sys.exit(0 if args[-1] in have else 1)
if args[:1] == ["ps"]:
    sys.exit(0)
if args[:2] == ["service", "ls"]:  # a swarm manager's trainee services, else not a manager
    if args[-2:] != ["--format", "{{{{.Name}}}}"]:  # a service has no .Names
        sys.exit("template parsing error: can't evaluate field Names")
    if not os.path.exists(images + ".services"):
        sys.exit("Error response from daemon: This node is not a swarm manager.")
    print(open(images + ".services").read(), end="")
    sys.exit(0)
with open({log!r}, "a") as log:
    log.write("docker " + " ".join(args) + "\\n")
if args[:1] == ["build"]:
    if os.path.exists(images + ".fail"):
        sys.exit("E: Unable to locate package r-cran-jsonlite")
    with open(images, "a") as fh:
        fh.write(args[args.index("--tag") + 1] + "\\n")
"""


class Server:
    """A folder standing in for one server's root, reached through a stand-in ssh."""

    def __init__(self, root: Path, api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        self.root = root
        self.log = tmp_path / "commands.log"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        for tool in ("systemctl", "nginx", "certbot"):
            script = bin_dir / tool
            script.write_text(f'#!/bin/sh\necho "{tool} $*" >> {self.log}\n')
            script.chmod(0o755)
        # docker: the images it holds in a file; a build adds its tag (or fails, on request).
        self.images = tmp_path / "docker-images"
        docker = bin_dir / "docker"
        docker.write_text(
            DOCKER_STUB.format(python=sys.executable, images=str(self.images), log=str(self.log))
        )
        docker.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
        token = root / API_TOKEN_FILE.lstrip("/")
        token.parent.mkdir(parents=True, exist_ok=True)
        token.write_text("t0ken\n")
        program = upd.remote_program(
            bakery_version="t", root=str(root), hub_api=api, python=sys.executable
        )
        self.program = program
        self.calls: list[dict[str, Any]] = []
        self.login = "debian"
        self.users_added: list[list[str]] = []
        monkeypatch.setattr(upd, "call", self.call)
        monkeypatch.setattr(upd, "run_remote", self.run_remote)

    def call(self, ssh: Any, target: Target, request: dict[str, Any], timeout: float = 0) -> Any:
        if ssh is not None and ssh.user != self.login:  # only its image's login user gets in
            raise BakeryError(f"{target.name}: ssh {ssh.user}@...: Permission denied (publickey).")
        self.calls.append(request)
        done = subprocess.run(
            [sys.executable, "-c", self.program],
            input=json.dumps(request).encode(), capture_output=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()
        return json.loads(done.stdout)

    def run_remote(self, ssh: Any, target: Target, request: dict[str, Any]) -> Any:
        names = [a["name"] for a in request["accounts"]]
        self.users_added.append(names)
        passwd = self.root / "etc/passwd"
        passwd.write_text(
            passwd.read_text() + "".join(f"{n}:x:1001:1001::/home/{n}:/bin/bash\n" for n in names)
        )
        return {n: "account created; added to the hub" for n in names}

    def launch(self, config: Path) -> None:
        """The server as `launch` left it: its boot files and its image's bake record."""
        cfg = load_config(config)
        self.login = cfg.login_user
        ensure_credentials(cfg, credentials_path(config))
        machine = topology(cfg, sheet_order(credentials_path(config)), trial=True).hubs[0]
        for f in drift.expected_files(cfg, machine):
            self.put(f.path, f.content)
        self.put(RECORD_PATH, image.record_json(image.record(cfg)))
        for f in tls_files(cfg, context(cfg)):  # the bake's
            self.put(f.path, f.content)
        self.certificate(cfg.tls.domain or machine.name)
        self.put("/var/lib/bakery-test/installed", " ".join(drift.bake_packages(cfg)))
        self.put(
            "/etc/passwd",
            "".join(f"{n}:x:1000:1000::/home/{n}:/bin/bash\n" for n in machine.accounts),
        )

    def certificate(self, name: str) -> None:
        """nginx's certificate, for ``name`` (tls.sh's self-signed one, or certbot's)."""
        tls = self.root / TLS_DIR.lstrip("/")
        tls.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "1", "-subj", f"/CN={name}",
             "-addext", f"subjectAltName=DNS:{name}",
             "-keyout", tls / "key.pem", "-out", tls / "cert.pem"],
            check=True, capture_output=True,
        )  # fmt: skip

    def names(self) -> str:
        cert = self.root / TLS_DIR.lstrip("/") / "cert.pem"
        ask = ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", cert]
        return subprocess.run(ask, check=True, capture_output=True, text=True).stdout

    def put(self, path: str, text: str) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def read(self, path: str) -> str:
        return (self.root / path.lstrip("/")).read_text()

    def commands(self) -> list[str]:
        """What changed something (reading the running servers' units changes nothing)."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [line for line in lines if "list-units" not in line]


@pytest.fixture
def server(hub: tuple[Hub, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    return Server(tmp_path / "root", hub[1], tmp_path, monkeypatch)


@pytest.fixture
def config(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = tmp_path / "workshop.yaml"
        path.write_text(text)
        path.chmod(0o600)
        return path

    return write


def run_update(config: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["update", str(config), "--host", "127.0.0.1:2222", *args])


def test_a_server_as_launched_matches_its_file(
    server: Server, config: Callable[[str], Path]
) -> None:
    path = config(BASE)
    server.launch(path)
    result = run_update(path)
    assert result.exit_code == 0, result.output
    assert "127.0.0.1:2222: matches the workshop file; nothing to do" in result.output
    assert server.commands() == []


def test_live_changes_are_planned_applied_and_a_rerun_changes_nothing(
    server: Server, hub: tuple[Hub, str], config: Callable[[str], Path]
) -> None:
    path = config(BASE)
    server.launch(path)
    changed = BASE.replace("18:00", "18:30").replace("[teacher]", "[teacher, ta]")
    changed = changed.replace("mem_limit: 1G", "mem_limit: 2G")
    path = config(changed)
    before = server.read(EXPIRY_FILE)

    dry = run_update(path, "--dry-run")
    assert dry.exit_code == 0, dry.output
    out = dry.output
    assert "applied live (trainees' servers and kernels keep running):" in out
    assert "the workshop's end (ends, grace) and its timer: changed /etc/bakery/expiry.json" in out
    assert "accounts made: ta (admin)" in out
    assert "c.SystemdSpawner.mem_limit = '2G'" in out  # the hub config's changed lines
    assert "-c.SystemdSpawner.mem_limit = '1G'" in out
    assert "dry run: nothing was changed" in out
    assert server.read(EXPIRY_FILE) == before and server.commands() == []
    assert server.users_added == []

    done = run_update(path)
    assert done.exit_code == 0, done.output
    assert server.users_added == [["ta"]]  # before the hub restarts with ta among its users
    assert "2099-12-07 18:30 +0100 (17:30 UTC)" in server.read(EXPIRY_FILE)
    assert "'ta'" in server.read("/etc/jupyterhub/jupyterhub_config.py")
    steps = server.commands()
    assert steps[0] == "systemctl enable --now bakery-expiry.timer"
    assert steps[-1] == "systemctl restart jupyterhub"  # last: it reads the others' files
    applied = json.loads(server.read("/etc/bakery/applied.json"))
    assert applied["pending"] == [] and applied["config_sha256"] == drift.config_digest(
        load_config(path)
    )

    again = run_update(path)
    assert again.exit_code == 0, again.output
    assert "matches the workshop file; nothing to do" in again.output
    assert server.commands() == steps  # nothing ran the second time


def test_a_removed_admin_loses_the_hubs_admin_rights(
    server: Server, hub: tuple[Hub, str], config: Callable[[str], Path]
) -> None:
    """JupyterHub never takes admin rights back when a name leaves admin_users: update does."""
    path = config(BASE.replace("[teacher]", "[teacher, ta]"))
    server.launch(path)
    hub[0].admins.add("ta")
    hub[0].names.add("ta")
    path = config(BASE)
    result = run_update(path)
    assert result.exit_code == 0, result.output
    assert "admin rights taken back: ta (account and home stay)" in result.output
    assert "PATCH /hub/api/users/ta" in hub[0].asked
    assert hub[0].admins == {"teacher"}


def test_ends_removed_stops_the_timer_and_removes_the_times(
    server: Server, config: Callable[[str], Path]
) -> None:
    path = config(BASE)
    server.launch(path)
    path = config(BASE.replace("ends: 2099-12-07 18:00 Europe/Berlin\n", ""))
    result = run_update(path)
    assert result.exit_code == 0, result.output
    assert f"removed {EXPIRY_FILE}" in result.output
    assert not (server.root / EXPIRY_FILE.lstrip("/")).exists()
    assert "systemctl disable --now bakery-expiry.timer" in server.commands()
    assert "systemctl daemon-reload" in server.commands()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("os: debian-12", "os: ubuntu-24.04"), "os: the server has debian-12"),
        (("kind: systemd", "kind: docker"), "spawner.kind: the server has systemd"),
        (
            ("spawner: {kind: systemd", "cluster: {engine: swarm}\nspawner: {kind: docker"),
            "cluster.engine: the server",
        ),
        (("name: upd\n", "name: upd\nhub: {install: conda}\n"), "hub.install"),
        (("name: upd\n", "name: upd\npackages: [htop]\n"), "packages/kernels: htop not installed"),
        (("name: upd\n", "name: upd\nkernels: [r]\n"), "r-base-core, r-cran-irkernel not"),
    ],
)
def test_what_the_image_holds_is_refused_with_the_field_and_the_way(
    server: Server, config: Callable[[str], Path], change: tuple[str, str], field: str
) -> None:
    path = config(BASE)
    server.launch(path)
    before = server.read("/etc/jupyterhub/jupyterhub_config.py")
    path = config(BASE.replace(*change).replace("mem_limit: 1G", "mem_limit: 2G"))
    result = run_update(path)
    assert result.exit_code == 2, result.output
    assert field in result.output
    assert "nothing was changed" in result.output and "bakery launch" in result.output
    assert "Traceback" not in result.output
    assert server.read("/etc/jupyterhub/jupyterhub_config.py") == before  # nothing applied
    assert server.commands() == []


def test_a_step_that_fails_is_left_pending_and_the_next_run_finishes_it(
    server: Server, config: Callable[[str], Path], tmp_path: Path
) -> None:
    path = config(BASE)
    server.launch(path)
    path = config(BASE.replace("idle_cull_minutes: 60", "idle_cull_minutes: 90"))
    failing = tmp_path / "bin" / "systemctl"
    failing.write_text(
        f'#!/bin/sh\necho "systemctl $*" >> {server.log}\n'
        'echo "Job failed: see journalctl"\nexit 1\n'
    )
    result = run_update(path)
    assert result.exit_code == 1, result.output
    assert "hub failed: systemctl restart jupyterhub: Job failed: see journalctl" in result.output
    assert "run `bakery update` again" in result.output
    assert json.loads(server.read("/etc/bakery/applied.json"))["pending"] == ["hub"]
    failing.write_text(f'#!/bin/sh\necho "systemctl $*" >> {server.log}\n')
    again = run_update(path)
    assert again.exit_code == 0, again.output
    assert "hub: left unfinished by the last update" in again.output
    assert server.commands()[-1] == "systemctl restart jupyterhub"
    assert json.loads(server.read("/etc/bakery/applied.json"))["pending"] == []


def test_a_pending_step_runs_again_with_what_it_needs(
    server: Server, config: Callable[[str], Path], tmp_path: Path
) -> None:
    """A step left unfinished runs again with its values, not an empty request: the limits
    with the file's, the certificate as the file's tls asks (never self-signed by default)."""
    path = config(BASE + LETSENCRYPT)
    server.launch(path)
    pending = {"config_sha256": "x", "files": {}, "pending": ["limits", "tls"]}
    server.put("/etc/bakery/applied.json", json.dumps(pending))
    bin_dir = tmp_path / "bin"
    (bin_dir / "systemctl").write_text(
        f'#!/bin/sh\necho "systemctl $*" >> {server.log}\n'
        'case "$*" in list-units*)\n'
        '  echo "jupyter-training01-singleuser.service loaded active running x";;\nesac\n'
    )
    dry = run_update(path, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "limits: left unfinished by the last update" in dry.output
    assert "the certificate (tls.mode letsencrypt): a new one for hub.example.org, by ACME" in (
        dry.output
    )
    request = upd.apply_request(upd.make_plan(
        load_config(path), path, None, ["127.0.0.1:2222"]).servers[0], False)  # fmt: skip
    assert request["limits"] == {"mem_bytes": 2**30, "cpu": 1.0}
    assert request["tls"] == {"mode": "letsencrypt", "domain": "hub.example.org"}


def test_the_remote_program_writes_files_atomically_with_their_mode(
    server: Server, tmp_path: Path
) -> None:
    entry = {
        "path": "/etc/bakery/x.json",
        "content": base64.b64encode(b"{}\n").decode(),
        "permissions": "0600",
    }
    answer = server.call(None, Target("s", "h"), {"action": "apply", "files": [entry], "steps": []})
    assert answer["written"] == ["/etc/bakery/x.json"]
    written = server.root / "etc/bakery/x.json"
    assert written.read_text() == "{}\n" and written.stat().st_mode & 0o777 == 0o600
    assert not list(written.parent.glob("*.bakery-new"))


def test_status_says_whether_each_server_matches(
    server: Server, config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bakery status`'s config column: the same plan, in a few words per server."""
    from bakery.day.targets import Servers

    path = config(BASE)
    server.launch(path)
    cloud = Servers([Target("upd-1", "203.0.113.9")], {"upd-2": "SHUTOFF"}, ["upd-1", "upd-2"])
    monkeypatch.setattr(upd, "every_server", lambda cfg, hosts: cloud)
    cfg = load_config(path)
    assert upd.config_states(cfg, path, None) == {
        "upd-1": "matches the workshop file",
        "upd-2": "not checked (SHUTOFF)",
    }
    path = config(BASE.replace("idle_cull_minutes: 60", "idle_cull_minutes: 90"))
    states = upd.config_states(load_config(path), path, None)
    assert states["upd-1"] == "differs, 1 change(s) (`bakery update --dry-run`)"
    path = config(BASE.replace("os: debian-12", "os: ubuntu-24.04"))
    states = upd.config_states(load_config(path), path, None)
    assert states["upd-1"] == "needs a relaunch (`bakery update --dry-run` says why)"


def test_course_files_new_or_changed_are_pushed_once(
    server: Server, config: Callable[[str], Path], tmp_path: Path
) -> None:
    course = tmp_path / "course"
    (course / "data").mkdir(parents=True)
    (course / "01-intro.ipynb").write_text("{}\n")
    (course / "data" / "t.csv").write_text("a\n1\n")
    path = config(BASE + "course: {from: ./course}\n")
    server.launch(path)
    for f in ("01-intro.ipynb", "data/t.csv"):  # as the bake unpacked them
        server.put(f"/srv/course/{f}", (course / f).read_text())
    assert "matches the workshop file" in run_update(path).output

    (course / "02-after-the-break.ipynb").write_text('{"cells": []}\n')
    (course / "data" / "t.csv").write_text("a\n1\n2\n")
    dry = run_update(path, "--dry-run")
    assert (
        "course.from: 2 new or changed file(s) to /srv/course: 02-after-the-break.ipynb, data/t.csv"
        in dry.output
    )
    assert not (server.root / "srv/course/02-after-the-break.ipynb").exists()
    done = run_update(path)
    assert done.exit_code == 0, done.output
    assert server.read("/srv/course/02-after-the-break.ipynb") == '{"cells": []}\n'
    assert server.read("/srv/course/data/t.csv") == "a\n1\n2\n"
    assert (server.root / "srv/course/data/t.csv").stat().st_mode & 0o777 == 0o644
    assert "matches the workshop file" in run_update(path).output


def test_the_remote_program_refuses_a_content_name_that_leaves_its_folder(
    server: Server,
) -> None:
    request = {
        "action": "apply",
        "steps": ["content"],
        "content": {"/srv/course": {"../../etc/cron.d/x": base64.b64encode(b"x").decode()}},
    }
    done = subprocess.run(
        [sys.executable, "-c", server.program],
        input=json.dumps(request).encode(), capture_output=True, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and b"refused name" in done.stderr
    assert not (server.root / "etc/cron.d/x").exists()


@pytest.mark.parametrize("spawner", ["systemd", "docker"])
def test_a_higher_memory_limit_reaches_the_running_servers_in_place(
    server: Server, config: Callable[[str], Path], tmp_path: Path, spawner: str
) -> None:
    """systemd: the running units' MemoryMax/CPUQuota at runtime; docker: `docker update`. No
    server restarts (the hub's own restart keeps them)."""
    base = BASE.replace("kind: systemd", f"kind: {spawner}")
    path = config(base)
    server.launch(path)
    bin_dir = tmp_path / "bin"
    if spawner == "systemd":
        (bin_dir / "systemctl").write_text(
            f'#!/bin/sh\necho "systemctl $*" >> {server.log}\n'
            'case "$*" in list-units*)\n'
            '  echo "jupyter-training01-singleuser.service loaded active running x";;\nesac\n'
        )
    else:
        docker = bin_dir / "docker"
        docker.write_text(
            '#!/bin/sh\ncase "$1" in ps) echo jupyter-training01;;\n'
            f'  *) echo "docker $*" >> {server.log};;\nesac\n'
        )
        docker.chmod(0o755)
    path = config(base.replace("mem_limit: 1G", "mem_limit: 2G"))
    result = run_update(path)
    assert result.exit_code == 0, result.output
    assert "memory/CPU limits (2G, 1 CPU): the 1 running server(s) too (in place)" in result.output
    want = {
        "systemd": "systemctl set-property --runtime jupyter-training01-singleuser.service "
        f"MemoryMax={2 * 2**30} CPUQuota=100%",
        "docker": f"docker update --memory {2 * 2**30} --memory-swap {2 * 2**30} "
        "--cpu-period 100000 --cpu-quota 100000 jupyter-training01",
    }[spawner]
    assert want in server.commands()
    assert "limits set on 1 running server(s)" in result.output


DOCKER = BASE.replace("kind: systemd", "kind: docker, image: e2e/nb:1")
# The e2e docker workshop's environment (e2e_harness.DOCKER_ENVIRONMENT), with its lock.
DOCKER_ENV = 'environment:\n  pip: [tabulate==0.9.0]\n  r: [jsonlite]\n  python: "3.11"\n'


def docker_layer(server: Server, config: Callable[[str], Path]) -> tuple[Path, str]:
    """A docker workshop launched with the image as it is, its file then given environment:
    (and its lock); the layer's tag."""
    from bakery.config.lockfile import lock_path
    from bakery.workshop import software

    server.launch(config(DOCKER))
    server.images.write_text("e2e/nb:1\n")
    path = config(DOCKER + DOCKER_ENV)
    locks = Path(__file__).parent / "e2e" / "locks"
    lock_path(path).write_bytes((locks / "docker.lock.json").read_bytes())
    layer = software.image_layer(load_config(path))
    assert layer is not None
    return path, layer.tag


def test_a_docker_layer_is_built_on_the_server_before_the_hub_names_it(
    server: Server, config: Callable[[str], Path]
) -> None:
    """docker: the course's packages are a layer on the trainees' image; update builds it on
    the server from the image it has, then the hub's config names it (new servers use it)."""
    path, tag = docker_layer(server, config)
    dry = run_update(path, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"the trainees' image (environment:): {tag}, built on the server" in dry.output
    assert "running servers start from it after a restart" in dry.output
    assert server.commands() == []

    done = run_update(path)
    assert done.exit_code == 0, done.output
    steps = server.commands()
    assert steps[0].startswith("docker build --build-arg BASE_USER=") and f"--tag {tag}" in steps[0]
    assert steps[-1] == "systemctl restart jupyterhub"
    layer = server.root / IMAGE_DIR.lstrip("/")
    assert "tabulate==0.9.0" in (layer / WORKSHOP_REQUIREMENTS).read_text()
    assert "FROM e2e/nb:1" in (layer / "Dockerfile").read_text()
    assert tag in server.read("/etc/jupyterhub/jupyterhub_config.py")
    assert json.loads(server.read(RECORD_PATH))["components"]["user-image"] == tag
    again = run_update(path)
    assert "matches the workshop file; nothing to do" in again.output, again.output


def test_a_layer_that_fails_to_build_leaves_the_hub_as_it_was_and_a_rerun_finishes(
    server: Server, config: Callable[[str], Path]
) -> None:
    path, tag = docker_layer(server, config)
    before = server.read("/etc/jupyterhub/jupyterhub_config.py")
    Path(f"{server.images}.fail").write_text("")
    failed = run_update(path)
    assert failed.exit_code != 0, failed.output
    assert "Unable to locate package" in failed.output and "Traceback" not in failed.output
    # Nothing written, nothing restarted: the hub still names an image the server has.
    assert server.read("/etc/jupyterhub/jupyterhub_config.py") == before
    assert not any(c.startswith("systemctl") for c in server.commands())
    Path(f"{server.images}.fail").unlink()
    done = run_update(path)
    assert done.exit_code == 0, done.output
    assert tag in server.read("/etc/jupyterhub/jupyterhub_config.py")
    assert server.commands()[-1] == "systemctl restart jupyterhub"


def test_a_layer_on_an_image_the_server_lacks_is_refused(
    server: Server, config: Callable[[str], Path]
) -> None:
    path, _ = docker_layer(server, config)
    server.images.write_text("")  # e.g. spawner.image changed to one the bake never loaded
    result = run_update(path)
    assert result.exit_code == 2, result.output
    assert "spawner.image: e2e/nb:1 is not on the server" in result.output
    assert server.commands() == []


def test_a_refused_change_is_said_even_when_the_lock_no_longer_fits(
    server: Server, config: Callable[[str], Path], tmp_path: Path
) -> None:
    """`hub.install: conda` makes the venv lock stale; the refusal (the field, the way) is what
    the instructor needs to read, not "the server was not reached"."""
    from bakery.config.lockfile import lock_path

    sys.path.insert(0, str(Path(__file__).parent / "e2e"))
    from e2e_harness import LOCKS, update_env_files, write_folder

    write_folder(tmp_path / "env", update_env_files())
    env = "environment:\n  from: ./env\n"
    path = config(BASE + env)
    lock_path(path).write_bytes((LOCKS / "systemd-update.lock.json").read_bytes())
    server.launch(path)
    path = config(BASE.replace("name: upd\n", "name: upd\nhub: {install: conda}\n") + env)
    result = run_update(path)
    assert result.exit_code == 2, result.output
    assert "hub.install: the server has venv, the file says conda" in result.output
    assert "not reached" not in result.output and "Traceback" not in result.output


def test_a_lock_left_stale_is_a_clear_error_before_anything_changes(
    server: Server, config: Callable[[str], Path], tmp_path: Path
) -> None:
    from bakery.config.lockfile import lock_path

    sys.path.insert(0, str(Path(__file__).parent / "e2e"))
    from e2e_harness import LOCKS, update_env_files, write_folder

    write_folder(tmp_path / "env", update_env_files())
    path = config(BASE + "environment:\n  from: ./env\n")
    lock_path(path).write_bytes((LOCKS / "systemd-update.lock.json").read_bytes())
    server.launch(path)
    before = server.read("/etc/jupyterhub/jupyterhub_config.py")
    (tmp_path / "env" / "requirements.txt").write_text("tabulate==0.9.0\n")  # not locked again
    result = run_update(path)
    assert result.exit_code == 2, result.output
    assert "run `bakery lock" in result.output and "not reached" not in result.output
    assert "Traceback" not in result.output
    assert server.read("/etc/jupyterhub/jupyterhub_config.py") == before
    assert server.commands() == []


def test_a_host_that_is_a_swarm_worker_gets_nothing(
    server: Server, config: Callable[[str], Path]
) -> None:
    """--host names no part: a worker (its role file says so) is left alone, said why."""
    base = BASE.replace(
        "spawner: {kind: systemd", "cluster: {engine: swarm}\nspawner: {kind: docker"
    )
    path = config(base)
    server.launch(path)
    (server.root / "etc/bakery/cluster-manager").unlink()  # as on a worker: its own role only
    server.put("/etc/bakery/cluster-worker", "worker\n")
    before = server.read("/etc/jupyterhub/jupyterhub_config.py")
    path = config(base.replace("idle_cull_minutes: 60", "idle_cull_minutes: 90"))
    result = run_update(path)
    assert result.exit_code == 1, result.output
    assert "a swarm worker: leave out --host" in result.output
    assert server.read("/etc/jupyterhub/jupyterhub_config.py") == before
    assert server.users_added == []


def test_a_swarm_managers_running_servers_are_its_services(
    server: Server, config: Callable[[str], Path]
) -> None:
    """On a swarm the trainees' servers are services whose tasks run on the workers: the manager
    counts them (a new memory limit reaches them at a restart; course files reach their homes,
    which are the manager's)."""
    base = BASE.replace(
        "spawner: {kind: systemd", "cluster: {engine: swarm}\nspawner: {kind: docker"
    )
    path = config(base)
    server.launch(path)
    (server.root / "etc/bakery/cluster-manager").write_text("manager\n")
    Path(f"{server.images}.services").write_text("jupyter-training01\njupyter-training02\n")
    cfg = load_config(path)
    machine = topology(cfg, sheet_order(credentials_path(path)), trial=True).hubs[0]
    state = server.call(None, Target("s", "h"), drift.state_request(cfg, machine, path.parent))
    assert state["servers"] == {
        "units": [], "containers": [], "services": ["jupyter-training01", "jupyter-training02"]
    }  # fmt: skip
    result = run_update(config(base.replace("mem_limit: 1G", "mem_limit: 2G")), "--dry-run")
    assert "memory/CPU limits (2G, 1 CPU) of the 2 running server(s)" in result.output


def test_content_is_never_written_through_a_planted_symlink(
    server: Server, config: Callable[[str], Path], tmp_path: Path
) -> None:
    """Admins may write the shared folder: a folder there that is a symlink (to /etc, say) does
    not lead the update, which runs as root, anywhere."""
    shared = tmp_path / "shared"
    (shared / "data").mkdir(parents=True)
    (shared / "data" / "numbers.csv").write_text("n\n1\n")
    path = config(BASE + "shared_data: {from: ./shared}\n")
    server.launch(path)
    elsewhere = server.root / "etc" / "cron.d"
    elsewhere.mkdir(parents=True)
    (server.root / "srv" / "shared").mkdir(parents=True)
    (server.root / "srv" / "shared" / "data").symlink_to(elsewhere)
    answer = server.call(
        None, Target("s", "h"), upd.apply_request(_content_plan(server, path), False)
    )
    assert answer["skipped"] == ["/srv/shared/data/numbers.csv"]
    assert not (elsewhere / "numbers.csv").exists()


def _content_plan(server: Server, path: Path) -> Any:
    from bakery.day.drift import plan_server

    cfg = load_config(path)
    machine = topology(cfg, sheet_order(credentials_path(path)), trial=True).hubs[0]
    state = server.call(None, Target("s", "h"), drift.state_request(cfg, machine, path.parent))
    return plan_server(cfg, machine, Target("s", "h"), state, path.parent)


def test_a_trainee_taken_out_of_the_file_is_no_longer_let_in_and_keeps_the_home(
    server: Server, config: Callable[[str], Path]
) -> None:
    path = config(BASE.replace("{count: 2,", "{names: [maria], count: 2,"))
    server.launch(path)
    path = config(BASE)
    result = run_update(path, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "no longer let in: maria (account and home stay)" in result.output
    assert "-c.Authenticator.allowed_users" in result.output


def test_a_new_domain_gets_a_new_self_signed_certificate(
    server: Server, config: Callable[[str], Path]
) -> None:
    path = config(BASE)
    server.launch(path)
    path = config(BASE + "tls: {domain: class.example.org}\n")
    dry = run_update(path, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "the certificate (tls.mode self-signed): a new one for class.example.org" in dry.output
    assert "nginx's site (tls.domain): changed /etc/nginx/conf.d/jupyterhub.conf" in dry.output
    assert "DNS:class.example.org" not in server.names()

    done = run_update(path)
    assert done.exit_code == 0, done.output
    assert "DNS:class.example.org" in server.names()
    key = server.root / TLS_DIR.lstrip("/") / "key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert server.commands() == [
        "nginx -t",
        "systemctl reload nginx",  # the new server_name first, then its certificate
        "systemctl reload nginx",
    ]
    again = run_update(path)
    assert "matches the workshop file; nothing to do" in again.output, again.output


LETSENCRYPT = "tls: {mode: letsencrypt, domain: hub.example.org, email: ops@example.org}\n"


def test_leaving_lets_encrypt_stops_its_renewals_and_makes_a_self_signed_one(
    server: Server, config: Callable[[str], Path]
) -> None:
    path = config(BASE + LETSENCRYPT)
    server.launch(path)
    server.put("/etc/letsencrypt/renewal/hub.example.org.conf", "renew_hook = ...\n")
    wants = server.root / "etc/systemd/system/timers.target.wants/bakery-tls-retry.timer"
    wants.parent.mkdir(parents=True)
    wants.symlink_to("/etc/systemd/system/bakery-tls-retry.timer")
    path = config(BASE + "tls: {domain: hub.example.org}\n")
    done = run_update(path)
    assert done.exit_code == 0, done.output
    assert "removed /usr/local/lib/bakery/tls-deploy.sh" in done.output
    assert "removed /etc/systemd/system/bakery-tls-retry.timer" in done.output
    steps = server.commands()
    assert "systemctl daemon-reload" in steps
    assert "systemctl stop bakery-tls-retry.timer" in steps and not wants.is_symlink()
    assert "certbot delete --non-interactive --cert-name hub.example.org" in steps
    assert "Issuer: CN" not in server.names() and "DNS:hub.example.org" in server.names()
    again = run_update(path)
    assert "matches the workshop file; nothing to do" in again.output, again.output


def test_lets_encrypt_for_a_new_domain_is_planned_and_without_certbot_refused(
    server: Server, config: Callable[[str], Path]
) -> None:
    path = config(BASE + LETSENCRYPT)
    server.launch(path)
    path = config(BASE + LETSENCRYPT.replace("hub.example.org", "class.example.org"))
    dry = run_update(path, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "a new one for class.example.org, by ACME (certbot)" in dry.output
    assert "changed /usr/local/lib/bakery/tls.sh" not in dry.output  # said once, as the item
    # A server baked self-signed has no certbot: Let's Encrypt needs a relaunch.
    path = config(BASE)
    server.launch(path)
    result = run_update(config(BASE + LETSENCRYPT), "--dry-run")
    assert result.exit_code == 2, result.output
    assert "certbot not installed on the server" in result.output


def test_switching_to_a_providers_logins_sends_the_secret_and_never_shows_it(
    server: Server, config: Callable[[str], Path]
) -> None:
    """auth.kind oidc on a running class: the hub's module and config are written, the client
    secret goes over ssh into a root-only file (never into the plan's text), the hub restarts;
    back to accounts, both are removed."""
    path = config(BASE)
    server.launch(path)
    secret = "oidc-secret-7f3a9c1e"  # a test value, looked for in every line printed
    (path.parent / "client.secret").write_text(secret + "\n")
    (path.parent / "client.secret").chmod(0o600)
    oidc = BASE.replace("users: {count: 2, admins: [teacher]}", "users: {count: 2}") + (
        "auth:\n  kind: oidc\n  issuer: https://login.uni.example\n  client_id: hub\n"
        "  client_secret_file: client.secret\n  allowed_groups: [students]\n"
        "  admin_users: [prof@uni.example]\n"
    )
    path = config(oidc)
    done = run_update(path)
    assert done.exit_code == 0, done.output
    assert "the OAuth client secret (auth.client_secret_file): new" in done.output
    assert "the hub's logins through a provider (auth): new" in done.output
    assert secret not in done.output
    assert server.read("/srv/jupyterhub/oauth-client-secret") == secret + "\n"
    mode = (server.root / "srv/jupyterhub/oauth-client-secret").stat().st_mode & 0o777
    assert mode == 0o600
    assert "bakery_auth.configure(c, " in server.read("/etc/jupyterhub/jupyterhub_config.py")
    assert server.commands()[-1] == "systemctl restart jupyterhub"
    assert "nothing to do" in run_update(path).output

    back = run_update(config(BASE))
    assert back.exit_code == 0, back.output
    assert not (server.root / "srv/jupyterhub/oauth-client-secret").exists()
    assert not (server.root / "usr/local/lib/bakery/bakery_auth.py").exists()
