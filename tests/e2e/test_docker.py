"""End to end, docker spawner: per-trainee containers from a local image archive, in a real VM.

The user image is built here without a registry (``userimage.py``: a debootstrap rootfs with
jupyterhub + jupyterlab), shipped as ``spawner.image_archive`` (format rootfs), copied into the
golden image by the chroot builder and ``docker import``-ed at first boot. Then: each trainee's
server is its own container, as the trainee's UID, /home/NAME mounted read-write; files outlive
the container and a reboot; the metadata service is refused and the hub API reachable from the
container; mem_limit kills the kernel, not the VM; `systemctl restart docker` keeps the trainee's
container and kernel (live-restore) and re-applies the firewall; the idle culler stops an idle
server.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import userimage
from e2e_harness import (
    DOCKER_ENVIRONMENT,
    DOCKER_UPDATE_ENVIRONMENT,
    UPDATE_PACKAGE,
    Workshop,
    build_golden,
    copy_lock,
    dump_console,
    e2e_ssh_key,
    mounted_readonly,
    record,
    tagged,
    with_stop,
    workshop_for,
    write_folder,
)
from test_try import (
    ANNOUNCEMENTS,
    FILL_HOME,
    assert_filled_to_quota,
    base,
    connect,
    kernel,
    kernel_cell,
    lab_page_config,
    login,
    open_server,
    others_go_on,
    root_sh,
    run_cell,
    save_text,
    servers,
    session,
    ssh,
    stop_server,
    token,
    unit_run,
    wait_healthy,
    wait_restarted,
)
from test_try import execute as printed

requests = pytest.importorskip("requests")
websocket = pytest.importorskip("websocket")

pytestmark = pytest.mark.e2e

NAME = "e2e-docker"
MEM_LIMIT = 256 * 2**20
KERNEL_FILE = "from-kernel.txt"
KERNEL_TEXT = f"written in the container {uuid.uuid4()}"

CONFIG = """\
name: {name}
os: debian-12
users:
  # The third trainee never logs in before test_6b: their server is the warm one it checks.
  count: 3
  admins: [teacher]
# Every trainee's server starts once the hub is up (test_6b: before its trainee arrives, kept
# from the culler until then; test_6: after a login, the idle rule as usual).
warm: boot
spawner:
  kind: docker
  image: {image}
  mem_limit: 256M
  # test_4c fills a home to its quota.
  disk_limit: 64M
  cpu_limit: 1
  idle_cull_minutes: 2
  image_archive: {archive}
tls:
  mode: self-signed
ssh:
  authorized_keys:
    - {key}
# test_2c/2d: the course from a git repository on the host (git daemon, course_repo), shared data.
course:
  git: git://10.0.2.2:{git_port}/course.git
shared_data: {{}}
"""
# course_repo's git daemon: the guest reaches the host's loopback at 10.0.2.2.
GIT_PORT = int(os.environ.get("BAKERY_E2E_DOCKER_SSH_PORT", "12242")) + 20000


@pytest.fixture(scope="module")
def dws(tmp_path_factory: pytest.TempPathFactory, user_image: Path) -> Workshop:
    """The docker workshop's files (its own ports: the systemd e2e VM may be up too)."""

    attach = os.environ.get("BAKERY_E2E_DOCKER_ATTACH")
    d = Path(attach) if attach else tmp_path_factory.mktemp("docker-workshop")
    key = e2e_ssh_key()
    config = d / "workshop.yaml"
    archive = {"path": str(user_image), "format": "rootfs", **userimage.IMPORT_SETTINGS}
    if not attach:
        config.write_text(
            CONFIG.format(
                name=NAME,
                # Tagged by its recipe: a rebuilt image is a new tag.
                image=f"bakery/e2e-notebook:{user_image.parent.name[:12]}",
                archive=json.dumps(archive),
                key=key.with_suffix(".pub").read_text().strip(),
                git_port=GIT_PORT,
            )
            + DOCKER_ENVIRONMENT
        )
        copy_lock(config, "docker")
    return workshop_for(
        config,
        key=key,
        https_port=int(os.environ.get("BAKERY_E2E_DOCKER_PORT", "18463")),
        ssh_port=int(os.environ.get("BAKERY_E2E_DOCKER_SSH_PORT", "12242")),
    )


@pytest.fixture(scope="module")
def docker_golden(base_image: Path, dws: Workshop) -> Path:
    return build_golden(base_image, dws.config, force=bool(os.environ.get("BAKERY_E2E_REBAKE")))


