"""The e2e tier's OpenID Connect provider (oidc_server.py) on its own, without a VM.

What the hub's GenericOAuthenticator will do, step by step: headless Chromium (the issuer's host
mapped to 127.0.0.1) goes to the authorization endpoint with PKCE S256, signs in on the provider's
login page (a wrong password is refused first), and lands on a local callback with the code, the
state and the ``iss`` parameter; the code is redeemed at the token endpoint with
client_secret_basic and the code verifier, and userinfo answers the access token (Bearer) with the
account's claims. A second authorization (the session and the grant kept: no login page) is
redeemed with client_secret_post; a wrong secret is refused; mallory's hostile username comes
through verbatim.

The test talks to the token and userinfo endpoints on https://127.0.0.1:14300 (requests cannot
map a host name; the certificate names 127.0.0.1 too): those are the endpoints the discovery
document names when asked on that address, the same paths the VM sees under the issuer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import oidc_server
import pytest
from browser import chromium, oidc_sign_in, page_text
from e2e_harness import record

pytestmark = pytest.mark.e2e

SCOPE = "openid email profile groups"


class Callback:
    """A local HTTP server for the client's redirect URI: it keeps the query of each callback."""

    def __init__(self) -> None:
        self.queries: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/callback":
                    outer.queries.append({k: v[0] for k, v in parse_qs(url.query).items()})
                body = b"<html><body><p id='done'>callback received</p></body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Callback:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def callback() -> Iterator[Callback]:
    with Callback() as cb:
        yield cb


@pytest.fixture(scope="module")
def provider(
    tmp_path_factory: pytest.TempPathFactory, callback: Callback
) -> Iterator[oidc_server.Provider]:
    start = time.monotonic()
    with oidc_server.running(tmp_path_factory.mktemp("oidc"), [callback.uri]) as p:
        record("oidc provider start", time.monotonic() - start)
        yield p
    print(f"[oidc] provider log: {p.log}")


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = chromium(tmp_path_factory.mktemp("chromium"), [oidc_server.RESOLVER_RULES])
    try:
        yield d
    finally:
        d.quit()


def _session() -> Any:
    import requests

    s = requests.Session()
    s.trust_env = False
    return s


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


class Authorization:
    """One authorization request: its state, nonce and PKCE pair, and its URL under the issuer."""

    def __init__(self, provider: oidc_server.Provider, redirect_uri: str) -> None:
        self.state, self.nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        self.verifier = secrets.token_urlsafe(48)
        challenge = _b64url(hashlib.sha256(self.verifier.encode()).digest())
        query = {
            "client_id": provider.client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": SCOPE,
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        self.url = f"{provider.issuer}/auth?{urlencode(query)}"


def _authorize(
    driver: Any, callback: Callback, auth: Authorization, login: str, password: str
) -> dict[str, str]:
    """Through the browser to the callback; the callback's query (code, state, iss)."""
    seen = len(callback.queries)
    driver.get(auth.url)
    oidc_sign_in(driver, callback.uri, login, password, timeout=20)
    assert len(callback.queries) == seen + 1, page_text(driver)
    query = callback.queries[-1]
    assert "error" not in query, query
    assert query["state"] == auth.state
    return query


def _token(
    provider: oidc_server.Provider,
    endpoints: dict[str, Any],
    code: str,
    auth: Authorization,
    redirect_uri: str,
    *,
    basic: bool,
) -> dict[str, Any]:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": auth.verifier,
    }
    kwargs: dict[str, Any] = {}
    if basic:
        kwargs["auth"] = (provider.client_id, provider.client_secret)
    else:
        data |= {"client_id": provider.client_id, "client_secret": provider.client_secret}
    r = _session().post(
        endpoints["token_endpoint"], data=data, verify=str(provider.ca_file), timeout=10, **kwargs
    )
    assert r.status_code == 200, r.text
    tokens = dict(r.json())
    assert tokens["token_type"].lower() == "bearer"
    return tokens


