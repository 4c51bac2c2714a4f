"""Start to end on the test cloud: the e2e golden image uploaded to Glance, a hub launched by Nova,
a trainee working through the floating IP, and nothing of the workshop left after destroy.

The golden image is the e2e tier's chroot bake (the systemd spawner workshop), reused from its
cache; the test bakes it with the same harness when it is missing. Timings go through the e2e
``record`` helper: shown at once with -s and in the e2e phase timings at the end of the session.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cloudcount import (
    HUB_FLAVOR,
    counts,
    destroy_leftovers,
    ensure_flavor,
    ports_of,
    project_volumes,
)

from bakery.config.workshop import load_config
from bakery.providers.openstack import destroy as bakery_destroy
from bakery.providers.openstack import launch as bakery_launch
from bakery.vm import image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
import baseimage
from e2e_harness import (
    Workshop,
    build_golden,
    e2e_ssh_key,
    record,
    require,
    tagged,
    workshop_for,
    write_config,
)
from test_try import login, open_server, run_cell, save_text, ssh, xsrf_for

pytestmark = pytest.mark.testcloud


say = tagged("bakery")


NAME = "e2e-workshop"  # the e2e config's name: its golden image is the one in the cache
BAKERY = str(Path(sys.executable).with_name("bakery"))
OPENSTACK = """\
openstack:
  cloud: testcloud
  flavor: {flavor}
  networks: [private]
  floating_ip_network: public
  public_key: {key}.pub
  active_timeout: 10m
  hub_timeout: 20m
"""
METADATA_PROBE = (
    "import socket\n"
    "s = socket.socket(); s.settimeout(15)\n"
    "try:\n"
    "    s.connect(('169.254.169.254', 80)); r = 'reachable'\n"
    "except OSError as e:\n"
    "    r = type(e).__name__\n"
    "r"
)
ROOT_METADATA = (
    'sudo -n python3 -c "import urllib.request as u; print(u.urlopen('
    "'http://169.254.169.254/openstack/latest/meta_data.json', timeout=20).status)\""
)


NOTHING = dict.fromkeys(("servers", "floating_ips", "security_groups", "keypairs"), 0)


def bakery(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    """Run the bakery CLI; its progress (stderr) goes to the test's output as it comes."""
    proc = subprocess.run(
        [BAKERY, *args], stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout
    )
    print(proc.stdout, end="")
    return proc


@pytest.fixture(scope="module")
def clouds(cloud_connect: Callable[[str], Any]) -> tuple[Any, Any]:
    demo, admin = cloud_connect("testcloud"), cloud_connect("testcloud-admin")
    ensure_flavor(admin, HUB_FLAVOR)
    return demo, admin


@pytest.fixture(scope="module")
def workshop(tmp_path_factory: pytest.TempPathFactory) -> Workshop:
    """The e2e workshop's config (same bake document: same cached golden image) with a cloud."""
    require(os.geteuid() == 0, "needs root: the golden image is baked in a chroot when missing")
    key = e2e_ssh_key()
    config = tmp_path_factory.mktemp("golden-hub") / "workshop.yaml"
    write_config(config, NAME, key.with_suffix(".pub").read_text().strip())
    # The e2e workshop asks an ACME server on the test host for hub.bakery.test; a test-cloud
    # guest reaches neither, and `launch` rightly refuses a domain that does not resolve.
    settings = yaml.safe_load(config.read_text())
    settings["tls"] = {"mode": "self-signed"}
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    with config.open("a") as fh:
        fh.write(OPENSTACK.format(flavor=HUB_FLAVOR[0], key=key))
    return workshop_for(config, key=key, https_port=443, ssh_port=22)


@pytest.fixture(scope="module")
def golden(workshop: Workshop) -> Path:
    """The e2e golden image (cached, else baked now by the e2e harness) and its sidecar.

    BAKERY_TESTCLOUD_GOLDEN=FILE uses a golden qcow2 baked earlier instead (while iterating).
    """
    given = os.environ.get("BAKERY_TESTCLOUD_GOLDEN")
    path = Path(given) if given else build_golden(baseimage.ensure_base_image(), workshop.config)
    assert image.read_sidecar(path)["record"]["workshop"] == NAME
    return path


