"""Sizes, durations and times as workshop.yaml and the command line write them: 2G, 512M, 90s,
15m, 1h, 2026-12-07 17:00 Europe/Berlin."""

from __future__ import annotations

import datetime
import math
import re
import zoneinfo
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    WithJsonSchema,
)


def _whole(regex: str) -> str:
    # The JSON Schema pattern matching whole strings, as bakery.config.fields.anchored writes
    # it (this module stands on its own: the config's lowest floor).
    return rf"^(?:{regex})(?![\s\S])"


_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?([KMGT]?)i?B?", re.IGNORECASE)


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: str | int) -> int:
    """Bytes in a size such as ``512M``, ``2G``, ``1.5GiB`` or a plain integer.

    Raises:
        ValueError: not a size.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{value!r} is not a size; write e.g. '512M' or '2G'")
    if isinstance(value, int):
        return value
    match = _SIZE_RE.fullmatch(value)
    if not match or len(value) > 40:
        raise ValueError(f"{value!r} is not a size; write e.g. '512M' or '2G'")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


def _bounded(value: str | int, low: str, high: str, why_low: str) -> str:
    """``value`` as a size between ``low`` and ``high`` (both sizes), in its shortest whole unit
    (``2G``, ``1536M``), a form docker, systemd and xfs_quota all take."""
    size = parse_size(value)
    if size < parse_size(low):
        raise ValueError(f"{value!r} is below {low}, {why_low}")
    if size > parse_size(high):
        raise ValueError(f"{value!r} is above {high}")
    for unit in ("G", "M", "K"):
        if size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return str(size)


def canonical_mem_limit(value: str | int) -> str:
    """A per-trainee memory limit (128M to 4T) in a form docker and systemd both accept."""
    return _bounded(value, "128M", "4T", "too little for a notebook server")


def canonical_disk_limit(value: str | int) -> str:
    """A per-trainee disk limit (16M to 16T, ``auto`` or ``none``) in a canonical form (``2G``)."""
    if value in ("auto", "none"):
        return str(value)
    return _bounded(value, "16M", "16T", "too little for a home with a notebook")


# A home's quota: auto (what `bakery size` counts per home), none (no quota) or a size.
DiskSize = Annotated[
    str | int,
    AfterValidator(canonical_disk_limit),
    WithJsonSchema(
        {
            "anyOf": [
                {"enum": ["auto", "none"]},
                {"type": "string", "pattern": _whole(r"[0-9]+(\.[0-9]+)? ?[KMGTkmgt]?i?[Bb]?")},
                {"type": "integer", "minimum": 16777216},
            ]
        }
    ),
]


MemSize = Annotated[
    str | int,
    AfterValidator(canonical_mem_limit),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _whole(r"[0-9]+(\.[0-9]+)? ?[KMGTkmgt]?i?[Bb]?")},
                {"type": "integer", "minimum": 134217728},
            ]
        }
    ),
]


_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?(s|m|h)?", re.IGNORECASE)


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


DURATION_HINT = "write seconds or a number with s, m or h: 90, 90s, 15m, 1h"


# No wait or grace bakery knows of needs more than a day.
MAX_DURATION = 86400


def parse_duration(value: str | int | float) -> int:
    """Whole seconds in a duration such as ``90``, ``90s``, ``15m`` or ``1.5h`` (the one parser of
    every timeout: config fields and command-line options alike).

    Raises:
        ValueError: not a duration, or not positive.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a duration; {DURATION_HINT}")
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip())
        if not match or len(value) > 20:
            raise ValueError(f"{value!r} is not a duration; {DURATION_HINT}")
        seconds = round(float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "").lower()])
    elif not math.isfinite(value):
        raise ValueError(f"{value!r} is not a duration; {DURATION_HINT}")
    else:
        seconds = round(value)
    if seconds < 1:
        raise ValueError(f"{value!r}: a timeout must be at least 1 s")
    if seconds > MAX_DURATION:
        raise ValueError(f"{value!r}: at most 24 h ({MAX_DURATION} s)")
    return seconds


