"""auth: a provider's logins (OIDC, GitHub): the config's refusals, the secret's path to the VM
(never user-data), the hub's name mapping for hostile usernames and e-mails, the day commands."""

from __future__ import annotations

import io
import json
import os
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import config_error, rendered_auth

from bakery.config.workshop import load_config
from bakery.errors import ConfigError, UsageError
from bakery.layout import AUTH_META_SECRET, SCRIPT_DIR
from bakery.vm.userdata import build_cloud_config, render_user_data
from bakery.workshop import login

SECRET = "s3cr3t-0f-the-oidc-client-4f1d9e"

OIDC = """\
name: sso
os: debian-12
ends: 2099-01-01T18:00:00+01:00
users:
  count: 12
auth:
  kind: oidc
  issuer: https://login.uni.example/realms/main
  client_id: bakery-hub
  client_secret_file: client-secret.txt
  allowed_groups: [students]
  allowed_users: [visitor@elsewhere.example]
  admin_users: [prof@uni.example]
  admin_groups: [staff]
"""


@pytest.fixture
def oidc_config(write_config: Callable[[str], Path]) -> Path:
    path = write_config(OIDC)
    secret = path.parent / "client-secret.txt"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    return path


# --- the config's refusals -----------------------------------------------------------------------


def test_an_inline_secret_is_refused_where_it_is_written() -> None:
    text = OIDC.replace("  client_secret_file: client-secret.txt\n", "  client_secret: hunter2\n")
    message = config_error(text, 10, ["auth.client_secret", "client_secret_file", "chmod 600"])
    assert "hunter2" not in message


def test_an_http_issuer_is_refused() -> None:
    text = OIDC.replace("https://login.uni.example", "http://login.uni.example")
    config_error(text, 8, ["auth.issuer", "https://"])


@pytest.mark.parametrize(
    ("change", "line", "words"),
    [
        (("  issuer: https://login.uni.example/realms/main\n", ""), 6, ["issuer"]),
        (("  client_id: bakery-hub\n", ""), 6, ["client_id"]),
        (("  allowed_groups: [students]\n  allowed_users: [visitor@elsewhere.example]\n", ""),
         6, ["no trainee could log in"]),
        (("  admin_users: [prof@uni.example]\n  admin_groups: [staff]\n", ""), 6, ["admin"]),
        (("issuer: https://login.uni.example/realms/main",
          "issuer: https://login.uni.example/.well-known/openid-configuration"),
         8, ["without /.well-known"]),
        (("allowed_users: [visitor@elsewhere.example]", "allowed_users: ['a b; rm -rf /']"),
         12, ["allowed_users"]),
    ],
)  # fmt: skip
def test_an_incomplete_provider_is_refused_by_field(
    change: tuple[str, str], line: int, words: list[str]
) -> None:
    text = OIDC.replace(*change)
    assert text != OIDC
    config_error(text, line, ["auth", *words])


def test_provider_fields_with_bakery_accounts_are_refused() -> None:
    text = "name: xy\nauth:\n  issuer: https://login.uni.example\n"
    config_error(text, 3, ["auth.issuer", "oidc"])


@pytest.mark.parametrize(
    ("extra", "line", "words"),
    [
        ("users:\n  names: [ana]\n", "users", ["users.names", "first login"]),
        ("users:\n  admins: [prof]\n", "users", ["admin_users"]),
        ("openstack:\n  count: 2\n", "openstack", ["count: 1"]),
        ("warm: boot\n", "warm", ["ahead"]),
    ],
)
def test_what_a_provider_makes_meaningless_is_refused(
    extra: str, line: str, words: list[str]
) -> None:
    text = OIDC.replace("users:\n  count: 12\n", "") + extra
    where = text.splitlines().index(extra.splitlines()[-1]) + 1
    config_error(text, where, words)


def test_github_takes_no_issuer() -> None:
    text = (
        "name: gh\nauth:\n  kind: github\n  client_id: Iv1.abc\n  client_secret_file: s.txt\n"
        "  admin_users: [octocat]\n  issuer: https://github.com\n"
    )
    config_error(text, 7, ["auth.issuer", "oidc"])


# --- the secret: a file beside the workshop, to the server's metadata only -----------------------


