"""Workshop expiry: the config fields, what the boot stage writes, the hub's and timer's logic."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import time
import types
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import importable_warm

from bakery.config.workshop import Workshop, parse_config
from bakery.errors import ConfigError, UsageError
from bakery.vm.userdata import build_cloud_config
from bakery.workshop import expiry
from bakery.workshop.accounts import Account

MakeWorkshop = Callable[[str], tuple[Workshop, list[Account]]]
ENDS = "2026-12-01T18:00:00+01:00"
HUB_CONFIG = "/etc/jupyterhub/jupyterhub_config.py"


def files(doc: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["content"] for f in doc["write_files"]}


def boot(make_workshop: MakeWorkshop, text: str) -> dict[str, Any]:
    cfg, accounts = make_workshop(text)
    return build_cloud_config(cfg, stage="boot", accounts=accounts)


def test_without_ends_nothing_of_expiry_is_written(make_workshop: MakeWorkshop) -> None:
    doc = boot(make_workshop, "name: intro\nusers: {count: 2}\n")
    assert not [p for p in files(doc) if "expiry" in p]
    assert ["systemctl", "enable", "--now", "bakery-expiry.timer"] not in doc["runcmd"]
    assert "WorkshopAuthenticator" not in files(doc)[HUB_CONFIG]


def test_ends_writes_times_script_and_timer_in_the_boot_stage(make_workshop: MakeWorkshop) -> None:
    doc = boot(make_workshop, f"name: intro\nusers: {{count: 2}}\nends: '{ENDS}'\ngrace: 30m\n")
    written = files(doc)
    times = json.loads(written["/etc/bakery/expiry.json"])
    ends = datetime.fromisoformat(ENDS)
    assert times == {
        "banner_from": int((ends - timedelta(hours=1)).timestamp()),
        "ends": int(ends.timestamp()),
        "power_off": int((ends + timedelta(minutes=30)).timestamp()),
        "ends_text": "2026-12-01 18:00 +0100 (17:00 UTC)",
        "power_off_text": "2026-12-01 18:30 +0100 (17:30 UTC)",
    }
    timer = written["/etc/systemd/system/bakery-expiry.timer"]
    assert "OnUnitActiveSec=1min" in timer and "OnBootSec=1min" in timer
    service = written["/etc/systemd/system/bakery-expiry.service"]
    assert "ExecStart=/opt/jupyterhub/bin/python3 /usr/local/lib/bakery/expiry.py" in service
    compile(written["/usr/local/lib/bakery/expiry.py"], "expiry.py", "exec")
    assert doc["runcmd"][-1] == ["systemctl", "enable", "--now", "bakery-expiry.timer"]
    # Only the boot stage: a golden image stays the same whatever the dates.
    cfg, _ = make_workshop(f"name: intro\nends: '{ENDS}'\n")
    assert "expiry" not in json.dumps(build_cloud_config(cfg, stage="bake"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ends: 2026-12-01T18:00:00\n", "no UTC offset or time zone; write 2026-12-07T17:00"),
        ("ends: tomorrow\n", r"w\.yaml:2: ends: 'tomorrow' is not a date .* Europe/Berlin"),
        ("ends: 2026-12-01\n", "a day without a time"),
        ("ends: 2026-12-07 17:00 Mars/Olympus\n", "'Mars/Olympus' is not a time zone name"),
        ("ends: 2026-02-30 17:00 Europe/Berlin\n", "not a real date and time"),
        ("ends: 2027-03-28 02:30 Europe/Berlin\n", "the clocks skip that time"),
        ("ends: 2026-10-25 02:30 Europe/Berlin\n", "happens twice .* 2026-10-25T02:30\\+02:00"),
        ("ends: '2026-12-01T18:00:00Z'\ngrace: 2d\n", "grace"),
        ("ends: '2026-12-01T18:00:00Z'\ngrace: 25h\n", "grace"),
    ],
)
def test_bad_dates_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config("name: ok\n" + text, Path("w.yaml"))


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("2026-12-07 17:00 Europe/Berlin", "2026-12-07T17:00:00+01:00"),
        ("2026-07-07 17:00:30 Europe/Berlin", "2026-07-07T17:00:30+02:00"),  # summer time
        ("2026-12-07T09:00 America/New_York", "2026-12-07T09:00:00-05:00"),
        ("2026-12-07 9:00 UTC", "2026-12-07T09:00:00+00:00"),
        ("'2026-12-07T17:00:00+01:00'", "2026-12-07T17:00:00+01:00"),
    ],
)
def test_ends_with_a_time_zone_name(written: str, meant: str) -> None:
    cfg = parse_config(f"name: ok\nends: {written}\n", Path("w.yaml"))
    assert cfg.ends is not None and cfg.ends.isoformat() == meant


def test_grace_defaults_to_two_hours() -> None:
    cfg = parse_config(f"name: ok\nends: '{ENDS}'\n", Path("w.yaml"))
    ex = expiry.expiry(cfg)
    assert ex is not None and ex.power_off - ex.ends == timedelta(hours=2)


# --- the hub's side: banner and refused logins, run from the rendered config ----------------------


class _Section:
    def __init__(self) -> None:
        object.__setattr__(self, "values", {})

    def __getattr__(self, key: str) -> Any:
        return self.values.get(key)

    def __setattr__(self, key: str, value: Any) -> None:
        self.values[key] = value


class _Config:
    def __init__(self) -> None:
        self.sections: dict[str, _Section] = {}

    def __getattr__(self, name: str) -> _Section:
        if name == "sections":
            raise AttributeError(name)
        return self.sections.setdefault(name, _Section())


class _PAM:
    def __init__(self) -> None:
        self.admin_users: set[str] = set()
        self.log = types.SimpleNamespace(warning=lambda *a: None)

    def check_blocked_users(self, username: str, authentication: Any = None) -> bool:
        return True


def hub_config(
    make_workshop: MakeWorkshop, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[_Config, dict[str, Any]]:
    text = f"name: intro\nusers: {{count: 2}}\nends: '{ENDS}'\ngrace: 1h\n"
    doc = boot(make_workshop, text)
    importable_warm(make_workshop(text)[0], tmp_path, monkeypatch)
    written = files(doc)
    auth = types.ModuleType("jupyterhub.auth")
    auth.PAMAuthenticator = _PAM  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jupyterhub", types.ModuleType("jupyterhub"))
    monkeypatch.setitem(sys.modules, "jupyterhub.auth", auth)
    c = _Config()
    expiry_text = written["/etc/bakery/expiry.json"]

    def fake_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if path == "/etc/bakery/expiry.json":
            return io.StringIO(expiry_text)
        raise FileNotFoundError(path)

    ns: dict[str, Any] = {"get_config": lambda: c, "open": fake_open}
    exec(compile(written[HUB_CONFIG], "jupyterhub_config.py", "exec"), ns)
    return c, ns


@pytest.mark.parametrize(
    ("minutes", "banner", "trainee_may_log_in"),
    [
        (-61, "", True),
        (-59, "This workshop ends at 2026-12-01 18:00 +0100 (17:00 UTC)", True),
        (0, "This workshop ended at 2026-12-01 18:00 +0100 (17:00 UTC): no new logins", False),
        (90, "This workshop ended at", False),
    ],
)
def test_banner_from_an_hour_before_and_logins_refused_at_the_end(
    make_workshop: MakeWorkshop,
    monkeypatch: pytest.MonkeyPatch,
    minutes: int,
    banner: str,
    trainee_may_log_in: bool,
    tmp_path: Path,
) -> None:
    c, _ = hub_config(make_workshop, monkeypatch, tmp_path)
    ends = datetime.fromisoformat(ENDS).timestamp()
    monkeypatch.setattr(time, "time", lambda: ends + minutes * 60)
    announce = c.JupyterHub.template_vars["announcement"]
    text = announce(None)
    assert text.startswith(banner) if banner else text == ""
    if banner:
        assert "shuts down at 2026-12-01 19:00 +0100 (18:00 UTC)" in text
    authenticator = c.JupyterHub.authenticator_class()
    authenticator.admin_users = {"instructor"}
    assert authenticator.check_blocked_users("training01") is trainee_may_log_in
    assert authenticator.check_blocked_users("instructor") is True  # admins still may


# --- the timer's side: power off after the grace --------------------------------------------------


@pytest.mark.parametrize(("after_end", "powers_off"), [(59, False), (60, True), (600, True)])
def test_expiry_script_stops_the_hub_and_powers_off_after_the_grace(
    make_workshop: MakeWorkshop,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    after_end: int,
    powers_off: bool,
) -> None:
    doc = boot(make_workshop, f"name: intro\nends: '{ENDS}'\ngrace: 1h\n")
    written = files(doc)
    times = tmp_path / "expiry.json"
    times.write_text(written["/etc/bakery/expiry.json"])
    script = written["/usr/local/lib/bakery/expiry.py"].replace(
        "'/etc/bakery/expiry.json'", repr(str(times))
    )
    ran: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda argv, **kw: ran.append(argv))
    ends = datetime.fromisoformat(ENDS).timestamp()
    monkeypatch.setattr(time, "time", lambda: ends + after_end * 60)
    ns: dict[str, Any] = {"__name__": "expiry"}
    exec(compile(script, "expiry.py", "exec"), ns)
    assert ns["main"]() == 0
    expected = [["systemctl", "stop", "jupyterhub.service"], ["systemctl", "poweroff"]]
    assert ran == (expected if powers_off else [])


# --- the instructor's side ------------------------------------------------------------------------


def test_status_line_shows_time_left_then_flags_an_expired_workshop() -> None:
    cfg = parse_config(f"name: ok\nends: '{ENDS}'\ngrace: 2h\n", Path("w.yaml"))
    ends = datetime.fromisoformat(ENDS)
    before = expiry.describe(cfg, now=ends - timedelta(days=1, hours=2, minutes=5))
    assert before == "ends 2026-12-01 18:00 +0100 (17:00 UTC): 1 d 2 h 5 min left"
    during = expiry.describe(cfg, now=ends + timedelta(minutes=30))
    assert during is not None and during.startswith("ENDED 30 min ago")
    assert "powers off at 2026-12-01 20:00 +0100 (19:00 UTC) (1 h 30 min left" in during
    after = expiry.describe(cfg, now=ends + timedelta(hours=3), servers=2)
    assert after is not None and after.startswith("EXPIRED:")
    assert "2 servers still hold resources" in after and "`bakery destroy` frees them" in after
    gone = expiry.describe(cfg, now=ends + timedelta(hours=3), servers=0)
    assert gone is not None and "hold resources" not in gone
    assert expiry.describe(parse_config("name: ok\n", Path("w.yaml"))) is None


def test_state_for_scripts_names_the_phase_and_the_seconds_to_the_next() -> None:
    cfg = parse_config(f"name: ok\nends: '{ENDS}'\ngrace: 2h\n", Path("w.yaml"))
    ends = datetime.fromisoformat(ENDS)
    moments = {"ends": "2026-12-01T18:00:00+01:00", "power_off": "2026-12-01T20:00:00+01:00"}
    assert expiry.state(cfg, now=ends - timedelta(minutes=5)) == {
        **moments, "phase": "running", "seconds_to_next": 300,
    }  # fmt: skip
    assert expiry.state(cfg, now=ends + timedelta(minutes=30)) == {
        **moments, "phase": "ended", "seconds_to_next": 5400,
    }  # fmt: skip
    assert expiry.state(cfg, now=ends + timedelta(hours=2)) == {
        **moments, "phase": "expired", "seconds_to_next": None,
    }  # fmt: skip
    assert expiry.state(parse_config("name: ok\n", Path("w.yaml"))) is None


def test_refuse_if_ended() -> None:
    cfg = parse_config(f"name: ok\nends: '{ENDS}'\n", Path("w.yaml"))
    ends = datetime.fromisoformat(ENDS)
    expiry.refuse_if_ended(cfg, now=ends - timedelta(seconds=1))
    with pytest.raises(UsageError, match="ends: workshop ok ended at 2026-12-01 18:00"):
        expiry.refuse_if_ended(cfg, now=ends.astimezone(UTC))


def test_launch_refuses_an_ended_workshop_even_without_checks(tmp_path: Path) -> None:
    from bakery.providers.openstack.launch import launch

    config = tmp_path / "workshop.yaml"
    config.write_text("name: ok\nends: '2020-01-01T09:00:00Z'\nopenstack: {image: x}\n")
    with pytest.raises(UsageError, match="ended at 2020-01-01 09:00"):
        launch(config_path=config)


# --- issue 26: an ended workshop is refused where a VM would come of it ---------------------------


def test_render_try_and_the_dry_run_refuse_an_ended_workshop_and_validate_fails_it(
    tmp_path: Path,
) -> None:
    from bakery.errors import UsageError
    from bakery.providers.local import trial
    from bakery.providers.openstack.plan import dry_run
    from bakery.vm.validate import validate_workshop
    from bakery.vm.write import render_to

    past = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0).isoformat()
    config = tmp_path / "workshop.yaml"
    config.write_text(f"name: gone\nends: {past}\n")
    for attempt in (
        lambda: render_to(config_path=config, stage="boot"),
        lambda: trial.up(config, image=tmp_path / "x.qcow2", run_dir=tmp_path / "run"),
        lambda: dry_run(config_path=config),
    ):
        with pytest.raises(UsageError, match=r"ends: workshop gone ended at .*set a later ends"):
            attempt()
    assert not (tmp_path / "run").exists()
    # The bake stage holds no date: a golden image can be baked for a later class.
    baked = render_to(config_path=config, stage="bake")
    text = gzip.decompress(baked.data) if baked.gzipped else baked.data
    assert text.startswith(b"#cloud-config")
    report = validate_workshop(config_path=config)
    assert not report.ok()
    assert [c.name for c in report.checks if c.status == "failed"] == ["dates"]
