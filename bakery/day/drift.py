"""What a running server has against its workshop file: the plan `bakery update` applies.

What a server runs is recorded on the server itself: the image's bake record
(``/etc/bakery/image.json``: what was installed, from which locks) and the boot stage's files (the
hub's config, the expiry times, the quotas, sshd's and nginx's config: every value the boot stage
set); after an update also ``/etc/bakery/applied.json`` (the workshop file's digest, when, and
any step left to finish). The server's answer (bakery.day.update asks it) against the boot stage
rendered again, as `launch` would, gives a plan per server in three groups:

- **live**: applied now; trainees' servers and kernels keep running (the hub restarts when its
  config changed, and ``cleanup_servers = False`` keeps every server through that);
- **restart**: reaches running servers when they restart (``--restart-servers`` restarts them
  through the hub, one at a time; their files stay);
- **relaunch**: refused, with why and the command (the image or the machines would change).
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bakery.config.workshop import Workshop
from bakery.day.plan import RELAUNCH, ServerPlan
from bakery.layout import (
    AUTH_MODULE,
    AUTH_SECRET_FILE,
    CONFIG_DIR,
    COURSE_DIR,
    EXPIRY_FILE,
    EXPIRY_UNITS,
    HOMES_FILE,
    NGINX_SITE,
    SCRIPT_DIR,
    SHARED_DATA_DIR,
    SHARED_DATA_SOURCE,
    SSHD_DROPIN,
    TLS_DIR,
    UNIT_DIR,
    WORKSHOP_REQUIREMENTS,
)
from bakery.ssh import Target
from bakery.topology import Machine, machine_config
from bakery.version import __version__
from bakery.vm import image, userdata
from bakery.vm.context import context
from bakery.vm.files import TLS_PATHS, VmFile, tls_files
from bakery.vm.userdata import build_cloud_config
from bakery.workshop import content, software
from bakery.workshop.accounts import Account, account_names
from bakery.workshop.login import client_secret
from bakery.workshop.sizing import mem_limit_bytes

HUB_CONFIG = f"{CONFIG_DIR}/jupyterhub_config.py"
TRAINEE_LOCK = f"{SCRIPT_DIR}/{WORKSHOP_REQUIREMENTS}"
EXPIRY_PATHS = (EXPIRY_FILE, f"{SCRIPT_DIR}/expiry.py", *(f"{UNIT_DIR}/{u}" for u in EXPIRY_UNITS))
# Boot-stage files a workshop file may have or not: asked for even when the new render has none,
# so that one the file no longer sets is removed.
OPTIONAL_PATHS = (*EXPIRY_PATHS, HOMES_FILE, SHARED_DATA_SOURCE, AUTH_MODULE, AUTH_SECRET_FILE)
# What each of bakery's boot-stage files holds, and the step that makes its change count.
KNOWN: dict[str, tuple[str, str]] = {
    HUB_CONFIG: ("the hub's config (admins, limits, idle culling, spawn limits)", "hub"),
    **{p: ("the workshop's end (ends, grace) and its timer", "expiry") for p in EXPIRY_PATHS},
    NGINX_SITE: ("nginx's site (tls.domain)", "nginx"),
    SSHD_DROPIN: ("sshd's policy (ssh.*)", "sshd"),
    HOMES_FILE: ("the homes' quota (spawner.disk_limit)", "homes"),
    SHARED_DATA_SOURCE: ("shared_data.url", "data"),
    AUTH_MODULE: ("the hub's logins through a provider (auth)", "hub"),
    # Never shown: the plan says only that it changed.
    AUTH_SECRET_FILE: ("the OAuth client secret (auth.client_secret_file)", "hub"),
}
WHOM = {
    "hub": "the hub restarts; servers and kernels keep running; new servers get the new settings",
    "expiry": "the hub and the expiry timer read it at each use",
    "nginx": "nginx reloads",
    "sshd": "sshd reloads",
    "homes": "every home's quota, now",
    "data": "fetched and unpacked now",
    "daemon-reload": "systemd reads its units again",
}
# Shown as a before/after diff in the plan: small, bakery's own, nothing secret.
SHOWN = (HUB_CONFIG, EXPIRY_FILE, HOMES_FILE, SSHD_DROPIN)
# The image's parts an update cannot change: the hub's software and how it was installed.
BAKED_COMPONENTS = (
    "jupyterhub", "configurable-http-proxy", "jupyterhub-idle-culler", "oauthenticator",
    "dockerspawner",
    "jupyterhub-systemdspawner", "jupyterlab", "hub-lock", "miniforge", "user-image",
)  # fmt: skip
# Stands in for each account's password hash: no file of the boot stage holds one.
_THROWAWAY_HASH = "$6$bakeryupdate$" + "x" * 86
MAX_PUSH = 64 * 10**6  # bytes of `from:` folder files one update sends (in its JSON request)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def config_digest(cfg: Workshop) -> str:
    """The whole workshop file's settings, as a server records what it was updated to."""
    data = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def expected_files(cfg: Workshop, machine: Machine) -> list[VmFile]:
    """``machine``'s boot-stage files as `launch` renders them. No file holds a password hash:
    throwaway accounts stand in, and no sheet is written."""
    mine = machine_config(cfg, machine)
    accounts = None
    if machine.serves_hub:
        # One throwaway hash for all: a class of 200 would otherwise hash 200 passwords here.
        accounts = [Account(n, "", _THROWAWAY_HASH) for n in account_names(mine)]
    doc = build_cloud_config(mine, stage="boot", accounts=accounts, role=machine.role)
    return [
        VmFile(f["path"], f["content"], f["permissions"], f["owner"]) for f in doc["write_files"]
    ]


