"""`bakery warm`: the trainees' servers started on the running hub(s) before the class arrives.

Each hub runs bakery_warm.py (cloudinit/bakery_warm.py.j2, in the image) as root over ssh: it
starts the servers of trainees who have none and have not logged in yet, as fast as the hub's
spawn limit allows and never past its server limit, waits for each, and says what it left cold
and why. The hub's own `warm` service then keeps those servers from the idle culler until their
trainee's first login. `warm:` in workshop.yaml does the same at boot or at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bakery.config.workshop import load_config
from bakery.day.targets import targets
from bakery.day.users import REMOTE_PYTHON, run_json
from bakery.errors import BakeryError, UsageError
from bakery.layout import SCRIPT_DIR
from bakery.progress import Reporter, quiet
from bakery.ssh import Ssh

# Starting a class's servers under emulation can take many minutes; ssh waits this long.
WARM_TIMEOUT = 3600.0
NOT_HERE = "not a user of this hub"


@dataclass
class HubWarm:
    """What one hub did: servers started now, already running, left cold (name -> why)."""

    started: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    cold: dict[str, str] = field(default_factory=dict)


@dataclass
class WarmResult:
    hubs: dict[str, HubWarm] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """``intro-1: 18 started, 2 already running, 0 cold`` and a line per cold trainee."""
        out = []
        for name, hub in self.hubs.items():
            out.append(
                f"{name}: {len(hub.started)} started, {len(hub.running)} already running, "
                f"{len(hub.cold)} left cold"
            )
            out += [f"{name}: {user}: cold: {why}" for user, why in sorted(hub.cold.items())]
        return out


def warm(
    *,
    config_path: Path,
    names: list[str] | None = None,
    hosts: list[str] | None = None,
    identity: Path | None = None,
    progress: Reporter = quiet,
) -> WarmResult:
    """Start the servers of the workshop's trainees (``names``: only theirs) on every hub.

    Raises:
        UsageError: a name that is not a trainee of the config, or no server to reach.
    """
    cfg = load_config(config_path)
    if cfg.auth.oauth:
        raise UsageError(
            f"{config_path}: auth.kind {cfg.auth.kind}: nobody has an account before they log "
            "in, so no server can be started for them ahead"
        )
    trainees = set(cfg.users.trainees())
    unknown = sorted(set(names or ()) - trainees)
    if unknown:
        raise UsageError(
            f"{', '.join(unknown)}: not a trainee in {config_path} (admins start their own "
            "servers); `bakery users list` shows who is on the hub"
        )
    ssh = Ssh.for_workshop(cfg, config_path, identity)
    result = WarmResult()
    for target in targets(cfg, hosts):
        progress(f"{target.name}: starting the trainees' servers (each waited for)")
        command = ["sudo", REMOTE_PYTHON, f"{SCRIPT_DIR}/bakery_warm.py", "now", *(names or [])]
        try:
            answer = run_json(ssh, target, command, timeout=WARM_TIMEOUT)
            hub = HubWarm(list(answer["started"]), list(answer["running"]), dict(answer["cold"]))
        except BakeryError as exc:
            result.errors.append(str(exc))
            continue
        except (KeyError, TypeError):
            result.errors.append(f"{target.name}: unexpected answer: {answer!r:.200}")
            continue
        result.hubs[target.name] = hub
        progress(f"{target.name}: {len(hub.started)} started")
    # With several hubs each trainee is on one: the others' "not mine" is no news.
    everywhere = {n for h in result.hubs.values() for n, why in h.cold.items() if why != NOT_HERE}
    placed = everywhere | {n for h in result.hubs.values() for n in h.started + h.running}
    for hub in result.hubs.values():
        hub.cold = {n: why for n, why in hub.cold.items() if not (why == NOT_HERE and n in placed)}
    return result