@pytest.fixture(scope="module")
def dvm(docker_golden: Path, dws: Workshop) -> Iterator[Workshop]:
    from bakery.providers.local import trial

    if os.environ.get("BAKERY_E2E_DOCKER_ATTACH"):
        yield dws
        return
    start = time.monotonic()
    try:
        result = trial.up(
            dws.config,
            image=docker_golden,
            stage="boot",
            https_port=dws.https_port,
            ssh_port=dws.ssh_port,
            memory="3G",
            cpus=2,
            accel=os.environ.get("BAKERY_E2E_ACCEL", "auto"),  # type: ignore[arg-type]
            run_dir=dws.run_dir,
            progress=tagged("try docker"),
        )
    except Exception:
        dump_console(dws.run_dir)
        with_stop(dws.run_dir)
        raise
    record(f"docker: boot to login page ({result.state.accel})", time.monotonic() - start)
    yield dws
    if os.environ.get("BAKERY_E2E_KEEP_VM"):
        print(f"[e2e] docker VM left running: {dws.run_dir}", file=sys.stderr)
        return
    with_stop(dws.run_dir)


# --- helpers ------------------------------------------------------------------------------------


def served_image(w: Workshop) -> str:
    """The image trainees' servers run: the workshop's layer (environment:, nbgitpuller) on it."""
    from bakery.config.workshop import load_config
    from bakery.workshop import software

    layer = software.image_layer(load_config(w.config))
    return layer.tag if layer is not None else image_tag(w)


def image_tag(w: Workshop) -> str:
    from bakery.config.workshop import load_config

    return load_config(w.config).spawner.image


def containers(w: Workshop) -> list[str]:
    return root_sh(w, "docker ps -a --format '{{.Names}}'").split()


def execute(
    w: Workshop, s: Any, user: str, code: str, timeout: float = 240
) -> list[dict[str, Any]]:
    """Run ``code`` in a new kernel; return its iopub/shell messages until the cell ends or the
    kernel dies (state ``restarting``/``dead``) or the websocket closes."""
    msgs: list[dict[str, Any]] = []
    with kernel_cell(w, s, user, code, timeout) as (ws, msg_id):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = json.loads(ws.recv())
            except websocket.WebSocketConnectionClosedException:
                msgs.append({"msg_type": "websocket closed"})
                break
            kind = msg.get("msg_type") or msg["header"]["msg_type"]
            state = msg.get("content", {}).get("execution_state")
            if kind == "status" and state in ("restarting", "dead"):
                msgs.append(msg)
                break
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            msgs.append(msg)
            if kind == "execute_reply":
                break
        else:
            pytest.fail(f"the cell did not end within {timeout:.0f} s: {msgs[-3:]}")
    return msgs


def wait_for_hub(w: Workshop, deadline: float) -> None:
    s = session()
    while True:
        try:
            if s.get(f"{base(w)}/hub/login", timeout=10).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "the hub did not answer in time"
        time.sleep(3)


# test_4c leaves the other trainee's server idle (name: the VM's clock then); test_6 sees it culled.
IDLE_SINCE: dict[str, int] = {}


# --- the tests, in order (they share one VM) ----------------------------------------------------


def test_0_golden_image_carries_the_archive_unloaded(
    docker_golden: Path, user_image: Path, tmp_path: Path
) -> None:
    with mounted_readonly(docker_golden, tmp_path) as root:
        archive = root / "var/lib/bakery/user-image.tar"
        assert archive.is_file(), "the image archive was not copied in"
        assert archive.stat().st_size == user_image.stat().st_size
        assert archive.stat().st_mode & 0o777 == 0o600
        wants = root / "etc/systemd/system/multi-user.target.wants"
        for unit in ("bakery-user-image.service", "jupyterhub.service", "docker.service"):
            assert (wants / unit).is_symlink(), f"{unit} not enabled"
        script = (root / "usr/local/lib/bakery/user-image.sh").read_text()
        assert "docker pull" not in script and "docker import" in script
        # Nothing was loaded in the chroot (no daemon ran): no image layers in the image.
        layers = root / "var/lib/docker/overlay2"
        assert not layers.exists() or not [p for p in layers.iterdir() if p.name != "l"]


def test_1_image_loaded_at_first_boot(dvm: Workshop) -> None:
    tag = image_tag(dvm)
    state = root_sh(dvm, "systemctl show -p Result -p ActiveState bakery-user-image.service")
    assert "Result=success" in state and "ActiveState=active" in state, state
    conf = json.loads(root_sh(dvm, f"docker image inspect -f '{{{{json .Config}}}}' {tag}"))
    assert conf["Entrypoint"] == userimage.IMPORT_SETTINGS["entrypoint"]
    assert conf["Cmd"] == userimage.IMPORT_SETTINGS["cmd"]
    assert f"PATH={userimage.IMPORT_SETTINGS['env']['PATH']}" in conf["Env"]
    assert root_sh(
        dvm, "test -e /var/lib/bakery/user-image.tar && echo left || echo gone"
    ).split() == ["gone"]


