"""A local OpenID Connect provider for the e2e tier: oidc-provider (node) from tests/e2e/oidc/.

The hub under test (GenericOAuthenticator, on a qemu VM) reaches it as ``oidc.bakery.test``,
which the VM's /etc/hosts maps to 10.0.2.2 (the host's loopback on qemu's user network); the
host's Chromium maps it to 127.0.0.1 (``--host-resolver-rules``, :data:`RESOLVER_RULES`). It
listens on 127.0.0.1:14300 with pebble_server.py's cached server certificate, whose SANs name
``oidc.bakery.test`` and 127.0.0.1: the VM trusts it through the e2e workshop's
``ca_certificates`` (the same CA as pebble's).

Endpoints (under :data:`ISSUER`): ``/auth``, ``/token``, ``/me`` (userinfo), ``/jwks``; the
discovery document names them with the host the request used. The accounts and their test
passwords are tests/e2e/oidc/accounts.json (:data:`ACCOUNTS`); the login page checks them. No
consent screen: the first authorization grants the client what it asks.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pebble_server

HERE = Path(__file__).resolve().parent / "oidc"
ISSUER_HOST = pebble_server.OIDC_HOST  # "oidc.bakery.test"
PORT = 14300
ISSUER = f"https://{ISSUER_HOST}:{PORT}"
CLIENT_ID = "bakery-hub"
# Chromium's flag that sends the issuer's host name to the host's loopback.
RESOLVER_RULES = f"--host-resolver-rules=MAP {ISSUER_HOST} 127.0.0.1"
# login -> {"password": ..., "claims": {email, email_verified, preferred_username, name, groups}}
ACCOUNTS: dict[str, dict[str, Any]] = json.loads((HERE / "accounts.json").read_text())


def password(login: str) -> str:
    """The test password of an account of accounts.json."""
    return str(ACCOUNTS[login]["password"])


@dataclass
class Provider:
    """A running provider: its issuer, the one client's credentials, the CA of its certificate."""

    issuer: str
    client_id: str
    client_secret: str
    ca_file: Path
    log: Path

    @property
    def local(self) -> str:
        """The provider as the host reaches it without name mapping (the cert has IP:127.0.0.1)."""
        return f"https://127.0.0.1:{PORT}"

    def discovery(self) -> dict[str, Any]:
        """The discovery document, fetched on 127.0.0.1 (its endpoints name 127.0.0.1 then)."""
        import requests

        s = requests.Session()
        s.trust_env = False
        r = s.get(
            f"{self.local}/.well-known/openid-configuration", verify=str(self.ca_file), timeout=5
        )
        r.raise_for_status()
        return dict(r.json())


def node_modules() -> Path:
    """tests/e2e/oidc/node_modules, installed once from the lock file (``npm ci``) if missing."""
    from e2e_harness import require

    modules = HERE / "node_modules"
    if (modules / "oidc-provider" / "package.json").is_file():
        return modules
    require(shutil.which("node") is not None, "node not installed (Node.js 20.19 or newer)")
    require(shutil.which("npm") is not None, "npm not installed")
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"`npm ci` in {HERE} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}"
        )
    return modules


def _wait_ready(proc: subprocess.Popen[bytes], ca_file: Path, log: Path) -> None:
    import requests

    s = requests.Session()
    s.trust_env = False
    url = f"https://127.0.0.1:{PORT}/.well-known/openid-configuration"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the OIDC provider exited ({proc.returncode}):\n{_tail(log)}")
        with contextlib.suppress(requests.RequestException):
            r = s.get(url, verify=str(ca_file), timeout=2)
            if r.status_code == 200:
                issuer = r.json().get("issuer")
                if issuer != ISSUER:
                    raise RuntimeError(f"{url} names issuer {issuer!r}, not {ISSUER}")
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the OIDC provider did not answer {url} in 30 s:\n{_tail(log)}")
        time.sleep(0.2)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.is_file() else "(no log)"


@contextlib.contextmanager
def running(workdir: Path, redirect_uris: list[str]) -> Iterator[Provider]:
    """The provider on 127.0.0.1:14300 as :data:`ISSUER`, one client allowed ``redirect_uris``
    (exact matches), with a fresh random secret; its log is ``workdir/oidc.log``."""
    if not redirect_uris:
        raise ValueError("the OIDC client needs a redirect URI")
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", PORT), 1):
        raise RuntimeError(f"127.0.0.1:{PORT} is taken (an OIDC provider left from another run?)")
    node_modules()
    tls = pebble_server.ca_dir()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "oidc.log"
    # URL-safe: oidc-provider form-urldecodes a client_secret_basic secret (RFC 6749 2.3.1).
    secret = secrets.token_urlsafe(24)
    env = os.environ | {
        "OIDC_PORT": str(PORT),
        "OIDC_ISSUER": ISSUER,
        "OIDC_TLS_KEY": str(tls / "key.pem"),
        "OIDC_TLS_CERT": str(tls / "cert.pem"),
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": secret,
        "OIDC_REDIRECT_URIS": json.dumps(redirect_uris),
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["node", "provider.mjs"], cwd=HERE, stdout=out, stderr=subprocess.STDOUT, env=env
        )
        try:
            _wait_ready(proc, tls / "ca.pem", log)
            yield Provider(ISSUER, CLIENT_ID, secret, tls / "ca.pem", log)
            if proc.poll() is not None:
                raise RuntimeError(f"the OIDC provider died ({proc.returncode}): see {log}")
        finally:
            if proc.poll() is not None:
                print(f"[oidc] provider exited ({proc.returncode}):\n{_tail(log)}", file=sys.stderr)
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
