"""The one way to reach a VM: ssh as the workshop's login user, its key, its own known_hosts."""

from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bakery.config.workshop import Workshop
from bakery.errors import BakeryError, UsageError

CONNECT_TIMEOUT = 20
# ssh's messages when the connection never reached the key exchange: sshd is not listening yet
# or is restarting (a VM that just booted). The command did not run; trying again is safe.
NOT_LISTENING = ("kex_exchange_identification", "Connection refused")
RETRIES = 3  # tries after the first, RETRY_WAIT apart
RETRY_WAIT = 5.0


@dataclass(frozen=True)
class Target:
    """One server to reach: its name (for messages), address and ssh port."""

    name: str
    host: str
    port: int = 22
    via: Target | None = None  # reached through this one (a swarm worker, through its manager)


def parse_host(text: str) -> Target:
    """``HOST`` or ``HOST:PORT`` (``--host``), e.g. ``127.0.0.1:2222`` for a `bakery try` VM."""
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if not host or (port and not port.isdigit()) or not 0 < int(port or 22) < 65536:
        raise UsageError(f"--host {text!r}: write HOST or HOST:PORT (e.g. 203.0.113.10:22)")
    return Target(text, host, int(port or 22))


def identity_file(cfg: Workshop, identity: Path | None = None) -> Path | None:
    """The private key: ``--identity``, else ``openstack.public_key`` without ``.pub`` if it
    exists, else None (ssh's own keys and agent)."""
    if identity is not None:
        if not identity.expanduser().is_file():
            raise UsageError(f"--identity {identity}: no such file")
        return identity.expanduser()
    if cfg.openstack.public_key:
        pub = Path(cfg.openstack.public_key).expanduser()
        private = pub.with_suffix("") if pub.suffix == ".pub" else None
        if private is not None and private.is_file():
            return private
    return None


@dataclass(frozen=True)
class Ssh:
    """How to reach the servers: login user, key, and the workshop's own known_hosts file."""

    user: str
    identity: Path | None
    known_hosts: Path

    @classmethod
    def for_workshop(cls, cfg: Workshop, config_path: Path, identity: Path | None = None) -> Ssh:
        """The login user, the workshop's key and ``NAME.known_hosts`` beside the config."""
        known = config_path.with_name(config_path.stem + ".known_hosts")
        return cls(cfg.login_user, identity_file(cfg, identity), known)

    def argv(self, target: Target, command: list[str]) -> list[str]:
        """The ssh command line running ``command`` (quoted for the remote shell)."""
        opts = [
            "-p", str(target.port), "-o", "BatchMode=yes",
            # A new VM's key is learnt on first contact; a changed key for the same address is
            # refused (the message says which file to edit).
            "-o", "StrictHostKeyChecking=accept-new",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", "LogLevel=ERROR",
        ]  # fmt: skip
        if self.identity is not None:
            opts += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        if target.via is not None:
            # The jump's own ssh, with the same key and known_hosts, forwards the connection.
            via = target.via
            jump = [*self.argv(via, [])[:-2], "-W", "%h:%p", f"{self.user}@{via.host}"]
            opts += ["-o", f"ProxyCommand={shlex.join(jump)}"]
        return ["ssh", *opts, f"{self.user}@{target.host}", shlex.join(command)]

    def run(
        self, target: Target, command: list[str], *, stdin: bytes = b"", timeout: float = 300
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``command`` on ``target``; raise with ssh's message when ssh itself fails. A
        connection sshd did not take (not listening yet, restarting) is tried again."""
        for retry in range(RETRIES + 1):
            try:
                done = subprocess.run(
                    self.argv(target, command), input=stdin, capture_output=True,
                    timeout=timeout, check=False,
                )  # fmt: skip
            except FileNotFoundError:
                raise UsageError("ssh not found: install openssh-client") from None
            except subprocess.TimeoutExpired:
                raise BakeryError(f"{target.name}: ssh timed out after {timeout:.0f} s") from None
            if done.returncode != 255:
                return done
            if retry == RETRIES or not any(m.encode() in done.stderr for m in NOT_LISTENING):
                break
            time.sleep(RETRY_WAIT)
        raise BakeryError(self.failure(target, done.stderr))

    def failure(self, target: Target, stderr: bytes) -> str:
        """ssh's own error, with the way out for the usual causes."""
        text = stderr.decode(errors="replace").strip()
        hint = ""
        if "IDENTIFICATION HAS CHANGED" in text or "Host key verification failed" in text:
            hint = f" (a new VM at the same address? remove its line from {self.known_hosts})"
        elif "Permission denied" in text:
            key = self.identity or "ssh's default keys"
            hint = f" (key {key} for {self.user}; pass --identity PRIVATE_KEY)"
        last = text.splitlines()[-1] if text else "no message"
        return f"{target.name}: ssh {self.user}@{target.host}:{target.port} failed: {last}{hint}"
