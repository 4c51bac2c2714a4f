"""OpenStack operations against a fake cloud: the real openstacksdk over registered HTTP answers.

The fake (tests/fakecloud.py) keeps what was created, so a second ``launch`` sees the first one's
resources. Nothing of bakery is mocked except ``time.sleep`` (keystoneauth's backoff and the
waiters would otherwise take minutes) and, where a test is not about it, the hub's health check.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import requests_mock as rm
import yaml
from fakecloud import (
    BAKED_IMAGE,
    FAULT_MESSAGE,
    IDENTITY,
    KEY,
    OTHER_KEY,
    PRIVATE_NET,
    PUBLIC_NET,
    QUOTA_MESSAGE,
    STOCK_IMAGE,
    FakeCloud,
    use_fake_cloud,
    user_data,
    write_workshop,
)
from typer.testing import CliRunner

from bakery.cli.main import app
from bakery.config.workshop import load_config
from bakery.errors import AuthError, BakeryError, CloudError, LeftBehind, QuotaError, RenderError
from bakery.providers.openstack import api as cloud
from bakery.providers.openstack import destroy as destroy_mod
from bakery.providers.openstack import flavors, resources
from bakery.providers.openstack import launch as launch_mod
from bakery.providers.openstack import servers as servers_mod
from bakery.topology import estimate_workshop, split_users
from bakery.workshop.sizing import Estimate

# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def fake(requests_mock: rm.Mocker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCloud:
    """The fake cloud, named ``fakecloud`` in a clouds.yaml of the test's own."""
    return use_fake_cloud(requests_mock, tmp_path, monkeypatch)


def invoke(*args: str) -> Any:
    """``bakery ARGS`` through typer's runner (each command gets a reporter of its own)."""
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """time.sleep made instant; the delays asked for, in order."""
    asked: list[float] = []
    monkeypatch.setattr(time, "sleep", asked.append)
    return asked


