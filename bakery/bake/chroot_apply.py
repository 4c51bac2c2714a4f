"""Apply a cloud-config to a root filesystem in a chroot, the way cloud-init would on first boot."""

from __future__ import annotations

import base64
import gzip
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bakery.errors import ChrootError
from bakery.progress import Reporter, quiet

# The cloud-config keys this builder applies; anything else is refused rather than ignored.
SUPPORTED_KEYS = frozenset(
    {
        "apt",
        "ca_certs",
        "package_update",
        "package_upgrade",
        "packages",
        "write_files",
        "runcmd",
        "bootcmd",
    }
)
# The part of cloud-init's `apt` module (cc_apt_configure) this builder applies, and where
# cloud-init writes `apt: conf:` (APT_CONFIG_FN) and removes a stale proxy file (APT_PROXY_FN).
APT_KEYS = frozenset({"conf", "preserve_sources_list"})
APT_CONF_FILE = "etc/apt/apt.conf.d/94cloud-init-config"
APT_PROXY_FILE = "etc/apt/apt.conf.d/90cloud-init-aptproxy"
# Where cloud-init's ca_certs module (cc_ca_certs, Debian's 22.4) puts the trusted certificates:
# one file, named in ca-certificates.conf, then update-ca-certificates.
CA_CERT_FILE = "usr/share/ca-certificates/cloud-init-ca-certs.crt"
CA_CERT_CONFIG = "etc/ca-certificates.conf"
# Keys that only matter for a booted instance and are safe to skip in an image build.
IGNORED_KEYS = frozenset({"final_message", "output"})

CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# cloud-init's own apt-get options (cloudinit/distros/debian.py).
APT_GET = [
    "apt-get",
    "--option=Dpkg::Options::=--force-confold",
    "--option=Dpkg::options::=--force-unsafe-io",
    "--assume-yes",
    "--quiet",
]


def _run(cmd: list[str], what: str, *, input: bytes | None = None, tail: int = 40) -> str:
    """Run ``cmd``; on failure raise ChrootError with the tail of its output."""
    proc = subprocess.run(
        cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
    )
    out = proc.stdout.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        lines = "\n".join("    " + line for line in out.rstrip().splitlines()[-tail:])
        raise ChrootError(f"{what} failed (exit {proc.returncode}):\n{lines}")
    return out


