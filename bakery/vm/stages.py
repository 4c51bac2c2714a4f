"""The user-data's stages (full, bake, boot), a swarm's roles, and the line that ends a stage."""

from __future__ import annotations

import re
from typing import Literal

# bake: what a golden image holds; boot: what a VM booted from it still needs; full: both, for a
# stock image (bakery.vm.userdata).
Stage = Literal["full", "bake", "boot"]
STAGES: tuple[Stage, ...] = ("full", "bake", "boot")
# cluster.engine swarm: the manager (the hub, the proxy, NFS; the default) or a worker (trainees'
# servers). The bake stage is the same for both: one golden image serves the whole cluster.
Role = Literal["manager", "worker"]
ROLES: tuple[Role, ...] = ("manager", "worker")

# cloud-init prints the document's final_message on the console once every module has run; its
# text before $UPTIME is how the console scan (bakery.vm.console) recognises the end of a stage.
FINAL_MARKER_RE = re.compile(
    r"bakery: (?P<workshop>\S+) (?P<stage>" + "|".join(STAGES) + r") stage done after "
)


def final_message(workshop: str, stage: Stage) -> str:
    """The cloud-config's ``final_message``: the console line that marks the end of ``stage``.

    :data:`FINAL_MARKER_RE` recognises it (cloud-init replaces ``$UPTIME`` with seconds).
    """
    return f"bakery: {workshop} {stage} stage done after $UPTIME seconds"
