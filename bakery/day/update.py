"""`bakery update`: change a running workshop from its file without stopping anyone's work.

Each server is asked what it runs (cloudinit/bakery-update.py.j2, as root over ssh; a swarm's
worker through its manager); bakery.day.drift sorts the differences into a plan; the live part
is applied by the same program, the hub last, and recorded on the server (a step that failed is
run again by the next update). docs/commands.md describes the plan's groups.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bakery.config.workshop import DEFAULT_LOGIN_USER, Workshop, load_config
from bakery.day.drift import plan_server, state_request
from bakery.day.plan import STEP_ORDER, Item, ServerPlan, UpdatePlan
from bakery.day.targets import every_server
from bakery.day.users import REMOTE_PYTHON, run_json, run_remote
from bakery.errors import BakeryError
from bakery.layout import (
    API_TOKEN_FILE,
    APPLIED_FILE,
    CLUSTER_ROLE_FILE,
    COURSE_DIR,
    COURSE_HOME_DIR,
    HUB_API_LOCAL,
    HUB_PREFIX,
    IMAGE_DIR,
    RECORD_PATH,
    SCRIPT_DIR,
    TLS_DIR,
    TLS_RETRY_UNITS,
    WORKSHOP_REQUIREMENTS,
)
from bakery.progress import Reporter, quiet
from bakery.ssh import Ssh, Target
from bakery.templates import render
from bakery.topology import Machine, Topology, topology
from bakery.version import __version__
from bakery.workshop.accounts import (
    Account,
    credentials_path,
    ensure_credentials,
    sheet_order,
)
from bakery.workshop.expiry import refuse_if_ended
from bakery.workshop.names import worker_number

APPLY_TIMEOUT = 3600.0  # a class's servers restarted one by one under emulation


@dataclass
class UpdateResult:
    """What `update` did on each server, and the servers it could not finish."""

    plan: UpdatePlan
    done: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        for name, did in self.done.items():
            out += [f"{name}: {line}" for line in did] or [f"{name}: nothing to do"]
        return out


def remote_program(**overrides: str) -> str:
    """The program run as root on each server (cloudinit/bakery-update.py.j2); ``overrides``:
    bakery's tests run it over a stand-in root, against a stand-in hub."""
    values = dict(
        bakery_version=__version__,
        root="/",
        record_path=RECORD_PATH,
        role_file=CLUSTER_ROLE_FILE,
        applied_file=APPLIED_FILE,
        homes_script=f"{SCRIPT_DIR}/homes.py",
        fetch_data=f"{SCRIPT_DIR}/fetch-data.py",
        workshop_env_script=f"{SCRIPT_DIR}/workshop-env.sh",
        hub_api=HUB_API_LOCAL,
        api_token_file=API_TOKEN_FILE,
        python=f"{HUB_PREFIX}/bin/python3",
        content_hook=f"{SCRIPT_DIR}/bakery_content.py",
        course_dir=COURSE_DIR,
        course_home=COURSE_HOME_DIR,
        image_dir=IMAGE_DIR,
        image_requirements=WORKSHOP_REQUIREMENTS,
        tls_dir=TLS_DIR,
        tls_script=f"{SCRIPT_DIR}/tls.sh",
        retry_timer=TLS_RETRY_UNITS[1],
        step_order=STEP_ORDER,
    )
    return render("cloudinit/bakery-update.py.j2", **(values | overrides))


def call(ssh: Ssh, target: Target, request: dict[str, Any], timeout: float = 300) -> Any:
    """Run the update program on ``target`` with ``request``; its JSON answer."""
    command = ["sudo", REMOTE_PYTHON, "-c", remote_program()]
    return run_json(ssh, target, command, stdin=json.dumps(request).encode(), timeout=timeout)


def _ask(cfg: Workshop, ssh: Ssh, target: Target, request: dict[str, Any]) -> Any:
    """``target``'s state. A server of another `os` has another login user: when the file's is
    refused, the others are tried, so that the answer can say the os changed (a relaunch)."""
    try:
        return call(ssh, target, request)
    except BakeryError as exc:
        if "Permission denied" not in str(exc) or cfg.ssh.login_user is not None:
            raise
        for user in sorted(set(DEFAULT_LOGIN_USER.values()) - {ssh.user}):
            try:
                return call(dataclasses.replace(ssh, user=user), target, request)
            except BakeryError:
                continue
        raise