def test_the_secret_is_in_no_rendered_file_and_travels_in_metadata(oidc_config: Path) -> None:
    cfg = load_config(oidc_config)
    for stage in ("full", "bake", "boot"):
        data = render_user_data(cfg, stage=stage, accounts=[]).data
        assert SECRET.encode() not in data
    assert login.hub_metadata(cfg) == {AUTH_META_SECRET: SECRET}
    # No account is made before the class, so no sheet with passwords either.
    assert not oidc_config.with_name("workshop.credentials.csv").exists()


def test_the_same_config_renders_the_same_bytes(oidc_config: Path) -> None:
    cfg = load_config(oidc_config)
    first = render_user_data(cfg, stage="full", accounts=[]).data
    assert render_user_data(load_config(oidc_config), stage="full", accounts=[]).data == first


@pytest.mark.parametrize(
    ("content", "mode", "words"),
    [
        (SECRET + "\n", 0o644, ["readable by others", "chmod 600"]),
        ("", 0o600, ["alone on one line"]),
        ("one\ntwo\n", 0o600, ["alone on one line"]),
        ("x" * 300 + "\n", 0o600, ["at most 255"]),
    ],
)
def test_a_secret_file_that_cannot_be_used_is_one_clear_error(
    oidc_config: Path, content: str, mode: int, words: list[str]
) -> None:
    secret = oidc_config.parent / "client-secret.txt"
    secret.write_text(content)
    secret.chmod(mode)
    with pytest.raises(ConfigError) as info:
        login.hub_metadata(load_config(oidc_config))
    message = str(info.value)
    assert "auth.client_secret_file" in message
    assert SECRET not in message
    for word in words:
        assert word in message, message


def test_a_folder_or_a_link_as_the_secret_file_is_one_clear_error(oidc_config: Path) -> None:
    secret = oidc_config.parent / "client-secret.txt"
    secret.unlink()
    secret.mkdir()
    with pytest.raises(ConfigError, match="is not a file"):
        login.hub_metadata(load_config(oidc_config))
    secret.rmdir()
    (oidc_config.parent / "elsewhere").write_text(SECRET + "\n")
    secret.symlink_to(oidc_config.parent / "elsewhere")
    with pytest.raises(ConfigError, match="cannot open") as info:
        login.hub_metadata(load_config(oidc_config))
    assert SECRET not in str(info.value)


def test_a_missing_secret_file_says_how_to_make_it(oidc_config: Path) -> None:
    (oidc_config.parent / "client-secret.txt").unlink()
    with pytest.raises(ConfigError, match=r"does not exist.*chmod 600"):
        login.hub_metadata(load_config(oidc_config))


def test_the_hub_config_asks_the_provider_and_names_no_account(oidc_config: Path) -> None:
    cfg = load_config(oidc_config)
    doc = build_cloud_config(cfg, stage="full", accounts=[])
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    hub = files["/etc/jupyterhub/jupyterhub_config.py"]
    compile(hub, "jupyterhub_config.py", "exec")
    assert "bakery_auth.configure(c, " in hub
    assert "'issuer': 'https://login.uni.example/realms/main'" in hub
    assert '"pam"' not in hub
    assert "users" not in doc or not [u for u in doc["users"] if u != "default"]
    compile(files[f"{SCRIPT_DIR}/bakery_auth.py"], "bakery_auth.py", "exec")
    # Not baked: the golden image is the same whatever auth.kind says.
    bake = build_cloud_config(cfg, stage="bake")
    assert f"{SCRIPT_DIR}/bakery_auth.py" not in {f["path"] for f in bake["write_files"]}


# --- the hub's side: names made safe, identities bound once -------------------------------------