def local_content(cfg: Workshop, config_dir: Path) -> dict[str, dict[str, Path]]:
    """The `from:` folders' files by where they go on a hub (shared_data.path, the course's
    folder): relative name -> local file. Symlinks are not pushed (a bake copies them)."""
    out: dict[str, dict[str, Path]] = {}
    for folder in content.folders(cfg, config_dir):
        if not folder.source.is_dir():
            continue  # launched from an image baked elsewhere: nothing here to push
        root = COURSE_DIR if folder.key == "course.from" else _shared_path(cfg)
        out[root] = {e.name: e.path for e in content.scan(folder) if e.kind == "file"}
    return out


def _shared_path(cfg: Workshop) -> str:
    return cfg.shared_data.path if cfg.shared_data is not None else SHARED_DATA_DIR


def bake_packages(cfg: Workshop) -> list[str]:
    """The apt packages the bake installs (`packages:`, the kernels', bakery's own)."""
    # Not the whole bake stage: that reads the lock, which a refused change (hub.install) breaks.
    return sorted(set(userdata.packages(cfg)))


def state_request(
    cfg: Workshop, machine: Machine, config_dir: Path, known: Sequence[str] = ()
) -> dict[str, Any]:
    """What to ask ``machine`` for: its boot files' digests, the small ones' text, its accounts
    (``known``: the sheet's too, to tell whom the file no longer lets in), the digests of the
    `from:` folders' files where they were unpacked."""
    paths = [f.path for f in expected_files(cfg, machine)]
    more = (*OPTIONAL_PATHS, TRAINEE_LOCK, *(TLS_PATHS if machine.serves_hub else ()))
    paths += [p for p in more if p not in paths]
    folders = local_content(cfg, config_dir) if machine.serves_hub else {}
    return {
        "action": "state",
        "apt": bake_packages(cfg),
        "paths": paths,
        "show": [p for p in SHOWN if p in paths],
        "accounts": list(dict.fromkeys([*machine.accounts, *known])) if machine.serves_hub else [],
        "content": {root: sorted(files) for root, files in folders.items()},
        "docker_images": [cfg.spawner.image] if cfg.spawner.kind == "docker" else [],
        "certificate": f"{TLS_DIR}/cert.pem" if machine.serves_hub else None,
    }


def _diff(old: str | None, new: str) -> tuple[str, ...]:
    """The changed lines of a small config file, before (-) and after (+); comments left out."""
    if old is None:
        return ()
    out = []
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), n=0, lineterm=""):
        if line.startswith(("---", "+++", "@@")) or line[1:].lstrip().startswith("#"):
            continue
        if line[1:].strip():
            out.append(line if len(line) <= 150 else line[:147] + "...")
    return tuple(out[:16])


