"""cloud-init rendering: the workshop as a cloud-config dict, per stage, dumped as user-data.

The document is data (a dict dumped with PyYAML), never templated YAML; Jinja renders only the
contents of the files it carries (templates in the top-level ``cloudinit/`` folder).

Stages: ``bake`` is everything a reusable golden image holds (packages, the hub's Python env, the
proxy, the user image, units and scripts; no users, secrets or TLS keys; services enabled, not
started). ``boot`` is what a VM booted from that image still needs (users, config, TLS, start).
``full`` is ``bake`` followed by ``boot`` in one document, for a stock cloud image.
"""

from __future__ import annotations

import base64
import gzip
from dataclasses import dataclass
from typing import Any

import yaml

from bakery.config.infra import NOVA_USER_DATA_LIMIT
from bakery.config.workshop import Workshop
from bakery.errors import ConfigError, RenderError
from bakery.layout import (
    EXPIRY_UNITS,
    HUB_PREFIX,
    HUB_READY,
    LOGIN_DEFS,
    SCRIPT_DIR,
)
from bakery.topology import Machine, machine_config
from bakery.vm import image
from bakery.vm.context import content_context, context
from bakery.vm.files import VmFile, bake_files, boot_files, units, worker_boot_files, worker_units
from bakery.vm.stages import ROLES, STAGES, Role, Stage, final_message
from bakery.workshop import software
from bakery.workshop.accounts import Account, account_names

# What a swarm node holds back from upgrades during a class (the engine and its runtime).
SWARM_HELD_PACKAGES = ("docker.io", "containerd", "runc")
# Sets useradd's mode for new homes in /etc/login.defs (replaces a HOME_MODE line, else adds one).
HOME_MODE_CMD = (
    f"if grep -q '^HOME_MODE' {LOGIN_DEFS}; "
    f"then sed -i 's/^HOME_MODE.*/HOME_MODE\\t0700/' {LOGIN_DEFS}; "
    f"else printf 'HOME_MODE\\t0700\\n' >> {LOGIN_DEFS}; fi"
)
# apt installs no "Recommends" (cloud-init's `apt: conf:`, which the chroot builder applies too):
# with them Debian 12 pulled in X11/EGL libraries and a terminal emulator. `preserve_sources_list`
# keeps the image's own sources: a user-data `apt` key replaces the image's whole `apt` setting.
APT_CONF = 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
APT_CONFIG = {"preserve_sources_list": True, "conf": APT_CONF}
# `kernels:` (spawner.kind systemd): each kernel's distro packages and the kernelspec folder they
# ship, registered as NAME in the hub's environment, where its Jupyter looks first (Debian 12 also
# ships it in /usr/share/jupyter/kernels; registering it does not rely on a distro's packaging).
NGINX_NO_DEFAULT = ["rm", "-f", "/etc/nginx/sites-enabled/default"]
KERNEL_PACKAGES = {"r": ("r-base-core", "r-cran-irkernel")}
KERNEL_SPECS = {"r": ("ir", "/usr/lib/R/site-library/IRkernel/kernelspec")}


@dataclass(frozen=True)
class UserData:
    """A rendered user-data document and its sizes as Nova counts them."""

    stage: Stage
    data: bytes
    gzipped: bool

    @property
    def encoded_size(self) -> int:
        """Characters of base64, the unit of Nova's 65,535 limit."""
        return len(base64.b64encode(self.data))