@pytest.fixture(scope="module")
def t1(dvm: Workshop) -> tuple[str, Any]:
    user = dvm.trainees[0]
    s, resp = login(dvm, user, dvm.passwords[user])
    assert resp.status_code == 302, f"login: {resp.status_code}"
    start = time.monotonic()
    open_server(dvm, s, user)
    record("docker: server spawn (login to lab page)", time.monotonic() - start)
    return user, s


def test_2_server_in_its_own_container_as_the_trainee(dvm: Workshop, t1: tuple[str, Any]) -> None:
    user, s = t1
    name = f"jupyter-{user}"
    running = root_sh(dvm, "docker ps --format '{{.Names}} {{.Image}}'").splitlines()
    assert f"{name} {served_image(dvm)}" in running, running
    info = json.loads(root_sh(dvm, f"docker inspect {name}"))[0]
    mounts = [(m["Source"], m["Destination"], m["RW"]) for m in info["Mounts"]]
    assert (f"/home/{user}", f"/home/{user}", True) in mounts, mounts
    assert info["HostConfig"]["Memory"] == MEM_LIMIT
    host = info["HostConfig"]
    # dockerspawner sets cpu_limit as a CFS quota (1 CPU: quota == period).
    assert host["CpuPeriod"] > 0 and host["CpuQuota"] == host["CpuPeriod"], host
    assert list(info["NetworkSettings"]["Networks"]) == ["jupyterhub"]
    uid, gid = root_sh(dvm, f"id -u {user}; id -g {user}").split()
    status = root_sh(dvm, f"docker exec {name} cat /proc/1/status")
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {uid}, f"the server runs as {uids}, not {user}'s {uid}"
    start = time.monotonic()
    code = (
        "import os\n"
        f"open(os.path.expanduser('~/{KERNEL_FILE}'), 'w').write({KERNEL_TEXT!r})\n"
        "(os.getuid(), os.getgid(), os.getcwd())"
    )
    answer = run_cell(dvm, s, user, code)
    record("docker: kernel start + cell answer", time.monotonic() - start)
    assert answer == f"({uid}, {gid}, '/home/{user}')", answer
    host = root_sh(
        dvm, f"stat -c '%u %g' /home/{user}/{KERNEL_FILE}; cat /home/{user}/{KERNEL_FILE}"
    )
    assert host.splitlines() == [f"{uid} {gid}", KERNEL_TEXT], host


def test_2b_r_kernel_and_first_screen_from_the_image(dvm: Workshop, t1: tuple[str, Any]) -> None:
    """The kernels are the image's: the e2e image's R (Debian's IRkernel) answers a cell. The
    host's bakery server config folder (with JupyterLab's page config: no news pop-up) is mounted
    read-only into the container, and the lab page the trainee gets carries it: the server found
    it through the JUPYTER_CONFIG_PATH the hub set (the image's /etc/jupyter has no such file)."""
    from bakery.layout import SERVER_CONFIG_DIR

    user, s = t1
    listed = s.get(f"{base(dvm)}/user/{user}/api/kernelspecs", timeout=60).json()["kernelspecs"]
    assert listed["ir"]["spec"]["language"] == "R", sorted(listed)
    start = time.monotonic()
    # IRkernel answers with display_data (text/plain "[1] 55"), not execute_result.
    assert run_cell(dvm, s, user, "sum(1:10)", name="ir") == "[1] 55"
    record("docker: R kernel start + cell answer", time.monotonic() - start)
    info = json.loads(root_sh(dvm, f"docker inspect jupyter-{user}"))[0]
    mounts = [(m["Source"], m["Destination"], m["RW"]) for m in info["Mounts"]]
    assert (SERVER_CONFIG_DIR, SERVER_CONFIG_DIR, False) in mounts, mounts
    assert ANNOUNCEMENTS in lab_page_config(dvm, s, user)["disabledExtensions"]


def test_2e_the_course_environment_is_layered_onto_the_image(
    dvm: Workshop, t1: tuple[str, Any]
) -> None:
    """environment: on the docker spawner: the locked PyPI package and Debian's R package are in
    the layer bakery built on the e2e image (nbgitpuller too, for course.git), and the trainee's
    container runs that layer."""
    user, s = t1
    assert run_cell(dvm, s, user, "import tabulate; tabulate.__version__") == "'0.9.0'"
    version = run_cell(dvm, s, user, 'as.character(packageVersion("jsonlite"))', name="ir")
    assert version.startswith('[1] "1.'), version
    image = root_sh(dvm, f"docker inspect -f '{{{{.Config.Image}}}}' jupyter-{user}").strip()
    assert image == served_image(dvm) and image.startswith("bakery/e2e-docker-notebook:"), image


