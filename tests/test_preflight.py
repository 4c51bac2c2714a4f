"""`bakery check` and the checks `launch` runs first, against the fake cloud (real openstacksdk)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests_mock as rm
import yaml
from fakecloud import BAKED_IMAGE, PRIVATE_NET, FakeCloud, use_fake_cloud, write_workshop
from typer.testing import CliRunner

from bakery.cli.main import app
from bakery.config.workshop import load_config
from bakery.providers.openstack import check as preflight
from bakery.topology import workshop_config
from bakery.vm import image

WRITES = r"/(servers|os-keypairs|security-groups|security-group-rules|floatingips)$"


@pytest.fixture
def fake(requests_mock: rm.Mocker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCloud:
    monkeypatch.setattr(time, "sleep", lambda s: None)
    return use_fake_cloud(requests_mock, tmp_path, monkeypatch)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def statuses(config: Path, **kwargs: Any) -> dict[str, tuple[str, str]]:
    report = preflight.check(config_path=config, **kwargs)
    return {c.name: (c.status, c.detail) for c in report.checks}


def bake_into_fake(fake: FakeCloud, config: Path, **record_changes: Any) -> str:
    """Give the fake's baked image the bake record of ``config`` (with ``record_changes``)."""
    rec = image.record(load_config(config))
    components = {**rec["components"], **record_changes.pop("components", {})}
    rec = {**rec, **record_changes, "components": components}
    props = {k: v for k, v in fake.images[BAKED_IMAGE].items() if not k.startswith("bakery_")}
    fake.images[BAKED_IMAGE] = {**props, **image.record_properties(rec)}
    return str(fake.images[BAKED_IMAGE]["name"])


def set_config(config: Path, **top: Any) -> None:
    doc = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**doc, **top}, sort_keys=False))


def test_a_stock_image_passes_with_a_warning(fake: FakeCloud, tmp_path: Path) -> None:
    found = statuses(write_workshop(tmp_path))
    assert found["credentials"][0] == "ok"
    assert found["image"][0] == "warn" and "not baked by bakery" in found["image"][1]
    assert found["flavor"][0] == "ok"
    for name in ("network private", "floating-IP pool", "key pair", "dates"):
        assert found[name][0] == "ok", (name, found[name])
    quota = {k: v for k, v in found.items() if k.startswith("quota ")}
    assert set(quota) == {
        "quota instances", "quota vCPUs", "quota RAM MiB", "quota key pairs", "quota floating IPs",
        "quota security groups", "quota security group rules",
    }  # fmt: skip
    assert quota["quota vCPUs"] == ("ok", "needs 4, 16 free of 20: fits")
    assert all(s == "ok" for s, _ in quota.values())


def test_check_creates_nothing_and_prints_json(fake: FakeCloud, tmp_path: Path) -> None:
    result = invoke("check", str(write_workshop(tmp_path)), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["workshop"] == "intro"
    assert {c["status"] for c in data["checks"]} <= {"ok", "warn"}
    assert fake.calls("POST", WRITES) == [] and fake.calls("DELETE", ".") == []
    assert not (tmp_path / "workshop.credentials.csv").exists()


def test_check_says_which_network_an_empty_list_means_or_fails_naming_them(
    fake: FakeCloud, tmp_path: Path
) -> None:
    config = write_workshop(tmp_path, networks=[])
    checks = json.loads(invoke("check", str(config), "--json").stdout)["checks"]
    found = {c["name"]: (c["status"], c["detail"]) for c in checks}
    assert found["network"] == ("ok", f"private ({PRIVATE_NET}): the project's own"), found
    net = {**fake.networks[PRIVATE_NET], "id": "b1f1c0de-0000-4000-8000-00000000abcd", "name": "x"}
    fake.networks[net["id"]] = net
    result = invoke("check", str(config))
    assert result.exit_code == 1, result.output
    assert "sees 2 networks a server can boot on" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("quota", "value", "name", "detail"),
    [
        ("limits", ("cores", (8, 6)), "quota vCPUs", "needs 4, 2 free of 8: DOES NOT FIT"),
        ("limits", ("instances", (2, 2)), "quota instances", "needs 1, 0 free of 2: DOES NOT FIT"),
        ("limits", ("ram", (10000, 4000)), "quota RAM MiB", "needs 8192, 6000 free of 10000"),
        ("quotas", ("floatingip", (1, 1)), "quota floating IPs", "needs 1, 0 free of 1"),
        ("quotas", ("security_group", (3, 3)), "quota security groups", "needs 1, 0 free of 3"),
        ("quotas", ("security_group_rule", (6, 4)), "quota security group rules", "2 free of 6"),
    ],
)
def test_a_quota_too_low_fails_and_is_named(
    fake: FakeCloud, tmp_path: Path, quota: str, value: tuple[str, Any], name: str, detail: str
) -> None:
    getattr(fake, quota)[value[0]] = value[1]
    config = write_workshop(tmp_path)
    result = invoke("check", str(config))
    assert result.exit_code == 1, result.output
    line = next(x for x in result.stdout.splitlines() if f" {name}:" in x)
    assert line.startswith("fail") and detail in line, line