def packages(cfg: Workshop) -> list[str]:
    """Debian/Ubuntu packages the VM needs (the distro's versions), then the user's extras."""
    # No nodejs/npm: the proxy's Node.js comes from PyPI into the hub's environment (versions.py).
    # xfsprogs: the homes' own filesystem and its quotas (homes.py).
    pkgs = ["nginx", "openssl", "iptables", "ca-certificates", "curl", "xfsprogs"]
    if cfg.hub.install == "venv":
        pkgs.append("python3-venv")
    if cfg.spawner.kind == "docker":
        # apparmor was a Recommends of docker.io: dockerd needs its parser where the kernel
        # enables AppArmor (Debian and Ubuntu do).
        pkgs += ["docker.io", "apparmor"]
    if cfg.cluster.swarm:
        pkgs.append("nfs-kernel-server")  # the manager's NFS server; nfs-common mounts on workers
    if cfg.tls.mode == "letsencrypt":
        pkgs.append("certbot")
    for kernel in cfg.kernels:
        pkgs += KERNEL_PACKAGES[kernel]
    if cfg.shared_data is not None:
        pkgs.append("acl")  # setfacl: each admin may write the shared folder
    if cfg.course is not None and cfg.course.git is not None and cfg.spawner.kind == "systemd":
        pkgs.append("git")  # nbgitpuller runs git on the host (in the user image with docker)
    extras = list(cfg.packages)
    if cfg.spawner.kind == "systemd":
        # environment:'s apt and R packages on the VM (with docker: in the image's layer).
        env = software.environment_packages(cfg)
        extras += [*env.apt, *env.r_debs()]
    return pkgs + [p for p in dict.fromkeys(extras) if p not in pkgs]


def _bake_runcmd(cfg: Workshop) -> list[list[str]]:
    cmds = [[f"{SCRIPT_DIR}/install-hub.sh"]]
    for kernel in cfg.kernels:
        name, spec = KERNEL_SPECS[kernel]
        install = [f"{HUB_PREFIX}/bin/jupyter", "kernelspec", "install", "--prefix", HUB_PREFIX]
        cmds.append([*install, "--name", name, spec])
    if cfg.spawner.kind == "systemd" and software.trainee_requested(cfg):
        cmds.append([f"{SCRIPT_DIR}/workshop-env.sh"])
    if content_context(cfg)["content"]:
        cmds.append([f"{SCRIPT_DIR}/content.sh"])
    if cfg.spawner.kind == "docker":
        cmds.append([f"{SCRIPT_DIR}/user-image.sh"])
    if cfg.cluster.swarm:
        # A swarm has no live-restore: a docker restart (an unattended upgrade) would stop every
        # trainee's server on that node. Held in the image: upgraded between classes, by hand.
        cmds.append(["apt-mark", "hold", *SWARM_HELD_PACKAGES])
    # Debian's default site would clash with the hub's (both the default server on port 80)
    # when nginx starts on a golden image's first boot with the hub's site already written.
    cmds.append(NGINX_NO_DEFAULT)
    # `enable` only makes symlinks (no daemon-reload: it also has to work in a chroot bake).
    cmds.append(["systemctl", "enable", *units(cfg)])
    return cmds


def _worker_runcmd(cfg: Workshop) -> list[list[str]]:
    # No sshd reload: its policy (write_files) is in place before sshd first starts (it waits for
    # cloud-init's init stage and its host keys), and a reload is a moment of refused logins.
    cmds = [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", *worker_units(cfg)],
    ]
    if cfg.ends is not None:
        cmds.append(["systemctl", "enable", "--now", EXPIRY_UNITS[1]])
    return cmds


def _boot_runcmd(cfg: Workshop, stock_image: bool) -> list[list[str]]:
    cmds = [
        NGINX_NO_DEFAULT,  # again: an image baked before the bake removed it
        ["systemctl", "daemon-reload"],  # no sshd reload: as in the worker's (above)
    ]
    if cfg.shared_data is not None and cfg.shared_data.url is not None:
        # Before the hub starts: a trainee never sees the folder half unpacked.
        cmds.append(["/usr/bin/python3", f"{SCRIPT_DIR}/fetch-data.py"])
    cmds += [
        # Not the hub's requirements' target: the hub's unit requires it (and an image baked
        # before it existed still boots with this stage).
        ["systemctl", "enable", "--now", *(u for u in units(cfg) if u != HUB_READY)],
        # A stock image's nginx started with its default site: restarted with the hub's. On a
        # golden image it already serves the hub's (a reload drops no trainee's connection),
        # unless an older image's default site stopped it: then this starts it.
        ["systemctl", "restart" if stock_image else "reload-or-restart", "nginx"],
    ]
    if cfg.ends is not None:
        cmds.append(["systemctl", "enable", "--now", EXPIRY_UNITS[1]])
    if cfg.tls.mode == "letsencrypt":
        # A failed first try (exit 1) must not fail the boot: the retry timer takes over.
        cmds.append(["sh", "-c", f"{SCRIPT_DIR}/tls.sh letsencrypt || true"])
    return cmds


