"""Warm start (`warm:`, `bakery warm`): the config, the hub's side, and bakery_warm.py against a
stand-in hub API that starts servers the way JupyterHub's REST API answers (202, pending, ready).

The e2e tier proves it on a VM: test_docker's test_7 (a warmed server running before its trainee
logs in, left alone by the culler until then).
"""

from __future__ import annotations

import io
import json
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import send_json
from typer.testing import CliRunner

from bakery.cli.main import app
from bakery.config.workshop import parse_config
from bakery.day import warm as day_warm
from bakery.errors import ConfigError
from bakery.ssh import Ssh, Target
from bakery.templates import render
from bakery.vm.context import context

# --- the config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "when"),
    [
        ("boot", "boot"),
        ("none", "none"),
        ("2026-12-07 08:30 Europe/Berlin", "2026-12-07T08:30:00+01:00"),
        ("'2026-12-07T08:30:00Z'", "2026-12-07T08:30:00+00:00"),
    ],
)
def test_warm_is_boot_none_or_a_time(value: str, when: str) -> None:
    cfg = parse_config(f"name: qz\nwarm: {value}\n", Path("w.yaml"))
    assert context(cfg)["warm_when"] == when


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("warm: sometime\n", "w.yaml:2: warm: 'sometime' is not a date and time"),
        ("warm: 2026-12-07\n", "is a day without a time"),
        ("warm: '2026-12-07T08:30'\n", "has no UTC offset or time zone"),
        ("ends: 2026-12-07T08:00:00Z\nwarm: 2026-12-07T09:00:00Z\n", "is not before ends"),
    ],
)
def test_a_bad_warm_is_refused_with_the_line(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_config("name: qz\n" + text, Path("w.yaml"))


# --- bakery_warm.py against a stand-in hub -------------------------------------------------------


@dataclass
class HubState:
    """The stand-in hub: users, their default server, and what the program asked of it."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls_to_ready: int = 2
    fail: set[str] = field(default_factory=set)  # these starts fail (the server goes)
    fail_once: bool = False  # ... the first time only (an image still loading at first boot)
    refuse_first: int = 0  # answer 429 to this many starts first
    pending: dict[str, int] = field(default_factory=dict)  # name -> polls left
    max_pending: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # name -> the start's body (user_options)
    activity: list[tuple[str, str]] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    pages: list[str] = field(default_factory=list)

    def poll(self, name: str) -> None:
        """A pending server is ready (or gone, if its start fails) after a few looks."""
        if name not in self.pending:
            return
        self.pending[name] -= 1
        if self.pending[name] > 0:
            return
        del self.pending[name]
        if name in self.fail:
            self.users[name]["servers"] = {}
            if self.fail_once:
                self.fail.discard(name)
        else:
            self.users[name]["servers"][""]["ready"] = True

    def add(self, name: str, *, admin: bool = False, running: bool = False) -> None:
        servers = {"": {"ready": True, "started": "2026-12-07T07:00:00Z"}} if running else {}
        self.users[name] = {"name": name, "admin": admin, "servers": servers}


def handler_for(state: HubState) -> type[BaseHTTPRequestHandler]:
    class Hub(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: Any = None) -> None:
            send_json(self, status, body)

        def do_GET(self) -> None:
            state.tokens.add(self.headers["Authorization"])
            if self.path.startswith("/hub/api/users?"):
                state.pages.append(self.path)
                query = dict(p.split("=") for p in self.path.split("?", 1)[1].split("&"))
                offset, limit = int(query["offset"]), int(query["limit"])
                users = sorted(state.users.values(), key=lambda u: u["name"])
                self._answer(200, users[offset : offset + limit])
                return
            name = self.path.rsplit("/", 1)[1]
            state.poll(name)
            self._answer(200, state.users[name])

        def do_POST(self) -> None:
            parts = self.path.split("/")  # /hub/api/users/NAME/server|activity
            name, what = parts[4], parts[5]
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            if what == "activity":
                if "" not in state.users[name]["servers"]:
                    self._answer(400, {"message": f"No such server '' for user {name}"})
                    return
                state.activity.append((name, body["servers"][""]["last_activity"]))
                self._answer(204)
                return
            if state.refuse_first:
                state.refuse_first -= 1
                self._answer(429, {"message": "Too many users trying to log in right now."})
                return
            state.options[name] = body
            state.users[name]["servers"] = {"": {"ready": False, "started": None}}
            state.pending[name] = state.polls_to_ready
            state.max_pending = max(state.max_pending, len(state.pending))
            self._answer(202)

        def log_message(self, *args: Any) -> None:
            pass

    return Hub


@pytest.fixture
def hub() -> Iterator[tuple[HubState, str]]:
    state = HubState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    server.shutdown()


def load_warm(tmp_path: Path, api: str) -> types.ModuleType:
    """bakery_warm.py as the image has it, its paths under ``tmp_path``, no real sleeping."""
    code = render(
        "cloudinit/bakery_warm.py.j2",
        bakery_version="t",
        hub_prefix="/opt/hub",
        warm_file=str(tmp_path / "warm.json"),
        warm_state=str(tmp_path / "warm-state.json"),
        logins_dir=str(tmp_path / "logins"),
        hub_templates="/etc/jupyterhub/templates",
        api_token_file=str(tmp_path / "token"),
        api_url=api,
        homes_unit="bakery-homes.service",
    )
    (tmp_path / "token").write_text("s3cret\n")
    module = types.ModuleType("bakery_warm")
    module.__file__ = str(tmp_path / "bakery_warm.py")
    exec(compile(code, "bakery_warm.py", "exec"), module.__dict__)
    module.time = types.SimpleNamespace(
        sleep=lambda s: None, monotonic=__import__("time").monotonic
    )
    return module


SETTINGS = {"when": "boot", "keep_every": 30, "slots": 2, "active_limit": None, "start_timeout": 60}


def test_warm_starts_trainees_who_have_no_server_never_more_than_the_slots_at_once(
    hub: tuple[HubState, str], tmp_path: Path
) -> None:
    state, api = hub
    for name in ("ada", "bob", "cy", "dee", "eve"):
        state.add(name)
    state.add("teacher", admin=True)
    state.add("fay", running=True)
    state.fail = {"dee"}
    warm = load_warm(tmp_path, api)
    result = warm.warm(warm.Hub(api, "tok"), SETTINGS)
    assert result["started"] == ["ada", "bob", "cy", "eve"]
    assert result["running"] == ["fay"]
    assert result["cold"] == {"dee": "its start failed (the hub's log says why)"}
    assert state.max_pending == 2  # the hub's concurrent_spawn_limit
    # Each start says it is the warm service's: the server starts its first kernel at once.
    assert state.options == {n: {"bakery_warm": True} for n in ("ada", "bob", "cy", "dee", "eve")}
    assert state.users["teacher"]["servers"] == {}  # admins start their own
    saved = json.loads((tmp_path / "warm-state.json").read_text())
    assert saved["warmed"] == ["ada", "bob", "cy", "eve"] and saved["cold"] == result["cold"]
    assert (tmp_path / "warm-state.json").stat().st_mode & 0o777 == 0o600


def test_warm_stops_at_the_server_limit_and_says_who_was_left_cold(
    hub: tuple[HubState, str], tmp_path: Path
) -> None:
    state, api = hub
    state.add("ada", running=True)
    for name in ("bob", "cy", "dee"):
        state.add(name)
    warm = load_warm(tmp_path, api)
    result = warm.warm(warm.Hub(api, "tok"), {**SETTINGS, "active_limit": 2})
    assert result["started"] == ["bob"]
    why = "the server limit (2, this VM's memory) is reached"
    assert result["cold"] == {"cy": why, "dee": why}


def test_a_trainee_who_logged_in_is_not_warmed_and_429_is_waited_out(
    hub: tuple[HubState, str], tmp_path: Path
) -> None:
    state, api = hub
    state.add("ada")
    state.add("bob")
    state.refuse_first = 3
    warm = load_warm(tmp_path, api)
    warm.record_login(None, None, {"name": "ada"})
    result = warm.warm(warm.Hub(api, "tok"), SETTINGS)
    assert result["started"] == ["bob"]
    assert result["cold"] == {"ada": "logged in before: their own start and the idle rule"}


def test_two_failed_starts_in_a_row_stop_the_warming(
    hub: tuple[HubState, str], tmp_path: Path
) -> None:
    """A swarm has no server limit the hub knows: full workers show as starts that fail."""
    state, api = hub
    for name in ("ada", "bob", "cy", "dee"):
        state.add(name)
    state.fail = {"ada", "bob", "cy", "dee"}
    warm = load_warm(tmp_path, api)
    result = warm.warm(warm.Hub(api, "tok"), {**SETTINGS, "slots": 1})
    assert result["started"] == []
    assert result["cold"]["cy"].startswith("warming stopped: two starts in a row failed")
    assert set(result["cold"]) == {"ada", "bob", "cy", "dee"}


def test_users_are_read_page_by_page(hub: tuple[HubState, str], tmp_path: Path) -> None:
    state, api = hub
    for i in range(205):
        state.add(f"t{i:03d}", running=True)
    warm = load_warm(tmp_path, api)
    assert len(warm.Hub(api, "tok").users()) == 205
    assert state.pages == [
        "/hub/api/users?offset=0&limit=200",
        "/hub/api/users?offset=200&limit=200",
    ]


def test_keep_posts_activity_until_the_first_login(
    hub: tuple[HubState, str], tmp_path: Path
) -> None:
    state, api = hub
    state.add("ada")
    state.add("bob")
    warm = load_warm(tmp_path, api)
    client = warm.Hub(api, "tok")
    warm.warm(client, SETTINGS)
    warm.keep(client)
    assert sorted(n for n, _ in state.activity) == ["ada", "bob"]
    assert all(stamp.endswith("Z") for _, stamp in state.activity)
    warm.record_login(None, None, {"name": "ada"})
    state.activity.clear()
    warm.keep(client)
    assert [n for n, _ in state.activity] == ["bob"]
    saved = json.loads((tmp_path / "warm-state.json").read_text())
    assert saved["warmed"] == ["bob"]  # ada's for good: the idle rule is hers now
    state.users["bob"]["servers"] = {}  # an admin stopped it: said, nothing breaks
    warm.keep(client)


def test_the_service_tries_failed_starts_again_then_keeps(
    hub: tuple[HubState, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At first boot a start can fail (the trainees' image still loading): a later pass starts
    it; meanwhile and after, the warmed servers are kept."""
    state, api = hub
    state.add("ada")
    state.add("bob")
    state.fail, state.fail_once = {"bob"}, True
    warm = load_warm(tmp_path, api)
    (tmp_path / "warm.json").write_text(json.dumps(SETTINGS))
    monkeypatch.setenv("JUPYTERHUB_API_URL", api)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "svc")
    clock = [0.0]
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        clock[0] += seconds
        if len(naps) > 40:
            raise KeyboardInterrupt

    warm.time = types.SimpleNamespace(sleep=sleep, monotonic=lambda: clock[0])
    with pytest.raises(KeyboardInterrupt):
        warm.service()
    assert state.users["bob"]["servers"][""]["ready"] is True  # the second pass
    saved = json.loads((tmp_path / "warm-state.json").read_text())
    assert saved["warmed"] == ["ada", "bob"] and saved["cold"] == {}
    assert {n for n, _ in state.activity} == {"ada", "bob"}
    assert state.tokens == {"token svc"}


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", "Ada", "x" * 40])
def test_the_login_hook_records_only_plain_account_names(tmp_path: Path, name: str) -> None:
    warm = load_warm(tmp_path, "http://127.0.0.1:9/hub/api")
    auth = {"name": name}
    assert warm.record_login(None, None, auth) is auth
    assert not (tmp_path / "logins").exists() or list((tmp_path / "logins").iterdir()) == []


