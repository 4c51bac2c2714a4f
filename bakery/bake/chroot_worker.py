"""The chroot bake's worker: applies the bake stage to an image, in its own mount namespace.

``python -m bakery.bake.chroot_worker RAW MNT USER_DATA_JSON TIMINGS_JSON [COPIES_JSON]``, run by
bakery.bake.chroot under ``unshare --mount`` (so its mounts vanish with it, whatever happens).
It talks to its parent on its standard streams: one progress line per step on stdout, the error
on stderr, the step timings in TIMINGS_JSON; exit 0 or 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bakery.bake.chroot import apply_to_raw
from bakery.errors import ChrootError


def main(argv: list[str]) -> int:
    """Apply USER_DATA_JSON to the image RAW mounted at MNT; the timings to TIMINGS_JSON."""
    raw, mnt, doc, out = (Path(a) for a in argv[:4])
    extra = json.loads(Path(argv[4]).read_text()) if len(argv) > 4 else {}
    copies = {str(k): Path(v) for k, v in extra.items()}
    try:
        timings = apply_to_raw(raw, mnt, json.loads(doc.read_text()), to_parent, copies)
    except ChrootError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    out.write_text(json.dumps(timings))
    return 0


def to_parent(message: str, *, transient: bool = False) -> None:
    """The worker's reporter: one line on stdout, which the parent reports onwards."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
