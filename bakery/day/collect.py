"""`bakery collect`: every trainee's home as NAME.tar.gz, streamed over ssh, resumable."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bakery.config.units import parse_size
from bakery.config.workshop import load_config
from bakery.day.targets import targets
from bakery.errors import BakeryError, UsageError
from bakery.progress import Reporter, quiet
from bakery.ssh import Ssh, Target

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

    def lines(self) -> list[str]:
        """One line per trainee, then a summary."""
        out = [
            f"{name}: {path} ({path.stat().st_size:,} bytes)"
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


def stream_home(
    ssh: Ssh, target: Target, name: str, out: Path, max_bytes: int, progress: Reporter
) -> None:
    """Stream ``name``'s home into ``out`` (through ``out.part``; renamed when complete).

    Raises:
        BakeryError: over ``max_bytes``, or ssh/tar failed (the partial file is removed).
    """
    part = out.with_name(out.name + ".part")
    written = 0
    with tempfile.TemporaryFile() as err, part.open("wb") as fh:
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


def collect(
    *,
    config_path: Path,
    out_dir: Path,
    hosts: list[str] | None = None,
    identity: Path | None = None,
    max_size: str = DEFAULT_MAX_SIZE,
    progress: Reporter = quiet,
) -> CollectResult:
    """Every trainee's home from every running server into ``out_dir/NAME.tar.gz``.

    Resumable: an archive already in ``out_dir`` is kept and not fetched again (a partial one is
    ``.part`` and is fetched anew).
    """
    cfg = load_config(config_path)
    try:
        max_bytes = parse_size(max_size)
    except ValueError as exc:
        raise UsageError(f"--max-size: {exc}") from None
    ssh = Ssh.for_workshop(cfg, config_path, identity)
    servers = targets(cfg, hosts)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    result = CollectResult()
    wanted = cfg.users.trainees()
    for target in servers:
        present = homes(ssh, target)
        for name in wanted:
            out = out_dir / f"{name}{SUFFIX}"
            if name in result.collected or name not in present:
                continue
            if out.exists():
                result.skipped[name] = f"{out} exists (delete it to collect again)"
                continue
            try:
                stream_home(ssh, target, name, out, max_bytes, progress)
            except BakeryError as exc:
                result.errors[name] = f"{target.name}: {exc}"
                continue
            result.errors.pop(name, None)
            result.collected[name] = out
            progress(f"{name}: {out.stat().st_size:,} bytes from {target.name}")
    for name in wanted:
        if (
            name not in result.collected
            and name not in result.skipped
            and name not in result.errors
        ):
            result.skipped[name] = "no home on any server (never created)"
    return result


def collect_before_destroy(*, config_path: Path, out_dir: Path, progress: Reporter = quiet) -> None:
    """`destroy --collect DIR`: collect every home first; raise (nothing deleted) on a failure."""
    result = collect(config_path=config_path, out_dir=out_dir, progress=progress)
    for line in result.lines():
        progress(line)
    if result.errors:
        raise BakeryError(
            f"collect failed for {', '.join(result.errors)}; nothing deleted. Fix it and run "
            f"again (what is in {out_dir} is kept), or destroy without --collect"
        )