def test_configure_adds_the_service_its_scopes_the_hook_and_the_settings(tmp_path: Path) -> None:
    warm = load_warm(tmp_path, "http://127.0.0.1:9/hub/api")
    culler = {"name": "idle-culler", "command": ["cull"]}

    class Section(types.SimpleNamespace):
        pass

    c = types.SimpleNamespace(
        JupyterHub=Section(services=[culler], load_roles=object(), tornado_settings=object()),
        Authenticator=Section(),
        Spawner=Section(),
    )
    warm.configure(c, "boot", 30, 4, 7, 300)
    assert c.JupyterHub.services[0] == culler
    service = c.JupyterHub.services[1]
    assert service["name"] == "warm"
    assert service["command"] == [
        "/opt/hub/bin/python3",
        str(tmp_path / "bakery_warm.py"),
        "service",
    ]
    role = c.JupyterHub.load_roles[0]
    assert role["services"] == ["warm"] and "users:activity" in role["scopes"]
    assert "admin:users" not in role["scopes"]  # starts and keeps servers, nothing more
    assert c.Authenticator.post_auth_hook is warm.record_login
    assert c.JupyterHub.template_paths == ["/etc/jupyterhub/templates"]
    settings = json.loads((tmp_path / "warm.json").read_text())
    assert settings == {
        "when": "boot", "keep_every": 30, "slots": 4, "active_limit": 7, "start_timeout": 300
    }  # fmt: skip


