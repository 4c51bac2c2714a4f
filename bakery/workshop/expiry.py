"""Workshop expiry: when a workshop ends, what the VM enforces, and how much time is left."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bakery.config.workshop import Workshop, load_config
from bakery.errors import UsageError

# The hub shows its banner this long before `ends`.
BANNER_BEFORE = timedelta(hours=1)


@dataclass(frozen=True)
class Expiry:
    """The moments of a workshop with ``ends``: banner, end (logins refused), power-off."""

    banner_from: datetime
    ends: datetime
    power_off: datetime

    def vm_json(self) -> str:
        """The VM's expiry file: epochs for the hub and the timer, texts for the banner."""
        data = {
            "banner_from": int(self.banner_from.timestamp()),
            "ends": int(self.ends.timestamp()),
            "power_off": int(self.power_off.timestamp()),
            "ends_text": _text(self.ends),
            "power_off_text": _text(self.power_off),
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _text(moment: datetime) -> str:
    # In the workshop's own offset (as the instructor wrote it) and in UTC.
    utc = moment.astimezone(UTC)
    own = moment.strftime("%Y-%m-%d %H:%M %z")
    return own if moment.utcoffset() == timedelta(0) else f"{own} ({utc:%H:%M} UTC)"


def expiry(cfg: Workshop) -> Expiry | None:
    """The workshop's moments, or None when it has no ``ends``."""
    if cfg.ends is None:
        return None
    return Expiry(cfg.ends - BANNER_BEFORE, cfg.ends, cfg.ends + timedelta(seconds=cfg.grace))


def _span(delta: timedelta) -> str:
    minutes = int(abs(delta.total_seconds()) // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [f"{days} d"] if days else []
    parts += [f"{hours} h"] if hours or days else []
    return " ".join([*parts, f"{mins} min"])


def describe(cfg: Workshop, *, now: datetime | None = None, servers: int = 0) -> str | None:
    """One line for `bakery status`: time left, or how long ago it ended (None without ``ends``).

    ``servers``: how many of the workshop's servers still exist (they cost until destroyed).
    """
    ex = expiry(cfg)
    if ex is None:
        return None
    now = now or datetime.now(UTC)
    if now < ex.ends:
        return f"ends {_text(ex.ends)}: {_span(ex.ends - now)} left"
    if now < ex.power_off:
        return (
            f"ENDED {_span(now - ex.ends)} ago: trainees' logins refused; the VM powers off at "
            f"{_text(ex.power_off)} ({_span(ex.power_off - now)} left to download work)"
        )
    held = (
        f"; {servers} server{'s' if servers != 1 else ''} still hold resources (a powered-off "
        "server still costs on many clouds): `bakery destroy` frees them"
        if servers
        else ""
    )
    return f"EXPIRED: ended {_text(ex.ends)}, powered off after {_text(ex.power_off)}{held}"


def ended(cfg: Workshop, *, now: datetime | None = None) -> bool:
    """Whether the workshop's ``ends`` has passed."""
    return cfg.ends is not None and (now or datetime.now(UTC)) >= cfg.ends


def refuse_if_ended(cfg: Workshop, *, now: datetime | None = None) -> None:
    """Raise when the workshop has ended: a launch would boot a VM that refuses its trainees.

    Raises:
        UsageError: naming ``ends`` and how to go on.
    """
    if cfg.ends is not None and ended(cfg, now=now):
        raise UsageError(
            f"ends: workshop {cfg.name} ended at {_text(cfg.ends)}; set a later ends "
            "in the config (or remove it) to launch it again"
        )


def state(cfg: Workshop, *, now: datetime | None = None) -> dict[str, object] | None:
    """`bakery status --json`'s ``expiry``: the moments, the phase and the seconds to the next one.

    ``phase``: ``running`` (before ``ends``), ``ended`` (logins refused, VM still on) or
    ``expired`` (powered off: only `bakery destroy` frees what it holds). None without ``ends``.
    """
    ex = expiry(cfg)
    if ex is None:
        return None
    now = now or datetime.now(UTC)
    phase, until = (
        ("running", ex.ends) if now < ex.ends
        else ("ended", ex.power_off) if now < ex.power_off
        else ("expired", None)
    )  # fmt: skip
    return {
        "ends": ex.ends.isoformat(),
        "power_off": ex.power_off.isoformat(),
        "phase": phase,
        "seconds_to_next": int((until - now).total_seconds()) if until else None,
    }


def status_line(*, config_path: Path, servers: int) -> str | None:
    """`bakery status`'s line about the workshop's end (None without ``ends``)."""
    return describe(load_config(config_path), servers=servers)
