"""Progress reports: library code calls the Reporter it is given and never prints.

A report is either a note (a line worth keeping: "server NAME: ACTIVE after 14 s") or, with
``transient=True``, the current state of a long wait ("cloud-init: final stage (packages)"),
which a terminal shows on one live line with the elapsed time and a pipe gets once per change.
The CLI decides how they look (:class:`ConsoleReporter`); tests collect them in a list.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO


class Reporter(Protocol):
    """What library functions take as ``progress``."""

    def __call__(self, message: str, *, transient: bool = False) -> None:
        """Report ``message``; ``transient`` marks a state that the next report replaces."""


def quiet(message: str, *, transient: bool = False) -> None:
    """The reporter that drops everything (the default of library functions)."""


class Collector:
    """A reporter that keeps every message (for tests and for callers that show them later)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str, *, transient: bool = False) -> None:
        self.messages.append(message)


class ConsoleReporter:
    """Notes as ``bakery: MESSAGE`` lines on stderr; transient states on one live line.

    On a terminal the live line is redrawn every second with the time since the state began; in
    a pipe (CI logs, ``2>file``) each new state is printed once as a plain line. ``prefix``
    replaces ``bakery: `` (the tests' and the benchmark's logs tag their lines).
    """

    def __init__(
        self, stream: TextIO | None = None, *, live: bool | None = None, prefix: str = "bakery: "
    ) -> None:
        self._stream = stream or sys.stderr
        self._live = self._stream.isatty() if live is None else live
        self._prefix = prefix
        self._state = ""
        self._since = 0.0
        self._lock = threading.Lock()
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    def __call__(self, message: str, *, transient: bool = False) -> None:
        with self._lock:
            if transient:
                if message == self._state:
                    return
                self._state, self._since = message, time.monotonic()
                if self._live:
                    self._draw()
                    self._start_ticker()
                else:
                    self._line(f"{self._prefix}{message}")
                return
            if self._live and self._state:
                self._stream.write("\r\x1b[K")
            self._line(f"{self._prefix}{message}")
            if self._live and self._state:
                self._draw()

    def close(self) -> None:
        """End the live line (call once the command is done)."""
        self._stop.set()
        with self._lock:
            if self._live and self._state:
                self._stream.write("\r\x1b[K")
                self._stream.flush()
            self._state = ""

    def _line(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()

    def _draw(self) -> None:
        elapsed = int(time.monotonic() - self._since)
        stamp = f"{elapsed // 60}m{elapsed % 60:02d}s" if elapsed >= 60 else f"{elapsed}s"
        self._stream.write(f"\r\x1b[K  [{stamp:>6}] {self._state}")
        self._stream.flush()

    def _start_ticker(self) -> None:
        if self._ticker is not None:
            return

        def tick() -> None:
            while not self._stop.wait(1.0):
                with self._lock:
                    if self._state:
                        self._draw()

        self._ticker = threading.Thread(target=tick, name="bakery-progress", daemon=True)
        self._ticker.start()
