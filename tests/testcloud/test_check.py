"""`bakery check` (and `launch` refusing after it) against the real all-in-one test OpenStack."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cloudcount import HUB_FLAVOR, ensure_flavor
from typer.testing import CliRunner

from bakery.cli.main import app
from bakery.config.workshop import load_config
from bakery.vm import image

pytestmark = pytest.mark.testcloud

NAME = "bakery-check"


@pytest.fixture(scope="module")
def conn(cloud_connect: Callable[[str], Any]) -> Any:
    ensure_flavor(cloud_connect("testcloud-admin"), HUB_FLAVOR)
    return cloud_connect("testcloud")


@pytest.fixture(scope="module")
def admin(cloud_connect: Callable[[str], Any]) -> Any:
    return cloud_connect("testcloud-admin")


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def write(tmp_path: Path, **openstack: Any) -> Path:
    key = tmp_path / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    settings = {
        "cloud": "testcloud",
        "image": "tinyguest",
        "flavor": HUB_FLAVOR[0],
        "networks": ["private"],
        "floating_ip_network": "public",
        "public_key": f"{key}.pub",
        **openstack,
    }
    lines = "\n".join(f"  {k}: {json.dumps(v)}" for k, v in settings.items())
    config = tmp_path / "workshop.yaml"
    config.write_text(f"name: {NAME}\nusers: {{count: 2}}\nopenstack:\n{lines}\n")
    return config


def checks(config: Path) -> tuple[int, dict[str, dict[str, str]]]:
    result = invoke("check", str(config), "--json")
    data = json.loads(result.stdout)
    return result.exit_code, {c["name"]: c for c in data["checks"]}


def nothing_made(conn: Any) -> bool:
    servers = [s for s in conn.compute.servers() if s.name.startswith(f"{NAME}-")]
    groups = [g for g in conn.network.security_groups() if g.name == f"bakery-{NAME}"]
    keys = [k for k in conn.compute.keypairs() if k.name == f"bakery-{NAME}"]
    return not servers and not groups and not keys


def test_a_workable_launch_passes_with_warnings(conn: Any, tmp_path: Path) -> None:
    code, found = checks(write(tmp_path))
    assert code == 0, found
    assert found["credentials"]["status"] == "ok"
    assert found["image"]["status"] == "warn"
    assert "tinyguest: not baked by bakery" in found["image"]["detail"]
    assert found["network private"]["status"] == "ok"
    assert found["floating-IP pool"]["status"] == "ok"
    assert found["quota instances"]["status"] == "ok"
    assert nothing_made(conn)


def test_no_networks_named_means_the_projects_own_found_before_anything_is_made(
    conn: Any, tmp_path: Path
) -> None:
    """The test cloud's project sees its own `private` and the external `public`: Nova alone
    would answer a create without networks with 400 "'networks' is a required property"."""
    private = conn.network.find_network("private")
    config = write(tmp_path, networks=[])
    code, found = checks(config)
    assert code == 0, found
    assert found["network"] == {
        "name": "network",
        "status": "ok",
        "detail": f"private ({private.id}): the project's own",
    }, found["network"]
    plan = invoke("launch", str(config), "--dry-run")
    assert plan.exit_code == 0, plan.output
    assert f"networks: private ({private.id}): the project's own" in plan.stdout
    assert nothing_made(conn)


@pytest.fixture
def cores_quota_too_low(admin: Any, conn: Any) -> Iterator[int]:
    """The project's cores quota set to its use + 1 (the flavor needs 2); restored afterwards."""
    project = conn.current_project_id
    before = admin.get_compute_quotas(project)
    used = conn.compute.get_limits().absolute.total_cores_used
    admin.set_compute_quotas(project, cores=used + 1)
    try:
        yield used + 1
    finally:
        admin.set_compute_quotas(project, cores=before.cores)
    assert admin.get_compute_quotas(project).cores == before.cores


def test_a_quota_too_low_fails_and_launch_refuses_creating_nothing(
    conn: Any, tmp_path: Path, cores_quota_too_low: int
) -> None:
    config = write(tmp_path)
    code, found = checks(config)
    assert code == 1
    assert found["quota vCPUs"]["status"] == "fail"
    assert found["quota vCPUs"]["detail"] == (
        f"needs 2, 1 free of {cores_quota_too_low}: DOES NOT FIT"
    )
    result = invoke("launch", str(config), "--no-wait")
    assert result.exit_code == 2, result.output
    assert "launch refused, nothing created: quota vCPUs: needs 2, 1 free" in result.output
    assert nothing_made(conn)
    assert not (tmp_path / "workshop.credentials.csv").exists()


@pytest.mark.parametrize(
    ("setting", "name", "detail"),
    [
        ({"flavor": "m9.nothing"}, "flavor", "flavor 'm9.nothing' not found"),
        ({"flavor": "m1.tiny"}, "flavor", "too small: 128 MiB RAM"),
        ({"networks": ["no-such-net"]}, "network no-such-net", "network 'no-such-net' not found"),
        ({"floating_ip_network": "private"}, "floating-IP pool", "not an external network"),
        ({"image": "no-such-image"}, "image", "image 'no-such-image' not found"),
    ],
)
def test_missing_resources_fail(
    conn: Any, tmp_path: Path, setting: dict[str, Any], name: str, detail: str
) -> None:
    code, found = checks(write(tmp_path, **setting))
    assert code == 1
    assert found[name]["status"] == "fail" and detail in found[name]["detail"], found[name]


@pytest.fixture
def stale_golden(conn: Any, tmp_path: Path) -> Iterator[str]:
    """A tiny image carrying the bake record of an older JupyterHub (deleted afterwards)."""
    rec = image.record(load_config(write(tmp_path)))
    rec["components"]["jupyterhub"] = "4.1.0"
    img = conn.image.create_image(
        name=f"{NAME}-stale-golden",
        data=b"\0" * 1024,
        disk_format="raw",
        container_format="bare",
        **image.record_properties(rec),
    )
    try:
        yield str(img.name)
    finally:
        conn.image.delete_image(img, ignore_missing=True)


def test_a_golden_image_of_another_config_fails_naming_the_field(
    conn: Any, tmp_path: Path, stale_golden: str
) -> None:
    code, found = checks(write(tmp_path, image=stale_golden))
    assert code == 1
    assert found["image"]["status"] == "fail"
    assert "jupyterhub: image has 4.1.0, config wants 5." in found["image"]["detail"]