def _users(cfg: Workshop, accounts: list[Account]) -> list[Any]:
    users: list[Any] = ["default"]
    if cfg.creates_login_user:
        # Not the image's own user: sshd lets only this one in (AllowUsers), so it is made here
        # with the keys (the cloud's key pair goes to the image's default user only) and sudo.
        users.append(
            {
                "name": cfg.login_user,
                "shell": "/bin/bash",
                "lock_passwd": True,
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "ssh_authorized_keys": list(cfg.ssh.authorized_keys),
            }
        )
    users += [
        {"name": a.username, "lock_passwd": False, "passwd": a.hash, "shell": "/bin/bash"}
        for a in accounts
    ]
    return users


def _bake_settings(cfg: Workshop) -> dict[str, Any]:
    """The bake stage's CA certificates, apt configuration and packages."""
    doc: dict[str, Any] = {}
    if cfg.ca_certificates:
        # cloud-init's ca_certs (an init-stage module): trusted before apt, pip and npm run.
        doc["ca_certs"] = {"trusted": list(cfg.ca_certificates)}
    return doc | {"apt": APT_CONFIG, "package_update": True, "packages": packages(cfg)}


def _boot_settings(
    cfg: Workshop, stage: Stage, accounts: list[Account] | None, worker: bool
) -> dict[str, Any]:
    """The boot stage's host name, accounts and ssh settings (a swarm worker: no trainees)."""
    if worker:
        accounts = []
    elif accounts is None:
        raise RenderError(f"stage {stage} creates accounts: pass the credentials")
    elif [a.username for a in accounts] != account_names(cfg):
        raise RenderError("the accounts do not match the config's users; reload credentials")
    # Runs before cloud-init's users module: every home it (or a later useradd) makes is
    # private. Debian 12's useradd would make them 0755 and trainees read each other's files.
    doc: dict[str, Any] = {"bootcmd": [["sh", "-c", HOME_MODE_CMD]]}
    if not worker:
        # A worker keeps the name its cloud gives it (NAME-worker-N): one per swarm node.
        doc["hostname"] = cfg.fqdn.split(".")[0]
        if "." in cfg.fqdn:
            doc["fqdn"] = cfg.fqdn
    doc["users"] = _users(cfg, accounts)
    doc["chpasswd"] = {"expire": False}
    # No ssh_pwauth: sshd's own drop-in (cloudinit/sshd.conf.j2, read first) already says
    # PasswordAuthentication no. cloud-init's set_passwords would write the same into
    # sshd_config and restart sshd in its config stage, when the hub may already answer: an ssh
    # right after the login page came up met the restart (connection reset).
    # No RSA host key: its key search is the slowest step of a first boot under emulation
    # (seconds); every ssh client since 2014 takes ed25519 or ECDSA.
    doc["ssh_genkeytypes"] = ["ed25519", "ecdsa"]
    if cfg.ssh.authorized_keys:
        doc["ssh_authorized_keys"] = list(cfg.ssh.authorized_keys)
    return doc


def baked_folders(cfg: Workshop) -> list[str]:
    """The settings whose local folders only a bake carries to the VM (a golden image)."""
    found = []
    if cfg.shared_data is not None and cfg.shared_data.from_ is not None:
        found.append("shared_data.from")
    if cfg.course is not None and cfg.course.from_ is not None:
        found.append("course.from")
    return found