@pytest.fixture
def hub_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every hub answers (for tests about something else)."""
    monkeypatch.setattr(servers_mod, "hub_health", lambda ip, timeout=5: "ok")
    # `status` asks each server over ssh whether it matches the file: here nothing answers.
    monkeypatch.setattr("bakery.day.update.config_states", lambda *a: {"*": "matches (stand-in)"})


WRITES = r"/(servers|os-keypairs|security-groups|security-group-rules|floatingips)$"


def launch(path: Path, **kwargs: Any) -> launch_mod.LaunchResult:
    kwargs.setdefault("wait", False)
    return launch_mod.launch(config_path=path, **kwargs)


def only(items: list[Any]) -> Any:
    assert len(items) == 1, items
    return items[0]


# --- launch ---------------------------------------------------------------------------------------


def test_first_launch_creates_everything_and_prints_the_url(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    fake.mock.get("https://203.0.113.10/hub/health", json={})  # the hub answers at once
    result = invoke("launch", str(path))
    assert result.exit_code == 0, result.output

    assert "intro-1: https://203.0.113.10/  (hub: ok)" in result.stdout
    assert "workshop.credentials.csv" in result.stdout

    group = only(fake.calls("POST", r"/security-groups$")).json()["security_group"]
    assert group["name"] == "bakery-intro"
    assert "bakery:workshop=intro" in group["description"]
    rules = [r.json()["security_group_rule"] for r in fake.calls("POST", "/security-group-rules$")]
    assert sorted(
        (r["port_range_min"], r["port_range_max"], r["remote_ip_prefix"]) for r in rules
    ) == [
        (22, 22, "192.0.2.0/24"),
        (80, 80, "0.0.0.0/0"),
        (443, 443, "0.0.0.0/0"),
    ]
    assert {(r["direction"], r["protocol"], r["ethertype"]) for r in rules} == {
        ("ingress", "tcp", "IPv4")
    }
    group_id = only(list(fake.groups))
    assert {r["security_group_id"] for r in rules} == {group_id}

    keypair = only(fake.calls("POST", r"/os-keypairs$")).json()["keypair"]
    assert (keypair["name"], keypair["public_key"]) == ("bakery-intro", KEY)
    assert json.loads(resources.state_path(path).read_text()) == {"keypair": "bakery-intro"}

    post = only(fake.calls("POST", r"/servers$"))
    server = post.json()["server"]
    assert server["name"] == "intro-1"
    assert server["imageRef"] == STOCK_IMAGE
    assert server["flavorRef"] == "4"  # m1.large
    assert server["key_name"] == "bakery-intro"
    assert server["security_groups"] == [{"name": "bakery-intro"}]
    assert server["networks"] == [{"uuid": PRIVATE_NET}]
    assert server["metadata"] == {
        "course": "intro-2024",
        "bakery_workshop": "intro",
        "bakery_stage": "full",
    }
    doc = user_data(post)
    assert doc["final_message"].startswith("bakery: intro full stage done")
    names = [u["name"] for u in doc["users"] if isinstance(u, dict)]
    assert names == ["ada", "training01", "training02", "training03", "training04", "teacher"]

    fip = only(fake.calls("POST", r"/floatingips$")).json()["floatingip"]
    port = only(fake.server_ports())
    assert fip == {
        "floating_network_id": PUBLIC_NET,
        "port_id": port["id"],
        "description": "bakery:workshop=intro server=intro-1",
    }
    assert fake.calls("GET", r"^https://203\.0\.113\.10/hub/health$")


def test_relaunch_creates_nothing(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float], hub_ok: None
) -> None:
    path = write_workshop(tmp_path)
    first = launch(path, wait=True)
    assert [t.label for t in first.created] == [
        "key pair bakery-intro",
        "security group bakery-intro",
        "server intro-1",
        "floating IP 203.0.113.10",
    ]
    assert fake.calls("POST", WRITES)
    sheet = (tmp_path / "workshop.credentials.csv").read_text()
    fake.since = fake.mock.call_count

    again = launch(path, wait=True)

    assert again.created == []
    assert fake.calls("GET", r"/servers/detail$")  # it did look
    assert fake.calls("POST", WRITES) == []
    assert fake.calls("DELETE", ".") == []
    assert [(s.name, s.url, s.hub) for s in again.servers] == [
        ("intro-1", "https://203.0.113.10/", "ok")
    ]
    assert (len(fake.servers), len(fake.fips), len(fake.groups), len(fake.keypairs)) == (1, 1, 1, 1)
    assert len(fake.rules) == 5  # 2 default egress + 3 ingress, none added twice
    assert (tmp_path / "workshop.credentials.csv").read_text() == sheet


def test_error_state_reports_the_fault_and_removes_what_this_run_made(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    # The key pair was there before (same key): it is used, and left alone by the cleanup.
    fake._create_keypair(query={}, body={"keypair": {"name": "bakery-intro", "public_key": KEY}})
    fake.boot_outcome = "ERROR"

    with pytest.raises(CloudError, match="intro-1 failed to build: No valid host was found"):
        launch(path)

    only(fake.calls("POST", r"/servers$"))
    assert len(fake.calls("DELETE", r"/servers/[^/]+$")) == 1
    assert len(fake.calls("DELETE", r"/security-groups/[^/]+$")) == 1
    assert fake.calls("DELETE", r"/os-keypairs/") == []
    assert fake.calls("POST", r"/floatingips$") == []
    assert fake.servers == {} and fake.groups == {} and fake.fips == {}
    assert list(fake.keypairs) == ["bakery-intro"]


def test_a_failed_launch_that_cannot_clean_up_names_what_is_left(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    fake.boot_outcome = "ERROR"
    fake.fail("DELETE", r"/security-groups/[^/]+$", 500, {"message": "boom"}, times=None)

    with pytest.raises(LeftBehind) as info:
        launch(path)

    text = str(info.value)
    assert "intro-1 failed to build" in text  # the cause comes first
    assert "could not be removed" in text and "security group" in text
    assert info.value.exit_code == 1
    assert fake.servers == {} and len(fake.groups) == 1


def test_cloud_init_failure_on_the_console_fails_the_launch(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    fake.mock.get("https://203.0.113.10/hub/health", exc=requests.exceptions.ConnectTimeout)
    fake.console = (
        "[   42.1] cloud-init[812]: 2024-05-02 10:01:02,345 - util.py[WARNING]: "
        "Failed to run module scripts-user (scripts in /var/lib/cloud/instance/scripts)\n"
    )

    with pytest.raises(CloudError, match="cloud-init failed on intro-1") as info:
        launch(path, wait=True)

    assert "Failed to run module scripts-user" in str(info.value)
    assert fake.calls("GET", r"/hub/health$")
    assert fake.servers == fake.fips == fake.groups == fake.keypairs == {}


def test_quota_error_is_reported_plainly(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    fake.fail(
        "POST", r"/servers$", 403, {"forbidden": {"code": 403, "message": QUOTA_MESSAGE}}, None
    )

    with pytest.raises(QuotaError) as info:
        launch(path)

    message = str(info.value)
    assert "create server intro-1: quota exceeded" in message
    assert "Requested 1, but already used 10 of 10 instances" in message
    assert len(fake.calls("POST", r"/servers$")) == 1  # not retried
    # The group and key pair this run made are gone again.
    assert fake.groups == {} and fake.keypairs == {} and fake.servers == {}


def test_transient_503_is_retried_with_backoff(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    unavailable = {"computeFault": {"code": 503, "message": "Service Unavailable"}}
    fake.fail("POST", r"/servers$", 503, unavailable, times=2)
    fake.fail("GET", r"/v2\.0/floatingips$", 502, {"message": "Bad Gateway"}, times=1)

    result = launch(path)

    # keystoneauth retried the 503s (the request was not taken) and the 502 of a read.
    assert len(fake.calls("POST", r"/servers$")) == 3
    assert len(fake.servers) == 1
    assert [s.floating_ip for s in result.servers] == ["203.0.113.10"]
    assert sleeps[1] == 2 * sleeps[0] > 0  # exponential backoff before the 2nd and 3rd try


def test_a_cloud_that_stays_down_gives_up_and_cleans_up(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    fake.fail("GET", r"/v2\.0/networks/", 503, {"message": "Service Unavailable"}, times=None)

    with pytest.raises(CloudError, match="find network private: HTTP 503"):
        launch(path)

    assert len(fake.calls("GET", r"/v2\.0/networks/private$")) == 1 + cloud.STATUS_RETRIES
    assert len(sleeps) == cloud.STATUS_RETRIES
    # The network is looked up before anything is made: nothing was created, nothing is left.
    assert fake.calls("POST", r"/os-keypairs$") == []
    assert fake.calls("POST", r"/security-groups$") == []
    assert fake.keypairs == {} and fake.groups == {}


def test_refused_credentials_are_an_auth_error(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    refused = {
        "error": {
            "code": 401,
            "title": "Unauthorized",
            "message": "The request you have made requires authentication.",
        }
    }
    fake.fail("POST", r"/v3/auth/tokens$", 401, refused, times=None)

    with pytest.raises(AuthError, match="refused the credentials") as info:
        launch(path)
    assert info.value.exit_code == 2


def test_keypair_with_another_key_is_refused_before_anything_is_made(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    fake._create_keypair(
        query={}, body={"keypair": {"name": "bakery-intro", "public_key": OTHER_KEY}}
    )

    with pytest.raises(BakeryError, match="'bakery-intro' exists with a different key") as info:
        launch(path)

    assert "openstack.key_name" in str(info.value)
    assert [r.url for r in fake.mock.request_history if r.method in ("POST", "PUT", "DELETE")] == [
        f"{IDENTITY}/auth/tokens"
    ]
    assert fake.keypairs["bakery-intro"]["public_key"] == OTHER_KEY
    assert not resources.state_path(path).exists()


def test_user_data_over_novas_limit_fails_before_any_write(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1001 real SHA-512-crypt hashes take seconds; random strings of the same shape do not
    # compress either, which is all that matters for the size.
    monkeypatch.setattr(
        "bakery.workshop.accounts.sha512crypt.hash_password",
        lambda password: (
            "$6$"
            + os.urandom(12).hex()[:16]
            + "$"
            + base64.b64encode(os.urandom(64)).decode().rstrip("=").replace("+", ".")[:86]
        ),
    )
    path = write_workshop(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["users"] = {"count": 1000, "admins": ["teacher"]}
    path.write_text(yaml.safe_dump(doc))

    with pytest.raises(RenderError, match="over Nova's limit of 65,535 even gzipped"):
        launch(path)

    assert [r.url for r in fake.mock.request_history if r.method != "GET"] == [
        f"{IDENTITY}/auth/tokens"
    ]


@pytest.mark.parametrize(
    ("image", "stage"),
    [("bakery-intro-20240501-0900", "boot"), ("ubuntu-24.04", "full"), (STOCK_IMAGE, "full")],
)
def test_image_metadata_picks_the_stage(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float], image: str, stage: str
) -> None:
    path = write_workshop(tmp_path)

    launch(path, image=image)

    post = only(fake.calls("POST", r"/servers$"))
    assert post.json()["server"]["metadata"]["bakery_stage"] == stage
    assert post.json()["server"]["imageRef"] == (BAKED_IMAGE if stage == "boot" else STOCK_IMAGE)
    assert user_data(post)["final_message"].startswith(f"bakery: intro {stage} stage done")


def test_launch_count_2_splits_the_trainees(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)

    result = launch(path, count=2)

    posts = fake.calls("POST", r"/servers$")
    users = {
        p.json()["server"]["name"]: [
            u["name"] for u in user_data(p)["users"] if isinstance(u, dict)
        ]
        for p in posts
    }
    assert users == {
        "intro-1": ["ada", "training02", "training04", "teacher"],
        "intro-2": ["training01", "training03", "teacher"],
    }
    assert [s.floating_ip for s in result.servers] == ["203.0.113.10", "203.0.113.11"]
    assert len(fake.calls("POST", r"/security-groups$")) == 1


# --- pure helpers with a real connection ----------------------------------------------------------


def test_split_users_in_two(tmp_path: Path) -> None:
    cfg = load_config(write_workshop(tmp_path, count=2))

    parts = split_users(cfg)

    assert [p.hostname for p in parts] == ["intro-1", "intro-2"]
    assert [p.users.trainees() for p in parts] == [
        ["ada", "training02", "training04"],
        ["training01", "training03"],
    ]
    assert all(p.users.admins == ["teacher"] for p in parts)
    # A late trainee appended to the list moves nobody already placed.
    path = write_workshop(tmp_path, count=2)
    path.write_text(path.read_text().replace("count: 4", "count: 5"))
    more = split_users(load_config(path))
    assert [p.users.trainees() for p in more] == [
        ["ada", "training02", "training04"],
        ["training01", "training03", "training05"],
    ]
    # A name listed first in the config but made last (late, after the sheet) is dealt last:
    # the sheet's order places everyone already there where they were.
    path.write_text(path.read_text().replace("  - ada", "  - zoe\n  - ada"))
    cfg = load_config(path)
    assert cfg.users.trainees()[:2] == ["zoe", "ada"]
    sheet = ["ada", *(f"training0{i}" for i in range(1, 6)), "teacher"]
    late = split_users(cfg, [*sheet, "zoe"])
    assert [p.users.trainees() for p in late] == [
        ["ada", "training02", "training04", "zoe"],
        ["training01", "training03", "training05"],
    ]
    with pytest.raises(BakeryError, match="count 6 is more than the 5 trainees"):
        split_users(load_config(write_workshop(tmp_path, count=6)))


def flavors_around(fake: FakeCloud, need: Estimate) -> None:
    """Flavors just short of ``need`` in each dimension, one exact fit, a roomy one, a disk-less."""
    m, c, d = need.memory_mib, need.vcpus, need.disk_gb
    fake.flavors.clear()
    for name, ram, vcpus, disk in [
        ("roomy", 2 * m, 2 * c, 2 * d),
        ("short-ram", m - 1, c, d),
        ("short-cpu", 2 * m, c - 1, 2 * d),
        ("short-disk", m, c, d - 1),
        ("exact", m, c, d),
        ("diskless", m, c, 0),
    ]:
        fake.add_flavor(name, ram, vcpus, disk)


@pytest.mark.parametrize(
    ("trainees", "boot_volume", "expected"),
    [
        (4, False, "exact"),
        (40, False, "exact"),
        (4, True, "diskless"),  # booting from a volume, a flavor without disk fits
    ],
)
def test_auto_flavor_is_the_smallest_that_fits(
    fake: FakeCloud, tmp_path: Path, trainees: int, boot_volume: bool, expected: str
) -> None:
    path = write_workshop(tmp_path, flavor="auto", boot_volume=boot_volume)
    doc = yaml.safe_load(path.read_text())
    doc["users"] = {"count": trainees, "admins": ["teacher"]}
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    need = estimate_workshop(cfg)
    assert need.users == trainees + 1
    flavors_around(fake, need)

    assert flavors.choose_flavor(cloud.connect(cfg), cfg).name == expected


def test_auto_flavor_from_a_real_flavor_list(fake: FakeCloud, tmp_path: Path) -> None:
    cfg = load_config(write_workshop(tmp_path, flavor="auto"))
    need = estimate_workshop(cfg)
    fits = [
        f
        for f in fake.flavors.values()
        if f["ram"] >= need.memory_mib and f["vcpus"] >= need.vcpus and f["disk"] >= need.disk_gb
    ]
    smallest = min(fits, key=lambda f: f["ram"])  # the m1.* sizes grow in every dimension

    chosen = flavors.choose_flavor(cloud.connect(cfg), cfg)

    assert chosen.name == smallest["name"] and chosen.id == smallest["id"]
    assert chosen.name not in ("m1.xlarge", "v1.large")


def test_auto_flavor_says_when_nothing_fits(fake: FakeCloud, tmp_path: Path) -> None:
    path = write_workshop(tmp_path, flavor="auto")
    doc = yaml.safe_load(path.read_text())
    doc["users"] = {"count": 100}
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)

    with pytest.raises(BakeryError, match=r"no flavor fits .* raise openstack\.count"):
        flavors.choose_flavor(cloud.connect(cfg), cfg)


# --- status ---------------------------------------------------------------------------------------


def test_status_json(fake: FakeCloud, tmp_path: Path, sleeps: list[float]) -> None:
    path = write_workshop(tmp_path)
    launch(path)
    fake.mock.get("https://203.0.113.10/hub/health", status_code=502)
    # A second server of the workshop that failed, and a stranger's server bakery must not list.
    fake.boot_outcome = "ERROR"
    for name, meta in [("intro-2", {"bakery_workshop": "intro"}), ("intro-3", {})]:
        fake._create_server(
            query={},
            body={"server": {"name": name, "flavorRef": "4", "metadata": meta, "networks": []}},
        )
    for server_id in list(fake.servers)[1:]:
        fake._get_server(server_id, query={}, body=None)  # BUILD -> ERROR

    result = invoke("status", str(path), "--json")

    assert result.exit_code == 0, result.output
    first_id = next(iter(fake.servers))
    doc = json.loads(result.stdout)
    assert (doc["workshop"], doc["expiry"]) == ("intro", None)
    assert doc["servers"] == [
        {
            "name": "intro-1",
            "id": first_id,
            "status": "ACTIVE",
            "addresses": ["10.0.0.5"],
            "floating_ip": "203.0.113.10",
            "url": "https://203.0.113.10/",
            "hub": "HTTP 502",
            "cloud_init": "done",
            "fault": None,
            "config": None,
        },
        {
            "name": "intro-2",
            "id": list(fake.servers)[1],
            "status": "ERROR",
            "addresses": [],
            "floating_ip": None,
            "url": None,
            "hub": "unknown",
            "cloud_init": "unknown",
            "fault": FAULT_MESSAGE,
            "config": None,
        },
    ]
    # With `ends`, scripts get the phase and the seconds to the next moment.
    path.write_text(path.read_text() + "ends: 2099-12-01T18:00:00+01:00\ngrace: 2h\n")
    expiry = json.loads(invoke("status", str(path), "--json").stdout)["expiry"]
    assert expiry["ends"] == "2099-12-01T18:00:00+01:00"
    assert expiry["power_off"] == "2099-12-01T20:00:00+01:00"
    assert expiry["phase"] == "running" and expiry["seconds_to_next"] > 0


# --- destroy --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failing", "label"),
    [
        (r"/floatingips/[^/]+$", "floating IP 203.0.113.10"),
        (r"/security-groups/[^/]+$", "security group bakery-intro"),
        (r"/servers/[^/]+$", "server intro-1"),
    ],
)
def test_destroy_goes_on_past_a_failure_and_can_be_rerun(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float], failing: str, label: str
) -> None:
    path = write_workshop(tmp_path)
    launch(path)
    fake.fail("DELETE", failing, 500, {"message": "Internal Server Error"}, times=None)

    result = invoke("destroy", str(path), "--yes")

    assert result.exit_code == 1, result.output
    assert "1 of 4 deletions failed" in result.stderr
    assert f"delete {label}: HTTP 500" in result.stderr
    assert len(fake.calls("DELETE", failing)) == 1 + cloud.STATUS_RETRIES  # deletes are retried
    left = {
        "floating IP": len(fake.fips),
        "security group": len(fake.groups),
        "server": len(fake.servers),
        "key pair": len(fake.keypairs),
    }
    assert left == {kind: int(label.startswith(kind)) for kind in left}
    assert resources.state_path(path).exists()  # still knows the key pair was bakery's

    fake.failures.clear()
    again = invoke("destroy", str(path), "--yes")

    assert again.exit_code == 0, again.output
    assert fake.servers == fake.fips == fake.groups == fake.keypairs == {}
    assert not resources.state_path(path).exists()
    third = invoke("destroy", str(path), "--yes")
    assert third.exit_code == 0 and "nothing of workshop intro left" in third.stderr


def test_destroy_spares_what_bakery_did_not_make(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    fake._create_keypair(query={}, body={"keypair": {"name": "bakery-intro", "public_key": KEY}})
    fake._create_group(query={}, body={"security_group": {"name": "bakery-intro"}})
    launch(path)
    stranger = fake._create_fip(
        query={},
        body={
            "floatingip": {
                "floating_network_id": PUBLIC_NET,
                "port_id": fake.server_ports()[0]["id"],
            }
        },
    )[1]["floatingip"]

    plan = destroy_mod.destroy(config_path=path)

    assert plan.lines() == ["server intro-1", "floating IP 203.0.113.10"]
    assert list(fake.fips) == [stranger["id"]]
    assert len(fake.groups) == 1 and list(fake.keypairs) == ["bakery-intro"]


# --- creates that fail ambiguously are not repeated -----------------------------------------------

INTERNAL = {"computeFault": {"code": 500, "message": "Internal Server Error"}}


@pytest.mark.parametrize(
    ("path", "how"),
    [
        (r"/servers$", "500 after"),
        (r"/servers$", "dropped after"),
        (r"/floatingips$", "500 after"),
        (r"/floatingips$", "dropped after"),
        (r"/security-groups$", "500 after"),
        (r"/security-group-rules$", "dropped after"),
        (r"/os-keypairs$", "500 after"),
    ],
)
def test_a_create_that_fails_after_the_cloud_acted_is_not_repeated(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float], path: str, how: str
) -> None:
    config = write_workshop(tmp_path)
    exc = requests.exceptions.ConnectionError if how.startswith("dropped") else None
    fake.fail("POST", path, 500, INTERNAL, times=1, after=True, exc=exc)

    result = launch(config)

    # Every create went out once: the lost answer was followed by a look-up, not a second POST.
    assert len(fake.calls("POST", r"/servers$")) == 1
    assert len(fake.calls("POST", r"/floatingips$")) == 1
    assert len(fake.calls("POST", r"/security-groups$")) == 1
    assert len(fake.calls("POST", r"/security-group-rules$")) == 3
    assert len(fake.calls("POST", r"/os-keypairs$")) == 1
    assert (len(fake.servers), len(fake.fips), len(fake.groups), len(fake.keypairs)) == (1, 1, 1, 1)
    assert len(fake.rules) == 5
    # What was adopted after the failure is tracked as made by this run (destroy/cleanup find it).
    assert [t.kind for t in result.created] == [
        "keypair",
        "security_group",
        "server",
        "floating_ip",
    ]


def test_a_create_refused_before_the_cloud_acted_is_tried_again(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    config = write_workshop(tmp_path)
    fake.fail("POST", r"/servers$", 502, {"message": "Bad Gateway"}, times=1)

    launch(config)

    # Not retried blindly by keystoneauth (a 502 may hide a server); looked up, then made once.
    assert len(fake.calls("POST", r"/servers$")) == 2
    assert len(fake.servers) == 1


# --- ownership by exact match ---------------------------------------------------------------------


def _workshop_named(folder: Path, name: str) -> Path:
    folder.mkdir()
    path = write_workshop(folder)
    doc = yaml.safe_load(path.read_text())
    doc["name"] = name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_destroy_touches_only_its_own_workshop_not_one_whose_name_it_prefixes(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    short = _workshop_named(tmp_path / "a", "intro")
    long = _workshop_named(tmp_path / "b", "intro-advanced")
    launch(long)
    launch(short)
    assert len(fake.servers) == len(fake.fips) == len(fake.groups) == len(fake.keypairs) == 2

    plan = destroy_mod.destroy(config_path=short)

    assert sorted(plan.lines()) == sorted(
        [
            "server intro-1",
            "floating IP 203.0.113.11",
            "security group bakery-intro",
            "key pair bakery-intro",
        ]
    )
    assert [s["name"] for s in fake.servers.values()] == ["intro-advanced-1"]
    assert [f["description"] for f in fake.fips.values()] == [
        "bakery:workshop=intro-advanced server=intro-advanced-1"
    ]
    assert [g["name"] for g in fake.groups.values()] == ["bakery-intro-advanced"]
    assert list(fake.keypairs) == ["bakery-intro-advanced"]

    # And the other way round: the longer name owns nothing of the shorter one's.
    launch(short)
    destroy_mod.destroy(config_path=long)
    assert [s["name"] for s in fake.servers.values()] == ["intro-1"]
    assert [g["name"] for g in fake.groups.values()] == ["bakery-intro"]


@pytest.mark.parametrize(
    ("description", "owns"),
    [
        ("bakery:workshop=intro server=intro-1", True),
        ("bakery:workshop=intro (made by bakery; removed by bakery destroy)", True),
        ("bakery:workshop=intro-advanced server=intro-advanced-1", False),
        ("bakery:workshop=intro2", False),
        ("xbakery:workshop=intro", False),
        ("", False),
        (None, False),
    ],
)
def test_ownership_is_an_exact_token(tmp_path: Path, description: str | None, owns: bool) -> None:
    cfg = load_config(write_workshop(tmp_path))
    assert resources.owned(description, cfg) is owns


# --- the security group is reconciled -------------------------------------------------------------


def _ingress(fake: FakeCloud) -> set[tuple[int, str, str]]:
    return {
        (r["port_range_min"], r["remote_ip_prefix"], r["ethertype"])
        for r in fake.rules.values()
        if r["direction"] == "ingress"
    }


def test_a_narrowed_admin_cidr_removes_the_open_ssh_rule(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    config = write_workshop(tmp_path, admin_cidr="0.0.0.0/0")
    launch(config)
    assert (22, "0.0.0.0/0", "IPv4") in _ingress(fake)
    config = write_workshop(tmp_path, admin_cidr="192.0.2.0/24")
    fake.since = fake.mock.call_count

    launch(config)

    assert _ingress(fake) == {
        (22, "192.0.2.0/24", "IPv4"),
        (80, "0.0.0.0/0", "IPv4"),
        (443, "0.0.0.0/0", "IPv4"),
    }
    assert len(fake.calls("DELETE", r"/security-group-rules/[^/]+$")) == 1
    assert len(fake.calls("POST", r"/security-group-rules$")) == 1
    assert len(fake.servers) == 1  # nothing else changed


def test_an_ipv6_admin_cidr_gets_an_ipv6_rule(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    launch(write_workshop(tmp_path, admin_cidr="2001:db8:42::/48"))

    posted = [r.json()["security_group_rule"] for r in fake.calls("POST", "/security-group-rules$")]
    ssh = only([r for r in posted if r["port_range_min"] == 22])
    assert (ssh["ethertype"], ssh["remote_ip_prefix"]) == ("IPv6", "2001:db8:42::/48")


def test_a_group_bakery_did_not_make_keeps_its_rules(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    group = fake._create_group(query={}, body={"security_group": {"name": "bakery-intro"}})[1]
    fake._add_rule(
        {
            "security_group_id": group["security_group"]["id"],
            "direction": "ingress",
            "ethertype": "IPv4",
            "protocol": "tcp",
            "port_range_min": 8080,
            "port_range_max": 8080,
        }
    )

    launch(write_workshop(tmp_path))

    assert fake.calls("POST", r"/security-group-rules$") == []
    assert fake.calls("DELETE", r"/security-group-rules/") == []


# --- not found, not configured --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"image": "ubuntu-99.04"}, "image 'ubuntu-99.04' not found; `openstack image list`"),
        ({"flavor": "m9.huge"}, "openstack.flavor: flavor 'm9.huge' not found"),
        ({"networks": ["nowhere"]}, "openstack.networks: network 'nowhere' not found"),
        (
            {"floating_ip_network": "nowhere"},
            "openstack.floating_ip_network: network 'nowhere' not found",
        ),
        (
            {"key_name": "missing", "public_key": None},
            "openstack.key_name: key pair 'missing' does not exist",
        ),
    ],
)
def test_what_the_cloud_does_not_have_is_a_not_found_error(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float], settings: dict[str, Any], message: str
) -> None:
    config = write_workshop(tmp_path, **settings)

    result = invoke("launch", str(config), "--no-wait")

    assert result.exit_code == 2, result.output
    assert message in result.stderr
    # Found out before anything was made.
    assert [r.method for r in fake.mock.request_history if r.method != "GET"] == ["POST"]


def add_network(fake: FakeCloud, name: str, *, project: str | None = None) -> str:
    """Another network the project sees (``project``: another's, shared with it)."""
    net_id = f"b1f1c0de-0000-4000-8000-{len(fake.networks):012d}"
    fake.networks[net_id] = {
        **fake.networks[PRIVATE_NET],
        "id": net_id,
        "name": name,
        "shared": project is not None,
        "project_id": project or fake.networks[PRIVATE_NET]["project_id"],
        "tenant_id": project or fake.networks[PRIVATE_NET]["project_id"],
    }
    return net_id


def test_no_networks_named_boots_on_the_projects_own_network(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float], hub_ok: None
) -> None:
    """networks: [] where the project sees its own network, a shared one and the external one
    (Nova alone would answer 400 "'networks' is a required property"): its own, said in the plan."""
    add_network(fake, "campus-shared", project="0" * 32)
    path = write_workshop(tmp_path, networks=[])
    plan = invoke("launch", str(path), "--dry-run")
    assert plan.exit_code == 0, plan.output
    assert f"networks: private ({PRIVATE_NET}): the project's own" in plan.stdout
    launch(path)
    server = only(fake.calls("POST", r"/servers$")).json()["server"]
    assert server["networks"] == [{"uuid": PRIVATE_NET}]