def _machine_for(topo: Topology, target: Target, by_host: bool) -> Machine | None:
    if by_host:
        return topo.hubs[0]
    return topo.machine(target.name)


def make_plan(
    cfg: Workshop,
    config_path: Path,
    ssh: Ssh,
    hosts: list[str] | None,
    progress: Reporter = quiet,
) -> UpdatePlan:
    """Ask every server of the workshop what it runs; the plan."""
    order = sheet_order(credentials_path(config_path))
    # `--host`: a VM bakery did not place (a `bakery try` VM holds every account, as here).
    topo = topology(cfg, order, trial=bool(hosts))
    found = every_server(cfg, hosts)
    plan = UpdatePlan(unreachable=dict(found.unreachable))
    ours = [t for t in found.reachable if topo.machine(t.name) is not None or hosts]
    if not hosts and topo.kind == "swarm":
        have = sum(1 for n in found.all_names if worker_number(cfg, n) is not None)
        want = len(topo.workers)
        if have != want:
            plan.refused.append(
                Item("relaunch", f"cluster.workers: {have} run, the file says {want}",
                     f"`bakery scale {config_path} --workers {want}`")
            )  # fmt: skip
    elif not hosts:
        have = len(found.all_names)
        want = len(topo.hubs)
        if have != want:
            plan.refused.append(
                Item("relaunch", f"openstack.count: {have} servers run, the file says {want}",
                     "`bakery launch` adds servers (running ones are kept); fewer: collect, "
                     "then destroy and launch")
            )  # fmt: skip
    for target in ours:
        machine = _machine_for(topo, target, bool(hosts))
        if machine is None:
            plan.unreachable[target.name] = "not a server of this workshop file"
            continue
        progress(f"{target.name}: reading what it runs")
        try:
            request = state_request(cfg, machine, config_path.parent, order)
            state = _ask(cfg, ssh, target, request)
        except BakeryError as exc:
            plan.unreachable[target.name] = str(exc).removeprefix(f"{target.name}: ")
            continue
        if hosts and state.get("role") == "worker":
            # --host names no part: a worker must never get a hub's files and accounts.
            plan.unreachable[target.name] = "a swarm worker: leave out --host (the cloud's names)"
            continue
        plan.servers.append(plan_server(cfg, machine, target, state, config_path.parent))
    return plan


def config_states(cfg: Workshop, config_path: Path, identity: Path | None) -> dict[str, str]:
    """`bakery status`: whether each running server matches the workshop file, in a few words."""
    try:
        plan = make_plan(cfg, config_path, Ssh.for_workshop(cfg, config_path, identity), None)
    except BakeryError as exc:
        return {"*": f"not checked ({exc})"}
    out = {name: f"not checked ({why})" for name, why in plan.unreachable.items()}
    for server in plan.servers:
        if server.refused:
            out[server.target.name] = "needs a relaunch (`bakery update --dry-run` says why)"
        elif server.items:
            n = len(server.items)
            out[server.target.name] = f"differs, {n} change(s) (`bakery update --dry-run`)"
        else:
            out[server.target.name] = "matches the workshop file"
    return out


def apply_request(plan: ServerPlan, restart_servers: bool) -> dict[str, Any]:
    """The request that applies ``plan``'s live part (``restart_servers``: and its restarts)."""
    steps = set(plan.steps)
    if restart_servers and any(i.group == "restart" for i in plan.items):
        steps.add("restart-servers")
    return {
        "action": "apply",
        "files": [
            {
                "path": f.path,
                "content": base64.b64encode(f.content.encode()).decode(),
                "permissions": f.permissions,
                "owner": f.owner,
            }
            for f in plan.files
        ],
        "remove": plan.remove,
        "steps": sorted(steps),
        "expiry": plan.expiry,
        "limits": plan.limits,
        "admins": plan.admins,
        "content": plan.content,
        "image": plan.image,
        "tls": plan.tls,
        "applied": plan.applied,
    }