def test_now_prints_one_json_document(
    hub: tuple[HubState, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, api = hub
    state.add("ada")
    warm = load_warm(tmp_path, api)
    (tmp_path / "warm.json").write_text(json.dumps(SETTINGS))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    warm.now(["ada", "zed"])
    assert json.loads(out.getvalue()) == {
        "started": ["ada"],
        "running": [],
        "cold": {"zed": "not a user of this hub"},
    }
    assert state.tokens == {"token s3cret"}  # bakery's own token, read from its root-only file


def test_the_service_warms_when_due(tmp_path: Path) -> None:
    warm = load_warm(tmp_path, "http://127.0.0.1:9/hub/api")
    assert warm.due("boot") and not warm.due("none")
    assert warm.due("2020-01-01T08:00:00+01:00") and not warm.due("2099-01-01T08:00:00+01:00")


# --- `bakery warm` -------------------------------------------------------------------------------


CONFIG = "name: intro\nusers:\n  names: [ada, maria]\n  count: 2\n  admins: [teacher]\n"


class FakeSsh:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.commands: list[tuple[str, list[str]]] = []

    def __call__(self, target: Target, command: list[str], **kw: Any) -> Any:
        self.commands.append((target.name, command))
        answer = self.answers[target.name]
        if isinstance(answer, Exception):
            raise answer
        return types.SimpleNamespace(returncode=0, stdout=json.dumps(answer).encode(), stderr=b"")


def test_bakery_warm_runs_the_program_on_every_hub_and_says_who_is_cold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "workshop.yaml"
    config.write_text(CONFIG)
    answers = {
        "127.0.0.1:2222": {
            "started": ["ada"],
            "running": [],
            "cold": {"maria": "not a user of this hub"},
        },
        "127.0.0.1:2223": {
            "started": [],
            "running": ["maria"],
            "cold": {"ada": "not a user of this hub", "training01": "logged in before: ..."},
        },
    }
    fake = FakeSsh(answers)
    monkeypatch.setattr(Ssh, "run", fake)
    result = CliRunner().invoke(
        app, ["warm", str(config), "--host", "127.0.0.1:2222", "--host", "127.0.0.1:2223"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "127.0.0.1:2222: 1 started, 0 already running, 0 left cold",
        "127.0.0.1:2223: 0 started, 1 already running, 1 left cold",
        "127.0.0.1:2223: training01: cold: logged in before: ...",
    ]
    assert fake.commands[0][1] == [
        "sudo", "/opt/jupyterhub/bin/python3", "/usr/local/lib/bakery/bakery_warm.py", "now"
    ]  # fmt: skip


def test_bakery_warm_refuses_a_name_that_is_no_trainee(tmp_path: Path) -> None:
    config = tmp_path / "workshop.yaml"
    config.write_text(CONFIG)
    result = CliRunner().invoke(app, ["warm", str(config), "teacher", "--host", "127.0.0.1:2"])
    assert result.exit_code == 2
    assert "teacher: not a trainee in" in result.stderr and "Traceback" not in result.output


def test_bakery_warm_fails_when_a_hub_cannot_be_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bakery.errors import BakeryError

    config = tmp_path / "workshop.yaml"
    config.write_text(CONFIG)
    monkeypatch.setattr(Ssh, "run", FakeSsh({"127.0.0.1:2": BakeryError("127.0.0.1:2: refused")}))
    result = CliRunner().invoke(app, ["warm", str(config), "--host", "127.0.0.1:2"])
    assert result.exit_code == 1
    assert "not warmed (run again): 127.0.0.1:2: refused" in result.stderr
    assert day_warm.NOT_HERE == "not a user of this hub"


@pytest.mark.parametrize(
    ("logged_in", "seen", "running", "line"),
    [
        (False, "2026-12-07T07:31:00Z", True, "never logged in  server warm"),
        (True, "2026-12-07T09:02:00Z", True, "last seen 2026-12-07T09:02:00Z  server running"),
        (None, "2026-12-07T09:02:00Z", True, "last seen 2026-12-07T09:02:00Z  server running"),
        (None, None, False, "never logged in  no server"),
        (False, None, False, "never logged in  no server"),
    ],
)
def test_users_list_tells_a_warm_server_from_a_trainees_own(
    logged_in: bool | None, seen: str | None, running: bool, line: str
) -> None:
    """A warm server reports activity before its trainee came: the login record decides
    (None: a hub without it, where the activity is all there is)."""
    from bakery.day.users import HubUser

    user = HubUser("intro-1", "ada", False, seen, running, None, logged_in)
    assert user.line() == f"intro-1  ada  {line}"


# --- the hub's error page: a 429 tries again by itself -----------------------------------------


def error_page(status: int, message: str, exception: Any = None) -> str:
    """The hub's error page as JupyterHub renders it with bakery's template folder first (its
    loader: ours, then its own, also reachable as templates/NAME)."""
    import jinja2
    from jupyterhub._data import DATA_FILES_PATH

    from bakery.layout import HUB_TEMPLATES
    from bakery.vm.userdata import build_cloud_config

    cfg = parse_config("name: qz\n", Path("w.yaml"))
    written = {
        f["path"]: f["content"] for f in build_cloud_config(cfg, stage="bake")["write_files"]
    }
    ours = {"error.html": written[f"{HUB_TEMPLATES}/error.html"]}
    theirs = jinja2.FileSystemLoader(f"{DATA_FILES_PATH}/templates")
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [
                jinja2.PrefixLoader({"templates": theirs}, "/"),
                jinja2.DictLoader(ours),
                theirs,
            ]
        ),
        autoescape=True,
    )
    return env.get_template("error.html").render(
        status_code=status,
        status_message="Too Many Requests" if status == 429 else "Not Found",
        message=message,
        exception=exception,
        static_url=lambda path, **kw: f"/hub/static/{path}",
        base_url="/",
        prefix="/",
        logout_url="/hub/logout",
        login_url="/hub/login",
        no_spawner_check=True,
    )


def test_a_429_page_tries_again_by_itself_other_errors_do_not() -> None:
    busy = error_page(429, "Too many users trying to log in right now. Try again in 30 seconds.")
    assert "Too many users trying to log in right now" in busy  # JupyterHub's own page, kept
    assert "This page tries again by itself" in busy
    assert "window.location.reload()" in busy
    assert "10 + Math.floor(Math.random() * 21)" in busy  # 10-30 s, a class not all at once
    missing = error_page(404, "No such page")
    assert "No such page" in missing and "window.location.reload()" not in missing


def test_a_throttled_page_waits_what_the_hub_suggested() -> None:
    """A 429 with Retry-After (JupyterHub's spawn limit, were one set: bakery queues the starts
    instead): the page waits that long, at least 5 s (a page that reloads at once would hammer
    the hub it waits for)."""
    from tornado import web

    throttled = web.HTTPError(429, "Too many users trying to log in right now.")
    throttled.headers = {"Retry-After": 42}  # type: ignore[attr-defined]
    page = error_page(429, "Too many users trying to log in right now.", throttled)
    assert "var wait = 42;" in page and "Math.random" not in page
    throttled.headers = {"Retry-After": 0}  # type: ignore[attr-defined]
    assert "var wait = 5;" in error_page(429, "Too many users", throttled)
    full = web.HTTPError(429, "Active user limit exceeded.")  # no Retry-After from the hub
    assert "10 + Math.floor(Math.random() * 21)" in error_page(429, "Active user limit", full)


def fake_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rc: int) -> Path:
    """A ``systemctl`` first on PATH: logs its arguments, takes a moment, exits ``rc``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "systemctl.log"
    script = bin_dir / "systemctl"
    body = f'echo "$@" >> {calls}\nsleep 0.3\necho done >> {calls}\nexit {rc}\n'
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return calls


def test_every_spawn_waits_for_the_homes_unit_started_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub no longer starts after bakery-homes (its filesystem and quotas): its pre-spawn hook
    starts that unit once (`systemctl start` waits for a start already under way) and every
    server start, concurrent ones too, waits for it before the hook it wraps (the course copy)."""
    import asyncio

    from traitlets.config import Config

    calls = fake_systemctl(tmp_path, monkeypatch, rc=0)
    warm = load_warm(tmp_path, "http://127.0.0.1:9/hub/api")
    seen: list[tuple[str, list[str]]] = []

    async def course_copy(spawner: Any) -> None:
        seen.append((spawner, calls.read_text().split("\n")))

    c = Config()
    c.Spawner.pre_spawn_hook = course_copy
    warm.configure(c, "boot", 30, 4, 7, 300)
    hook = c.Spawner.pre_spawn_hook

    async def class_arrives() -> None:
        await asyncio.gather(*(hook(name) for name in ("ada", "bob", "cy")))
        await hook("dee")  # later: the unit is not started again

    asyncio.run(class_arrives())
    assert calls.read_text() == "start bakery-homes.service\ndone\n"
    assert sorted(name for name, _ in seen) == ["ada", "bob", "cy", "dee"]
    assert all("done" in lines for _, lines in seen)  # none before the homes were ready

    bare = Config()  # no course: the homes' wait alone
    warm.configure(bare, "boot", 30, 4, 7, 300)
    asyncio.run(bare.Spawner.pre_spawn_hook("eve"))


