"""Re-check rendered output with the real tools (cloud-init schema, nginx -t, shellcheck, ...).

Used by `bakery validate` and the tests: YAML reload, ``cloud-init schema``, ``py_compile``,
``bash -n``, shellcheck, ``nginx -t`` and ``systemd-analyze verify``.
"""

from __future__ import annotations

import gzip
import py_compile
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from bakery.config.workshop import Workshop, load_config
from bakery.layout import NGINX_SITE, TLS_DIR, UNIT_DIR
from bakery.vm.stages import STAGES, Stage
from bakery.vm.userdata import UserData, baked_folders, render_user_data
from bakery.workshop import expiry, software
from bakery.workshop.accounts import Account, credentials_path, ensure_credentials, preview_accounts
from bakery.workshop.login import check_issuer, hub_metadata

Status = Literal["ok", "failed", "missing"]
# Tools the checks call, and the Debian package that has each.
TOOLS = {
    "cloud-init": "cloud-init",
    "shellcheck": "shellcheck",
    "nginx": "nginx-light",
    "systemd-analyze": "systemd",
    "openssl": "openssl",
}


@dataclass(frozen=True)
class Check:
    """One check's outcome."""

    name: str
    status: Status
    detail: str = ""
    tool: str = ""  # the tool a skipped check needed


@dataclass
class Report:
    """All checks of a validation run."""

    checks: list[Check] = field(default_factory=list)

    def ok(self, *, strict: bool = False) -> bool:
        """No check failed; with ``strict``, none was skipped for a missing tool either."""
        bad = ("failed", "missing") if strict else ("failed",)
        return all(c.status not in bad for c in self.checks)

    def count(self, status: Status) -> int:
        """How many checks ended with ``status``."""
        return sum(c.status == status for c in self.checks)

    def missing_tools(self) -> dict[str, str]:
        """The tools whose checks were skipped, each with the Debian package that has it."""
        tools = {c.tool for c in self.checks if c.status == "missing" and c.tool}
        return {tool: TOOLS[tool] for tool in sorted(tools)}

    def summary(self) -> str:
        """One line: passed, failed, skipped, and which tools to install (named once)."""
        text = f"{self.count('ok')} checks passed, {self.count('failed')} failed"
        skipped = self.count("missing")
        if skipped:
            tools = self.missing_tools()
            text += (
                f", {skipped} skipped: {', '.join(tools)} not installed "
                f"(apt-get install {' '.join(sorted(set(tools.values())))})"
            )
        return text

    def lines(self) -> list[str]:
        """Human-readable lines, one per check (details indented), then the summary."""
        mark = {"ok": "ok  ", "failed": "FAIL", "missing": "skip"}
        out = []
        for c in self.checks:
            out.append(f"{mark[c.status]} {c.name}")
            if c.status != "missing":
                out += [f"     {line}" for line in c.detail.splitlines()]
        return [*out, self.summary()]

    def as_json(self) -> dict[str, Any]:
        """The report for `bakery validate --json`."""
        return {
            "ok": self.ok(),
            "passed": self.count("ok"),
            "failed": self.count("failed"),
            "skipped": self.count("missing"),
            "missing_tools": self.missing_tools(),
            "checks": [
                {"name": c.name, "status": c.status, "detail": c.detail} for c in self.checks
            ],
        }


def _run(argv: list[str], cwd: Path | None = None) -> tuple[int, str]:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def find_tool(name: str) -> str | None:
    """The path of ``name`` on PATH or in /usr/sbin, /sbin (not on a normal user's PATH)."""
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if Path(p).exists()), None
    )


def _missing(check: str, tool: str) -> Check:
    return Check(check, "missing", f"`{tool}` not found: apt-get install {TOOLS[tool]}", tool)


def _document(ud: UserData) -> dict[str, Any]:
    raw = gzip.decompress(ud.data) if ud.gzipped else ud.data
    text = raw.decode("utf-8")
    if not text.startswith("#cloud-config\n"):
        raise ValueError("does not start with #cloud-config")
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise ValueError("is not a mapping")
    return doc


def check_cloud_init_schema(path: Path) -> Check:
    """``cloud-init schema -c PATH`` (cloud-init's own validator)."""
    name = f"cloud-init schema {path.name}"
    tool = find_tool("cloud-init")
    if tool is None:
        return _missing(name, "cloud-init")
    code, out = _run([tool, "schema", "-c", str(path)])
    return Check(name, "ok" if code == 0 and "Valid" in out else "failed", "" if code == 0 else out)


