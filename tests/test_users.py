"""`bakery users`: the sheet, what travels over ssh (hashes only), and the program run on the VM."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from helpers import send_json

from bakery import ssh as vmssh
from bakery.config.workshop import load_config
from bakery.day import users
from bakery.errors import BakeryError, CredentialsError, UsageError
from bakery.ssh import Ssh, Target
from bakery.templates import render
from bakery.workshop import sha512crypt
from bakery.workshop.accounts import credentials_path, ensure_credentials

CONFIG = "name: intro\nusers:\n  names: [ada, maria]\n  count: 2\n  admins: [teacher]\n"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "workshop.yaml"
    path.write_text(CONFIG)
    cfg = load_config(path)
    ensure_credentials(cfg, credentials_path(path))
    return path


class FakeSsh:
    """Records what each server was sent; answers like the VM program would."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str], bytes]] = []

    def __call__(
        self,
        ssh: Ssh,
        target: Target,
        command: list[str],
        *,
        stdin: bytes = b"",
        timeout: float = 0,
    ) -> subprocess.CompletedProcess[bytes]:
        self.sent.append((target.name, command, stdin))
        req = json.loads(stdin)
        if req["action"] == "list":
            answer: Any = [
                {"name": "ada", "admin": False, "last_activity": "2026-12-01T09:12:00Z",
                 "servers": {"default": {"ready": True, "started": "2026-12-01T09:10:00Z"}}},
                {"name": "teacher", "admin": True, "last_activity": None, "servers": {}},
            ]  # fmt: skip
        else:
            answer = {a["name"]: "done" for a in req["accounts"]}
        return subprocess.CompletedProcess(command, 0, json.dumps(answer).encode(), b"")


@pytest.fixture
def fake_ssh(monkeypatch: pytest.MonkeyPatch) -> FakeSsh:
    fake = FakeSsh()
    monkeypatch.setattr(Ssh, "run", lambda self, *a, **kw: fake(self, *a, **kw))
    return fake


def sheet(config: Path) -> dict[str, str]:
    rows = credentials_path(config).read_text().splitlines()[1:]
    return {r.split(",")[0]: r.split(",")[1] for r in rows}


def test_add_refuses_a_name_the_config_does_not_list(config: Path, fake_ssh: FakeSsh) -> None:
    before = credentials_path(config).read_text()
    with pytest.raises(UsageError, match=r"zoe: not in .*workshop.yaml. Add it to users.names"):
        users.add_users(config_path=config, names=["zoe"], hosts=["127.0.0.1:2222"])
    assert credentials_path(config).read_text() == before
    assert fake_ssh.sent == []


def test_add_sends_hashes_only_to_every_server(config: Path, fake_ssh: FakeSsh) -> None:
    config.write_text(CONFIG.replace("[ada, maria]", "[ada, maria, zoe]"))
    result = users.add_users(config_path=config, names=["zoe"], hosts=["10.0.0.5", "10.0.0.6:2200"])
    password = sheet(config)["zoe"]
    assert [a.username for a in result.accounts] == ["zoe"]
    assert result.accounts[0].password == password
    assert result.servers == {"10.0.0.5": {"zoe": "done"}, "10.0.0.6:2200": {"zoe": "done"}}
    assert [s[0] for s in fake_ssh.sent] == ["10.0.0.5", "10.0.0.6:2200"]
    for _, command, stdin in fake_ssh.sent:
        assert command[:3] == ["sudo", "/opt/jupyterhub/bin/python3", "-c"]
        req = json.loads(stdin)
        assert req["action"] == "add" and [a["name"] for a in req["accounts"]] == ["zoe"]
        assert sha512crypt.verify(password, req["accounts"][0]["hash"])
        assert password.encode() not in stdin and password not in " ".join(command)