def _refusals(cfg: Workshop, state: dict[str, Any], plan: ServerPlan) -> None:
    """What the server's image or machine holds that the workshop file now says otherwise."""
    record = state.get("record") or {}
    have: dict[str, Any] = record.get("components") or {}

    def refuse(key: str, was: object, now: object) -> None:
        plan.add("relaunch", f"{key}: the server has {was}, the file says {now}", RELAUNCH)

    if record.get("os") not in (None, cfg.os):
        refuse("os", record["os"], cfg.os)
    if have:
        kind = "docker" if "dockerspawner" in have else "systemd"
        if kind != cfg.spawner.kind:
            refuse("spawner.kind", kind, cfg.spawner.kind)
        install = "conda" if "miniforge" in have else "venv"
        if install != cfg.hub.install:
            refuse("hub.install", install, cfg.hub.install)
    role = state.get("role")
    swarm = plan.machine.part != "hub"
    if (role is not None) != swarm:
        refuse("cluster.engine", "swarm" if role else "none", "swarm" if swarm else "none")
    apt: dict[str, bool] = state.get("apt") or {}
    missing = sorted(name for name, there in apt.items() if not there)
    if missing:
        plan.add(
            "relaunch",
            f"packages/kernels: {', '.join(missing)} not installed on the server (apt packages "
            "are the image's)",
            RELAUNCH,
        )
    if have and not plan.refused:
        want = image.record(cfg)["components"]
        for name in BAKED_COMPONENTS:
            if have.get(name) != want.get(name) and not (name == "user-image" and not swarm):
                # A swarm's image is on every node: each would build it (a relaunch).
                key = "hub.versions" if name != "user-image" else "spawner.image/environment"
                refuse(f"{key} ({name})", have.get(name), want.get(name))


def _user_image(cfg: Workshop, state: dict[str, Any], plan: ServerPlan) -> None:
    """docker on one VM: the trainees' image (its layer of environment:'s packages) is built on
    the server from the image it has loaded, before the hub's config names it."""
    have = ((state.get("record") or {}).get("components") or {}).get("user-image")
    want = image.record(cfg)["components"]["user-image"]
    if have is None or have == want:
        return
    if not (state.get("docker_images") or {}).get(cfg.spawner.image):
        plan.add(
            "relaunch",
            f"spawner.image: {cfg.spawner.image} is not on the server (the bake loads it; "
            "no registry is asked)",
            RELAUNCH,
        )
        return
    layer = software.image_layer(cfg)
    plan.image = {
        "base": cfg.spawner.image,
        "tag": want,
        "dockerfile": layer.dockerfile if layer is not None else None,
        "requirements": layer.requirements if layer is not None else None,
    }
    plan.steps.add("image")
    how = f"built on the server from {cfg.spawner.image}" if layer is not None else "as it is"
    plan.add("live", f"the trainees' image (environment:): {want}, {how}", "new servers")
    plan.add("restart", "the trainees' image: running servers start from it after a restart")


def plan_server(
    cfg: Workshop,
    machine: Machine,
    target: Target,
    state: dict[str, Any],
    config_dir: Path | None = None,
) -> ServerPlan:
    """Compare what ``target`` runs (``state``, its answer) with the workshop file (and its
    `from:` folders, beside it in ``config_dir``)."""
    plan = ServerPlan(target, machine)
    _refusals(cfg, state, plan)
    if not plan.refused and machine.part == "hub" and cfg.spawner.kind == "docker":
        _user_image(cfg, state, plan)
    if plan.refused:
        return plan  # nothing is applied beside a refusal: this file no longer describes it
    files = _files(cfg, machine, state, plan)
    if machine.serves_hub:
        _accounts(cfg, machine, state, plan)
        _limits(cfg, state, plan)
        _tls(cfg, state, plan)
        _environment(cfg, state, plan)
        if config_dir is not None:
            _content(cfg, config_dir, state, plan)
    for step in _pending(state):
        # The image and the certificate are asked again each time (_user_image, _tls).
        if step not in plan.steps and step not in ("image", "tls"):
            plan.steps.add(step)
            if step == "limits":
                plan.limits = _limit_values(cfg)
            plan.add("live", f"{step}: left unfinished by the last update", "run again")
    plan.expiry = cfg.ends is not None
    plan.applied = {
        "config_sha256": config_digest(cfg),
        "files": {f.path: _sha(f.content) for f in files},
        "bakery_version": __version__,
    }
    return plan