@pytest.mark.parametrize(
    ("limit", "name", "detail"),
    [
        (("volumes", (3, 3)), "quota volumes", "needs 1, 0 free of 3: DOES NOT FIT"),
        (("gigabytes", (100, 80)), "quota volume GB", "needs 40, 20 free of 100: DOES NOT FIT"),
    ],
)
def test_a_boot_volume_needs_cinder_quota(
    fake: FakeCloud, tmp_path: Path, limit: tuple[str, Any], name: str, detail: str
) -> None:
    config = write_workshop(tmp_path, boot_volume=True, volume_size=40)
    fits = invoke("check", str(config))
    assert fits.exit_code == 0, fits.output
    assert "ok    quota volume GB: needs 40, 980 free of 1000: fits" in fits.stdout
    fake.volume_limits[limit[0]] = limit[1]
    result = invoke("check", str(config))
    assert result.exit_code == 1, result.output
    line = next(x for x in result.stdout.splitlines() if f" {name}:" in x)
    assert line.startswith("fail") and detail in line, line
    # Without a boot volume Cinder is not asked.
    assert "quota volume" not in invoke("check", str(write_workshop(tmp_path))).stdout


def test_a_matching_bake_record_is_ok(fake: FakeCloud, tmp_path: Path) -> None:
    config = write_workshop(tmp_path, image="bakery-intro-20240501-0900")
    bake_into_fake(fake, config)
    status, detail = statuses(config)["image"]
    assert (status, detail) == (
        "ok",
        "bakery-intro-20240501-0900: baked by bakery, record matches; disk format qcow2",
    )


def test_the_image_s_disk_format_against_a_raw_only_glance(fake: FakeCloud, tmp_path: Path) -> None:
    """The bake record is the file's (qcow2); what counts is the image's format in Glance."""
    config = write_workshop(tmp_path, image="bakery-intro-20240501-0900")
    bake_into_fake(fake, config)
    fake.disk_formats = ["raw"]  # the cloud moved to Ceph after the upload
    status, detail = statuses(config)["image"]
    assert status == "warn", detail
    assert "record matches; disk format qcow2, which this Glance no longer takes (raw)" in detail
    assert "`bakery image upload` sends the golden image as raw" in detail

    image = next(i for i in fake.images.values() if i["name"] == "bakery-intro-20240501-0900")
    image["disk_format"] = "raw"  # as `image upload` sends it there
    status, detail = statuses(config)["image"]
    assert status == "ok", detail
    assert detail.endswith("record matches; disk format raw (this Glance takes raw)")


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"components": {"jupyterhub": "4.0.0"}}, "jupyterhub: image has 4.0.0, config wants 5."),
        ({"os": "debian-12"}, "os: image has debian-12, config wants ubuntu-24.04"),
        (
            {"components": {"user-image": "quay.io/jupyter/base-notebook:2024-01-01"}},
            "user-image: image has quay.io/jupyter/base-notebook:2024-01-01",
        ),
    ],
)
def test_a_bake_record_that_differs_names_the_field(
    fake: FakeCloud, tmp_path: Path, changes: dict[str, Any], named: str
) -> None:
    config = write_workshop(tmp_path, image="bakery-intro-20240501-0900")
    bake_into_fake(fake, config, **changes)
    status, detail = statuses(config)["image"]
    assert status == "fail" and named in detail, detail


def test_a_spawner_change_since_the_bake_is_a_mismatch(fake: FakeCloud, tmp_path: Path) -> None:
    config = write_workshop(tmp_path, image="bakery-intro-20240501-0900")
    bake_into_fake(fake, config)
    set_config(config, spawner={"kind": "systemd"})
    status, detail = statuses(config)["image"]
    assert status == "fail"
    assert "dockerspawner: image has" in detail and "config wants none" in detail
    assert "jupyterhub-systemdspawner: image has none" in detail