# From a trainee's kernel: the metadata service, the proxy's API port and the hub's API.
def git(*args: str, cwd: Path) -> str:
    ident = ["-c", "user.name=e2e", "-c", "user.email=e2e@bakery.test"]
    ident += ["-c", "init.defaultBranch=main"]
    proc = subprocess.run(["git", *ident, *args], cwd=cwd, check=True, capture_output=True)
    return proc.stdout.decode()


@pytest.fixture(scope="module")
def course_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A bare repository served by `git daemon` on GIT_PORT; yields a clone to push from."""
    import socket

    root = tmp_path_factory.mktemp("git")
    git("init", "--bare", "-q", "course.git", cwd=root)
    work = root / "work"
    git("clone", "-q", str(root / "course.git"), "work", cwd=root)
    (work / "README.md").write_text("# Course\n\nfirst version\n")
    git("add", "README.md", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={root}",
         f"--port={GIT_PORT}", "--listen=127.0.0.1", str(root)],
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", GIT_PORT)) == 0:
                break
        assert time.monotonic() < deadline and daemon.poll() is None, "git daemon did not start"
        time.sleep(0.2)
    yield work
    daemon.terminate()
    daemon.wait(timeout=30)


def pull(w: Workshop, s: Any, user: str, link: str) -> str:
    """Run nbgitpuller's pull for ``link`` (its page's query) the way its page's script does."""
    query = link.split("?", 1)[1]
    r = s.get(f"{base(w)}/user/{user}/git-pull/api?{query}", timeout=600)
    assert r.status_code == 200, f"git-pull api: {r.status_code} {r.text[:300]}"
    assert '"phase": "finished"' in r.text, r.text[-2000:]
    return str(r.text)


def read(w: Workshop, s: Any, user: str, path: str) -> Any:
    return s.get(
        f"{base(w)}/user/{user}/api/contents/{path}", params={"format": "text"}, timeout=60
    )


def test_2c_course_git_cloned_by_nbgitpuller_edits_survive_a_pull(
    dvm: Workshop, t1: tuple[str, Any], course_repo: Path
) -> None:
    user, s = t1
    # The hub sends a trainee who logs in to the git-pull link.
    s2, resp = login(dvm, user, dvm.passwords[user])
    link = resp.headers.get("Location", "")
    assert "/hub/user-redirect/git-pull?repo=git%3A//10.0.2.2" in link, link
    assert "targetpath=course" in link and "urlpath=lab/tree/course" in link, link
    page = s2.get(f"{base(dvm)}{link}" if link.startswith("/") else link, timeout=120)
    assert page.status_code == 200 and f"/user/{user}/git-pull" in page.url, page.url
    start = time.monotonic()
    pull(dvm, s, user, link)
    record("docker: nbgitpuller first clone", time.monotonic() - start)
    assert read(dvm, s, user, "course/README.md").json()["content"].endswith("first version\n")
    # The trainee edits the README; upstream adds a lesson: the next pull merges both.
    mine = "# Course\n\nfirst version\n\nmy notes\n"
    r = save_text(dvm, s, user, "course/README.md", mine)
    assert r.status_code in (200, 201), r.status_code
    (course_repo / "lesson2.md").write_text("# Lesson 2\n")
    git("add", "lesson2.md", cwd=course_repo)
    git("commit", "-q", "-m", "lesson 2", cwd=course_repo)
    git("push", "-q", "origin", "HEAD:main", cwd=course_repo)
    pull(dvm, s, user, link)
    assert read(dvm, s, user, "course/README.md").json()["content"] == mine
    assert read(dvm, s, user, "course/lesson2.md").json()["content"] == "# Lesson 2\n"
    owner = root_sh(dvm, f"stat -c %U /home/{user}/course/lesson2.md").strip()
    assert owner == user, owner


DOCKER_NEWS = f"instructor's file in the container {uuid.uuid4()}"
TRY_CHANGE = """
import os
out = []
for act in (lambda: open('/srv/shared/news.txt', 'a').write('x'),
            lambda: open('/srv/shared/mine.txt', 'w').write('x'),
            lambda: os.remove('/srv/shared/news.txt')):
    try:
        act()
        out.append('done')
    except OSError as exc:
        out.append(exc.strerror)
(open('/srv/shared/news.txt').read(), out)
"""


