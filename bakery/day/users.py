"""`bakery users add/reset/list`: late trainees and forgotten passwords on running hubs (ssh)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bakery.config.workshop import Workshop, load_config
from bakery.day.targets import targets
from bakery.errors import BakeryError, UsageError
from bakery.layout import (
    API_TOKEN_FILE,
    HOMES_UNIT,
    HUB_API_LOCAL,
    HUB_PREFIX,
    LOGINS_DIR,
    SCRIPT_DIR,
)
from bakery.progress import Reporter, quiet
from bakery.ssh import Ssh, Target
from bakery.templates import render
from bakery.topology import topology
from bakery.workshop.accounts import (
    Account,
    credentials_path,
    ensure_credentials,
    reset_passwords,
    sheet_order,
)

REMOTE_PYTHON = f"{HUB_PREFIX}/bin/python3"


@dataclass
class UsersResult:
    """What `users add` / `users reset` did: the accounts (passwords for the instructor) and, per
    server, what happened to each."""

    accounts: list[Account]
    servers: dict[str, dict[str, str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def remote_program() -> str:
    """The Python program run as root on each server (see cloudinit/bakery-users.py.j2)."""
    from bakery.version import __version__

    return render(
        "cloudinit/bakery-users.py.j2",
        bakery_version=__version__,
        api_url=HUB_API_LOCAL,
        api_token_file=API_TOKEN_FILE,
        homes_script=f"{SCRIPT_DIR}/homes.py",
        homes_unit=HOMES_UNIT,
        logins_dir=LOGINS_DIR,
    )


def run_remote(ssh: Ssh, target: Target, request: dict[str, Any]) -> Any:
    """Run the program on ``target`` with ``request`` on stdin; its JSON answer.

    Raises:
        BakeryError: ssh failed, or the program did (with its message).
    """
    command = ["sudo", REMOTE_PYTHON, "-c", remote_program()]
    return run_json(ssh, target, command, stdin=json.dumps(request).encode())


def run_json(
    ssh: Ssh, target: Target, command: list[str], *, stdin: bytes = b"", timeout: float = 300
) -> Any:
    """Run ``command`` on ``target`` over ssh; the one JSON document it prints.

    Raises:
        BakeryError: ssh failed, or the command did (its last line on stderr), or it printed
            something else.
    """
    done = ssh.run(target, command, stdin=stdin, timeout=timeout)
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
        raise BakeryError(f"{target.name}: {lines[-1]}")
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise BakeryError(f"{target.name}: unexpected answer: {done.stdout[:200]!r}") from None


def _provider_owns_logins(cfg: Workshop, config_path: Path, command: str) -> None:
    """`users add/reset` with a provider's logins: nothing to do here, say what is."""
    if not cfg.auth.oauth:
        return
    kind, service = cfg.auth.kind, cfg.auth.service
    if command == "add":
        raise UsageError(
            f"{config_path}: auth.kind {kind}: people log in with {service} and the hub makes "
            "each account at its first login; to let someone in, add their username or e-mail "
            f"to auth.allowed_users (or a group to auth.allowed_groups), then `bakery update "
            f"{config_path}`"
        )
    raise UsageError(
        f"{config_path}: auth.kind {kind}: passwords belong to {service}; a trainee who lost "
        "theirs resets it there (bakery holds none)"
    )


def _not_in_config(cfg: Workshop, config_path: Path, names: list[str]) -> None:
    missing = [n for n in names if n not in cfg.users.all_names()]
    if missing:
        listed = ", ".join(missing)
        raise UsageError(
            f"{listed}: not in {config_path}. Add {'them' if len(missing) > 1 else 'it'} to "
            f"users.names first (e.g. `names: [{listed}]` under users:), so that a relaunch "
            "keeps the account; bakery does not rewrite your YAML. Then run this again."
        )


def homes(cfg: Workshop, config_path: Path) -> dict[str, str]:
    """Which server holds each trainee, as `bakery launch` dealt them (admins are on every one)."""
    return topology(cfg, sheet_order(credentials_path(config_path))).placement