@pytest.fixture
def auth_module(oidc_config: Path, tmp_path: Path) -> types.ModuleType:
    """bakery_auth.py as the boot stage writes it, its registry under tmp_path."""
    return rendered_auth(load_config(oidc_config), tmp_path)[0]


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("ana", "ana"),
        ("Ana.Lopez@uni.example", "ana-lopez"),
        ("Mal Lory; rm -rf /", "mal-lory-rm-rf"),
        ("$(reboot)`id`", "reboot-id"),
        ("../../etc/passwd", "etc-passwd"),
        ("Åsa Öberg", "asa-oberg"),
        ("root", "u-root"),
        ("root@uni.example", "u-root"),
        ("jupyterhub", "u-jupyterhub"),
        ("debian", "u-debian"),
        ("42nd", "u-42nd"),
        ("-rf", "rf"),
        ("_x", "x"),
        ("a" * 100, "a" * 32),
        ("ana\nroot", "ana-root"),
        ("", None),
        ("@@@", None),
        ("中文", None),
        (None, None),
        (42, None),
    ],
)
def test_a_provider_name_becomes_a_safe_linux_name(
    auth_module: types.ModuleType, raw: Any, name: str | None
) -> None:
    made = auth_module.linux_name(raw)
    assert made == name
    if made is not None:
        assert auth_module.NAME_RE.fullmatch(made)
        assert made not in auth_module.RESERVED


def test_a_name_is_never_given_to_a_second_identity(auth_module: types.ModuleType) -> None:
    registry = auth_module.Registry(auth_module.IDENTITIES)
    name, why = registry.name_for("oidc:111", "ana@uni.example")
    assert (name, why) == ("ana", None)
    assert registry.bind("oidc:111", "ana")
    # Someone else whose username also makes "ana": refused, with why; ana keeps her name.
    other, why = registry.name_for("oidc:222", "Ana")
    assert other is None and "already belongs" in why
    assert not registry.bind("oidc:222", "ana")
    assert registry.name_for("oidc:111", "renamed-at-the-provider") == ("ana", None)
    assert os.stat(auth_module.IDENTITIES).st_mode & 0o777 == 0o600


def test_an_existing_account_on_the_vm_is_not_handed_out(
    auth_module: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_module, "_system_account", lambda name: name == "ops")
    registry = auth_module.Registry(auth_module.IDENTITIES)
    name, why = registry.name_for("oidc:9", "ops@uni.example")
    assert name is None and "'ops'" in why


def test_allow_lists_match_usernames_emails_and_names(auth_module: types.ModuleType) -> None:
    info = {"preferred_username": "Ana", "email": "Ana@Uni.Example", "groups": "students"}
    assert auth_module._identities(info, "preferred_username", "ana") == {"ana", "ana@uni.example"}
    assert auth_module._groups(info, "groups") == {"students"}
    unverified = {**info, "email_verified": False}
    assert "ana@uni.example" not in auth_module._identities(unverified, "preferred_username", "x")
    # GitHub's e-mail is not one a list may name someone by: only the login.
    github = {"login": "Octo-Cat", "email": "boss@uni.example", "id": 1}
    assert auth_module._identities(github, "login", "octo-cat", False) == {"octo-cat"}


# --- the day: what bakery does not own says so ---------------------------------------------------


def test_users_add_and_reset_point_to_the_provider(oidc_config: Path) -> None:
    from bakery.day.users import add_users, reset_users

    with pytest.raises(UsageError, match="allowed_users"):
        add_users(config_path=oidc_config, names=["ana"])
    with pytest.raises(UsageError, match="passwords belong to your institution's account"):
        reset_users(config_path=oidc_config, names=["ana"])


def test_slips_say_how_to_log_in_and_hold_no_password(oidc_config: Path, tmp_path: Path) -> None:
    from bakery.day.handouts import credentials_sheet, write_slips

    out = tmp_path / "slips.html"
    slips = write_slips(config_path=oidc_config, output=out, urls=["https://hub.uni.example/"])
    assert len(slips) == 12
    page = out.read_text()
    assert page.count("Sign in with your institution&#x27;s account") == 12
    assert "Password" not in page and "Keep this slip private" not in page
    with pytest.raises(UsageError, match="no login sheet"):
        credentials_sheet(config_path=oidc_config)


def test_warm_is_refused(oidc_config: Path) -> None:
    from bakery.day.warm import warm

    with pytest.raises(UsageError, match="ahead"):
        warm(config_path=oidc_config)


# --- validate: the issuer's discovery document ----------------------------------------------------


class _Answer(io.BytesIO):
    def __enter__(self) -> _Answer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(monkeypatch: pytest.MonkeyPatch, doc: Any) -> list[str]:
    asked: list[str] = []

    def urlopen(url: str, timeout: float) -> _Answer:
        asked.append(url)
        if isinstance(doc, Exception):
            raise doc
        return _Answer(json.dumps(doc).encode())

    monkeypatch.setattr(login.urllib.request, "urlopen", urlopen)
    return asked


