"""`bakery destroy`: delete exactly what bakery made for a workshop, collecting failures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bakery.config.workshop import Workshop, load_config
from bakery.errors import BakeryError, CloudError
from bakery.progress import Reporter, quiet
from bakery.providers.openstack.api import api, connect
from bakery.providers.openstack.resources import (
    Tracked,
    delete_all,
    load_state,
    save_state,
    state_path,
    workshop_floating_ips,
    workshop_servers,
)
from bakery.providers.openstack.rules import find_group
from bakery.workshop.names import owned

if TYPE_CHECKING:
    from openstack.connection import Connection

HOMES_WARNING = (
    "the servers' disks are deleted with them: the trainees' files (their home folders and "
    "notebooks) are gone for good; download them first: `bakery destroy CONFIG --collect DIR` "
    "(or `bakery collect CONFIG -o DIR`)"
)


@dataclass
class DestroyPlan:
    """What `bakery destroy` deletes (or, with a dry run, would delete)."""

    items: list[Tracked]

    def lines(self) -> list[str]:
        """One line per resource."""
        return [item.label for item in self.items]

    @property
    def warning(self) -> str | None:
        """What the user loses beyond the resources (None: no server goes)."""
        return HOMES_WARNING if any(i.kind == "server" for i in self.items) else None


def plan_destroy(conn: Connection, cfg: Workshop, config_path: Path) -> DestroyPlan:
    """Everything bakery made for this workshop, found through the API and the state file."""
    items = [Tracked("server", str(s.id), s.name) for s in workshop_servers(conn, cfg)]
    items += [
        Tracked("floating_ip", str(ip.id), str(ip.floating_ip_address))
        for ip in workshop_floating_ips(conn, cfg)
    ]
    group = find_group(conn, cfg)
    if group is not None and owned(group.description, cfg):
        items.append(Tracked("security_group", str(group.id), group.name))
    keyname = load_state(state_path(config_path)).get("keypair")
    if keyname and api("find key pair", conn.compute.find_keypair, keyname) is not None:
        items.append(Tracked("keypair", keyname, keyname))
    return DestroyPlan(items)


def destroy(
    *,
    config_path: Path,
    confirm: Callable[[DestroyPlan], bool] = lambda plan: True,
    dry_run: bool = False,
    progress: Reporter = quiet,
) -> DestroyPlan:
    """Delete what bakery made for the workshop; safe to re-run. A dry run only finds it.

    Raises:
        CloudError: listing every deletion that failed (the others went ahead).
    """
    cfg = load_config(config_path)
    conn = connect(cfg)
    plan = plan_destroy(conn, cfg, config_path)
    if dry_run:
        return plan
    if not plan.items:
        progress(f"nothing of workshop {cfg.name} left to delete")
        save_state(state_path(config_path), {})
        return plan
    if not confirm(plan):
        raise BakeryError("not confirmed; nothing deleted")
    errors = delete_all(conn, plan.items, progress)
    if errors:
        raise CloudError(
            f"{len(errors)} of {len(plan.items)} deletions failed (the rest went ahead; run "
            "destroy again to retry):\n  " + "\n  ".join(errors)
        )
    save_state(state_path(config_path), {})
    return plan