def update(
    *,
    config_path: Path,
    hosts: list[str] | None = None,
    identity: Path | None = None,
    dry_run: bool = False,
    restart_servers: bool = False,
    progress: Reporter = quiet,
) -> UpdateResult:
    """Plan, and unless ``dry_run`` apply the live part on every server of the workshop.

    Raises:
        UsageError: the workshop file asks for what only a relaunch or `scale` can do (nothing
            is changed anywhere), or no server to reach.
    """
    cfg = load_config(config_path)
    refuse_if_ended(cfg)
    ssh = Ssh.for_workshop(cfg, config_path, identity)
    plan = make_plan(cfg, config_path, ssh, hosts, progress)
    result = UpdateResult(plan)
    refused = plan.refusals()
    if dry_run or refused:
        return result
    accounts: dict[str, Account] = {}
    if any(p.accounts for p in plan.servers):
        accounts = {a.username: a for a in ensure_credentials(cfg, credentials_path(config_path))}
    for server in plan.servers:
        restarts = restart_servers and any(i.group == "restart" for i in server.items)
        if not server.changes and not restarts:
            result.done[server.target.name] = []
            continue
        did: list[str] = []
        result.done[server.target.name] = did
        try:
            answer = _apply(ssh, server, accounts, restart_servers, did, progress)
        except BakeryError as exc:
            result.errors.append(str(exc))
            continue
        for path in answer.get("skipped", []):
            result.errors.append(
                f"{server.target.name}: {path} not written: a folder on its way is a symlink "
                "(someone planted it: look before you remove it)"
            )
        said = answer.get("said") or {}
        for step, how in answer.get("steps", {}).items():
            if how != "done":
                why = f": {said[step]}" if said.get(step) else ""
                if step == "image":
                    why += "; no file was written (the hub still names the image it has)"
                result.errors.append(
                    f"{server.target.name}: {step} failed{why}; `bakery update` again finishes it"
                )
    return result


def _apply(
    ssh: Ssh,
    server: ServerPlan,
    accounts: dict[str, Account],
    restart_servers: bool,
    did: list[str],
    progress: Reporter,
) -> Any:
    """Apply one server's live part: its new accounts first (the hub restarts with them among
    its allowed users), then the program's files and steps. ``did`` gets what was done."""
    if server.accounts:
        made = [accounts[n] for n in server.accounts]
        request = {
            "action": "add",
            "accounts": [{"name": a.username, "hash": a.hash} for a in made],
        }
        answer = run_remote(ssh, server.target, request)
        did += [f"{name}: {what}" for name, what in sorted(answer.items())]
    steps = ", ".join(s for s in STEP_ORDER if s in server.steps) or "none"
    progress(f"{server.target.name}: applying {len(server.files)} file(s), steps: {steps}")
    answer = call(ssh, server.target, apply_request(server, restart_servers), APPLY_TIMEOUT)
    did += [f"wrote {p}" for p in answer.get("written", [])]
    did += [f"removed {p}" for p in answer.get("removed", [])]
    did += [f"{step}: {how}" for step, how in answer.get("steps", {}).items()]
    limits = answer.get("limits") or {}
    if limits.get("changed"):
        did.append(f"limits set on {len(limits['changed'])} running server(s)")
    copied = (answer.get("content") or {}).get("copied_to") or []
    if copied:
        did.append(f"course files copied where ~/course lacked them: {', '.join(copied)}")
    if answer.get("image"):
        did.append(f"the trainees' image: {answer['image']}")
    if answer.get("certificate"):
        did.append(f"the certificate: for {answer['certificate']}")
    restarted = answer.get("restarted") or {}
    if restarted.get("done"):
        did.append(f"restarted: {', '.join(restarted['done'])}")
    return answer


def refusal_message(plan: UpdatePlan, config_path: Path) -> str:
    """One message for every refused change: the field, why, and the command to use."""
    lines = [f"{config_path}: these changes need more than an update (nothing was changed):"]
    for item in plan.refusals():
        lines.append(f"  {item.what}: {item.whom}")
    return "\n".join(lines)
