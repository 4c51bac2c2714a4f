"""cloud-init's progress, end and failures as a VM's serial console shows them (local or cloud)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from bakery.layout import UNITS, USER_IMAGE_UNIT
from bakery.vm.stages import FINAL_MARKER_RE

ConsoleState = Literal["done", "error", "running", "unknown"]

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_KERNEL_RE = re.compile(r"Linux version \d")
# The boot loader handing over to the kernel: GRUB's "Booting `ENTRY'", or the kernel's own
# real-mode setup (it prints "Probing EDD" before it leaves real mode).
_HANDOVER_RE = re.compile(r"Booting `[^']*'|Probing EDD")
_LOGIN_RE = re.compile(r"\S+ login:\s*$")
_STAGE_RE = re.compile(r"Cloud-init v\. \S+ running '([^']+)'")
# cloud-init's own last line; a document's final_message replaces it (bakery's always does).
_DEFAULT_FINISHED_RE = re.compile(r"Cloud-init v\. \S+ finished at ")

# Lines that mean the VM will not become a working hub. Deliberately narrow: the console also
# carries apt, pip and script output, where "ERROR", "WARNING" and "failed" are mostly harmless
# (pip's resolver notice, a retried download), and a failing runcmd or script already shows as
# cloud-init's "Failed to run module scripts-user".
_FAILURE_RES = (
    re.compile(r"Failed to run module \S+"),  # cc_scripts_user: a runcmd or script exited non-zero
    re.compile(r"Running module \S+ \(.*\) failed"),  # any other cloud-init module raised
    re.compile(r"Traceback \(most recent call last\):"),  # cloud-init itself crashed
    re.compile(r"\[CRITICAL\]"),  # cloud-init's logger: e.g. no datasource, unreadable user-data
    re.compile(r"Kernel panic - not syncing"),
)
# systemd's boot status for a unit; only bakery's own units count (others are not ours to judge).
_SYSTEMD_FAILED_RE = re.compile(
    r"\[(?:FAILED|DEPEND)\] (?:Failed to start|Dependency failed for) (?P<what>.+)"
)
BAKERY_UNITS = frozenset((*UNITS, USER_IMAGE_UNIT))

STAGE_LABELS = {
    "init-local": "cloud-init: local stage (finding its datasource)",
    "init": "cloud-init: network stage (users, files, ssh)",
    "modules:config": "cloud-init: config stage",
    "modules:final": "cloud-init: final stage (packages, runcmd)",
}


@dataclass
class ConsoleScan:
    """What the serial console has said so far."""

    stages: list[str] = field(default_factory=list)
    stage: str = ""
    finished: bool = False
    failures: list[str] = field(default_factory=list)
    kernel_started: bool = False
    loader_handed_over: bool = False
    login_prompt: bool = False
    output: bool = False

    @property
    def state(self) -> ConsoleState:
        """``error`` (a failure line), ``done``, ``running`` or ``unknown`` (no output yet)."""
        if self.failures:
            return "error"
        if self.finished:
            return "done"
        return "running" if self.output else "unknown"

    def summary(self, lines: int = 15) -> tuple[ConsoleState, list[str]]:
        """cloud-init's state and the failure lines that explain it (the last ``lines``)."""
        return self.state, self.failures[-lines:]


def _clean(raw: str) -> str:
    return _ANSI_RE.sub("", raw).replace("\r", "").strip()


def _bakery_unit_failed(line: str, workshop: str | None) -> bool:
    match = _SYSTEMD_FAILED_RE.search(line)
    if match is None:
        return False
    what = match["what"]
    # systemd >= 250 starts with the unit's name ("jupyterhub.service - JupyterHub for ...").
    if what.split()[0].rstrip(".") in BAKERY_UNITS:
        return True
    # Older systemd prints only the Description, and each of bakery's names the workshop.
    return workshop is not None and bool(
        re.search(rf"(?<![\w.-]){re.escape(workshop)}(?![\w-])(?!\.\w)", what)
    )


def is_failure(line: str, workshop: str | None = None) -> bool:
    """Whether a console line means cloud-init or one of bakery's units failed."""
    return any(rx.search(line) for rx in _FAILURE_RES) or _bakery_unit_failed(line, workshop)


def _is_final(line: str, workshop: str | None) -> bool:
    if _DEFAULT_FINISHED_RE.search(line):
        return True
    match = FINAL_MARKER_RE.search(line)
    return match is not None and (workshop is None or match["workshop"] == workshop)


def _read_line(scan: ConsoleScan, line: str, workshop: str | None) -> None:
    if _HANDOVER_RE.search(line):
        scan.loader_handed_over = True
    if _KERNEL_RE.search(line):
        scan.kernel_started = True
        scan.stage = scan.stage or "kernel booting"
    elif stage := _STAGE_RE.search(line):
        scan.stages.append(stage[1])
        scan.stage = STAGE_LABELS.get(stage[1], f"cloud-init: {stage[1]}")
    elif _is_final(line, workshop):
        scan.finished = True
        scan.stage = "cloud-init finished"
    elif _LOGIN_RE.search(line):
        scan.login_prompt = True
    elif is_failure(line, workshop):
        scan.failures.append(line)


def scan(text: str, *, workshop: str | None = None) -> ConsoleScan:
    """Find cloud-init's stages, its end and failure lines in serial console text.

    Args:
        text: the console so far (ANSI colours and carriage returns are ignored).
        workshop: the workshop whose ``final_message`` ends cloud-init; ``None`` accepts any
            bakery stage's (and cloud-init's default final line in every case).
    """
    result = ConsoleScan()
    for raw in text.splitlines():
        line = _clean(raw)
        if line:
            result.output = True
            _read_line(result, line, workshop)
    return result