DOC = {
    "issuer": "https://login.uni.example/realms/main",
    "authorization_endpoint": "https://login.uni.example/auth",
    "token_endpoint": "https://login.uni.example/token",
    "userinfo_endpoint": "https://login.uni.example/userinfo",
    "scopes_supported": ["openid", "email", "groups"],
}


def test_validate_reads_the_discovery_document(
    oidc_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _serve(monkeypatch, DOC)
    found = login.check_issuer(load_config(oidc_config))
    assert asked == ["https://login.uni.example/realms/main/.well-known/openid-configuration"]
    assert found is not None and "answers" in found and "groups" in found


def test_validate_refuses_a_document_of_another_issuer(
    oidc_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve(monkeypatch, {**DOC, "issuer": "https://login.uni.example/realms/other"})
    with pytest.raises(ConfigError, match="realms/other"):
        login.check_issuer(load_config(oidc_config))


def test_validate_says_when_the_issuer_cannot_be_reached(
    oidc_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve(monkeypatch, OSError("Name or service not known"))
    found = login.check_issuer(load_config(oidc_config))
    assert found is not None and "could not be read from here" in found


def test_the_client_secret_goes_to_the_hub_server_only(oidc_config: Path) -> None:
    from bakery.providers.openstack.steps import Recipe
    from bakery.topology import Machine

    cfg = load_config(oidc_config)
    from bakery.providers.openstack.boot import RootDisk, UserDataRoute

    disk = RootDisk(None, "the flavor's")
    basis = types.SimpleNamespace(flavor=lambda m: types.SimpleNamespace(id="f"), stage="boot",
                                  networks=[], image=types.SimpleNamespace(id="i"),
                                  disks={"hub": disk, "worker": disk},
                                  route=UserDataRoute(None, "default"))  # fmt: skip
    recipe = Recipe(basis, {}, {"sso": "x", "sso-worker-1": "y"})  # type: ignore[arg-type]
    recipe.hub_meta = login.hub_metadata(cfg)
    hub = recipe.attrs(cfg, Machine("sso", "hub", 1, (), ()))
    worker = recipe.attrs(cfg, Machine("sso-worker-1", "worker", 1))
    assert hub["metadata"][AUTH_META_SECRET] == SECRET
    assert AUTH_META_SECRET not in worker["metadata"]
    assert SECRET not in hub["user_data"]


def test_github_renders_its_own_authenticator(write_config: Callable[[str], Path]) -> None:
    path = write_config(
        "name: gh\nos: debian-12\nauth:\n  kind: github\n  client_id: Iv1.0123abcd\n"
        "  client_secret_file: gh.secret\n  allowed_groups: [carpentries:instructors]\n"
        "  admin_users: [octocat]\n"
    )
    cfg = load_config(path)
    files = {
        f["path"]: f["content"]
        for f in build_cloud_config(cfg, stage="boot", accounts=[])["write_files"]
    }
    hub = files["/etc/jupyterhub/jupyterhub_config.py"]
    assert "'kind': 'github'" in hub and "'username_claim': 'login'" in hub
    assert "'service': 'GitHub'" in hub and "'issuer': None" in hub
    module = files[f"{SCRIPT_DIR}/bakery_auth.py"]
    assert "GitHubOAuthenticator" in module and "read:org" in module


def test_the_starters_auth_block_uncommented_is_a_valid_workshop(tmp_path: Path) -> None:
    from bakery.config.starter import write_starter

    path = write_starter(tmp_path / "workshop.yaml", name="starter")
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# auth:"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("#"))
    for i in range(start, end):
        lines[i] = lines[i][2:]
    path.write_text("\n".join(lines) + "\n")
    cfg = load_config(path)
    assert cfg.auth.kind == "oidc" and cfg.auth.issuer == "https://login.example.edu/realms/main"


def test_github_lists_logins_not_emails() -> None:
    text = (
        "name: gh\nauth:\n  kind: github\n  client_id: Iv1.abc\n  client_secret_file: s.txt\n"
        "  allowed_users: [octocat]\n  admin_users: [boss@uni.example]\n"
    )
    config_error(text, 7, ["auth.admin_users", "GitHub logins"])