def test_an_older_bakery_or_config_is_a_warning(fake: FakeCloud, tmp_path: Path) -> None:
    config = write_workshop(tmp_path, image="bakery-intro-20240501-0900")
    bake_into_fake(fake, config, bakery_version="0.0.1", config_sha256="0" * 64)
    status, detail = statuses(config)["image"]
    assert status == "warn"
    assert "baked from another config" in detail and "baked by bakery 0.0.1" in detail


@pytest.mark.parametrize(
    ("setting", "name", "detail"),
    [
        ({"image": "no-such-image"}, "image", "image 'no-such-image' not found"),
        ({"flavor": "m9.huge"}, "flavor", "flavor 'm9.huge' not found"),
        ({"flavor": "m1.tiny"}, "flavor", "too small: 512 MiB RAM <"),
        ({"networks": ["nowhere"]}, "network nowhere", "network 'nowhere' not found"),
        ({"floating_ip_network": "private"}, "floating-IP pool", "not an external network"),
        ({"floating_ip_network": "nope"}, "floating-IP pool", "network 'nope' not found"),
    ],
)
def test_missing_or_wrong_resources_fail(
    fake: FakeCloud, tmp_path: Path, setting: dict[str, Any], name: str, detail: str
) -> None:
    status, found = statuses(write_workshop(tmp_path, **setting))[name]
    assert status == "fail" and detail in found, found


def test_a_key_pair_with_another_key_fails(fake: FakeCloud, tmp_path: Path) -> None:
    from fakecloud import OTHER_KEY

    fake._create_keypair(
        query={}, body={"keypair": {"name": "bakery-intro", "public_key": OTHER_KEY}}
    )
    status, detail = statuses(write_workshop(tmp_path))["key pair"]
    assert status == "fail" and "exists with a different key" in detail


def test_an_ended_workshop_fails_and_a_future_one_shows_time_left(
    fake: FakeCloud, tmp_path: Path
) -> None:
    config = write_workshop(tmp_path)
    set_config(config, ends=(datetime.now(UTC) - timedelta(minutes=5)).isoformat())
    status, detail = statuses(config)["dates"]
    assert status == "fail" and detail.startswith("ENDED")
    set_config(config, ends=(datetime.now(UTC) + timedelta(hours=3, minutes=1)).isoformat())
    status, detail = statuses(config)["dates"]
    assert status == "ok" and "3 h 0 min left" in detail


def test_letsencrypt_domain_must_resolve(tmp_path: Path) -> None:
    cfg = workshop_config(write_workshop(tmp_path))
    tls = cfg.tls.model_copy(update={"mode": "letsencrypt", "domain": "hub.example.org"})
    cfg = cfg.model_copy(update={"tls": tls})

    def nowhere(host: str) -> list[str]:
        raise OSError("Name or service not known")

    bad = preflight.check_domain(cfg, nowhere)
    assert (
        bad is not None
        and bad.status == "fail"
        and "hub.example.org does not resolve" in bad.detail
    )
    good = preflight.check_domain(cfg, lambda host: ["203.0.113.10"])
    assert good is not None and good.status == "ok" and "203.0.113.10" in good.detail
    assert preflight.check_domain(workshop_config(write_workshop(tmp_path))) is None


def test_launch_refuses_after_a_failed_check_and_creates_nothing(
    fake: FakeCloud, tmp_path: Path
) -> None:
    fake.limits["instances"] = (2, 2)
    result = invoke("launch", str(write_workshop(tmp_path)), "--no-wait")
    assert result.exit_code == 2, result.output
    assert "launch refused, nothing created: quota instances: needs 1, 0 free of 2" in result.output
    assert fake.calls("POST", WRITES) == [] and fake.calls("DELETE", ".") == []
    assert fake.servers == {} and fake.keypairs == {}


def test_launch_runs_the_checks_first_then_launches(
    fake: FakeCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = invoke("launch", str(write_workshop(tmp_path)), "--no-wait")
    assert result.exit_code == 0, result.output
    assert "checks passed" in result.output
    assert "check: warn  image: ubuntu-24.04: not baked by bakery" in result.output
    assert len(fake.servers) == 1


def test_dry_run_prints_the_checks(fake: FakeCloud, tmp_path: Path) -> None:
    fake.limits["cores"] = (8, 6)
    result = invoke("launch", str(write_workshop(tmp_path)), "--dry-run")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "checks (`bakery check`):" in out
    assert "  fail  quota vCPUs: needs 4, 2 free of 8: DOES NOT FIT" in out
    assert "  workshop intro: 1 failed, 1 warnings" in out
    assert fake.calls("POST", WRITES) == []
    # One token for the checks and the plan.
    assert len(fake.calls("POST", r"/v3/auth/tokens$")) == 1