def test_without_host_a_trainee_goes_to_the_server_that_holds_them(
    config: Path, fake_ssh: FakeSsh, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two hubs; trainees dealt round-robin: ada, training01 on intro-1... as `bakery launch` does.
    config.write_text(CONFIG.replace("count: 2\n", "count: 3\n") + "openstack:\n  count: 2\n")
    two = [Target("intro-1", "10.0.0.5"), Target("intro-2", "10.0.0.6")]
    monkeypatch.setattr(users, "targets", lambda cfg, hosts: two)
    cfg = load_config(config)
    assert users.homes(cfg, config) == {
        "ada": "intro-1", "maria": "intro-2", "training01": "intro-1",
        "training02": "intro-2", "training03": "intro-1",
    }  # fmt: skip
    result = users.add_users(config_path=config, names=["maria", "teacher", "training03"])
    sent = {t: [a["name"] for a in json.loads(data)["accounts"]] for t, _, data in fake_ssh.sent}
    assert sent == {"intro-1": ["training03", "teacher"], "intro-2": ["maria", "teacher"]}
    assert result.errors == []

    # A trainee whose server is gone is named, not silently skipped.
    monkeypatch.setattr(users, "targets", lambda cfg, hosts: [Target("intro-1", "10.0.0.5")])
    result = users.reset_users(config_path=config, names=["maria"])
    assert result.servers == {}
    assert result.errors == [
        "maria: their server intro-2 is not running (see `bakery status`); `bakery launch` brings "
        "it back with this account"
    ]


def test_add_of_an_existing_account_keeps_its_password(config: Path, fake_ssh: FakeSsh) -> None:
    before = sheet(config)
    users.add_users(config_path=config, names=["ada"], hosts=["h"])
    assert sheet(config) == before


def test_reset_changes_only_the_named_passwords(config: Path, fake_ssh: FakeSsh) -> None:
    before = sheet(config)
    result = users.reset_users(config_path=config, names=["maria"], hosts=["h"])
    after = sheet(config)
    assert after["maria"] != before["maria"] and after["maria"] == result.accounts[0].password
    assert {k: v for k, v in after.items() if k != "maria"} == {
        k: v for k, v in before.items() if k != "maria"
    }
    req = json.loads(fake_ssh.sent[0][2])
    assert req["action"] == "reset"
    assert sha512crypt.verify(after["maria"], req["accounts"][0]["hash"])
    # The sheet's own hash is the new one: a relaunch renders the new password.
    cfg = load_config(config)
    accounts = {a.username: a for a in ensure_credentials(cfg, credentials_path(config))}
    assert sha512crypt.verify(after["maria"], accounts["maria"].hash)


def test_reset_of_an_unknown_account_changes_nothing(config: Path, fake_ssh: FakeSsh) -> None:
    before = credentials_path(config).read_text()
    with pytest.raises(UsageError, match="zoe: not in"):
        users.reset_users(config_path=config, names=["zoe"], hosts=["h"])
    credentials_path(config).unlink()
    with pytest.raises(CredentialsError, match="maria: not an account of this workshop"):
        users.reset_users(config_path=config, names=["maria"], hosts=["h"])
    assert before


def test_a_server_that_fails_is_reported_the_others_updated(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeSsh()

    def flaky(ssh: Ssh, target: Target, command: list[str], **kw: Any) -> Any:
        if target.host == "bad":
            raise BakeryError("bad: ssh failed: Connection refused")
        return fake(ssh, target, command, **kw)

    monkeypatch.setattr(Ssh, "run", flaky)
    result = users.reset_users(config_path=config, names=["ada"], hosts=["good", "bad"])
    assert list(result.servers) == ["good"] and result.errors == [
        "bad: ssh failed: Connection refused"
    ]


def test_list_shows_logins_and_running_servers(config: Path, fake_ssh: FakeSsh) -> None:
    found = users.list_users(config_path=config, hosts=["10.0.0.5"])
    assert [u.line() for u in found] == [
        "10.0.0.5  ada  last seen 2026-12-01T09:12:00Z  server running",
        "10.0.0.5  teacher (admin)  never logged in  no server",
    ]


# --- ssh ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "target"),
    [("10.0.0.5", Target("10.0.0.5", "10.0.0.5", 22)), ("h:2222", Target("h:2222", "h", 2222))],
)
def test_parse_host(text: str, target: Target) -> None:
    assert vmssh.parse_host(text) == target


@pytest.mark.parametrize("text", ["h:x", ":22", "h:0", "h:70000"])
def test_parse_host_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="--host"):
        vmssh.parse_host(text)


