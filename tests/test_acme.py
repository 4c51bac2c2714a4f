"""tls.mode letsencrypt: the ACME server certbot asks, the retry timer, and their validation
(the VM proof is tests/e2e/test_tls.py)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import config_error, require_tool

from bakery.config.sections import LETSENCRYPT_DIRECTORY
from bakery.config.workshop import Workshop
from bakery.vm.context import TLS_RETRY_MINUTES
from bakery.vm.userdata import build_cloud_config
from bakery.vm.validate import check_units
from bakery.workshop.accounts import Account

MakeWorkshop = Callable[[str], tuple[Workshop, list[Account]]]
LE = "tls: {mode: letsencrypt, domain: hub.example.org, email: it@example.org"
TLS_SH = "/usr/local/lib/bakery/tls.sh"
TIMER = "/etc/systemd/system/bakery-tls-retry.timer"
SERVICE = "/etc/systemd/system/bakery-tls-retry.service"


def files_of(doc: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["content"] for f in doc["write_files"]}


def certbot_argv(script: str) -> list[str]:
    """The certbot command line of a rendered tls.sh (continuation lines joined)."""
    joined = script.replace("\\\n", " ")
    line = next(ln for ln in joined.splitlines() if "certbot certonly" in ln)
    argv = shlex.split(line.split("if ", 1)[1].rsplit(";", 1)[0])
    assert argv[:2] == ["certbot", "certonly"], argv
    return argv


def option(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, argv
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("", LETSENCRYPT_DIRECTORY),
        (", acme_server: 'https://ca.example.org:9000/acme/acme/directory'",
         "https://ca.example.org:9000/acme/acme/directory"),
        (", acme_server: 'https://10.0.2.2:14000/dir'", "https://10.0.2.2:14000/dir"),
    ],
)  # fmt: skip
def test_certbot_asks_the_configured_acme_server(
    make_workshop: MakeWorkshop, server: str, expected: str
) -> None:
    cfg, _ = make_workshop(f"name: intro\n{LE}{server}}}\n")
    assert (cfg.tls.acme_server or LETSENCRYPT_DIRECTORY) == expected
    argv = certbot_argv(files_of(build_cloud_config(cfg, stage="bake"))[TLS_SH])
    assert option(argv, "--server") == expected
    assert option(argv, "-d") == "hub.example.org"
    assert option(argv, "--deploy-hook") == "/usr/local/lib/bakery/tls-deploy.sh"
    assert {"--webroot", "--non-interactive", "--keep-until-expiring"} <= set(argv)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        # Only certbot uses it: with a self-signed certificate it would silently do nothing.
        ("name: intro\ntls:\n  acme_server: https://ca.example.org/dir\n", 3,
         ["tls.acme_server", "mode letsencrypt"]),
        ("name: intro\ntls:\n  mode: self-signed\n  acme_server: https://ca.example.org/dir\n", 4,
         ["tls.acme_server", "mode letsencrypt"]),
        (f"name: intro\n{LE},\n  acme_server: http://ca.example.org/dir}}\n", 3,
         ["acme_server", "https://"]),
        (f"name: intro\n{LE},\n  acme_server: 'https://ca.example.org/dir?x=$(id)'}}\n", 3,
         ["acme_server", "https://"]),
        (f"name: intro\n{LE},\n  acme_server: 'https://user@ca.example.org/dir'}}\n", 3,
         ["acme_server", "https://"]),
        (f"name: intro\n{LE},\n  acme_server: 'https://ca.example.org/a dir'}}\n", 3,
         ["acme_server", "https://"]),
    ],
)  # fmt: skip
def test_bad_acme_server_is_refused(text: str, line: int, words: list[str]) -> None:
    config_error(text, line, words)


def test_retry_timer_only_with_letsencrypt_and_started_by_tls_sh(
    make_workshop: MakeWorkshop,
) -> None:
    plain, _ = make_workshop("name: intro\n")
    assert not {TIMER, SERVICE} & set(files_of(build_cloud_config(plain, stage="bake")))
    cfg, accounts = make_workshop(f"name: intro\n{LE}}}\n")
    bake = build_cloud_config(cfg, stage="bake")
    files = files_of(bake)
    # The timer is not enabled by the bake: tls.sh enables it after a failed try, and disables
    # it once a certificate is installed.
    assert not any("bakery-tls-retry" in " ".join(cmd) for cmd in bake["runcmd"])
    script = files[TLS_SH]
    success, failure = script.split("else\n", 1)
    assert "systemctl disable --now bakery-tls-retry.timer" in success
    assert "systemctl enable --now bakery-tls-retry.timer" in failure
    assert "exit 1" in failure
    assert f"ExecStart={TLS_SH} letsencrypt" in files[SERVICE].splitlines()
    # Let's Encrypt's 5 failed validations per hostname and hour: at most 4 tries an hour.
    timer = files[TIMER].splitlines()
    assert TLS_RETRY_MINUTES >= 15
    for key in ("OnActiveSec", "OnUnitInactiveSec"):
        assert f"{key}={TLS_RETRY_MINUTES}min" in timer
    assert not [ln for ln in timer if re.match(r"On(Boot|Startup|Calendar)", ln)], timer
    # The first try at boot may fail without failing the boot (the timer retries).
    boot = build_cloud_config(cfg, stage="boot", accounts=accounts)
    assert ["sh", "-c", f"{TLS_SH} letsencrypt || true"] in boot["runcmd"]


def test_retry_units_pass_systemd_analyze_and_a_broken_timer_fails(
    make_workshop: MakeWorkshop, tmp_path: Path
) -> None:
    require_tool("systemd-analyze")
    cfg, _ = make_workshop(f"name: intro\n{LE}}}\n")
    files = files_of(build_cloud_config(cfg, stage="bake"))
    units = {Path(p).name: files[p] for p in (TIMER, SERVICE)}
    good = check_units(units, tmp_path / "good")
    assert good.status == "ok", good.detail
    broken = units | {"bakery-tls-retry.timer": units["bakery-tls-retry.timer"] + "OnBogus=1\n"}
    bad = check_units(broken, tmp_path / "bad")
    assert bad.status == "failed" and "OnBogus" in bad.detail, bad.detail


def test_user_data_checks_verify_timers(make_workshop: MakeWorkshop, tmp_path: Path) -> None:
    """bakery validate's unit check covers .timer files, not only services."""
    from bakery.vm.userdata import render_user_data
    from bakery.vm.validate import check_user_data

    require_tool("systemd-analyze")
    cfg, _ = make_workshop(f"name: intro\n{LE}}}\n")
    checks = check_user_data(render_user_data(cfg, stage="bake"), tmp_path)
    verify = [c for c in checks if "systemd-analyze verify" in c.name]
    assert len(verify) == 1 and "bakery-tls-retry.timer" in verify[0].name, verify
    assert verify[0].status == "ok", verify[0].detail