def test_a_server_the_service_started_is_told_to_start_its_kernel_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spawn hook turns the warm start's user_options (which the hub keeps for the trainee's
    later starts) into BAKERY_WARM_KERNEL for the server (jupyter_server_config.py reads it), on a
    copy: the configured environment is shared by every spawner."""
    import asyncio

    from traitlets.config import Config

    fake_systemctl(tmp_path, monkeypatch, rc=0)
    warm = load_warm(tmp_path, "http://127.0.0.1:9/hub/api")
    c = Config()
    warm.configure(c, "boot", 30, 4, 7, 300)
    shared = {"JUPYTER_CONFIG_PATH": "/etc/bakery/jupyter"}
    warmed = types.SimpleNamespace(user_options={"bakery_warm": True}, environment=shared)
    own = types.SimpleNamespace(user_options={}, environment=shared)
    asyncio.run(c.Spawner.pre_spawn_hook(warmed))
    asyncio.run(c.Spawner.pre_spawn_hook(own))
    assert warmed.environment == {**shared, "BAKERY_WARM_KERNEL": "1"}
    assert own.environment == shared == {"JUPYTER_CONFIG_PATH": "/etc/bakery/jupyter"}


def test_a_failed_homes_unit_is_said_once_and_servers_still_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from traitlets.config import Config

    calls = fake_systemctl(tmp_path, monkeypatch, rc=1)
    warm = load_warm(tmp_path, "http://127.0.0.1:9/hub/api")
    c = Config()
    warm.configure(c, "boot", 30, 4, 7, 300)

    async def two() -> None:
        await asyncio.gather(c.Spawner.pre_spawn_hook("ada"), c.Spawner.pre_spawn_hook("bob"))

    asyncio.run(two())
    assert calls.read_text().count("start bakery-homes.service") == 1
    err = capsys.readouterr().err
    assert err.count("bakery-homes.service failed: homes without quotas") == 1


def test_servers_start_a_few_at_a_time_the_others_wait_their_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No 429 "try again" for too many starts at once: the hub takes every start (no spawn limit)
    and its pre-spawn hook lets ``slots`` through at a time; the next one goes when a started
    server answers (its spawn no longer pending), or, a server that never answers, after twice
    the start timeout."""
    import asyncio

    from traitlets.config import Config

    fake_systemctl(tmp_path, monkeypatch, rc=0)
    warm = load_warm(tmp_path, "http://127.0.0.1:9/hub/api")
    c = Config()
    c.JupyterHub.concurrent_spawn_limit = 4
    warm.configure(c, "boot", 30, 2, 7, 0.5)  # 2 slots, start_timeout 0.5 s: held at most 1 s
    assert c.JupyterHub.concurrent_spawn_limit == 0
    through: list[str] = []

    async def course_copy(spawner: Any) -> None:
        through.append(spawner.name)

    hook = warm.SpawnQueue(2, 2.0).hook(course_copy)
    spawners = {n: types.SimpleNamespace(name=n, pending="spawn") for n in ("ada", "bob", "cy")}

    async def class_arrives() -> None:
        starts = [asyncio.ensure_future(hook(s)) for s in spawners.values()]
        await asyncio.sleep(0.3)
        assert through == ["ada", "bob"]  # cy waits: both slots are starting servers
        spawners["bob"].pending = None  # bob's server answers: cy's turn
        await asyncio.sleep(0.7)
        assert through == ["ada", "bob", "cy"]
        dee = asyncio.ensure_future(hook(types.SimpleNamespace(name="dee", pending="spawn")))
        await asyncio.sleep(0.1)
        assert "dee" not in through  # ada's and cy's servers still starting
        await asyncio.wait_for(dee, 3)  # ada's never answered: its slot freed after 2 s
        assert through[-1] == "dee"
        await asyncio.gather(*starts)

    asyncio.run(class_arrives())