@pytest.fixture
def cleanup(clouds: tuple[Any, Any], workshop: Workshop) -> Iterator[list[str]]:
    """Whatever the test leaves goes (the images it names too), so the next run starts clean."""
    demo, _ = clouds
    images: list[str] = []
    yield images
    destroy_leftovers(workshop.config)
    for ref in images:
        demo.image.delete_image(ref, ignore_missing=True)


def archive_files(path: Path) -> dict[str, bytes]:
    """The regular files of a home's archive, by name (without the leading folder)."""
    with tarfile.open(path) as tar:
        return {
            m.name.split("/", 1)[-1]: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def end_of_day(w: Workshop, s: Any, trainee: str) -> None:
    """Issue 26: `destroy --collect` after an earlier `collect` ships the newer work (a server it
    cannot collect stops it: test_launch)."""
    work = w.config.parent / "work"
    morning = save_text(w, s, trainee, "morning.txt", "before the first collect\n")
    assert morning.status_code in (200, 201)
    start = time.monotonic()
    assert bakery("collect", str(w.config), "-o", str(work)).returncode == 0
    record("testcloud: collect one home", time.monotonic() - start)
    first = work / f"{trainee}.tar.gz"
    assert archive_files(first)["morning.txt"] == b"before the first collect\n"
    assert first.stat().st_mode & 0o777 == 0o600
    later = save_text(w, s, trainee, "afternoon.txt", "after the first collect\n")
    assert later.status_code in (200, 201)

    start = time.monotonic()
    assert bakery("destroy", str(w.config), "--collect", str(work), "--yes").returncode == 0
    record("testcloud: destroy --collect", time.monotonic() - start)
    shipped = archive_files(work / f"{trainee}.tar.gz")
    assert shipped["afternoon.txt"] == b"after the first collect\n"
    assert shipped["morning.txt"] == b"before the first collect\n"
    (earlier,) = work.glob(f"{trainee}.*Z.tar.gz")
    assert "afternoon.txt" not in archive_files(earlier)  # the first collect, kept beside


def trainee_cell(w: Workshop, label: str) -> Any:
    """The first trainee logs in at ``w``'s address, starts a server and runs a cell; the
    time it took is recorded under ``label``. The trainee's session."""
    trainee = w.trainees[0]
    start = time.monotonic()
    s, resp = login(w, trainee, w.passwords[trainee])
    assert resp.status_code == 302, f"login: {resp.status_code} {resp.text[:300]}"
    open_server(w, s, trainee, timeout=900)
    assert run_cell(w, s, trainee, "6 * 7", 300) == "42"
    record(f"{label}: login -> cell answer", time.monotonic() - start)
    return s


def test_golden_image_to_a_working_hub_and_back(
    clouds: tuple[Any, Any], workshop: Workshop, golden: Path, cleanup: list[str]
) -> None:
    demo, _ = clouds
    assert counts(demo, NAME) == NOTHING, "leftovers of an earlier run"

    # 1. Upload: the sidecar's name, record and properties; the checksum is checked.
    start = time.monotonic()
    up = bakery("image", "upload", str(workshop.config), str(golden))
    assert up.returncode == 0
    name, image_id = up.stdout.split()
    cleanup.append(image_id)
    record("testcloud: upload golden image", time.monotonic() - start)
    glance = demo.image.get_image(image_id)
    props = {**(glance.properties or {}), **glance.to_dict()}
    assert glance.status == "active" and glance.disk_format == "qcow2"
    assert image.record_from_properties(props) == image.read_sidecar(golden)["record"]
    assert (props["os_distro"], props["os_version"]) == ("debian", "12")
    again = bakery("image", "upload", str(workshop.config), str(golden))
    assert again.returncode == 0 and again.stdout.split() == [name, image_id]  # not sent twice

    # 2. Launch: group, key pair, server, floating IP; done once /hub/health answers on the FIP.
    start = time.monotonic()
    # An image baked earlier by another tree (BAKERY_TESTCLOUD_GOLDEN) may pin other versions
    # than this tree's config: `bakery check` would rightly refuse it.
    other = ["--no-check"] if os.environ.get("BAKERY_TESTCLOUD_GOLDEN") else []
    out = bakery("launch", str(workshop.config), "--image", name, *other)
    assert out.returncode == 0
    record("testcloud: launch -> hub health through the FIP", time.monotonic() - start)
    server_line = out.stdout.splitlines()[0]
    assert server_line.startswith(f"{NAME}-1: https://") and server_line.endswith("(hub: ok)")
    fip = server_line.split("https://", 1)[1].split("/", 1)[0]
    assert f"bakery credentials {workshop.config}" in out.stdout
    assert counts(demo, NAME) == {
        "servers": 1,
        "floating_ips": 1,
        "security_groups": 1,
        "keypairs": 1,
    }
    (server,) = [s for s in demo.compute.servers() if s.name == f"{NAME}-1"]
    assert server.metadata["bakery_stage"] == "boot"  # recognised as bakery's golden image
    w = dataclasses.replace(workshop, host=fip, http_port=80)

    # 3. A trainee through the floating IP over HTTPS: login, server, a cell, a terminal.
    trainee = w.trainees[0]
    s, resp = login(w, trainee, w.passwords[trainee] + "x")
    assert resp.status_code != 302
    assert not [c.name for c in s.cookies if c.name.startswith("jupyterhub-hub-login")]
    start = time.monotonic()
    s, resp = login(w, trainee, w.passwords[trainee])
    assert resp.status_code == 302, f"login: {resp.status_code} {resp.text[:300]}"
    open_server(w, s, trainee, timeout=900)
    answer = run_cell(w, s, trainee, "import getpass, os\n(getpass.getuser(), 6 * 7)", 300)
    record("testcloud: login -> cell answer", time.monotonic() - start)
    assert answer == f"('{trainee}', 42)"
    xsrf = xsrf_for(s, f"/user/{trainee}/")
    term = s.post(
        f"https://{fip}/user/{trainee}/api/terminals", headers={"X-XSRFToken": xsrf}, timeout=60
    )
    assert term.status_code == 200, f"terminal: {term.status_code} {term.text[:300]}"

    # 4. The metadata service: closed to the trainee's server, open to root on the VM.
    assert run_cell(w, s, trainee, METADATA_PROBE, 120) == "'ConnectionRefusedError'"
    root = ssh(w, w.login_user, ROOT_METADATA)
    assert root.returncode == 0 and root.stdout.strip() == "200", root

    # ssh: the trainee is refused, the login user with the key gets in.
    refused = ssh(w, trainee, "true", password=w.passwords[trainee])
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused
    ok = ssh(w, w.login_user, "id -un")
    assert ok.returncode == 0 and ok.stdout.strip() == w.login_user, ok

    # 5. status --json: healthy; a second launch creates nothing.
    status = bakery("status", str(w.config), "--json")
    assert status.returncode == 0
    (info,) = json.loads(status.stdout)["servers"]
    assert (info["status"], info["hub"], info["floating_ip"]) == ("ACTIVE", "ok", fip)
    before = counts(demo, NAME)
    relaunch = bakery_launch.launch(config_path=w.config, image=name, progress=say)
    assert relaunch.created == [] and counts(demo, NAME) == before

    # 6. The end of the day as the README plans it: collect, trainees go on working, destroy
    # --collect ships the work done since the first collect, and leaves nothing of the workshop.
    end_of_day(w, s, trainee)
    assert counts(demo, NAME) == NOTHING
    assert demo.image.get_image(image_id).status == "active"
    assert bakery("image", "delete", str(w.config), "tinyguest").returncode == 2
    assert demo.image.find_image("tinyguest") is not None
    assert bakery("image", "delete", str(w.config), image_id).returncode == 0
    assert demo.image.find_image(image_id) is None


GLANCE_CONF = Path("/etc/glance/glance-api.conf")


def restart_glance() -> None:
    subprocess.run(["/etc/init.d/glance-api", "restart"], check=True, capture_output=True)
    deadline = time.monotonic() + 120
    while subprocess.run(["curl", "-fs", "-o", "/dev/null", "http://127.0.0.1:9292/"]).returncode:
        assert time.monotonic() < deadline, "glance-api did not come back"
        time.sleep(2)


@pytest.fixture
def raw_only_glance(clouds: tuple[Any, Any]) -> Iterator[None]:
    """Glance taking raw images only, as a Ceph-backed site sets it (image_format.disk_formats);
    the test cloud's own setting comes back afterwards."""
    require(GLANCE_CONF.is_file(), f"{GLANCE_CONF} missing: the test cloud's Glance is not here")
    before = GLANCE_CONF.read_text()
    setting = ["crudini", "--set", str(GLANCE_CONF), "image_format", "disk_formats", "raw"]
    subprocess.run(setting, check=True)
    restart_glance()
    try:
        enum = clouds[0].image.get("/schemas/image").json()["properties"]["disk_format"]["enum"]
        assert enum == [None, "raw"], enum
        yield
    finally:
        GLANCE_CONF.write_text(before)
        restart_glance()


@pytest.mark.slow
def test_a_raw_only_glance_gets_a_raw_image_that_boots_a_working_hub(
    clouds: tuple[Any, Any],
    workshop: Workshop,
    golden: Path,
    cleanup: list[str],
    raw_only_glance: None,
) -> None:
    """Issue 30, on demand (`make test-cloud-raw`): `image upload` converts the qcow2 for a Glance
    that takes raw only, Nova boots it, a trainee runs a cell, destroy leaves nothing."""
    demo, _ = clouds
    assert counts(demo, NAME) == NOTHING, "leftovers of an earlier run"
    volumes = project_volumes(demo)
    converted = golden.with_name(golden.name + ".raw")
    try:
        start = time.monotonic()
        up = bakery("image", "upload", str(workshop.config), str(golden))
        assert up.returncode == 0
        name, image_id = up.stdout.split()
        cleanup.append(image_id)
        record("testcloud raw: convert + upload", time.monotonic() - start)
        stored = demo.image.get_image(image_id)
        assert stored.status == "active" and stored.disk_format == "raw"
        print(f"raw: {stored.size / 2**20:.0f} MiB; qcow2: {golden.stat().st_size / 2**20:.0f} MiB")
        start = time.monotonic()
        out = bakery("launch", str(workshop.config), "--image", name)
        assert out.returncode == 0
        record("testcloud raw: launch -> hub health through the FIP", time.monotonic() - start)
        fip = out.stdout.splitlines()[0].split("https://", 1)[1].split("/", 1)[0]
        (server,) = [s for s in demo.compute.servers() if s.name == f"{NAME}-1"]
        w = dataclasses.replace(workshop, host=fip, http_port=80)
        trainee_cell(w, "testcloud raw")
        assert bakery("destroy", str(w.config), "--yes").returncode == 0
        assert counts(demo, NAME) == NOTHING
        assert ports_of(demo, [server.id]) == 0 and project_volumes(demo) == volumes
    finally:
        converted.unlink(missing_ok=True)  # 6 GiB (sparse) beside the cached golden image


def test_config_drive_and_metadata_service_both_carry_the_boot_stage(
    clouds: tuple[Any, Any], tmp_path: Path
) -> None:
    """tinyguest prints the user_data of the config drive and of the metadata service."""
    demo, _ = clouds
    name = "bakery-cfgdrive"
    key = e2e_ssh_key()
    config = tmp_path / "workshop.yaml"
    config.write_text(
        f"name: {name}\nusers: {{count: 1}}\n"
        + OPENSTACK.format(flavor="m1.tiny", key=key)
        + "  config_drive: true\n"
    )
    assert load_config(config).openstack.config_drive is True
    try:
        result = bakery_launch.launch(
            config_path=config, image="tinyguest", stage="boot", wait=False, progress=say
        )
        server = demo.compute.get_server(result.servers[0].id)
        assert server.has_config_drive in (True, "True")
        deadline, out = time.monotonic() + 300, ""
        while time.monotonic() < deadline and "METADATA USER_DATA END" not in out:
            time.sleep(5)
            out = demo.compute.get_server_console_output(server).get("output", "")
        done = f"bakery: {name} boot stage done"
        for source in ("CONFIGDRIVE", "METADATA"):
            assert f"=== {source} USER_DATA BEGIN ===" in out, f"{source}: {out[-2000:]}"
            body = out.split(f"=== {source} USER_DATA BEGIN ===", 1)[1]
            body = body.split(f"=== {source} USER_DATA END ===", 1)[0]
            assert body.startswith("#cloud-config") or "#cloud-config" in body[:200], source
            assert done in body, source
    finally:
        bakery_destroy.destroy(config_path=config)
    assert counts(demo, name) == NOTHING