def refuse_unbaked_folders(cfg: Workshop) -> None:
    """The full stage (a stock image) has no way to carry a local folder: refuse, with the ways.

    Raises:
        ConfigError: ``shared_data.from`` or ``course.from`` is set.
    """
    folders = baked_folders(cfg)
    if folders:
        raise ConfigError(
            f"{' and '.join(folders)}: a local folder reaches the VM only in a golden image, and "
            "the full stage (a stock image) would boot with it empty. Bake first (`bakery bake`, "
            "then launch or `render --stage boot`), or for shared data give "
            "shared_data: {url: https://..., sha256: ...} (an archive the VM fetches and checks)"
        )


def build_cloud_config(
    cfg: Workshop,
    *,
    stage: Stage = "full",
    accounts: list[Account] | None = None,
    role: Role = "manager",
) -> dict[str, Any]:
    """The cloud-config of ``stage`` as a dict (keys in cloud-init's order of use).

    Args:
        cfg: the workshop.
        stage: ``full``, ``bake`` or ``boot``.
        accounts: the trainees' and admins' accounts (from :func:`ensure_credentials`); required
            for ``full`` and ``boot``, which create them (a swarm worker's do not: ignored).
        role: with ``cluster.engine: swarm``, the VM's part: ``manager`` (the hub) or ``worker``
            (trainees' servers, no accounts). The bake stage is the same for both.
    """
    if stage not in STAGES:
        raise RenderError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    if role not in ROLES:
        raise RenderError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    if role == "worker" and not cfg.cluster.swarm:
        raise RenderError(
            "role worker is a swarm cluster's: this workshop has no cluster.engine: swarm"
        )
    worker = role == "worker"
    if stage == "full":
        refuse_unbaked_folders(cfg)
    with_bake, with_boot = stage in ("full", "bake"), stage in ("full", "boot")
    doc = _boot_settings(cfg, stage, accounts, worker) if with_boot else {}
    files: list[VmFile] = []
    if with_bake:
        doc |= _bake_settings(cfg)
        ctx = context(cfg)
        if stage == "full":  # one workshop's own options (Nova's 64 KiB at 300 accounts)
            ctx["kernel_ahead"] = ctx["warm_when"] != "none"
        files += bake_files(cfg, ctx)
        # The one bake record (bakery.vm.image), written into every golden image.
        files.append(VmFile(image.RECORD_PATH, image.record_json(image.record(cfg))))
    if with_boot:
        ctx = context(cfg, accounts)
        files += worker_boot_files(cfg, ctx) if worker else boot_files(cfg, ctx, stage == "full")
    paths = [f.path for f in files]
    twice = sorted({p for p in paths if paths.count(p) > 1})
    if twice:
        # config refuses user files on bakery's paths; this catches any it does not know of.
        raise RenderError(f"files: {', '.join(twice)} would be written twice; choose another path")
    doc["write_files"] = [f.as_cloud_config() for f in files]
    runcmd: list[list[str]] = []
    if with_bake:
        runcmd += _bake_runcmd(cfg)
    if with_boot:
        runcmd += _worker_runcmd(cfg) if worker else _boot_runcmd(cfg, stage == "full")
    doc["runcmd"] = runcmd
    doc["final_message"] = final_message(cfg.name, stage)
    return doc


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Safe dumper writing multi-line strings (file contents) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_cloud_config(doc: dict[str, Any]) -> str:
    """``#cloud-config`` text of a cloud-config dict (block style, stable order)."""
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)
    return "#cloud-config\n" + body


def _gzip(text: bytes) -> bytes:
    # mtime=0: the same input gives the same bytes.
    return gzip.compress(text, compresslevel=9, mtime=0)


def fit_for_nova(text: bytes) -> bytes:
    """``text`` as it goes to Nova: plain when its base64 fits the limit, else gzipped.
    cloud-init reads either."""
    if UserData("full", text, gzipped=False).encoded_size <= NOVA_USER_DATA_LIMIT:
        return text
    return _gzip(text)