def test_ssh_uses_the_workshop_key_and_its_own_known_hosts(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("private")
    (tmp_path / "id_ed25519.pub").write_text("ssh-ed25519 AAAA x\n")
    config = tmp_path / "workshop.yaml"
    config.write_text(f"name: intro\nopenstack: {{public_key: {tmp_path}/id_ed25519.pub}}\n")
    ssh = Ssh.for_workshop(load_config(config), config)
    argv = ssh.argv(Target("s", "203.0.113.7", 2200), ["sudo", "tar", "-C", "/home", "a b"])
    assert argv[:3] == ["ssh", "-p", "2200"]
    assert f"UserKnownHostsFile={tmp_path}/workshop.known_hosts" in argv
    assert "StrictHostKeyChecking=accept-new" in argv and "BatchMode=yes" in argv
    assert argv[argv.index("-i") + 1] == str(key)
    assert argv[-2:] == ["ubuntu@203.0.113.7", "sudo tar -C /home 'a b'"]
    message = ssh.failure(Target("s", "h"), b"ubuntu@h: Permission denied (publickey).")
    assert "Permission denied" in message and "--identity" in message


# --- the program run on the VM, against a stand-in hub API ----------------------------------------


class Hub(BaseHTTPRequestHandler):
    users: ClassVar[dict[str, dict[str, Any]]] = {}
    seen_tokens: ClassVar[list[str]] = []

    def _answer(self, status: int, body: Any) -> None:
        send_json(self, status, body)

    def do_POST(self) -> None:
        self.seen_tokens.append(self.headers["Authorization"])
        name = self.path.rsplit("/", 1)[1]
        if name in self.users:
            self._answer(409, {"message": "exists"})
            return
        self.users[name] = {"name": name, "admin": False, "last_activity": None, "servers": {}}
        self._answer(201, self.users[name])

    def do_GET(self) -> None:
        self._answer(200, list(self.users.values()))

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hub() -> Iterator[str]:
    Hub.users = {"ada": {"name": "ada", "admin": False, "last_activity": None, "servers": {}}}
    Hub.seen_tokens = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    server.shutdown()


def run_program(
    hub: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: dict[str, Any],
    known: set[str],
) -> tuple[Any, list[list[str]], list[tuple[str, int]]]:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    quota = tmp_path / "homes.py"
    quota.touch()
    program = render(
        "cloudinit/bakery-users.py.j2",
        bakery_version="t",
        api_url=hub,
        api_token_file=str(token),
        homes_script=str(quota),
        homes_unit="bakery-homes.service",
        logins_dir=str(tmp_path / "logins"),
    )
    ran: list[list[str]] = []
    chmods: list[tuple[str, int]] = []

    def getpwnam(name: str) -> Any:
        if name not in known:
            raise KeyError(name)
        return types.SimpleNamespace(pw_dir=f"/home/{name}")

    def fake_run(argv: list[str], check: bool = False, stdout: Any = None) -> None:
        ran.append(argv)
        # A command's chatter (xfs_quota's "Setting up project ...") goes where it is sent: it
        # must never reach the program's own stdout, the JSON answer `bakery users` reads.
        print(f"{argv[0]}: chatter", file=stdout if stdout is not None else sys.stdout)
        if argv[0] == "useradd":
            known.add(argv[-1])

    fake_pwd = types.ModuleType("pwd")
    fake_pwd.getpwnam = getpwnam  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pwd", fake_pwd)
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr("os.chmod", lambda path, mode: chmods.append((path, mode)))
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(request)))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    exec(compile(program, "bakery-users.py", "exec"), {"__name__": "__main__"})
    return json.loads(out.getvalue()), ran, chmods


def test_vm_program_adds_accounts_and_hub_users(
    hub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = {
        "action": "add",
        "accounts": [{"name": "zoe", "hash": "$6$x"}, {"name": "ada", "hash": "$6$y"}],
    }
    answer, ran, chmods = run_program(hub, tmp_path, monkeypatch, request, {"ada"})
    assert ran == [
        # The homes' filesystem first (at boot the hub no longer waits for it): the home goes there.
        ["systemctl", "start", "bakery-homes.service"],
        ["useradd", "-m", "-s", "/bin/bash", "-p", "$6$x", "zoe"],
        [sys.executable, str(tmp_path / "homes.py"), "quota"],  # the new home's disk quota
        ["usermod", "-p", "$6$y", "ada"],
    ]
    assert chmods == [("/home/zoe", 0o700)]
    assert answer == {
        "zoe": "account created; added to the hub",
        "ada": "password set; already in the hub",
    }
    assert set(Hub.users) == {"ada", "zoe"} and Hub.seen_tokens == ["token s3cret"] * 2


def test_vm_program_reset_and_list(
    hub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = {"action": "reset", "accounts": [{"name": "ada", "hash": "$6$z"}]}
    answer, ran, _ = run_program(hub, tmp_path, monkeypatch, request, {"ada"})
    assert answer == {"ada": "password set"} and ran == [["usermod", "-p", "$6$z", "ada"]]
    assert Hub.seen_tokens == []  # a reset does not touch the hub
    listing, _, _ = run_program(
        hub, tmp_path, monkeypatch, {"action": "list", "accounts": []}, set()
    )
    ada = {"name": "ada", "admin": False, "last_activity": None, "servers": {}}
    assert listing == [{**ada, "logged_in": None}]  # a hub without the login hook: unknown
    (tmp_path / "logins").mkdir()
    Hub.users["bob"] = {**ada, "name": "bob"}
    (tmp_path / "logins" / "bob").touch()
    listing, _, _ = run_program(
        hub, tmp_path, monkeypatch, {"action": "list", "accounts": []}, set()
    )
    assert [(u["name"], u["logged_in"]) for u in listing] == [("ada", False), ("bob", True)]


def test_vm_program_refuses_to_reset_a_missing_account(
    hub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = {"action": "reset", "accounts": [{"name": "zoe", "hash": "$6$z"}]}
    with pytest.raises(SystemExit, match="zoe: no such account on this server"):
        run_program(hub, tmp_path, monkeypatch, request, set())
