"""`bakery collect`: every trainee's home as NAME.tar.gz, streamed over ssh, resumable.

Nothing a trainee made is lost on the way: an archive is written to ``NAME.tar.gz.part`` (a new
file, mode 600, never through a link) and renamed when complete; `destroy --collect` collects
every home afresh and keeps an earlier archive beside the new one; a trainee whose hub exists
but cannot be reached is a failure, never "never created".
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bakery.config.units import parse_size
from bakery.config.workshop import Workshop, load_config
from bakery.day.targets import Hubs, hubs
from bakery.errors import BakeryError, OutputError, UsageError
from bakery.progress import Reporter, quiet
from bakery.ssh import Ssh, Target
from bakery.topology import topology
from bakery.workshop.accounts import credentials_path, sheet_order

# Caches and other files nobody wants back (tar patterns, matched at any depth).
EXCLUDES = (
    ".cache",
    "__pycache__",
    ".npm",
    ".conda/pkgs",
    ".local/share/Trash",
    ".local/share/jupyter/runtime",
    ".ipython/profile_default/history.sqlite",
)
DEFAULT_MAX_SIZE = "2G"
CHUNK = 1024 * 1024
SUFFIX = ".tar.gz"


@dataclass
class CollectResult:
    """Per trainee: the archive written, or why not."""

    collected: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # already there, no home
    errors: dict[str, str] = field(default_factory=dict)  # too big, ssh or tar failed
    kept: dict[str, Path] = field(default_factory=dict)  # an earlier archive, renamed

    def lines(self) -> list[str]:
        """One line per trainee, then a summary."""
        out = [
            f"{name}: {path} ({path.stat().st_size:,} bytes)"
            + (f"; the earlier archive kept as {self.kept[name].name}" if name in self.kept else "")
            for name, path in self.collected.items()
        ]
        out += [f"{name}: skipped: {why}" for name, why in self.skipped.items()]
        out += [f"{name}: FAILED: {why}" for name, why in self.errors.items()]
        done, skipped, failed = len(self.collected), len(self.skipped), len(self.errors)
        return [*out, f"{done} collected, {skipped} skipped, {failed} failed"]


def tar_command(name: str) -> list[str]:
    """The remote command: the home of ``name`` as gzipped tar on stdout (caches left out)."""
    excludes = [f"--exclude={pattern}" for pattern in EXCLUDES]
    return ["sudo", "tar", "-C", "/home", "--one-file-system", "-czf", "-", *excludes, "--", name]


def homes(ssh: Ssh, target: Target) -> set[str]:
    """The folders in /home of ``target``."""
    done = ssh.run(target, ["ls", "-1", "/home"], timeout=60)
    return set(done.stdout.decode(errors="replace").split())


def _new_part(part: Path) -> int:
    """A new, empty ``part`` (mode 600) to stream into: what is there is removed first, and a
    link planted in its place is never followed."""
    part.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.open(part, flags, 0o600)


def stream_home(
    ssh: Ssh, target: Target, name: str, out: Path, max_bytes: int, progress: Reporter
) -> None:
    """Stream ``name``'s home into ``out`` (through ``out.part``; renamed when complete).

    Raises:
        BakeryError: over ``max_bytes``, or ssh/tar failed (the partial file is removed).
    """
    part = out.with_name(out.name + ".part")
    written = 0
    with tempfile.TemporaryFile() as err, os.fdopen(_new_part(part), "wb") as fh:
        proc = subprocess.Popen(
            ssh.argv(target, tar_command(name)), stdout=subprocess.PIPE, stderr=err
        )
        assert proc.stdout is not None
        try:
            while chunk := proc.stdout.read(CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    proc.kill()
                    raise BakeryError(f"over the size limit of {max_bytes:,} bytes (--max-size)")
                fh.write(chunk)
                progress(f"{name}: {written / 2**20:.1f} MiB", transient=True)
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            part.unlink(missing_ok=True)
            raise
        err.seek(0)
        message = err.read().decode(errors="replace").strip()
    # GNU tar: 1 means some file changed while it was read; the archive is still complete.
    if code not in (0, 1) or written == 0:
        part.unlink(missing_ok=True)
        if code == 255:
            raise BakeryError(ssh.failure(target, message.encode()))
        last = (message.splitlines() or ["no message"])[-1]
        raise BakeryError(f"tar exited {code}{'' if written else ', no data'}: {last}")
    os.replace(part, out)


def _out_dir(out_dir: Path) -> None:
    """The archives' folder, made private when new; a file or a link there is refused."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise OutputError(f"--out {out_dir}: not a folder; give a folder for the archives")
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