def test_no_networks_named_and_two_of_its_own_is_refused_before_anything_is_made(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    other = add_network(fake, "lab")
    path = write_workshop(tmp_path, networks=[])
    for command in (["launch", str(path), "--no-wait"], ["launch", str(path), "--dry-run"]):
        result = invoke(*command)
        assert result.exit_code == 2, result.output
        assert (
            f"openstack.networks: empty, and the project sees 2 networks a server can boot on: "
            f"lab ({other}), private ({PRIVATE_NET}); name one, e.g. `networks: [lab]`"
        ) in result.stderr
        assert "Traceback" not in result.output
    assert [r.method for r in fake.mock.request_history if r.method != "GET"] == ["POST"] * 2


def test_a_cloud_error_quoting_the_request_never_prints_it(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    """Nova's schema errors quote the whole server request: its user-data (password hashes, in
    base64) must never reach the terminal or a log."""
    path = write_workshop(tmp_path)
    request = {"name": "intro-1", "user_data": base64.b64encode(os.urandom(30000)).decode()}
    message = (
        f"Invalid input for field/attribute server. Value: {request!r}. "
        "'networks' is a required property"
    )
    fake.fail("POST", r"/servers$", 400, {"badRequest": {"code": 400, "message": message}}, None)
    result = invoke("launch", str(path), "--no-wait")
    assert result.exit_code == 1, result.output
    assert "'networks' is a required property" in result.stderr
    assert "Value: (the request, not shown)" in result.stderr
    assert request["user_data"][:40] not in result.output and len(result.output) < 2000
    assert cloud.scrub("x" * 5000).startswith("(5000 characters not shown)")
    assert len(cloud.scrub("word " * 1000)) < 700


NO_CLOUD_COMMANDS = [
    ["status"],
    ["destroy", "--yes"],
    ["destroy", "--dry-run"],
    ["launch", "--image", "X"],
    ["launch", "--dry-run"],
    ["size", "--flavors"],
]


@pytest.mark.parametrize("command", NO_CLOUD_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("cloud_name", [None, "mycloud"])
def test_no_cloud_configured_says_how_to_configure_one(
    requests_mock: rm.Mocker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    cloud_name: str | None,
) -> None:
    for var in list(os.environ):
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    config = write_workshop(tmp_path, cloud=cloud_name)

    result = invoke(command[0], str(config), *command[1:])

    assert result.exit_code == 2, result.output
    err = " ".join(result.stderr.split())
    assert "internal error" not in err
    assert ("no cloud is configured" if cloud_name is None else "cloud 'mycloud'") in err
    for hint in ["OS_CLOUD", "openstack.cloud", "OS_CLIENT_CONFIG_FILE", "token issue"]:
        assert hint in err, hint
    for place in ["clouds.yaml", ".config/openstack/clouds.yaml", "/etc/openstack/clouds.yaml"]:
        assert place in err, place
    assert requests_mock.request_history == []
    assert not (tmp_path / "workshop.credentials.csv").exists()


# --- dry runs -------------------------------------------------------------------------------------


def test_launch_dry_run_prints_the_plan_and_creates_nothing(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    config = write_workshop(tmp_path)

    result = invoke("launch", str(config), "--dry-run")

    assert result.exit_code == 0, result.output
    assert [r.method for r in fake.mock.request_history if r.method != "GET"] == ["POST"]
    assert fake.calls("POST", r"/v3/auth/tokens$")
    assert not (tmp_path / "workshop.credentials.csv").exists()
    out = result.stdout
    for line in [
        f"image: ubuntu-24.04 ({STOCK_IMAGE})",
        "stage: full (a stock image",
        "flavor: m1.large (4 vCPUs, 8192 MiB, 80 GB): openstack.flavor",
        "boot: the flavor's 80 GB disk; user-data by metadata service, the cloud's default (a "
        "floating IP means a router)",
        f"networks: private ({PRIVATE_NET})",
        f"floating IPs: from public ({PUBLIC_NET}); 1 to allocate",
        "key pair: bakery-intro: will be created from",
        "security group: bakery-intro: will be created",
        "  rule tcp 22 from 192.0.2.0/24 (IPv4): will add",
        "  rule tcp 443 from 0.0.0.0/0 (IPv4): will add",
        "  intro-1: will be created; 6 accounts; user-data ",
        "  instances: needs 1, 8 free of 10: fits",
        "  vCPUs: needs 4, 16 free of 20: fits",
        "  RAM MiB: needs 8192, 43008 free of 51200: fits",
        "  floating IPs: needs 1, 1 free of 2: fits",
        "  security groups: needs 1, 9 free of 10: fits",
        "  security group rules: needs 3, 96 free of 100: fits",
    ]:
        assert line in out, line


def test_launch_dry_run_shows_the_boot_volume_and_config_drive(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    config = write_workshop(tmp_path, boot_volume=True, volume_size=60, config_drive=False)
    out = invoke("launch", str(config), "--dry-run").stdout
    assert (
        "boot: a new 60 GB volume (openstack.volume_size; deleted with the server): "
        "openstack.boot_volume; user-data by metadata service (openstack.config_drive: false)"
    ) in out
    assert "  volume GB: needs 60, 980 free of 1000: fits" in out


def test_launch_dry_run_after_a_launch_shows_what_exists_and_what_does_not_fit(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    launch(write_workshop(tmp_path, admin_cidr="0.0.0.0/0"))
    config = write_workshop(tmp_path, flavor="auto", count=2)
    fake.limits["instances"] = (2, 2)
    fake.since = fake.mock.call_count

    result = invoke("launch", str(config), "--dry-run")

    assert result.exit_code == 0, result.output
    assert fake.calls("POST", WRITES) == [] and fake.calls("DELETE", ".") == []
    out = result.stdout
    assert "flavor: m1.medium (2 vCPUs, 4096 MiB, 40 GB): auto: the smallest that holds" in out
    assert "key pair: bakery-intro: exists, used" in out
    assert "security group: bakery-intro: exists (bakery's), rules reconciled" in out
    assert "rule tcp 22 from 0.0.0.0/0 (IPv4): will remove" in out
    assert "rule tcp 22 from 192.0.2.0/24 (IPv4): will add" in out
    assert "intro-1: exists (ACTIVE): reused" in out
    assert "intro-2: will be created" in out
    assert "instances: needs 1, 0 free of 2: DOES NOT FIT" in out


def test_destroy_dry_run_lists_what_would_go_and_deletes_nothing(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    config = write_workshop(tmp_path)
    launch(config)
    fake.since = fake.mock.call_count

    result = invoke("destroy", str(config), "--dry-run")

    assert result.exit_code == 0, result.output
    assert fake.calls("DELETE", ".") == [] and fake.calls("POST", r"/(servers|floatingips)") == []
    assert result.stdout.splitlines()[:4] == [
        "server intro-1",
        "floating IP 203.0.113.10",
        "security group bakery-intro",
        "key pair bakery-intro",
    ]
    assert "would delete these 4 resources" in result.stdout
    assert "trainees' files" in result.stdout
    assert len(fake.servers) == 1 and resources.state_path(config).exists()


def test_destroy_confirmation_says_the_trainees_files_go(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_workshop(tmp_path)
    launch(config)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)

    result = CliRunner().invoke(app, ["destroy", str(config)], input="n\n")

    assert result.exit_code == 1, result.output
    assert "trainees' files" in result.output
    assert "home folders" in result.output
    assert "not confirmed; nothing deleted" in result.stderr
    assert fake.calls("DELETE", ".") == []
