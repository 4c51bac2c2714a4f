"""Where each value of a workshop file came from: the loader records lines, messages cite them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A key path inside the document: ("users", "names", 2).
Loc = tuple[Any, ...]


@dataclass
class Source:
    """What a workshop file said: the data, and where each key path came from."""

    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    # The scalar text as written, for "quote it" hints (YAML 1.1 reads `no` as false).
    written: dict[Loc, str] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc``, or of its nearest ancestor found in the file."""
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                return self.lines[loc[:n]]
        return None