def check_python(path: Path) -> Check:
    """``py_compile`` of a rendered Python file."""
    try:
        py_compile.compile(str(path), doraise=True, cfile=str(path) + "c")
    except py_compile.PyCompileError as exc:
        return Check(f"py_compile {path.name}", "failed", str(exc))
    return Check(f"py_compile {path.name}", "ok")


def check_shell(path: Path) -> list[Check]:
    """``bash -n`` and shellcheck of a rendered script."""
    code, out = _run(["bash", "-n", str(path)])
    checks = [Check(f"bash -n {path.name}", "ok" if code == 0 else "failed", out)]
    tool = find_tool("shellcheck")
    if tool is None:
        return [*checks, _missing(f"shellcheck {path.name}", "shellcheck")]
    code, out = _run([tool, "--shell=bash", str(path)])
    return [*checks, Check(f"shellcheck {path.name}", "ok" if code == 0 else "failed", out)]


def check_nginx(site: str, work: Path) -> Check:
    """``nginx -t`` on the site inside a minimal nginx.conf, with a throwaway certificate."""
    name = "nginx -t jupyterhub.conf"
    nginx, openssl = find_tool("nginx"), find_tool("openssl")
    if nginx is None:
        return _missing(name, "nginx")
    if openssl is None:
        return _missing(name, "openssl")
    tls = work / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    key, cert = str(tls / "key.pem"), str(tls / "cert.pem")
    subject = ["-subj", "/CN=test", "-keyout", key, "-out", cert]
    code, out = _run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", *subject])
    if code:
        return Check(name, "failed", f"could not make a test certificate: {out}")
    (work / "site.conf").write_text(site.replace(TLS_DIR, str(tls)))
    (work / "nginx.conf").write_text(
        f"pid {work}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  include {work}/site.conf;\n}}\n"
    )
    code, out = _run(
        [nginx, "-t", "-q", "-e", "stderr", "-p", str(work), "-c", str(work / "nginx.conf")]
    )
    return Check(name, "ok" if code == 0 else "failed", out if code else "")


def check_units(units: dict[str, str], work: Path) -> Check:
    """``systemd-analyze verify`` of the units, in a scratch root where their commands exist."""
    name = "systemd-analyze verify " + " ".join(sorted(units))
    tool = find_tool("systemd-analyze")
    if tool is None:
        return _missing(name, "systemd-analyze")
    root = work / "root"
    unit_dir = root / UNIT_DIR.lstrip("/")
    unit_dir.mkdir(parents=True, exist_ok=True)
    system = Path("/lib/systemd/system")
    if system.is_dir():
        shutil.copytree(system, root / "lib/systemd/system", symlinks=True, dirs_exist_ok=True)
    stub = "[Unit]\nDescription=stand-in\n[Service]\nExecStart=/usr/bin/true\n"
    (unit_dir / "docker.service").write_text(stub)
    for unit, text in units.items():
        (unit_dir / unit).write_text(text)
        for line in text.splitlines():
            if line.startswith(("ExecStart=", "ExecStartPre=")):
                exe = root / line.split("=", 1)[1].split()[0].lstrip("-").lstrip("/")
                exe.parent.mkdir(parents=True, exist_ok=True)
                exe.write_text("#!/bin/sh\n")
                exe.chmod(0o755)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    (root / "usr/bin/true").write_text("#!/bin/sh\n")
    (root / "usr/bin/true").chmod(0o755)
    code, out = _run(
        [tool, f"--root={root}", "verify", *(str(unit_dir / u) for u in sorted(units))]
    )
    # verify exits 0 on some warnings (an unknown key is only "ignoring"): any output is a problem.
    return Check(name, "ok" if code == 0 and not out else "failed", out)