def test_2d_shared_data_admin_writes_trainees_read(dvm: Workshop, t1: tuple[str, Any]) -> None:
    user, s = t1
    admin = dvm.admin
    sa, resp = login(dvm, admin, dvm.passwords[admin])
    assert resp.status_code == 302
    open_server(dvm, sa, admin)
    code = f"open('/srv/shared/news.txt', 'w').write({DOCKER_NEWS!r})"
    assert run_cell(dvm, sa, admin, code) == str(len(DOCKER_NEWS))
    # t1's container started before the file existed: the bind mount shows it at once.
    news, tries = ast.literal_eval(run_cell(dvm, s, user, TRY_CHANGE))
    assert news == DOCKER_NEWS
    assert "done" not in tries and len(tries) == 3, tries
    mounts = root_sh(
        dvm, f"docker inspect -f '{{{{json .Mounts}}}}' jupyter-{user} jupyter-{admin}"
    )
    shared = [
        m
        for line in mounts.splitlines()
        for m in json.loads(line)
        if m["Destination"] == "/srv/shared"
    ]
    assert [m["RW"] for m in shared] == [False, True], shared


PROBE = """
import os, socket, time, urllib.request
def probe(host, port, wait):
    start = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=wait).close()
        result = "open"
    except ConnectionRefusedError:
        result = "refused"
    except socket.timeout:
        result = "timeout"
    except OSError as exc:
        result = f"errno {{exc.errno}}"
    return result, round(time.monotonic() - start, 1)
api = os.environ["JUPYTERHUB_API_URL"]
with urllib.request.urlopen(api, timeout=20) as r:
    hub = (r.status, r.read(200).decode())
(probe("169.254.169.254", 80, 10), probe({gateway!r}, 8001, 3), api, hub)
"""


