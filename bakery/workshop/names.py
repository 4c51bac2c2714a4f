"""What bakery calls what it makes: servers, security group, key pair, the ownership marker.

Servers are named after the workshop: ``NAME-1`` .. ``NAME-N`` (one hub each), or a swarm's
``NAME-manager`` and ``NAME-worker-1`` .. ``NAME-worker-N``; bakery.topology decides which a
workshop has. The metadata keys servers carry are one table, in bakery.layout (the VMs read
some of them too).
"""

from __future__ import annotations

import re

from bakery.config.workshop import Workshop


def marker(cfg: Workshop) -> str:
    """The description token of resources bakery made for this workshop."""
    return f"bakery:workshop={cfg.name}"


def owned(description: str | None, cfg: Workshop) -> bool:
    """Whether a description carries this workshop's token, whole (never a prefix of another)."""
    return marker(cfg) in (description or "").split()


def sg_name(cfg: Workshop) -> str:
    """The workshop's security group name."""
    return cfg.openstack.security_group or f"bakery-{cfg.name}"


def key_name(cfg: Workshop) -> str | None:
    """The key pair servers get (None: no key pair configured or needed)."""
    if cfg.openstack.key_name:
        return str(cfg.openstack.key_name)
    return f"bakery-{cfg.name}" if cfg.openstack.public_key else None


def hub_name(cfg: Workshop, number: int) -> str:
    """Hub ``number``'s server name: NAME-N (numbered from 1)."""
    return f"{cfg.name}-{number}"


def manager_name(cfg: Workshop) -> str:
    """The swarm manager's server name: NAME-manager."""
    return f"{cfg.name}-manager"


def worker_name(cfg: Workshop, number: int) -> str:
    """Worker ``number``'s server name: NAME-worker-N (numbered from 1)."""
    return f"{cfg.name}-worker-{number}"


def worker_number(cfg: Workshop, name: str) -> int | None:
    """N of a server named NAME-worker-N (None: not one of this workshop's workers)."""
    match = re.fullmatch(rf"{re.escape(cfg.name)}-worker-([1-9][0-9]*)", name)
    return int(match.group(1)) if match else None


def is_server_name(cfg: Workshop, name: str) -> bool:
    """Whether ``name`` is one bakery gives a server of this workshop (any count, either kind).

    Whole names only: workshop ``intro`` does not own ``intro-advanced-1``. Both kinds are
    accepted whatever the config says now, so a destroy after a change of ``cluster.engine``
    or ``openstack.count`` still finds every server made before.
    """
    suffix = "([0-9]+|manager|worker-[0-9]+)"
    return re.fullmatch(f"{re.escape(cfg.name)}-{suffix}", name) is not None
