"""`bakery update`'s plan: per server, what changes in three groups, and what the apply request
carries (bakery.day.drift makes it; bakery.day.update applies it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bakery.ssh import Target
from bakery.topology import Machine
from bakery.vm.files import VmFile

Group = Literal["live", "restart", "relaunch"]
GROUP_TITLES: dict[Group, str] = {
    "live": "applied live (trainees' servers and kernels keep running)",
    "restart": "reaches running servers when they restart (--restart-servers)",
    "relaunch": "needs a relaunch (refused)",
}
# The order the server runs an update's steps in: the trainees' image first (built before any
# file names it; when it fails nothing is written); systemd reads its units; nginx serves the
# new name before certbot asks for its certificate; the hub restarts after the files it reads
# at start, and the steps that use its API come after it.
STEP_ORDER = (
    "image", "daemon-reload", "expiry", "sshd", "nginx", "tls", "homes", "data", "content",
    "environment", "limits", "hub", "admins", "restart-servers",
)  # fmt: skip
RELAUNCH = "relaunch: `bakery collect`, `bakery destroy`, `bakery bake`, `bakery launch`"


@dataclass(frozen=True)
class Item:
    """One line of a plan: its group, what changes, for whom, and the lines that changed."""

    group: Group
    what: str
    whom: str = ""
    detail: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        whom = f" ({self.whom})" if self.whom else ""
        return [f"    {self.what}{whom}", *(f"        {d}" for d in self.detail)]


@dataclass
class ServerPlan:
    """What one server gets: the plan's items, and what the apply request carries."""

    target: Target
    machine: Machine
    items: list[Item] = field(default_factory=list)
    files: list[VmFile] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    steps: set[str] = field(default_factory=set)
    accounts: list[str] = field(default_factory=list)  # to make, with the sheet's passwords
    admins: dict[str, list[str]] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    applied: dict[str, Any] = field(default_factory=dict)
    content: dict[str, dict[str, str]] = field(default_factory=dict)  # root -> name -> base64
    image: dict[str, Any] = field(default_factory=dict)  # docker: the trainees' image to build
    tls: dict[str, str] = field(default_factory=dict)  # the certificate to make: mode, domain
    expiry: bool = False  # the workshop has an end: the expiry timer runs

    def add(self, group: Group, what: str, whom: str = "", detail: tuple[str, ...] = ()) -> None:
        self.items.append(Item(group, what, whom, detail))

    @property
    def refused(self) -> list[Item]:
        return [i for i in self.items if i.group == "relaunch"]

    @property
    def changes(self) -> bool:
        """Whether the live part writes or runs anything."""
        return bool(self.files or self.remove or self.steps or self.accounts)

    def lines(self) -> list[str]:
        if not self.items:
            return [f"{self.target.name}: matches the workshop file; nothing to do"]
        out = [f"{self.target.name}:"]
        for group, title in GROUP_TITLES.items():
            mine = [i for i in self.items if i.group == group]
            if mine:
                out.append(f"  {title}:")
                for item in mine:
                    out += item.lines()
        return out


@dataclass
class UpdatePlan:
    """Every server's plan, the servers not reached, and what no server can take."""

    servers: list[ServerPlan] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    refused: list[Item] = field(default_factory=list)  # the workshop's machines

    def lines(self) -> list[str]:
        out = []
        for plan in self.servers:
            out += plan.lines()
        for name, why in sorted(self.unreachable.items()):
            out.append(f"{name}: not reached ({why}); run update again once it answers")
        if self.refused:
            out.append(f"workshop: {GROUP_TITLES['relaunch']}:")
            for item in self.refused:
                out += item.lines()
        return out

    def refusals(self) -> list[Item]:
        return self.refused + [i for p in self.servers for i in p.refused]