def test_a_waiting_trainee_sees_their_place_then_the_spawners_own_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waiting page's messages (the spawner's progress, which the hub streams to it): the
    place in the queue as it changes, then what the spawner itself says."""
    import asyncio

    fake_systemctl(tmp_path, monkeypatch, rc=0)
    warm = load_warm(tmp_path, "http://127.0.0.1:9/hub/api")

    class Spawner:
        def __init__(self, name: str) -> None:
            self.name, self.pending = name, "spawn"

        async def progress(self) -> Any:
            yield {"message": f"{self.name}: container created"}

    async def nothing(spawner: Any) -> None:
        return None

    queue = warm.SpawnQueue(1, 60)
    hook = queue.hook(nothing)
    ada, bob, cy = Spawner("ada"), Spawner("bob"), Spawner("cy")

    async def class_arrives() -> list[str]:
        starts = [asyncio.ensure_future(hook(s)) for s in (ada, bob, cy)]
        await asyncio.sleep(0.1)
        said = asyncio.ensure_future(_messages(cy.progress()))
        await asyncio.sleep(0.1)
        ada.pending = None  # ada's server answers: bob starts, cy is next
        await asyncio.sleep(1.5)
        bob.pending = None
        await asyncio.gather(*starts)
        return await said

    assert asyncio.run(class_arrives()) == [
        "Waiting to start: 1 ahead of you (1 start at a time)",
        "Waiting to start: next (1 start at a time)",
        "cy: container created",
    ]
    assert asyncio.run(_messages(ada.progress())) == ["ada: container created"]


def test_the_hubs_own_spawner_streams_the_place_in_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With JupyterHub's own Spawner (a traitlets object) and the generator its progress API
    streams (`_generate_progress`): "Server requested", the place in line, then the spawner's
    own; its pending state (what frees the slot) is the hub's."""
    import asyncio

    from jupyterhub.spawner import Spawner

    class Local(Spawner):  # type: ignore[misc]
        async def start(self) -> tuple[str, int]:
            return ("127.0.0.1", 1)

        async def stop(self, now: bool = False) -> None:
            return None

        async def poll(self) -> None:
            return None

    fake_systemctl(tmp_path, monkeypatch, rc=0)
    warm = load_warm(tmp_path, "http://127.0.0.1:9/hub/api")

    async def nothing(spawner: Any) -> None:
        return None

    hook = warm.SpawnQueue(1, 60).hook(nothing)
    first, second = Local(), Local()
    first._spawn_pending = second._spawn_pending = True

    async def two_arrive() -> list[str]:
        starts = [asyncio.ensure_future(hook(s)) for s in (first, second)]
        await asyncio.sleep(0.1)
        stream = asyncio.ensure_future(asyncio.wait_for(_messages(second._generate_progress()), 5))
        await asyncio.sleep(0.2)
        first._spawn_pending = False  # the hub's own flag: first's start is done
        await asyncio.gather(*starts)
        return await stream

    assert asyncio.run(two_arrive()) == [
        "Server requested",
        "Waiting to start: next (1 start at a time)",
        "Spawning server...",  # JupyterHub's Spawner.progress: the spawner's own
    ]


async def _messages(events: Any) -> list[str]:
    return [event.get("message", "") async for event in events]