def _userinfo(
    provider: oidc_server.Provider, endpoints: dict[str, Any], access_token: str
) -> dict[str, Any]:
    r = _session().get(
        endpoints["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {access_token}"},
        verify=str(provider.ca_file),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_discovery(provider: oidc_server.Provider) -> None:
    doc = provider.discovery()
    assert doc["issuer"] == oidc_server.ISSUER == "https://oidc.bakery.test:14300"
    assert "S256" in doc["code_challenge_methods_supported"]
    methods = doc["token_endpoint_auth_methods_supported"]
    assert {"client_secret_basic", "client_secret_post"} <= set(methods)
    assert {"openid", "email", "profile", "groups"} <= set(doc["scopes_supported"])
    assert {"sub", "email", "email_verified", "preferred_username", "name", "groups"} <= set(
        doc["claims_supported"]
    )
    assert doc["authorization_response_iss_parameter_supported"] is True
    # As the VM asks it (by the issuer's name): the endpoints are under the issuer.
    r = _session().get(
        f"{provider.local}/.well-known/openid-configuration",
        headers={"Host": f"{oidc_server.ISSUER_HOST}:{oidc_server.PORT}"},
        verify=str(provider.ca_file),
        timeout=5,
    )
    vm_doc = r.json()
    for name, path in (
        ("authorization_endpoint", "/auth"),
        ("token_endpoint", "/token"),
        ("userinfo_endpoint", "/me"),
        ("jwks_uri", "/jwks"),
    ):
        assert vm_doc[name] == f"{oidc_server.ISSUER}{path}"
        assert doc[name] == f"{provider.local}{path}"


def test_login_code_token_userinfo(
    provider: oidc_server.Provider, callback: Callback, driver: Any
) -> None:
    start = time.monotonic()
    endpoints = provider.discovery()
    auth = Authorization(provider, callback.uri)
    driver.get(auth.url)
    # The login page checks the password: a wrong one is refused and the form comes back.
    with pytest.raises(RuntimeError, match="Invalid login or password"):
        oidc_sign_in(driver, callback.uri, "ana", "not-her-password", timeout=20)
    assert not callback.queries
    with pytest.raises(RuntimeError, match="Invalid login or password"):
        oidc_sign_in(driver, callback.uri, "nobody", "x", timeout=20)
    oidc_sign_in(driver, callback.uri, "ana", oidc_server.password("ana"), timeout=20)
    query = callback.queries[-1]
    assert query["state"] == auth.state
    assert query["iss"] == oidc_server.ISSUER  # RFC 9207's iss in the authorization response

    tokens = _token(provider, endpoints, query["code"], auth, callback.uri, basic=True)
    id_token = _jwt_claims(tokens["id_token"])
    assert id_token["iss"] == oidc_server.ISSUER
    assert id_token["aud"] == provider.client_id
    assert id_token["sub"] == "ana"
    assert id_token["nonce"] == auth.nonce
    info = _userinfo(provider, endpoints, tokens["access_token"])
    print(f"[oidc] userinfo for ana: {json.dumps(info)}")
    assert info == {
        "sub": "ana",
        "email": "ana@uni.example",
        "email_verified": True,
        "preferred_username": "ana",
        "name": "Ana Student",
        "groups": ["students"],
    }
    # A bearer token that is not the provider's: refused.
    r = _session().get(
        endpoints["userinfo_endpoint"],
        headers={"Authorization": "Bearer not-a-token"},
        verify=str(provider.ca_file),
        timeout=10,
    )
    assert r.status_code == 401
    record("oidc: login, code, token, userinfo", time.monotonic() - start)


def test_second_authorization_client_secret_post(
    provider: oidc_server.Provider, callback: Callback, driver: Any
) -> None:
    """The provider's session and grant are kept: straight back to the callback, no form."""
    endpoints = provider.discovery()
    auth = Authorization(provider, callback.uri)
    query = _authorize(driver, callback, auth, "ana", "unused: no login page this time")
    tokens = _token(provider, endpoints, query["code"], auth, callback.uri, basic=False)
    assert _userinfo(provider, endpoints, tokens["access_token"])["preferred_username"] == "ana"


def test_refusals_at_the_token_endpoint(
    provider: oidc_server.Provider, callback: Callback, driver: Any
) -> None:
    endpoints = provider.discovery()
    token_endpoint = endpoints["token_endpoint"]
    auth = Authorization(provider, callback.uri)
    query = _authorize(driver, callback, auth, "ana", "unused")
    form = {
        "grant_type": "authorization_code",
        "code": query["code"],
        "redirect_uri": callback.uri,
        "code_verifier": auth.verifier,
    }
    s, ca = _session(), str(provider.ca_file)
    r = s.post(token_endpoint, data=form, auth=(provider.client_id, "wrong"), verify=ca, timeout=10)
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")
    wrong = form | {"code_verifier": secrets.token_urlsafe(48)}
    basic = (provider.client_id, provider.client_secret)
    r = s.post(token_endpoint, data=wrong, auth=basic, verify=ca, timeout=10)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_grant"), r.text


def test_hostile_username_verbatim(
    provider: oidc_server.Provider, callback: Callback, tmp_path: Path
) -> None:
    """mallory, in a fresh browser (no session): her preferred_username as accounts.json has it."""
    endpoints = provider.discovery()
    d = chromium(tmp_path / "chromium", [oidc_server.RESOLVER_RULES])
    try:
        auth = Authorization(provider, callback.uri)
        query = _authorize(d, callback, auth, "mallory", oidc_server.password("mallory"))
    finally:
        d.quit()
    tokens = _token(provider, endpoints, query["code"], auth, callback.uri, basic=True)
    info = _userinfo(provider, endpoints, tokens["access_token"])
    assert info["sub"] == "mallory"
    assert info["preferred_username"] == "Mal Lory; rm -rf /"
    assert info["groups"] == ["students"]