def chroot_cmd(root: Path, argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` inside ``root`` with a clean environment."""
    return [
        "chroot", str(root), "env", "-i", f"PATH={CHROOT_PATH}", "DEBIAN_FRONTEND=noninteractive",
        "HOME=/root", "LANG=C.UTF-8", "TERM=dumb", *argv,
    ]  # fmt: skip


# --- applying the cloud-config ------------------------------------------------------------------


def _file_content(item: dict[str, Any]) -> bytes:
    content = item.get("content", "")
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    encoding = str(item.get("encoding", "text")).lower()
    if encoding in ("b64", "base64"):
        return base64.b64decode(data)
    if encoding in ("gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
        return gzip.decompress(base64.b64decode(data))
    if encoding in ("gz", "gzip"):
        return gzip.decompress(data)
    if encoding in ("text", "text/plain"):
        return data
    raise ChrootError(f"write_files {item.get('path')}: unknown encoding {encoding!r}")


def _permissions(item: dict[str, Any]) -> str:
    perms = item.get("permissions", "0644")
    mode = perms if isinstance(perms, int) else int(str(perms), 8)
    return f"{mode:04o}"


def write_file(root: Path, item: dict[str, Any]) -> None:
    """Apply one ``write_files`` entry the way cloud-init does, inside the chroot.

    Writing through the chroot resolves symlinks and ``owner`` names against the image,
    never against this machine.
    """
    path = item.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ChrootError(f"write_files: path must be absolute, got {path!r}")
    owner = str(item.get("owner", "root:root"))
    redirect = ">>" if item.get("append") else ">"
    script = (
        f'mkdir -p "$(dirname "$1")" && cat {redirect} "$1" && chmod "$2" "$1" && chown "$3" "$1"'
    )
    _run(
        chroot_cmd(root, ["/bin/sh", "-c", script, "sh", path, _permissions(item), owner]),
        f"write_files {path}",
        input=_file_content(item),
    )


def apply_apt_config(root: Path, apt: dict[str, Any]) -> None:
    """Apply a cloud-config ``apt`` key as cloud-init's apt module does, inside ``root``.

    ``conf`` is written verbatim to cloud-init's apt.conf.d file (removed when absent), the proxy
    file cloud-init would remove goes; the sources must be preserved (this builder does not
    generate a sources.list). Anything else is refused rather than ignored.
    """
    unknown = sorted(set(apt) - APT_KEYS)
    if unknown or apt.get("preserve_sources_list") is not True:
        raise ChrootError(
            "the chroot builder applies apt: conf with preserve_sources_list: true only"
            + (f"; not {', '.join(unknown)}" if unknown else "")
            + " (bake in a VM with Packer instead)"
        )
    conf = root / APT_CONF_FILE
    (root / APT_PROXY_FILE).unlink(missing_ok=True)
    if "conf" in apt:
        write_file(root, {"path": "/" + APT_CONF_FILE, "content": str(apt["conf"])})
    else:
        conf.unlink(missing_ok=True)


def apply_ca_certs(root: Path, ca_certs: dict[str, Any]) -> None:
    """Apply a cloud-config ``ca_certs: {trusted: [...]}`` as cloud-init's module does.

    The certificates go, joined, into one file named in ``/etc/ca-certificates.conf`` (each name
    once), then ``update-ca-certificates`` runs in the image. ``remove_defaults`` is refused.
    """
    unknown = sorted(set(ca_certs) - {"trusted"})
    if unknown:
        raise ChrootError(
            f"the chroot builder applies ca_certs: trusted only; not {', '.join(unknown)}"
        )
    certs = [str(c) for c in ca_certs.get("trusted") or []]
    if certs:
        write_file(root, {"path": "/" + CA_CERT_FILE, "content": "\n".join(certs)})
        name = CA_CERT_FILE.removeprefix("usr/share/ca-certificates/")
        read = f"cat /{CA_CERT_CONFIG} 2>/dev/null || true"  # read in the image, as written
        lines = _run(chroot_cmd(root, ["/bin/sh", "-c", read]), "read ca-certificates.conf")
        kept = "\n".join(line for line in lines.splitlines() if line != name).rstrip()
        write_file(root, {"path": "/" + CA_CERT_CONFIG, "content": f"{kept}\n{name}\n".lstrip()})
    _run(chroot_cmd(root, ["update-ca-certificates"]), "update-ca-certificates")


def _package_names(packages: list[Any]) -> list[str]:
    names = []
    for pkg in packages:
        if isinstance(pkg, str):
            names.append(pkg)
        elif isinstance(pkg, list) and len(pkg) == 2:
            names.append(f"{pkg[0]}={pkg[1]}")
        else:
            raise ChrootError(f"packages: cannot apply {pkg!r} (expected NAME or [NAME, VERSION])")
    return names


def _command(item: Any) -> list[str]:
    """cloud-init's rule: a list is an argv (shell-quoted into its script), a string is shell."""
    if isinstance(item, list):
        return ["/bin/sh", "-c", " ".join(shlex.quote(str(a)) for a in item)]
    if isinstance(item, str):
        return ["/bin/sh", "-c", item]
    raise ChrootError(f"runcmd: cannot run {item!r} (expected a string or a list)")


def _offline_noop(item: Any) -> bool:
    """Whether ``item`` only tells a running systemd to reread its units.

    That is meaningless in a chroot (no systemd runs there: the command fails with "System has
    not been booted with systemd") and unneeded (the image's first boot reads every unit).
    Commands that would start or stop something are not skipped: they fail loudly.
    """
    words = shlex.split(item) if isinstance(item, str) else [str(w) for w in item]
    return words in (["systemctl", "daemon-reload"], ["/usr/bin/systemctl", "daemon-reload"])


def apply_cloud_config(
    root: Path, config: dict[str, Any], *, progress: Reporter = quiet
) -> dict[str, float]:
    """Apply a bake-stage cloud-config to the root filesystem at ``root`` (already prepared).

    Order follows cloud-init's modules: bootcmd, write_files, ca_certs, apt (configuration),
    package_update/upgrade, packages, deferred write_files, runcmd. Each runcmd item runs on its
    own and must succeed (cloud-init would only log a failure; a bake must not hide one).

    Returns:
        Seconds spent per step.

    Raises:
        ChrootError: an unsupported key, or a failing step (with its output's tail).
    """
    unknown = sorted(set(config) - SUPPORTED_KEYS - IGNORED_KEYS)
    if unknown:
        raise ChrootError(
            f"the chroot builder cannot apply cloud-config key(s) {', '.join(unknown)}; "
            f"it supports {', '.join(sorted(SUPPORTED_KEYS))} (bake in a VM with Packer instead)"
        )
    timings: dict[str, float] = {}
    for name, func in _steps(root, config, progress):
        progress(name)
        start = time.monotonic()
        func()
        timings[name] = round(time.monotonic() - start, 1)
    return timings


def _run_all(root: Path, key: str, items: list[Any], progress: Reporter) -> None:
    """Run ``bootcmd`` or ``runcmd`` items one by one; each must succeed."""
    for i, item in enumerate(items, 1):
        shown = item if isinstance(item, str) else shlex.join(map(str, item))
        if _offline_noop(item):
            progress(f"{key}[{i}] {shown}: skipped (no systemd runs in an image build)")
            continue
        _run(chroot_cmd(root, _command(item)), f"{key}[{i}] {shown[:200]}")


def _steps(
    root: Path, config: dict[str, Any], progress: Reporter
) -> list[tuple[str, Callable[[], object]]]:
    """The steps ``config`` asks for, in cloud-init's module order, as (name, action)."""

    def write_all(items: list[dict[str, Any]]) -> Callable[[], object]:
        def write() -> None:
            for item in items:
                write_file(root, item)

        return write

    def run_all(key: str) -> Callable[[], object]:
        return lambda: _run_all(root, key, list(config[key]), progress)

    def apt(*args: str) -> Callable[[], object]:
        return lambda: _run(chroot_cmd(root, [*APT_GET, *args]), f"apt-get {args[0]}")

    files = list(config.get("write_files") or [])
    now = [f for f in files if not f.get("defer")]
    later = [f for f in files if f.get("defer")]
    packages = _package_names(list(config.get("packages") or []))
    upgrade = bool(config.get("package_upgrade"))
    update = bool(config.get("package_update")) or upgrade or bool(packages)
    steps: list[tuple[bool, str, Callable[[], object]]] = [
        (bool(config.get("bootcmd")), "bootcmd", run_all("bootcmd")),
        (bool(now), "write_files", write_all(now)),
        ("ca_certs" in config, "ca_certs", lambda: apply_ca_certs(root, dict(config["ca_certs"]))),
        ("apt" in config, "apt configure", lambda: apply_apt_config(root, dict(config["apt"]))),
        (update, "apt-get update", apt("update")),
        (upgrade, "apt-get dist-upgrade", apt("dist-upgrade")),
        (bool(packages), f"apt-get install ({len(packages)} packages)", apt("install", *packages)),
        (bool(later), "write_files (deferred)", write_all(later)),
        (bool(config.get("runcmd")), "runcmd", run_all("runcmd")),
    ]
    return [(name, func) for wanted, name, func in steps if wanted]