def _push(
    ssh: Ssh,
    servers: list[Target],
    action: str,
    accounts: list[Account],
    result: UsersResult,
    progress: Reporter,
    home: dict[str, str] | None = None,
) -> UsersResult:
    """Send ``accounts`` to each server; with ``home``, a trainee only to the server that holds
    them (``--host`` targets, which bakery did not place, get every account)."""
    for target in servers:
        mine = [a for a in accounts if (home or {}).get(a.username, target.name) == target.name]
        if not mine:
            continue
        progress(f"{target.name}: {action} {len(mine)} account(s)")
        try:
            result.servers[target.name] = run_remote(ssh, target, _request(action, mine))
        except BakeryError as exc:
            result.errors.append(str(exc))
    running = {t.name for t in servers}
    for a in accounts:
        where = (home or {}).get(a.username)
        if where is not None and where not in running:
            result.errors.append(
                f"{a.username}: their server {where} is not running (see `bakery status`); "
                "`bakery launch` brings it back with this account"
            )
    return result


def _request(action: str, accounts: list[Account]) -> dict[str, Any]:
    # Hashes only: the plaintext stays in the sheet on this machine.
    return {"action": action, "accounts": [{"name": a.username, "hash": a.hash} for a in accounts]}


def add_users(
    *,
    config_path: Path,
    names: list[str],
    hosts: list[str] | None = None,
    identity: Path | None = None,
    progress: Reporter = quiet,
) -> UsersResult:
    """Add trainees listed in the config to the sheet and to every running server.

    Idempotent: an account that exists keeps its password. The servers get the account with the
    sheet's hash, a private home, and a place in the hub's allowed users (REST API; no restart).
    """
    cfg = load_config(config_path)
    _provider_owns_logins(cfg, config_path, "add")
    _not_in_config(cfg, config_path, names)
    accounts = ensure_credentials(cfg, credentials_path(config_path))
    chosen = [a for a in accounts if a.username in names]
    ssh = Ssh.for_workshop(cfg, config_path, identity)
    home = None if hosts else homes(cfg, config_path)
    return _push(ssh, targets(cfg, hosts), "add", chosen, UsersResult(chosen), progress, home)


def reset_users(
    *,
    config_path: Path,
    names: list[str],
    hosts: list[str] | None = None,
    identity: Path | None = None,
    progress: Reporter = quiet,
) -> UsersResult:
    """New passwords for ``names``: in the sheet first, then on every running server."""
    cfg = load_config(config_path)
    _provider_owns_logins(cfg, config_path, "reset")
    _not_in_config(cfg, config_path, names)
    servers = targets(cfg, hosts)  # before the sheet changes: no server, no new password
    accounts = reset_passwords(cfg, credentials_path(config_path), names)
    ssh = Ssh.for_workshop(cfg, config_path, identity)
    home = None if hosts else homes(cfg, config_path)
    return _push(ssh, servers, "reset", accounts, UsersResult(accounts), progress, home)


@dataclass(frozen=True)
class HubUser:
    """One user of one hub as `users list` shows it."""

    server: str
    name: str
    admin: bool
    last_activity: str | None
    running: bool
    started: str | None = None  # when the running server started (unchanged by `users add`)
    logged_in: bool | None = None  # the hub's record of logins (None: a hub without one)

    def line(self) -> str:
        """``intro-1  training01  last seen 2026-...  server running``; a server started before
        its trainee came (`bakery warm`) is ``server warm``."""
        never = self.logged_in is False or not self.last_activity
        seen = "never logged in" if never else f"last seen {self.last_activity}"
        role = " (admin)" if self.admin else ""
        state = "no server"
        if self.running:
            state = "server warm" if self.logged_in is False else "server running"
        return f"{self.server}  {self.name}{role}  {seen}  {state}"


def list_users(
    *, config_path: Path, hosts: list[str] | None = None, identity: Path | None = None
) -> list[HubUser]:
    """Who logged in to each running hub and whose server runs (the hubs' REST API)."""
    cfg = load_config(config_path)
    ssh = Ssh.for_workshop(cfg, config_path, identity)
    out = []
    for target in targets(cfg, hosts):
        for u in run_remote(ssh, target, {"action": "list", "accounts": []}):
            ready = [s for s in u["servers"].values() if s.get("ready")]
            started = ready[0].get("started") if ready else None
            admin = bool(u["admin"])
            seen = u["last_activity"]
            logged_in = u.get("logged_in")
            out.append(
                HubUser(target.name, u["name"], admin, seen, bool(ready), started, logged_in)
            )
    return out
