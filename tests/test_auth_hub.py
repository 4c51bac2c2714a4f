"""bakery_auth.py's authenticator with the real oauthenticator the hub installs (the versions of
bakery/versions.py): who is let in, who is an admin, which name each gets, for both providers.
The provider's answers are stand-ins (no network); e2e/test_oidc.py runs a real one."""

from __future__ import annotations

import ast
import asyncio
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomllib
from helpers import rendered_auth
from tornado import web
from traitlets.config import Config

from bakery import versions
from bakery.config.workshop import load_config

ROOT = Path(__file__).resolve().parent.parent
DOC = {
    "issuer": "https://login.uni.example",
    "authorization_endpoint": "https://login.uni.example/auth",
    "token_endpoint": "https://login.uni.example/token",
    "userinfo_endpoint": "https://login.uni.example/me",
    "scopes_supported": ["openid", "email", "profile"],
}


def test_the_tests_use_the_oauthenticator_the_vm_installs() -> None:
    import oauthenticator

    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"oauthenticator=={versions.OAUTHENTICATOR}" in pins["optional-dependencies"]["test"]
    assert oauthenticator.__version__ == versions.OAUTHENTICATOR


def _hub_auth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_config: Callable[[str], Path], auth: str
) -> tuple[Any, types.ModuleType, dict[str, Any]]:
    """The rendered module, configured as the rendered jupyterhub_config.py configures it (its
    files under tmp_path), and an instance of the authenticator class it returns."""
    path = write_config(f"name: cls\nos: debian-12\nauth:\n{auth}")
    (path.parent / "client.secret").write_text("the-secret\n")
    module, files = rendered_auth(load_config(path), tmp_path)
    made: list[str] = []
    monkeypatch.setattr(module, "ensure_account", lambda name: made.append(name) or True)
    monkeypatch.setattr(module, "discover", lambda issuer: DOC)
    hub = files["/etc/jupyterhub/jupyterhub_config.py"]
    line = hub.split("bakery_auth.configure(c, ", 1)[1].splitlines()[0]
    settings = ast.literal_eval(line.removesuffix(")"))
    settings["secret_file"] = str(path.parent / "client.secret")
    c = Config()
    cls = module.configure(c, settings)
    return cls(config=c), module, {"made": made, "settings": settings}


def _model(auth: Any, name: str, info: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "admin": None,
        "auth_state": {
            auth.user_auth_state_key: info,
            "token_response": {"access_token": "t", "token_type": "bearer"},
            "scope": [],
        },
    }


def _login(auth: Any, info: dict[str, Any]) -> tuple[str, bool | None, bool]:
    """What the hub does with a provider's answer: the name, admin, let in."""
    name = auth.normalize_username(auth.user_info_to_username(info))
    model = asyncio.run(auth.update_auth_model(_model(auth, name, info)))
    allowed = asyncio.run(auth.check_allowed(name, model))
    return name, model["admin"], allowed


OIDC = """\
  kind: oidc
  issuer: https://login.uni.example
  client_id: hub
  client_secret_file: client.secret
  allowed_groups: [students]
  allowed_users: [guest@elsewhere.example]
  admin_groups: [staff]
"""


def test_oidc_lets_in_by_group_or_list_and_makes_admins_by_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_config: Callable[[str], Path]
) -> None:
    auth, module, seen = _hub_auth(
        tmp_path, monkeypatch, write_config, OIDC + "  admin_users: [prof]\n"
    )
    assert auth.client_secret == "the-secret"
    assert auth.authorize_url == DOC["authorization_endpoint"]
    assert auth.scope == ["openid", "email", "profile"]  # groups: not in scopes_supported
    student = {
        "sub": "1",
        "preferred_username": "Ana",
        "email": "ana@uni.example",
        "groups": ["students"],
    }
    assert _login(auth, student) == ("ana", False, True)
    guest = {"sub": "2", "preferred_username": "g", "email": "Guest@Elsewhere.example"}
    assert _login(auth, guest) == ("g", False, True)
    staff = {"sub": "3", "preferred_username": "boss", "groups": ["staff"]}
    assert _login(auth, staff) == ("boss", True, True)
    prof = {"sub": "4", "preferred_username": "prof"}
    assert _login(auth, prof) == ("prof", True, True)
    outsider = {"sub": "5", "preferred_username": "eve", "groups": ["other"]}
    assert _login(auth, outsider) == ("eve", False, False)
    # The hub's first sight of a user makes its Linux account (bakery_auth.ensure_account).
    auth.add_user(types.SimpleNamespace(name="ana"))
    assert seen["made"] == ["ana"]
    # Only those let in are bound to a name: eve is not, so nobody can squat it for her.
    bound = module.Registry(module.IDENTITIES).load()
    assert bound == {"oidc:1": "ana", "oidc:2": "g", "oidc:3": "boss", "oidc:4": "prof"}
    # Someone else whose username also makes "ana": the hub's refusal, with why.
    with pytest.raises(web.HTTPError) as info:
        auth.user_info_to_username(
            {"sub": "9", "preferred_username": "ANA", "groups": ["students"]}
        )
    assert info.value.status_code == 403 and "already belongs" in str(info.value.log_message)
    # The redirect URL is https whatever the proxy told the hub.
    handler = types.SimpleNamespace(
        request=types.SimpleNamespace(protocol="http", host="203.0.113.7"),
        hub=types.SimpleNamespace(server=types.SimpleNamespace(base_url="/hub/")),
    )
    assert auth.get_callback_url(handler) == "https://203.0.113.7/hub/oauth_callback"


def test_github_asks_about_the_github_login_and_ignores_emails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_config: Callable[[str], Path]
) -> None:
    auth, _module, _ = _hub_auth(
        tmp_path, monkeypatch, write_config,
        "  kind: github\n  client_id: Iv1.abc\n  client_secret_file: client.secret\n"
        "  allowed_groups: [carpentries]\n  allowed_users: [octocat]\n  admin_users: [Boss]\n",
    )  # fmt: skip
    assert auth.allowed_organizations == {"carpentries"}
    assert "read:org" in auth.scope
    asked: list[str] = []

    async def member(org: str, login: str, token: str, kind: str) -> bool:
        asked.append(f"{org}:{login}")
        return login == "7-Dwarfs"

    monkeypatch.setattr(auth, "_check_membership_allowed_organizations", member)
    email = "x@uni.example"
    assert _login(auth, {"id": 1, "login": "octocat", "email": email}) == ("octocat", False, True)
    assert _login(auth, {"id": 2, "login": "boss", "email": email}) == ("boss", True, True)
    # A member of the organization: asked about by the GitHub login, not the Linux name.
    dwarf = {"id": 3, "login": "7-Dwarfs", "email": email}
    assert _login(auth, dwarf) == ("u-7-dwarfs", False, True)
    assert asked == ["carpentries:7-Dwarfs"]
    stranger = {"id": 4, "login": "stranger", "email": "octocat@uni.example"}
    assert _login(auth, stranger) == ("stranger", False, False)