def test_3_metadata_refused_hub_api_reachable(dvm: Workshop, t1: tuple[str, Any]) -> None:
    from bakery.config.workshop import load_config

    user, s = t1
    gateway = load_config(dvm.config).spawner.gateway
    answer = run_cell(dvm, s, user, PROBE.format(gateway=gateway))
    metadata, proxy_api, api, hub = ast.literal_eval(answer)
    # REJECT answers at once; a missing rule would reach the host's network (open or timeout).
    assert metadata[0] in ("refused", "errno 113"), f"metadata service: {metadata}"
    assert metadata[1] < 5, metadata
    assert proxy_api[0] != "open", f"the proxy API port is open to containers: {proxy_api}"
    assert api == f"http://{gateway}:8081/hub/api", api
    assert hub[0] == 200 and '"version"' in hub[1], hub
    # On the host: the hub's API listens on the trainees' gateway only, and the trainee's
    # container has a pids limit (a fork bomb stays inside it).
    out = ssh(
        dvm,
        dvm.login_user,
        "sudo ss -ltnH 'sport = :8081' | awk '{print $4}'; "
        f"sudo docker inspect --format '{{{{.HostConfig.PidsLimit}}}}' jupyter-{user}",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [f"{gateway}:8081", "1024"], out.stdout


def test_4_mem_limit_kills_the_kernel_not_the_vm(dvm: Workshop, t1: tuple[str, Any]) -> None:
    user, s = t1
    start = time.monotonic()
    msgs = execute(dvm, s, user, "x = b'x' * (600 * 2**20)\nlen(x)")
    record("docker: memory bomb to kernel death", time.monotonic() - start)
    kinds = [m.get("msg_type") for m in msgs]
    states = [m.get("content", {}).get("execution_state") for m in msgs]
    assert "execute_result" not in kinds, f"600 MiB fit under a 256 MiB limit: {kinds}"
    died = {"restarting", "dead"} & set(states) or "websocket closed" in kinds
    assert died, f"the kernel was not killed: {kinds} {states}"
    events = root_sh(dvm, f"docker exec jupyter-{user} cat /sys/fs/cgroup/memory.events")
    oom_kills = int(next(ln.split()[1] for ln in events.splitlines() if ln.startswith("oom_kill ")))
    assert oom_kills >= 1, events
    # The hub, the VM and the trainee's server live on: a new kernel answers.
    assert session().get(f"{base(dvm)}/hub/login", timeout=30).status_code == 200
    assert (
        root_sh(dvm, f"docker inspect -f '{{{{.State.Running}}}}' jupyter-{user}").strip() == "true"
    )
    assert run_cell(dvm, s, user, "6 * 7") == "42"


def test_4b_docker_restart_keeps_the_container_and_the_firewall(
    dvm: Workshop, t1: tuple[str, Any]
) -> None:
    """`systemctl restart docker`: the trainee's container lives on (live-restore) with its
    kernel's state, the firewall is re-applied and the metadata service stays refused."""
    from bakery.config.workshop import load_config

    user, s = t1
    name = f"jupyter-{user}"
    daemon = json.loads(root_sh(dvm, "cat /etc/docker/daemon.json"))
    assert daemon.get("live-restore") is True, daemon
    fmt = "{{.Id}} {{.State.StartedAt}} {{.State.Pid}}"
    container = root_sh(dvm, f"docker inspect -f '{fmt}' {name}").strip()
    tok = token(dvm, user)
    reported = servers(dvm, user, tok)[""]["last_activity"]
    with kernel(dvm, s, user) as kernel_id:
        ws = connect(dvm, s, user, kernel_id)
        try:
            assert printed(ws, user, "x = 42\nprint('set')") == "set\n"
        finally:
            ws.close()
        # The hub restarts with docker (it Requires it) and its culler (2 min here) runs at once:
        # wait for the server's report of this cell, as a trainee's working server would have
        # reported, so that the restart's outage is what the culler sees, not the report interval.
        deadline = time.monotonic() + 120
        while servers(dvm, user, tok)[""]["last_activity"] == reported:
            assert time.monotonic() < deadline, "the server reported no activity in 120 s"
            time.sleep(3)
        docker = unit_run(dvm, "docker.service")
        firewall = unit_run(dvm, "bakery-firewall.service")
        start = time.monotonic()
        root_sh(dvm, "systemctl restart docker")
        wait_restarted(dvm, "docker.service", docker, start + 300)
        record("docker: daemon restart", time.monotonic() - start)
        # bakery-firewall is PartOf docker: re-applied after docker has rebuilt its chains.
        wait_restarted(dvm, "bakery-firewall.service", firewall, start + 300)
        rules = root_sh(dvm, "iptables -S DOCKER-USER; iptables -S OUTPUT")
        assert "-A DOCKER-USER -d 169.254.169.254/32 -j REJECT" in rules, rules
        wait_healthy(dvm, start + 300)
        record("docker: daemon restart to /hub/health answering", time.monotonic() - start)
        assert root_sh(dvm, f"docker inspect -f '{fmt}' {name}").strip() == container
        ws = connect(dvm, s, user, kernel_id)
        try:
            assert printed(ws, user, "print(x)") == "42\n"
        finally:
            ws.close()
        record("docker: daemon restart to the same kernel answering", time.monotonic() - start)
    gateway = load_config(dvm.config).spawner.gateway
    metadata, proxy_api, _, hub = ast.literal_eval(
        run_cell(dvm, s, user, PROBE.format(gateway=gateway))
    )
    assert metadata[0] in ("refused", "errno 113") and metadata[1] < 5, metadata
    assert proxy_api[0] != "open", proxy_api
    assert hub[0] == 200, hub


HANDOUT = "pushed by bakery update during the class\n"


def test_4c_a_full_home_is_the_trainees_alone(dvm: Workshop, t1: tuple[str, Any]) -> None:
    """In a container (every trainee the same UID inside) the quota is the home's project: the
    trainee who fills theirs gets ENOSPC (XFS's answer for a project quota) at disk_limit (64M);
    meanwhile the other trainee logs in, saves a notebook and runs a cell in a container of
    their own (left idle: test_6 waits for the culler to stop it)."""
    user, s = t1
    other = next(t for t in dvm.trainees if t != user)
    answer = run_cell(dvm, s, user, FILL_HOME)
    assert_filled_to_quota(answer, 64)
    try:
        start = time.monotonic()
        others_go_on(dvm, other)
        record(
            "docker: other trainee's login to cell answer, one home full", time.monotonic() - start
        )
        IDLE_SINCE[other] = int(root_sh(dvm, "date +%s"))  # the VM's clock
    finally:
        root_sh(dvm, f"rm -f /home/{user}/fill.bin /home/{other}/saved.ipynb /home/{other}/ok.bin")


def test_4d_update_reaches_the_running_container_in_place(
    dvm: Workshop, t1: tuple[str, Any]
) -> None:
    """`bakery update` (issue 29), docker spawner: the class gets an end (the expiry timer
    starts) and a handout in the shared folder, a package the course forgot is built into the
    trainees' image on the VM (its layer again, from the loaded image), a higher memory limit
    reaches the trainee's running container in place (`docker update`), a second admin gets in,
    and the kernel keeps its variable through the hub's restart; the admin's new server has the
    package and the new limit; a second run has nothing to do."""
    from bakery.config.workshop import load_config
    from bakery.day.update import update
    from bakery.workshop.accounts import credentials_path, ensure_credentials

    user, s = t1
    name = f"jupyter-{user}"
    text = dvm.config.read_text()
    changed = text.replace("mem_limit: 256M", "mem_limit: 384M")
    changed = changed.replace("admins: [teacher]", "admins: [teacher, ta]")
    changed = changed.replace(DOCKER_ENVIRONMENT, DOCKER_UPDATE_ENVIRONMENT)
    # The class gets an end, and a handout in the shared folder (its course is git's: test_2c).
    changed = changed.replace("shared_data: {}\n", "shared_data:\n  from: ./shared\n")
    changed += "ends: 2099-01-01T00:00:00Z\n"
    assert "384M" in changed and "[teacher, ta]" in changed and "termcolor" in changed
    assert "from: ./shared" in changed
    dvm.config.write_text(changed)
    write_folder(dvm.dir / "shared", {"handout.txt": HANDOUT})
    copy_lock(dvm.config, "docker-update")
    where = {"hosts": [f"127.0.0.1:{dvm.ssh_port}"], "identity": dvm.ssh_key}
    memory = "docker inspect -f '{{.HostConfig.Memory}}' "
    assert root_sh(dvm, memory + name).strip() == str(256 * 2**20)
    image_of = "docker inspect -f '{{.Config.Image}}' "
    running_image = root_sh(dvm, image_of + name).strip()
    with kernel(dvm, s, user) as kernel_id:
        ws = connect(dvm, s, user, kernel_id)
        try:
            assert printed(ws, user, "x = 42\nprint('set')") == "set\n"
            start = time.monotonic()
            result = update(config_path=dvm.config, **where)
            record(
                "docker: update (image layer built, hub restart, limits in place, an account)",
                time.monotonic() - start,
            )
            assert not result.errors, result.errors
            assert printed(ws, user, "print(x)") == "42\n"
            # The running container sees the new handout at once (the shared folder's mount).
            code = "print(open('/srv/shared/handout.txt').read(), end='')"
            assert printed(ws, user, code) == HANDOUT
        finally:
            ws.close()
    assert root_sh(dvm, memory + name).strip() == str(384 * 2**20)
    assert "2099-01-01" in root_sh(dvm, "cat /etc/bakery/expiry.json")
    assert root_sh(dvm, "systemctl is-active bakery-expiry.timer").strip() == "active"
    # The running container keeps its image until it restarts; new servers start from the new.
    assert (
        root_sh(dvm, f"docker inspect -f '{{{{.Config.Image}}}}' {name}").strip() == running_image
    )
    sheet = ensure_credentials(load_config(dvm.config), credentials_path(dvm.config))
    dvm.passwords["ta"] = next(a.password for a in sheet if a.username == "ta")
    sa, resp = login(dvm, "ta", dvm.passwords["ta"])
    assert resp.status_code == 302, resp.status_code
    assert sa.get(f"{base(dvm)}/hub/admin", timeout=60).status_code == 200
    open_server(dvm, sa, "ta")
    try:
        package, version = UPDATE_PACKAGE
        got = run_cell(dvm, sa, "ta", f"import importlib.metadata as m; m.version({package!r})")
        assert got == repr(version), got
        assert run_cell(dvm, sa, "ta", "import tabulate; tabulate.__version__") == "'0.9.0'"
        assert root_sh(dvm, memory + "jupyter-ta").strip() == str(384 * 2**20)
    finally:
        stop_server(dvm, "ta")
    again = update(config_path=dvm.config, **where)
    assert [p.items for p in again.plan.servers] == [[]], again.plan.lines()


def test_5_stopped_server_removes_its_container_not_the_files(
    dvm: Workshop, t1: tuple[str, Any]
) -> None:
    user, _ = t1
    tok = token(dvm, user)
    r = session().delete(
        f"{base(dvm)}/hub/api/users/{user}/server",
        headers={"Authorization": f"token {tok}"},
        timeout=120,
    )
    assert r.status_code in (202, 204), f"stop: {r.status_code} {r.text[:300]}"
    deadline = time.monotonic() + 180
    while servers(dvm, user, tok) or f"jupyter-{user}" in containers(dvm):
        assert time.monotonic() < deadline, "the server or its container is still there"
        time.sleep(3)
    assert root_sh(dvm, f"cat /home/{user}/{KERNEL_FILE}") == KERNEL_TEXT


def test_6_idle_server_is_culled(dvm: Workshop) -> None:
    """The server test_4c left idle is stopped by the culler (idle_cull_minutes 2: --timeout=120
    --cull-every=30), not before it was idle that long; its container goes, its files stay."""
    if not IDLE_SINCE:
        pytest.fail("test_4c left no idle server to cull")
    ((user, since),) = IDLE_SINCE.items()
    tok = token(dvm, user)
    start = time.monotonic()
    # Reading the hub API is not activity.
    while servers(dvm, user, tok):
        assert time.monotonic() - start < 300, "the idle server was not culled within 5 min"
        time.sleep(5)
    assert f"jupyter-{user}" not in containers(dvm)
    log = root_sh(
        dvm, "journalctl -u jupyterhub --no-pager -o short-unix | grep 'Culling server' || true"
    )
    culled = [ln for ln in log.splitlines() if f"Culling server {user}" in ln]
    assert culled, log[-2000:]
    idle = float(culled[-1].split()[0]) - since
    record("docker: idle server culled after (s)", idle)
    assert idle > 100, f"culled {idle:.0f} s after its last activity: too soon for 120 s"
    assert root_sh(dvm, f"test -d /home/{user} && echo kept").strip() == "kept"


def test_6b_a_warm_server_waits_for_its_trainee_and_the_culler_leaves_it(dvm: Workshop) -> None:
    """warm: boot started the third trainee's server once the hub was up; they have not logged
    in since, and the server has outlived the idle timeout (2 min) many times over, kept by the
    hub's warm service; `users list` says "server warm", `bakery warm` has nothing to start.
    Then the trainee arrives and lands in that same server: no spawn, and their first cell runs
    in the kernel the server started ahead."""
    from bakery.day.users import list_users
    from bakery.day.warm import warm
    from bakery.layout import LOGINS_DIR

    user = dvm.trainees[2]
    admin = token(dvm, "teacher")  # the trainee's own token would be a login
    server = servers(dvm, user, admin).get("")
    log = root_sh(
        dvm, f"journalctl -u jupyterhub --no-pager | grep -E 'Culling server|bakery-warm|{user}'"
    )
    warm_lines = "\n".join(ln for ln in log.splitlines() if "bakery-warm" in ln or "Cull" in ln)
    assert server and server["ready"], f"no warm server for {user}: {server}\n{warm_lines}"
    assert root_sh(dvm, f"test -e {LOGINS_DIR}/{user} && echo yes || echo no").strip() == "no"
    assert f"Culling server {user}" not in log, warm_lines[-3000:]
    assert f"bakery-warm: {user}'s server is ready" in log, warm_lines[-3000:]
    # The container (not the hub's record, which a restart may renew) has outlived the idle
    # timeout (120 s) twice over, nobody using it.
    container = f"jupyter-{user}"
    since = root_sh(dvm, f"docker inspect -f '{{{{.Id}}}} {{{{.State.StartedAt}}}}' {container}")
    container_id, started_at = since.split()
    age = int(root_sh(dvm, f"echo $(( $(date +%s) - $(date -d {started_at} +%s) ))"))
    assert age > 2 * 120 + 30, f"{user}'s warm server is {age} s old: no proof\n{warm_lines}"
    day = {"hosts": [f"127.0.0.1:{dvm.ssh_port}"], "identity": dvm.ssh_key}
    listed = {u.name: u for u in list_users(config_path=dvm.config, **day)}
    assert listed[user].line().endswith("never logged in  server warm"), listed[user].line()
    again = warm(config_path=dvm.config, **day)
    (hub,) = again.hubs.values()
    assert hub.started == [] and user in hub.running and not again.errors, again
    # Its first kernel is running too (started with the server: jupyter_server_config.py).
    probe = "grep -ls '[i]pykernel_launcher' /proc/[0-9]*/cmdline; true"
    ahead = root_sh(dvm, f'docker exec {container} sh -c "{probe}"')
    assert len(ahead.split()) == 1, f"not one kernel started ahead in {container}: {ahead!r}"
    ahead_pid = ahead.split("/")[2]
    s, resp = login(dvm, user, dvm.passwords[user])
    assert resp.status_code == 302
    start = time.monotonic()
    open_server(dvm, s, user)
    assert run_cell(dvm, s, user, "import os\nos.getpid(), 6 * 7") == f"({ahead_pid}, 42)"
    record("docker: login to first cell, server warm", time.monotonic() - start)
    assert servers(dvm, user, admin)[""]["started"] == server["started"]  # the same server
    assert root_sh(dvm, f"docker inspect -f '{{{{.Id}}}}' {container}").strip() == container_id
    assert root_sh(dvm, f"test -e {LOGINS_DIR}/{user} && echo yes || echo no").strip() == "yes"


def test_7_files_survive_a_reboot(dvm: Workshop) -> None:
    serial = dvm.run_dir / "serial.log"
    boots = serial.read_bytes().count(b"Linux version")
    start = time.monotonic()
    ssh(dvm, dvm.login_user, "sudo systemctl reboot")
    deadline = time.monotonic() + 900
    while serial.read_bytes().count(b"Linux version") <= boots:
        assert time.monotonic() < deadline, "the VM did not reboot"
        time.sleep(2)
    wait_for_hub(dvm, deadline)
    record("docker: reboot to login page", time.monotonic() - start)
    # The image stays loaded; the loader has nothing left to do.
    root_sh(dvm, f"docker image inspect {image_tag(dvm)} >/dev/null")
    user = dvm.trainees[0]
    s, resp = login(dvm, user, dvm.passwords[user])
    assert resp.status_code == 302
    open_server(dvm, s, user)
    code = f"import os\nopen(os.path.expanduser('~/{KERNEL_FILE}')).read()"
    assert run_cell(dvm, s, user, code) == repr(KERNEL_TEXT)
    # test_2d's shared file, read-only in the trainee's new container.
    assert run_cell(dvm, s, user, "open('/srv/shared/news.txt').read()") == repr(DOCKER_NEWS)
