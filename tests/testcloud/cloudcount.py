"""Counting a workshop's resources through the cloud's API, for the test-cloud tests."""

from __future__ import annotations

from typing import Any


def counts(conn: Any, name: str) -> dict[str, int]:
    """What exists of workshop ``name``, counted through the API."""
    token = f"bakery:workshop={name}"
    return {
        "servers": sum(
            1
            for s in conn.compute.servers(details=True)
            if (s.metadata or {}).get("bakery_workshop") == name
        ),
        "floating_ips": sum(
            1 for ip in conn.network.ips() if token in (ip.description or "").split()
        ),
        "security_groups": sum(
            1 for g in conn.network.security_groups() if g.name == f"bakery-{name}"
        ),
        "keypairs": sum(1 for k in conn.compute.keypairs() if k.name == f"bakery-{name}"),
    }