Duration = Annotated[
    int,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _whole(r"[0-9]+(\.[0-9]+)? ?[smhSMH]?")},
                {"type": "integer", "minimum": 1, "maximum": MAX_DURATION},
            ]
        }
    ),
]


# --- when a workshop ends -------------------------------------------------------------------------

ENDS_EXAMPLE = "2026-12-07T17:00:00+01:00, or 2026-12-07 17:00 Europe/Berlin"
_ZONED_RE = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[T ]+(?P<time>[0-9]{1,2}:[0-9]{2}(?::[0-9]{2})?)"
    r" +(?P<zone>[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*)"
)


def _in_zone(match: re.Match[str], text: str) -> datetime.datetime:
    """``2026-12-07 17:00 Europe/Berlin``: that wall-clock time in that zone, as a fixed offset;
    a time the clocks skip or pass twice (a daylight-saving change) is refused."""
    try:
        zone = zoneinfo.ZoneInfo(match["zone"])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{text!r}: {match['zone']!r} is not a time zone name; use one such as "
            "Europe/Berlin or America/New_York (the IANA names), or an offset: "
            f"{ENDS_EXAMPLE.split(',')[0]}"
        ) from None
    try:
        naive = datetime.datetime.fromisoformat(f"{match['date']}T{match['time'].zfill(5)}")
    except ValueError:
        raise ValueError(f"{text!r} is not a real date and time; write {ENDS_EXAMPLE}") from None
    first, second = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
    back = first.astimezone(datetime.timezone.utc).astimezone(zone).replace(tzinfo=None)
    if back != naive:
        raise ValueError(f"{text!r}: the clocks skip that time in {zone.key}; write another")
    if first.utcoffset() != second.utcoffset():
        raise ValueError(
            f"{text!r}: that time happens twice in {zone.key} (the clocks go back); write it "
            f"with its offset, e.g. {first.isoformat(timespec='minutes')}"
        )
    offset = first.utcoffset() or datetime.timedelta(0)
    return first.astimezone(datetime.timezone(offset))


def aware_end(value: object) -> object:
    """``ends`` as a datetime with its offset: one YAML read as such, ISO 8601 text with an
    offset, or a wall-clock time and a time zone name (``2026-12-07 17:00 Europe/Berlin``)."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value} has no UTC offset or time zone; write {ENDS_EXAMPLE}")
        return value
    if isinstance(value, datetime.date):
        raise ValueError(f"{value} is a day without a time; write {ENDS_EXAMPLE}")
    if not isinstance(value, str) or len(value) > 80:
        raise ValueError(f"not a date and time; write {ENDS_EXAMPLE}")
    text = value.strip()
    match = _ZONED_RE.fullmatch(text)
    if match:
        return _in_zone(match, text)
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date and time bakery reads; write {ENDS_EXAMPLE}"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset or time zone; write {ENDS_EXAMPLE}")
    return parsed


EndsAt = Annotated[
    datetime.datetime,
    BeforeValidator(aware_end),
    WithJsonSchema(
        {
            "type": "string",
            "description": "ISO 8601 with an offset, or a date, a time and a time zone name",
            "examples": ["2026-12-07T17:00:00+01:00", "2026-12-07 17:00 Europe/Berlin"],
        }
    ),
]


# --- when the trainees' servers start (warm) ------------------------------------------------------


def warm_when(value: object) -> object:
    """``warm``: none, boot, or a time as ``ends`` takes one."""
    if value in ("none", "boot"):
        return value
    try:
        return aware_end(value)
    except ValueError as exc:
        raise ValueError(f"{exc}; or boot (once the hub is up), or none") from None


WarmAt = Annotated[
    Literal["none", "boot"] | datetime.datetime,
    BeforeValidator(warm_when),
    WithJsonSchema(
        {
            "type": "string",
            "description": "none, boot, or ISO 8601 with an offset, or a date, a time and a "
            "time zone name",
            "examples": ["boot", "2026-12-07T08:30:00+01:00", "2026-12-07 08:30 Europe/Berlin"],
        }
    ),
]