def _keep_earlier(out: Path) -> Path:
    """Rename an earlier archive ``NAME.tar.gz`` to ``NAME.STAMP.tar.gz`` (its time, UTC)."""
    stamp = datetime.fromtimestamp(out.lstat().st_mtime, UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = out.with_name(f"{out.name.removesuffix(SUFFIX)}.{stamp}{SUFFIX}")
    os.replace(out, kept)
    return kept


@dataclass
class _Run:
    """One collect: how to reach the hubs, where archives go, the limits."""

    ssh: Ssh
    out_dir: Path
    max_bytes: int
    fresh: bool
    progress: Reporter
    result: CollectResult = field(default_factory=CollectResult)


def _collect_one(run: _Run, target: Target, name: str) -> None:
    out = run.out_dir / f"{name}{SUFFIX}"
    if out.exists() or out.is_symlink():
        if not run.fresh:
            run.result.skipped[name] = f"{out} exists (delete it to collect again)"
            return
        run.result.kept[name] = _keep_earlier(out)
    try:
        stream_home(run.ssh, target, name, out, run.max_bytes, run.progress)
    except BakeryError as exc:
        run.result.errors[name] = f"{target.name}: {exc}"
        return
    run.result.errors.pop(name, None)
    run.result.collected[name] = out
    run.progress(f"{name}: {out.stat().st_size:,} bytes from {target.name}")


def collect(
    *,
    config_path: Path,
    out_dir: Path,
    hosts: list[str] | None = None,
    identity: Path | None = None,
    max_size: str = DEFAULT_MAX_SIZE,
    fresh: bool = False,
    progress: Reporter = quiet,
) -> CollectResult:
    """Every trainee's home from every running hub into ``out_dir/NAME.tar.gz`` (mode 600).

    Resumable: an archive already in ``out_dir`` is kept and not fetched again (a partial one is
    ``.part`` and is fetched anew). With ``fresh`` every home is fetched again and an earlier
    archive is kept as ``NAME.STAMP.tar.gz`` beside the new one (`destroy --collect`). A trainee
    whose hub exists but cannot be reached (SHUTOFF, no address) is a failure.
    """
    cfg = load_config(config_path)
    try:
        max_bytes = parse_size(max_size)
    except ValueError as exc:
        raise UsageError(f"--max-size: {exc}") from None
    found = hubs(cfg, hosts)
    _out_dir(out_dir)
    run = _Run(Ssh.for_workshop(cfg, config_path, identity), out_dir, max_bytes, fresh, progress)
    if cfg.auth.oauth:
        return _collect_everyone(run, cfg, found)
    wanted = cfg.users.trainees()
    for target in found.reachable:
        present = homes(run.ssh, target)
        for name in wanted:
            if name not in run.result.collected and name in present:
                _collect_one(run, target, name)
    _unaccounted(run.result, wanted, cfg, config_path, found)
    return run.result


def _collect_everyone(run: _Run, cfg: Workshop, found: Hubs) -> CollectResult:
    """A provider's logins (auth.kind oidc, github): nobody is known before they log in, so every
    home on the hub is collected (admins' too), the login user's aside."""
    for target in found.reachable:
        for name in sorted(homes(run.ssh, target) - {cfg.login_user}):
            if name not in run.result.collected:
                _collect_one(run, target, name)
    for server, why in found.unreachable.items():
        run.result.errors[server] = (
            f"not collected: {server} is {why}, and the homes there are not known from here; "
            "start it (`openstack server start NAME`, then `bakery status`) and collect again"
        )
    return run.result


def _unaccounted(
    result: CollectResult, wanted: list[str], cfg: Workshop, config_path: Path, found: Hubs
) -> None:
    """Say why each trainee with no archive has none. While a hub cannot be reached it is a
    failure (their home may be there: the one they were placed on, or one an older count
    made); only with every hub reached is "no home anywhere" a trainee never created."""
    home = topology(cfg, sheet_order(credentials_path(config_path))).placement
    down = "; ".join(f"{name} is {why}" for name, why in found.unreachable.items())
    for name in wanted:
        if name in result.collected or name in result.skipped or name in result.errors:
            continue
        if down:
            result.errors[name] = (
                f"not collected: their home may be on a server that cannot be reached ({down}; "
                f"placed on {home.get(name, 'unknown')}); start it (`openstack server start "
                "NAME`, then `bakery status`) and collect again"
            )
        else:
            result.skipped[name] = "no home on any server (never created)"


def collect_before_destroy(*, config_path: Path, out_dir: Path, progress: Reporter = quiet) -> None:
    """`destroy --collect DIR`: collect every home afresh first; raise (nothing deleted) when
    one could not be collected or its server could not be reached."""
    result = collect(config_path=config_path, out_dir=out_dir, fresh=True, progress=progress)
    for line in result.lines():
        progress(line)
    if result.errors:
        raise BakeryError(
            f"collect failed for {', '.join(result.errors)}; nothing deleted. Fix it and run "
            f"again (what is in {out_dir} is kept), or destroy without --collect"
        )