def check_user_data(ud: UserData, work: Path, name: str | None = None) -> list[Check]:
    """Every check that applies to one rendered document and the files it carries.

    ``name``: the document's name in the report and the work folder (default: its stage).
    """
    name = name or ud.stage
    label = f"{name} stage"
    try:
        doc = _document(ud)
    except (ValueError, yaml.YAMLError, OSError) as exc:
        return [Check(f"{label}: YAML reload", "failed", str(exc))]
    checks = [Check(f"{label}: YAML reload ({ud.encoded_size:,} base64 chars)", "ok")]
    plain = work / f"user-data.{name}"
    plain.write_bytes(gzip.decompress(ud.data) if ud.gzipped else ud.data)
    checks.append(check_cloud_init_schema(plain))
    units: dict[str, str] = {}
    for entry in doc.get("write_files", []):
        path, content = entry["path"], entry["content"]
        local = work / name / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(content)
        if path.endswith(".py"):
            checks.append(check_python(local))
        elif path.endswith(".sh"):
            checks += check_shell(local)
        elif path == NGINX_SITE:
            checks.append(check_nginx(content, work / f"nginx-{name}"))
        elif path.startswith(UNIT_DIR + "/") and path.endswith((".service", ".timer", ".target")):
            units[Path(path).name] = content
    if units:
        checks.append(check_units(units, work / f"systemd-{name}"))
    return [
        c if c.name.startswith(label) else replace(c, name=f"{label}: {c.name}") for c in checks
    ]


def check_workshop(
    cfg: Workshop, accounts: list[Account], *, stages: tuple[Stage, ...] = STAGES
) -> Report:
    """Render every stage of ``cfg`` and check each document with the real validators."""
    report = Report()
    folders = baked_folders(cfg)
    if "full" in stages and folders:
        # Refused at render: the folders reach the VM in a golden image only.
        stages = tuple(s for s in stages if s != "full")
        report.checks.append(
            Check("full stage", "ok", f"not used: {' and '.join(folders)} need a bake")
        )
    with tempfile.TemporaryDirectory(prefix="bakery-validate-") as tmp:
        for stage in stages:
            ud = render_user_data(cfg, stage=stage, accounts=None if stage == "bake" else accounts)
            report.checks += check_user_data(ud, Path(tmp))
        if cfg.cluster.swarm and "boot" in stages:
            # The workers' own boot stage (their bake stage is the manager's).
            ud = render_user_data(cfg, stage="boot", role="worker")
            report.checks += check_user_data(ud, Path(tmp), "worker boot")
    return report


def validate_workshop(*, config_path: Path) -> Report:
    """`bakery validate`: the config, then every stage's user-data.

    Uses the credentials sheet if there is one; otherwise throwaway passwords (nothing written).
    """
    cfg = load_config(config_path)
    unlocked = software.lock_problem(cfg)
    if unlocked is not None:
        # Nothing installs from a stale lock: no stage renders until `bakery lock` runs.
        return Report([Check(f"config {config_path}", "ok"), Check("lock", "failed", unlocked)])
    sheet = credentials_path(config_path)
    accounts = ensure_credentials(cfg, sheet) if sheet.exists() else preview_accounts(cfg)
    report = check_workshop(cfg, accounts)
    report.checks.insert(0, Check(f"config {config_path}", "ok"))
    if expiry.ended(cfg):
        # Valid documents, but a VM booted from them refuses its trainees and powers off.
        ended = expiry.describe(cfg) or "ended"
        report.checks.insert(1, Check("dates", "failed", f"{ended}; set a later ends to use it"))
    with tempfile.TemporaryDirectory(prefix="bakery-validate-") as tmp:
        report.checks += check_builder_scripts(cfg, Path(tmp))
    report.checks += check_login(cfg)
    return report


def check_login(cfg: Workshop) -> list[Check]:
    """auth.kind oidc, github: the client secret's file, and the issuer's discovery document
    when it can be read from here (said, not failed, when it cannot)."""
    if not cfg.auth.oauth:
        return []
    hub_metadata(cfg)  # a ConfigError (file, field, how to fix) when the file cannot be used
    checks = [Check("auth.client_secret_file", "ok", "owner-only, one line")]
    found = check_issuer(cfg)
    if found is not None:
        # Not reaching it from here is said, not failed: the provider may answer the cloud only.
        name = "auth.issuer" if " answers " in found else "auth.issuer (not reached from here)"
        checks.append(Check(name, "ok", found))
    return checks


def check_builder_scripts(cfg: Workshop, work: Path) -> list[Check]:
    """shellcheck and ``bash -n`` of the scripts the builders run in the image (not user-data)."""
    from bakery.bake import sdk as bake_openstack
    from bakery.vm import image

    scripts = {
        "clean.sh": image.clean_script(),
        "wait-cloud-init.sh": image.wait_script(),
        "seal.sh": bake_openstack.seal_script(cfg.login_user),
    }
    checks: list[Check] = []
    for name, text in scripts.items():
        path = work / "builder" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        checks += [replace(c, name=f"golden-image builders: {c.name}") for c in check_shell(path)]
    return checks
