"""A provider's logins (auth.kind oidc or github) on bakery's side: the client secret's file, the
server metadata that carries it to the hub, and the issuer's discovery document (`validate`).

The secret is read from ``auth.client_secret_file`` (beside workshop.yaml, owner-only) only when a
server is made, and goes into that server's metadata (OpenStack's, or the NoCloud seed of `bakery
try`), which only root reads on the VM: never into user-data, a rendered file or the image.
"""

from __future__ import annotations

import json
import os
import stat
import urllib.error
import urllib.request
from pathlib import Path

from bakery.config.auth import SECRET_LIMIT
from bakery.config.workshop import Workshop
from bakery.errors import ConfigError
from bakery.layout import AUTH_META_SECRET
from bakery.workshop.software import config_dir

DISCOVERY = "/.well-known/openid-configuration"


def secret_path(cfg: Workshop) -> Path | None:
    """Where ``auth.client_secret_file`` points (None without a provider)."""
    name = cfg.auth.client_secret_file
    return None if name is None else config_dir(cfg) / Path(name).expanduser()


def _where(cfg: Workshop) -> str:
    return f"{cfg.source_path or 'workshop.yaml'}: auth.client_secret_file"


def client_secret(cfg: Workshop) -> str | None:
    """The OAuth client secret (None for bakery's own accounts).

    Raises:
        ConfigError: the file is missing, readable by others, empty, several lines, or too long
            for server metadata.
    """
    path = secret_path(cfg)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO: no wait
    except FileNotFoundError:
        raise ConfigError(
            f"{_where(cfg)}: {path} does not exist; write the client secret the provider gave "
            f"into it (one line) and `chmod 600 {path}`"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{_where(cfg)}: {path}: cannot open: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ConfigError(f"{_where(cfg)}: {path} is not a file; write the secret into a file")
    mode = stat.S_IMODE(st.st_mode)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(4096)
    if mode & 0o077:
        raise ConfigError(
            f"{_where(cfg)}: {path} is readable by others (mode {mode:o}); it holds a secret: "
            f"`chmod 600 {path}`"
        )
    try:
        lines = [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        lines = []
    if len(lines) != 1 or len(lines[0]) > SECRET_LIMIT or any(c.isspace() for c in lines[0]):
        raise ConfigError(
            f"{_where(cfg)}: {path} must hold the client secret alone on one line (at most "
            f"{SECRET_LIMIT} characters, no spaces): the provider shows it when the client is made"
        )
    return lines[0]


def hub_metadata(cfg: Workshop) -> dict[str, str]:
    """What the hub's server metadata carries for its logins (empty: bakery's own accounts).

    Raises:
        ConfigError: as :func:`client_secret`.
    """
    secret = client_secret(cfg)
    return {} if secret is None else {AUTH_META_SECRET: secret}


def check_issuer(cfg: Workshop, timeout: float = 10) -> str | None:
    """`validate`: read the issuer's discovery document from here; a line saying what was found
    (None without an issuer). Not reaching it is said, not an error: the provider may be reachable
    from the cloud only.

    Raises:
        ConfigError: the document answered but is not the issuer's (another issuer, no
            endpoints): the hub could not log anyone in.
    """
    issuer = cfg.auth.issuer
    if issuer is None:
        return None
    url = issuer + DISCOVERY
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (https only)
            doc = json.load(resp)
    except (OSError, ValueError) as exc:
        why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return (
            f"auth.issuer: {url} could not be read from here ({why}); the hub reads it at start "
            "and refuses to start without it: check it from a machine on the cloud's network"
        )
    where = f"{cfg.source_path or 'workshop.yaml'}: auth.issuer"
    named = str(doc.get("issuer", "")).rstrip("/") if isinstance(doc, dict) else ""
    if named != issuer:
        raise ConfigError(
            f"{where}: {url} names the issuer {named or '(none)'!r}; write exactly that as "
            "auth.issuer (the hub checks it)"
        )
    missing = [
        k for k in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint") if k not in doc
    ]
    if missing:
        raise ConfigError(f"{where}: {url} has no {', '.join(missing)}: not an OpenID provider")
    scopes = doc.get("scopes_supported") or []
    return f"auth.issuer: {issuer} answers (scopes: {', '.join(map(str, scopes)) or 'not listed'})"