def _files(
    cfg: Workshop, machine: Machine, state: dict[str, Any], plan: ServerPlan
) -> list[VmFile]:
    """The boot stage's files that differ (written, and the step that makes each count), and
    those the workshop file no longer sets (removed); every boot file, for the record."""
    have: dict[str, str | None] = state.get("files") or {}
    shown: dict[str, str | None] = state.get("shown") or {}
    files = expected_files(cfg, machine)
    secret = client_secret(cfg) if machine.serves_hub else None
    if secret is not None:
        # Launch put it in the server's metadata; an update sends it over ssh (root only).
        files.append(VmFile(AUTH_SECRET_FILE, secret + "\n", "0600"))
    for f in files:
        if have.get(f.path) == _sha(f.content):
            continue
        plan.files.append(f)
        what, step = KNOWN.get(f.path, (f"files: {f.path}", ""))
        if f.path.startswith(UNIT_DIR + "/"):
            plan.steps.add("daemon-reload")
        if step:
            plan.steps.add(step)
        verb = "new" if have.get(f.path) is None else "changed"
        detail = _diff(shown.get(f.path), f.content) if f.path in SHOWN else ()
        plan.add("live", f"{what}: {verb} {f.path}", WHOM.get(step, "written now"), detail)
    written = {f.path for f in files}
    for path in OPTIONAL_PATHS:
        if path not in written and have.get(path) is not None:
            plan.remove.append(path)
            what, step = KNOWN[path]
            plan.steps.add(step)
            if path.startswith(UNIT_DIR + "/"):
                plan.steps.add("daemon-reload")
            plan.add("live", f"{what}: removed {path}", WHOM.get(step, ""))
    return files


def _accounts(cfg: Workshop, machine: Machine, state: dict[str, Any], plan: ServerPlan) -> None:
    """Accounts the file adds (made with the sheet's passwords) and admins it takes away (a
    provider's logins: the hub makes accounts and sets admins at each login)."""
    if cfg.auth.oauth:
        return
    exists: dict[str, bool] = state.get("accounts") or {}
    admins = set(cfg.users.admins)
    missing = [n for n in machine.accounts if not exists.get(n, True)]
    if missing:
        plan.accounts = missing
        names = ", ".join(f"{n} (admin)" if n in admins else n for n in missing)
        plan.add(
            "live", f"accounts made: {names}", "passwords from the sheet; slips: `bakery slips`"
        )
    hub_admins = state.get("hub_admins")
    revoke = sorted(set(hub_admins or ()) - admins)
    if revoke:
        # JupyterHub keeps a removed admin's rights in its database: bakery takes them back.
        plan.admins = {"revoke": revoke}
        plan.steps.add("admins")
        plan.add("live", f"admin rights taken back: {', '.join(revoke)}", "account and home stay")
    allowed = set(machine.accounts)
    gone = sorted(n for n, there in exists.items() if there and n not in allowed)
    if gone:
        plan.add("live", f"no longer let in: {', '.join(gone)}", "account and home stay")


def _tls(cfg: Workshop, state: dict[str, Any], plan: ServerPlan) -> None:
    """The certificate's scripts (the bake's: tls.mode and tls.domain are in them) and the
    certificate: a new one when they changed or it lacks the file's domain."""
    have: dict[str, str | None] = state.get("files") or {}
    want = tls_files(cfg, context(cfg))
    changed = [f for f in want if have.get(f.path) != _sha(f.content)]
    gone = [p for p in TLS_PATHS if p not in {f.path for f in want} and have.get(p) is not None]
    names = state.get("certificate")  # its DNS names (None: no certificate read)
    domain = cfg.tls.domain
    lacking = bool(domain) and names is not None and domain not in names
    if not (changed or gone or lacking or "tls" in _pending(state)):
        return
    plan.files += changed
    plan.remove += gone
    if any(p.startswith(UNIT_DIR + "/") for p in [*(f.path for f in changed), *gone]):
        plan.steps.add("daemon-reload")
    plan.steps.add("tls")
    plan.tls = {"mode": cfg.tls.mode, "domain": domain or ""}
    how = "by ACME (certbot)" if cfg.tls.mode == "letsencrypt" else "self-signed, made there"
    name = f" for {domain}" if domain else ""
    plan.add("live", f"the certificate (tls.mode {cfg.tls.mode}): a new one{name}, {how}",
             "nginx reloads with it; a failed ACME order keeps the one it has")  # fmt: skip