def render_user_data(
    cfg: Workshop,
    *,
    stage: Stage = "full",
    accounts: list[Account] | None = None,
    gzip_data: bool | None = None,
    role: Role = "manager",
) -> UserData:
    """The user-data document of ``stage``, gzipped when asked or when needed to fit Nova.

    Args:
        cfg: the workshop.
        stage: ``full``, ``bake`` or ``boot``.
        accounts: the accounts to create (``full`` and ``boot``).
        gzip_data: True always gzips, False never does, None gzips only when the plain document
            would exceed Nova's limit.
        role: a swarm cluster's ``manager`` (default) or ``worker`` (see build_cloud_config).

    Raises:
        RenderError: when the document cannot fit Nova's 65,535-character limit.
    """
    doc = build_cloud_config(cfg, stage=stage, accounts=accounts, role=role)
    text = dump_cloud_config(doc).encode()
    if gzip_data is None:
        data = fit_for_nova(text)
    elif gzip_data:
        data = _gzip(text)
    else:
        data = text
    result = UserData(stage, data, gzipped=data is not text)
    if result.encoded_size > NOVA_USER_DATA_LIMIT:
        how = "even gzipped" if result.gzipped else "(try --gzip)"
        ways = ["split the trainees over several workshops, fewer accounts each"]
        if cfg.files:
            ways.append("copy large files another way (a package, the image, scp)")
        if stage == "full":
            ways.insert(0, "bake a golden image and launch it with the smaller boot stage")
        raise RenderError(
            f"the {stage} user-data is {result.encoded_size:,} base64 characters, over Nova's "
            f"limit of {NOVA_USER_DATA_LIMIT:,} {how}. Biggest parts: "
            f"{_biggest_parts(cfg, accounts or [])}. Way{'s' if len(ways) > 1 else ''} out: "
            + "; or ".join(ways)
            + "."
        )
    return result


def _biggest_parts(cfg: Workshop, accounts: list[Account]) -> str:
    """What makes a user-data document big, largest first (for the size-limit message)."""
    parts = [
        (len(f.content), f"files: {f.path} ({len(f.content):,} characters)") for f in cfg.files
    ]
    if accounts:
        size = sum(len(a.hash) + len(a.username) + 60 for a in accounts)
        hashes = f"~{size:,} characters of hashes that do not compress"
        parts.append((size, f"{len(accounts)} accounts ({hashes})"))
    parts.sort(reverse=True)
    return "; ".join(text for _, text in parts[:3]) or "bakery's own files"


def machine_documents(
    cfg: Workshop, machines: tuple[Machine, ...], accounts: list[Account] | None, stage: Stage
) -> dict[str, bytes]:
    """Every machine's user-data, by name: a hub's creates its own users' accounts (picked from
    ``accounts``, the whole sheet); the workers share one document, which creates none."""
    docs: dict[str, bytes] = {}
    shared: dict[Role, bytes] = {}
    for machine in machines:
        if machine.serves_hub:
            docs[machine.name] = _document(machine_config(cfg, machine), accounts, stage, "manager")
        else:
            if machine.role not in shared:
                shared[machine.role] = _document(cfg, None, stage, machine.role)
            docs[machine.name] = shared[machine.role]
    return docs


def _document(cfg: Workshop, accounts: list[Account] | None, stage: Stage, role: Role) -> bytes:
    mine = None
    if accounts is not None and role == "manager":
        by_name = {a.username: a for a in accounts}
        mine = [by_name[n] for n in account_names(cfg)]
    return render_user_data(cfg, stage=stage, accounts=mine, role=role).data


def user_data_b64(
    cfg: Workshop, accounts: list[Account] | None, stage: Stage, role: Role = "manager"
) -> str:
    """One server's user-data in base64, as Nova takes it (gzipped when needed to fit).

    The hub's document creates the accounts of ``cfg``'s users, picked from ``accounts`` (the
    whole sheet); a swarm worker's creates none.
    """
    return base64.b64encode(_document(cfg, accounts, stage, role)).decode()