def _pending(state: dict[str, Any]) -> list[str]:
    """The steps the last update left unfinished on the server."""
    return list((state.get("applied") or {}).get("pending") or [])


def _limit_values(cfg: Workshop) -> dict[str, Any]:
    return {"mem_bytes": mem_limit_bytes(cfg.spawner.mem_limit), "cpu": cfg.spawner.cpu_limit}


def _limits(cfg: Workshop, state: dict[str, Any], plan: ServerPlan) -> None:
    """New memory/CPU limits reach running servers in place (not on a swarm: a service update
    restarts its task)."""
    new = next((f.content for f in plan.files if f.path == HUB_CONFIG), None)
    old = (state.get("shown") or {}).get(HUB_CONFIG)
    if new is None or old is None:
        return
    changed = [d for d in _diff(old, new) if "mem_limit" in d or "cpu_limit" in d]
    running = state.get("servers") or {}
    count = sum(len(running.get(kind) or []) for kind in ("units", "containers", "services"))
    if not changed or not count:
        return
    limits = f"{cfg.spawner.mem_limit}, {cfg.spawner.cpu_limit:g} CPU"
    if plan.machine.part == "manager":  # a swarm's: a service update restarts its task
        plan.add("restart", f"memory/CPU limits ({limits}) of the {count} running server(s)")
        return
    plan.limits = _limit_values(cfg)
    plan.steps.add("limits")
    plan.add("live", f"memory/CPU limits ({limits}): the {count} running server(s) too", "in place")


def _environment(cfg: Workshop, state: dict[str, Any], plan: ServerPlan) -> None:
    """systemd: the trainees' environment installs the workshop's lock again (pip adds what
    changed); new servers use it, running ones after a restart. docker: a new image."""
    if cfg.spawner.kind != "systemd":
        return
    lock = software.trainee_lock(cfg)
    if lock is None:
        return
    text = lock.requirements()
    if (state.get("files") or {}).get(TRAINEE_LOCK) == _sha(text):
        return
    plan.files.append(VmFile(TRAINEE_LOCK, text))
    plan.steps.add("environment")
    plan.add("live", "environment: the course's packages (the workshop's lock)", "new servers")
    plan.add("restart", "environment: running servers import the new packages after a restart")


def _content(cfg: Workshop, config_dir: Path, state: dict[str, Any], plan: ServerPlan) -> None:
    """The `from:` folders' new and changed files, pushed; the course's reach each running
    server's trainee where their ~/course lacks them (never over a file they have)."""
    have: dict[str, dict[str, str | None]] = state.get("content") or {}
    push: dict[str, dict[str, str]] = {}
    size = 0
    for root, files in local_content(cfg, config_dir).items():
        there = have.get(root) or {}
        for name, path in files.items():
            data = path.read_bytes()
            if there.get(name) != hashlib.sha256(data).hexdigest():
                push.setdefault(root, {})[name] = base64.b64encode(data).decode()
                size += len(data)
    if not push:
        return
    if size > MAX_PUSH:
        plan.add(
            "relaunch",
            f"content: {size / 1e6:.0f} MB of new or changed files in the `from:` folders, over "
            f"the {MAX_PUSH / 1e6:.0f} MB an update sends",
            "bake the folders into a new image (`bakery bake`), or give shared_data a url",
        )
        return
    plan.content = push
    plan.steps.add("content")
    for root, sent in push.items():
        key = "course.from" if root == COURSE_DIR else "shared_data.from"
        names = ", ".join(sorted(sent)[:5]) + (", ..." if len(sent) > 5 else "")
        whom = (
            "new servers; running ones: copied where ~/course lacks it"
            if key == "course.from"
            else "everyone, now"
        )
        plan.add("live", f"{key}: {len(sent)} new or changed file(s) to {root}: {names}", whom)
