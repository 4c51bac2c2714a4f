"""End to end: bake a golden image in a chroot, boot it with `bakery try`, use it as trainees."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import Workshop, mounted_readonly, record, tagged, with_stop

requests = pytest.importorskip("requests")
websocket = pytest.importorskip("websocket")

pytestmark = pytest.mark.e2e

SAVED_FILE = "persist-check.txt"
SAVED_TEXT = f"saved by the e2e test {uuid.uuid4()}\n"


# --- HTTP helpers -------------------------------------------------------------------------------


def session() -> Any:
    s = requests.Session()
    s.trust_env = False  # the host's REQUESTS_CA_BUNDLE / proxies must not apply to 127.0.0.1
    s.verify = False
    return s


def base(w: Workshop) -> str:
    return f"https://{w.host}:{w.https_port}"


def login(w: Workshop, user: str, password: str) -> tuple[Any, Any]:
    """Log in through the hub's form; return the session and the final response."""
    s = session()
    page = s.get(f"{base(w)}/hub/login", timeout=30)
    assert page.status_code == 200, page.text[:500]
    m = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text)
    data = {"username": user, "password": password}
    if m:
        data["_xsrf"] = m.group(1)
    resp = s.post(f"{base(w)}/hub/login?next=", data=data, allow_redirects=False, timeout=60)
    return s, resp


def xsrf_for(s: Any, path_prefix: str) -> str:
    """The ``_xsrf`` cookie whose path covers ``path_prefix`` (hub and server each set one)."""
    best = ""
    for cookie in s.cookies:
        covers = path_prefix.startswith(cookie.path.rstrip("/") or "/")
        if cookie.name == "_xsrf" and covers and len(cookie.path) >= len(best.split("|", 1)[0]):
            best = f"{cookie.path}|{cookie.value}"
    assert best, f"no _xsrf cookie for {path_prefix}: {[(c.name, c.path) for c in s.cookies]}"
    return best.split("|", 1)[1]


def open_server(w: Workshop, s: Any, user: str, timeout: float = 600) -> None:
    """Start (if needed) and open the user's server until its HTML page answers 200.

    The first GET of an HTML page of the server does the OAuth hand-off that sets its cookie;
    only then does /user/NAME/api/... answer 200.
    """
    deadline = time.monotonic() + timeout
    last = ""
    started = False
    while time.monotonic() < deadline:
        if not started:
            # An HTML GET starts the server (no options form); the hub's POST API would need
            # the session-bound xsrf token of a hub page.
            r = s.get(f"{base(w)}/hub/spawn/{user}", timeout=120)
            assert r.status_code == 200, f"spawn: {r.status_code} {r.url} {r.text[:300]}"
            started = True
        try:
            r = s.get(f"{base(w)}/user/{user}/lab", timeout=60)
        except requests.Timeout as exc:
            # A busy TCG guest (first spawn after a boot) can hold a request past a minute: the
            # overall deadline decides, not one request.
            last = f"timeout: {exc}"
            continue
        if r.status_code == 200 and f"/user/{user}/lab" in r.url:
            return
        last = f"{r.status_code} {r.url} {r.text[:200]!r}"
        time.sleep(3)
    pytest.fail(f"{user}'s server did not open within {timeout:.0f} s; last: {last}")


@contextlib.contextmanager
def kernel(w: Workshop, s: Any, user: str, name: str = "python3") -> Iterator[str]:
    """Start a kernel (kernelspec ``name``) of ``user``'s server; yield its id; delete it after."""
    api = f"{base(w)}/user/{user}/api"
    xsrf = xsrf_for(s, f"/user/{user}/")
    r = s.post(f"{api}/kernels", json={"name": name}, headers={"X-XSRFToken": xsrf}, timeout=120)
    assert r.status_code == 201, f"create kernel: {r.status_code} {r.text[:300]}"
    kernel_id = str(r.json()["id"])
    try:
        yield kernel_id
    finally:
        with contextlib.suppress(requests.RequestException):
            s.delete(f"{api}/kernels/{kernel_id}", headers={"X-XSRFToken": xsrf}, timeout=60)


def connect(w: Workshop, s: Any, user: str, kernel_id: str, timeout: float = 180) -> Any:
    """A websocket to the kernel's channels, through nginx and the proxy (what the lab opens)."""
    xsrf = xsrf_for(s, f"/user/{user}/")
    cookies = "; ".join(f"{c.name}={c.value}" for c in s.cookies)
    return websocket.create_connection(
        f"wss://{w.host}:{w.https_port}/user/{user}/api/kernels/{kernel_id}/channels",
        header=[f"Cookie: {cookies}", f"X-XSRFToken: {xsrf}"],
        sslopt={"cert_reqs": 0, "check_hostname": False},
        timeout=timeout,
    )


def send_execute(ws: Any, user: str, code: str) -> str:
    """Send ``code`` as an execute_request on the shell channel; return its msg_id."""
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id, "username": user, "session": uuid.uuid4().hex,
        "msg_type": "execute_request", "version": "5.3",
        "date": datetime.now(timezone.utc).isoformat(),
    }  # fmt: skip
    content = {"code": code, "silent": False, "store_history": False,
               "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}  # fmt: skip
    ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {},
                        "content": content, "channel": "shell", "buffers": []}))  # fmt: skip
    return msg_id


def recv_message(ws: Any, deadline: float) -> Any:
    """The next kernel message on ``ws``, or a test failure at ``deadline``: the server's pings
    (answered here) do not keep a silent kernel's cell waiting past it."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail("no answer from the kernel before the deadline")
        ws.settimeout(remaining)
        try:
            opcode, frame = ws.recv_data_frame(control_frame=True)
        except websocket.WebSocketTimeoutException:
            pytest.fail("no answer from the kernel before the deadline")
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return json.loads(frame.data)


def execute(ws: Any, user: str, code: str, timeout: float = 180) -> str:
    """Run ``code`` over an open kernel websocket; return what it printed (stdout).

    The reply (shell channel) may come before the output (iopub): the cell is over once both
    the execute_reply and the kernel's iopub "idle" for this request have arrived.
    """
    msg_id = send_execute(ws, user, code)
    out: list[str] = []
    replied = idle = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (replied and idle):
        msg = recv_message(ws, deadline)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg.get("msg_type") or msg["header"]["msg_type"]
        if kind == "stream" and msg["content"].get("name") == "stdout":
            out.append(msg["content"]["text"])
        elif kind == "error":
            err = msg["content"]
            pytest.fail(f"cell raised: {err.get('ename')}: {err.get('evalue')}")
        elif kind == "execute_reply":
            replied = True
        elif kind == "status" and msg["content"].get("execution_state") == "idle":
            idle = True
    assert replied and idle, f"the cell did not end within {timeout:.0f} s: {code[:80]!r}"
    return "".join(out)


@contextlib.contextmanager
def kernel_cell(
    w: Workshop, s: Any, user: str, code: str, timeout: float, name: str = "python3"
) -> Iterator[tuple[Any, str]]:
    """Start a kernel (kernelspec ``name``) of ``user``'s server and send ``code`` over its
    websocket.

    Yields (websocket, msg_id of the execute_request); closes the socket and deletes the kernel.
    """
    with kernel(w, s, user, name) as kernel_id:
        ws = connect(w, s, user, kernel_id, timeout)
        try:
            yield ws, send_execute(ws, user, code)
        finally:
            ws.close()


def run_cell(
    w: Workshop, s: Any, user: str, code: str, timeout: float = 180, name: str = "python3"
) -> str:
    """Start a kernel (kernelspec ``name``), run ``code`` over its websocket, return the
    text/plain of its result: the execute_result, or the display_data a kernel such as IRkernel
    sends for a value instead."""
    with kernel_cell(w, s, user, code, timeout, name) as (ws, msg_id):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = recv_message(ws, deadline)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg.get("msg_type") or msg["header"]["msg_type"]
            if kind in ("execute_result", "display_data"):
                return str(msg["content"]["data"]["text/plain"])
            if kind == "error":
                pytest.fail(
                    f"cell raised: {msg['content'].get('ename')}: {msg['content'].get('evalue')}"
                )
        pytest.fail("no execute_result within the timeout")
    raise AssertionError("unreachable")


# --- ssh helpers --------------------------------------------------------------------------------


def ssh(w: Workshop, user: str, command: str, *, password: str | None = None) -> Any:
    opts = [
        "-p", str(w.ssh_port), "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=30", "-o", "LogLevel=ERROR",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    if password is None:
        opts += ["-i", str(w.ssh_key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]
    else:
        askpass = w.dir / "askpass.sh"
        askpass.write_text("#!/bin/sh\nprintf '%s\\n' \"$BAKERY_E2E_PW\"\n")
        askpass.chmod(0o700)
        env |= {
            "SSH_ASKPASS": str(askpass),
            "SSH_ASKPASS_REQUIRE": "force",
            "BAKERY_E2E_PW": password,
        }
        opts += ["-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1"]
    return subprocess.run(
        ["ssh", *opts, f"{user}@{w.host}", command],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120, check=False,
    )  # fmt: skip


def root_sh(w: Workshop, command: str) -> str:
    """Run ``command`` as root on the VM (ssh as the login user, sudo); return its stdout."""
    r = ssh(w, w.login_user, f"sudo -n sh -c {shlex.quote(command)}")
    assert r.returncode == 0, f"{command}: exit {r.returncode}: {r.stderr[-1000:]}"
    return str(r.stdout)


def token(w: Workshop, user: str) -> str:
    """A hub API token of ``user`` (the password API)."""
    r = session().post(
        f"{base(w)}/hub/api/users/{user}/tokens",
        json={"auth": {"username": user, "password": w.passwords[user]}, "note": "e2e"},
        timeout=60,
    )
    assert r.status_code in (200, 201), f"token: {r.status_code} {r.text[:300]}"
    return str(r.json()["token"])


def servers(w: Workshop, user: str, tok: str) -> dict[str, Any]:
    """The hub's view of ``user``'s servers (empty: none running)."""
    r = session().get(
        f"{base(w)}/hub/api/users/{user}", headers={"Authorization": f"token {tok}"}, timeout=60
    )
    assert r.status_code == 200, f"user model: {r.status_code} {r.text[:300]}"
    return dict(r.json().get("servers") or {})


def unit_run(w: Workshop, unit: str) -> dict[str, str]:
    """A systemd unit's current run: MainPID, InvocationID (new at every start), NRestarts."""
    out = root_sh(
        w, f"systemctl show -p MainPID -p InvocationID -p NRestarts -p ActiveState {unit}"
    )
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_restarted(w: Workshop, unit: str, old: dict[str, str], deadline: float) -> dict[str, str]:
    """Wait until systemd has started ``unit`` again (a new run, active); return that run."""
    while True:
        now = unit_run(w, unit)
        if now["ActiveState"] == "active" and now["InvocationID"] != old["InvocationID"]:
            return now
        assert time.monotonic() < deadline, f"{unit} was not restarted: {now}"
        time.sleep(1)


def wait_healthy(w: Workshop, deadline: float) -> None:
    """Wait until the hub answers /hub/health through nginx and the proxy."""
    s = session()
    last = ""
    while True:
        try:
            r = s.get(f"{base(w)}/hub/health", timeout=10)
            if r.status_code == 200:
                return
            last = str(r.status_code)
        except requests.RequestException as exc:
            last = str(exc)
        assert time.monotonic() < deadline, f"the hub is not healthy: {last}"
        time.sleep(1)


# --- the tests, in order (they share one VM) ----------------------------------------------------


def test_0_golden_image_is_fresh_and_holds_no_secrets(golden_image: Path, tmp_path: Path) -> None:
    with mounted_readonly(golden_image, tmp_path) as root:
        assert (root / "opt/jupyterhub/bin/jupyterhub").is_file()
        assert (root / "usr/local/bin/configurable-http-proxy").exists()
        wants = root / "etc/systemd/system/multi-user.target.wants"
        for unit in ("jupyterhub.service", "configurable-http-proxy.service", "nginx.service"):
            assert (wants / unit).is_symlink(), f"{unit} not enabled"
        assert (root / "etc/machine-id").read_text() == ""
        assert not list((root / "etc/ssh").glob("ssh_host_*"))
        assert not list(root.glob("var/lib/cloud/*"))
        assert not (root / "usr/sbin/policy-rc.d").exists()
        for secret in (
            "srv/jupyterhub/jupyterhub_cookie_secret",
            "srv/jupyterhub/jupyterhub.sqlite",
            "etc/jupyterhub/proxy.env",
            "etc/jupyterhub/tls/key.pem",
        ):
            assert not (root / secret).exists(), f"/{secret} is in the golden image"
        homes = sorted(p.name for p in (root / "home").iterdir())
        assert homes == [], f"user homes in the golden image: {homes}"
        shadow = (root / "etc/shadow").read_text()
        assert not [line for line in shadow.splitlines() if line.split(":")[1].startswith("$")]


def test_a_redirect_login_page_and_wrong_password(vm: Workshop) -> None:
    s = session()
    r = s.get(f"http://127.0.0.1:{vm.http_port}/hub/login", allow_redirects=False, timeout=30)
    assert r.status_code in (301, 302, 307, 308), r.status_code
    assert r.headers["Location"].startswith("https://"), r.headers["Location"]
    assert r.headers["Location"].endswith("/hub/login")
    page = s.get(f"{base(vm)}/hub/login", timeout=30)
    assert page.status_code == 200
    assert 'name="password"' in page.text
    trainee = vm.trainees[0]
    # The login form answers a wrong password with its page again (JupyterHub 5: status 200),
    # an error message and no login cookie; the password API answers 403.
    for user, password in ((trainee, vm.passwords[trainee] + "x"), ("nosuchuser", "whatever1")):
        s, resp = login(vm, user, password)
        assert resp.status_code != 302, resp.headers.get("Location")
        assert "Invalid username or password" in resp.text
        assert not [c.name for c in s.cookies if c.name.startswith("jupyterhub-hub-login")]
        api = session().post(
            f"{base(vm)}/hub/api/users/{user}/tokens",
            json={"auth": {"username": user, "password": password}},
            timeout=60,
        )
        assert api.status_code == 403, api.status_code
    good = session().post(
        f"{base(vm)}/hub/api/users/{trainee}/tokens",
        json={"auth": {"username": trainee, "password": vm.passwords[trainee]}},
        timeout=60,
    )
    assert good.status_code in (200, 201), f"right password: {good.status_code} {good.text[:200]}"


@pytest.fixture(scope="module")
def trainee_session(vm: Workshop) -> Any:
    trainee = vm.trainees[0]
    start = time.monotonic()
    s, resp = login(vm, trainee, vm.passwords[trainee])
    assert resp.status_code == 302, f"login: {resp.status_code} {resp.text[:300]}"
    record("trainee login", time.monotonic() - start)
    return s


def test_b_trainee_runs_code_and_opens_a_terminal(vm: Workshop, trainee_session: Any) -> None:
    s, user = trainee_session, vm.trainees[0]
    start = time.monotonic()
    open_server(vm, s, user)
    record("server spawn (login to lab page)", time.monotonic() - start)
    status = s.get(f"{base(vm)}/user/{user}/api/status", timeout=60)
    assert status.status_code == 200, status.status_code
    start = time.monotonic()
    answer = run_cell(vm, s, user, "import getpass, os\n(getpass.getuser(), os.getcwd(), 6 * 7)")
    record("kernel start + cell answer", time.monotonic() - start)
    assert answer == f"('{user}', '/home/{user}', 42)", answer
    xsrf = xsrf_for(s, f"/user/{user}/")
    r = s.post(f"{base(vm)}/user/{user}/api/terminals", headers={"X-XSRFToken": xsrf}, timeout=60)
    assert r.status_code == 200, f"terminal: {r.status_code} {r.text[:300]}"
    name = r.json()["name"]
    listed = s.get(f"{base(vm)}/user/{user}/api/terminals", timeout=60).json()
    assert name in [t["name"] for t in listed]
    # Save a file for the reboot check.
    r = save_text(vm, s, user, SAVED_FILE, SAVED_TEXT)
    assert r.status_code in (200, 201), f"save: {r.status_code} {r.text[:300]}"


ANNOUNCEMENTS = "@jupyterlab/apputils-extension:announcements"


def lab_page_config(w: Workshop, s: Any, user: str) -> dict[str, Any]:
    """The page config JupyterLab's HTML carries (``jupyter-config-data``) for ``user``."""
    r = s.get(f"{base(w)}/user/{user}/lab", timeout=120)
    assert r.status_code == 200 and f"/user/{user}/lab" in r.url, f"lab: {r.status_code} {r.url}"
    m = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                  r.text, re.S)  # fmt: skip
    assert m, "no jupyter-config-data in the lab's page"
    return dict(json.loads(m.group(1)))


def test_b1_trainee_runs_an_r_cell(vm: Workshop, trainee_session: Any) -> None:
    """kernels: [r]: Debian's IRkernel, registered in the hub's environment, answers a cell."""
    from bakery.layout import HUB_PREFIX
    from bakery.vm.userdata import KERNEL_SPECS

    s, user = trainee_session, vm.trainees[0]
    name, _ = KERNEL_SPECS["r"]
    found = json.loads(root_sh(vm, f"{HUB_PREFIX}/bin/jupyter kernelspec list --json"))
    spec_dir = found["kernelspecs"][name]["resource_dir"]
    assert spec_dir == f"{HUB_PREFIX}/share/jupyter/kernels/{name}", found
    open_server(vm, s, user)
    listed = s.get(f"{base(vm)}/user/{user}/api/kernelspecs", timeout=60).json()["kernelspecs"]
    assert listed[name]["spec"]["language"] == "R", listed.get(name)
    start = time.monotonic()
    # IRkernel answers with display_data (text/plain "[1] 55"), not execute_result.
    assert run_cell(vm, s, user, "sum(1:10)", name=name) == "[1] 55"
    record("R kernel start + cell answer", time.monotonic() - start)


def test_b1b_the_course_environment_is_the_default_kernel(
    vm: Workshop, trainee_session: Any
) -> None:
    """environment: from ./env (requirements.txt, install.R): a trainee's notebook runs in the
    workshop's own environment, with the versions its lock pins (packaging 24.1, older than the
    hub's own; tabulate, which the hub has not); every package there is exactly the lock's; the
    R package from install.R (Debian's r-cran-jsonlite) loads in the R kernel."""
    from bakery.config.lockfile import lock_path, read_lock
    from bakery.layout import HUB_PREFIX, WORKSHOP_ENV

    s, user = trainee_session, vm.trainees[0]
    open_server(vm, s, user)
    answer = run_cell(
        vm,
        s,
        user,
        "import sys, tabulate, packaging\n(sys.prefix, tabulate.__version__, "
        "packaging.__version__)",
    )
    assert answer == f"('{WORKSHOP_ENV}', '0.9.0', '24.1')", answer
    hub_packaging = root_sh(
        vm, f"{HUB_PREFIX}/bin/python3 -c 'import packaging; print(packaging.__version__)'"
    ).strip()
    assert hub_packaging != "24.1", "the hub's environment is the trainees' own"
    lock = read_lock(lock_path(vm.config))
    assert lock is not None and lock.trainees is not None
    listed = json.loads(root_sh(vm, f"{WORKSHOP_ENV}/bin/python3 -m pip list --format=json"))
    installed = {p["name"].lower().replace("_", "-"): p["version"] for p in listed}
    pinned = {p.name: p.version for p in lock.trainees.pins}
    extra = set(installed) - set(pinned) - {"pip", "setuptools"}
    assert not extra and all(installed[n] == v for n, v in pinned.items()), (installed, pinned)
    version = run_cell(vm, s, user, 'as.character(packageVersion("jsonlite"))', name="ir")
    assert version.startswith('[1] "1.'), version  # Debian 12's r-cran-jsonlite


def test_b2_first_screen_has_no_news_question(vm: Workshop, tmp_path: Path) -> None:
    """A trainee logs in with a real browser: JupyterLab's launcher (R among its notebooks), and
    no "get notified about official Jupyter news?" pop-up (bakery's page_config.json). Control:
    with that file moved away the same page asks (JupyterLab reads it at every page load), so
    this check can fail; with it back the question is gone again."""
    import browser

    from bakery.layout import LAB_PAGE_CONFIG

    user = vm.trainees[0]
    driver = browser.chromium(tmp_path / "profile")
    try:
        start = time.monotonic()
        browser.hub_login(driver, base(vm), user, vm.passwords[user])
        browser.wait_for_lab(driver, 300)
        record("browser: login form to JupyterLab's launcher", time.monotonic() - start)
        print(f"[e2e] {user}'s lab opened at {driver.current_url}")
        assert f"/user/{user}/lab" in driver.current_url, driver.current_url
        assert "R" in browser.launcher_notebooks(driver), browser.launcher_notebooks(driver)
        # The question comes with the restored lab (0.1 s after the launcher in the control).
        asked = browser.settle(driver, 5)
        shot = browser.screenshot(driver, tmp_path, "first-screen.png")
        assert not asked, f"the news question is on the first screen ({shot}): {asked!r}"

        control = time.monotonic()
        root_sh(vm, f"mv {LAB_PAGE_CONFIG} {LAB_PAGE_CONFIG}.off")
        try:
            driver.refresh()
            browser.wait_for_lab(driver, 120)
            start = time.monotonic()
            asked = browser.settle(driver, 60)
            shot = browser.screenshot(driver, tmp_path, "first-screen-without-page-config.png")
            assert asked, f"control: no news question without {LAB_PAGE_CONFIG} ({shot})"
            record("browser control: launcher to the news question", time.monotonic() - start)
        finally:
            root_sh(vm, f"mv {LAB_PAGE_CONFIG}.off {LAB_PAGE_CONFIG}")
        driver.refresh()
        browser.wait_for_lab(driver, 120)
        assert not browser.settle(driver, 5), "the news question stayed after the file came back"
        record("browser control: file away and back", time.monotonic() - control)
    finally:
        driver.quit()
    s, resp = login(vm, user, vm.passwords[user])
    assert resp.status_code == 302
    assert ANNOUNCEMENTS in lab_page_config(vm, s, user)["disabledExtensions"]


def save_text(w: Workshop, s: Any, user: str, path: str, text: str) -> Any:
    """Save ``text`` as ``path`` (under the home) through the server's contents API, as the lab
    does; return the response."""
    return s.put(
        f"{base(w)}/user/{user}/api/contents/{path}",
        json={"type": "file", "format": "text", "content": text},
        headers={"X-XSRFToken": xsrf_for(s, f"/user/{user}/")},
        timeout=60,
    )


def stop_server(w: Workshop, user: str) -> None:
    """Stop ``user``'s server through the hub's API (as the user) and wait until it is gone."""
    tok = token(w, user)
    r = session().delete(
        f"{base(w)}/hub/api/users/{user}/server",
        headers={"Authorization": f"token {tok}"},
        timeout=120,
    )
    assert r.status_code in (202, 204), f"stop {user}: {r.status_code} {r.text[:300]}"
    deadline = time.monotonic() + 180
    while servers(w, user, tok):
        assert time.monotonic() < deadline, f"{user}'s server did not stop"
        time.sleep(2)


SHARED_NEWS = f"dropped by the instructor during class {uuid.uuid4()}"
# A trainee's kernel tries to change the shared folder: every attempt must fail.
TRY_WRITE = """
import os
out = []
for act in (lambda: open('/srv/shared/news.txt', 'a').write('x'),
            lambda: open('/srv/shared/mine.txt', 'w').write('x'),
            lambda: os.remove('/srv/shared/news.txt'),
            lambda: os.remove('/srv/shared/README.txt')):
    try:
        act()
        out.append('done')
    except OSError as exc:
        out.append(type(exc).__name__)
(open('/srv/shared/news.txt').read(), open('/srv/shared/README.txt').read(), out)
"""


def test_b4_shared_data_admin_writes_trainees_read_only(vm: Workshop, trainee_session: Any) -> None:
    from e2e_harness import SHARED_FILES

    admin, user = vm.admin, vm.trainees[0]
    sa, resp = login(vm, admin, vm.passwords[admin])
    assert resp.status_code == 302
    start = time.monotonic()
    open_server(vm, sa, admin)
    code = f"open('/srv/shared/news.txt', 'w').write({SHARED_NEWS!r})"
    assert run_cell(vm, sa, admin, code) == str(len(SHARED_NEWS))
    # The admin may also replace what the bake put there.
    code = (
        "import os, pathlib; pathlib.Path('/srv/shared/data/numbers.csv').unlink(missing_ok=True)"
        "\n(sorted(os.listdir('/srv/shared')), os.listdir('/srv/shared/data'))"
    )
    assert run_cell(vm, sa, admin, code) == "(['README.txt', 'data', 'news.txt'], [])"
    record("shared data: admin server + writes", time.monotonic() - start)
    open_server(vm, trainee_session, user)  # running since test_b: only the session's cookie
    news, readme, tries = ast.literal_eval(run_cell(vm, trainee_session, user, TRY_WRITE))
    assert (news, readme) == (SHARED_NEWS, SHARED_FILES["README.txt"])
    # Permission denied (the folder's mode) or a read-only file system (the server's mount).
    assert set(tries) <= {"PermissionError", "OSError"} and len(tries) == 4, tries
    # ...whatever the trainee's umask or the admin's: the files are the admin's, others read.
    listing = root_sh(vm, "stat -c '%U %a %n' /srv/shared /srv/shared/news.txt")
    assert listing.split("\n")[1].startswith(f"{admin} 6"), listing


def test_b5_course_copied_at_start_edits_kept_new_files_arrive(
    vm: Workshop, trainee_session: Any
) -> None:
    from e2e_harness import COURSE_FILES

    s, user = trainee_session, vm.trainees[0]
    api = f"{base(vm)}/user/{user}/api/contents/course"
    # The server started in test_b: its pre-spawn hook copied the course, owned by the trainee.
    for name, text in COURSE_FILES.items():
        r = s.get(f"{api}/{name}", params={"format": "text", "type": "file"}, timeout=60)
        assert r.status_code == 200, f"{name}: {r.status_code}"
        assert r.json()["content"] == text, name
    owner = root_sh(vm, f"stat -c %U /home/{user}/course/01-intro.ipynb").strip()
    assert owner == user, owner
    # The hub sends the trainee to the course.
    r = s.get(f"{base(vm)}/user/{user}/", allow_redirects=False, timeout=60)
    assert r.headers.get("Location", "").rstrip("?").endswith("/lab/tree/course"), r.headers
    edited = "a,b\n1,2\nmine,3\n"
    r = save_text(vm, s, user, "course/data/table.csv", edited)
    assert r.status_code in (200, 201), r.status_code
    # A re-baked image brings a new file (simulated: added where the bake puts the course).
    root_sh(vm, "printf 'new\\n' > /srv/course/02-new.txt; chmod 644 /srv/course/02-new.txt")
    # The other trainee plants ~/course -> a root-only place before a first start: the copy runs
    # as the trainee, so nothing appears there.
    other = vm.trainees[1]
    root_sh(
        vm,
        "mkdir -p /var/tmp/e2e-probe && chmod 755 /var/tmp/e2e-probe && "
        f"rm -rf /home/{other}/course && "
        f"runuser -u {other} -- ln -s /var/tmp/e2e-probe /home/{other}/course",
    )
    start = time.monotonic()
    stop_server(vm, user)
    open_server(vm, s, user)
    record("course: server restart", time.monotonic() - start)
    r = s.get(f"{api}/data/table.csv", params={"format": "text", "type": "file"}, timeout=60)
    assert r.json()["content"] == edited, "the trainee's edit was overwritten"
    r = s.get(f"{api}/02-new.txt", params={"format": "text", "type": "file"}, timeout=60)
    assert r.status_code == 200 and r.json()["content"] == "new\n", r.status_code
    so, resp = login(vm, other, vm.passwords[other])
    assert resp.status_code == 302
    open_server(vm, so, other)
    assert root_sh(vm, "ls -A /var/tmp/e2e-probe").strip() == "", "root wrote through a symlink"
    root_sh(vm, f"rm -f /home/{other}/course")
    stop_server(vm, other)


def test_c_other_trainee_cannot_open_the_first_ones_server(
    vm: Workshop, trainee_session: Any
) -> None:
    owner, other = vm.trainees[0], vm.trainees[1]
    s, resp = login(vm, other, vm.passwords[other])
    assert resp.status_code == 302, resp.status_code
    for path in (f"/user/{owner}/lab", f"/user/{owner}/api/contents/{SAVED_FILE}"):
        r = s.get(f"{base(vm)}{path}", timeout=120)
        assert r.status_code in (403, 404), f"{other} got {r.status_code} for {path} ({r.url})"
        assert SAVED_TEXT.strip() not in r.text
    r = s.get(f"{base(vm)}/hub/api/users/{owner}", timeout=60)
    assert r.status_code in (403, 404), r.status_code


def test_d_ssh_only_for_the_admin_login_user(vm: Workshop) -> None:
    trainee = vm.trainees[0]
    refused = ssh(vm, trainee, "true", password=vm.passwords[trainee])
    assert refused.returncode == 255, refused
    assert "Permission denied" in refused.stderr, refused.stderr
    refused_key = ssh(vm, trainee, "true")
    assert refused_key.returncode == 255, refused_key
    ok = ssh(vm, vm.login_user, "id -un && sudo -n true && echo sudo-ok")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == [vm.login_user, "sudo-ok"], ok.stdout
    # An admin of the hub is a hub admin, not an ssh user.
    refused_admin = ssh(vm, vm.admin, "true", password=vm.passwords[vm.admin])
    assert refused_admin.returncode == 255
    # sshd started once this boot and was never restarted under a client (cloud-init's
    # ssh_pwauth edit restarted it as the hub came up: an ssh then met a reset connection).
    starts = root_sh(vm, "journalctl -b -q -u ssh -t sshd -g 'Server listening on 0.0.0.0' | wc -l")
    stops = root_sh(vm, "journalctl -b -q -u ssh -t sshd -g 'Received signal 15' | wc -l")
    assert (starts.strip(), stops.strip()) == ("1", "0"), (starts, stops)


def test_d2_vm_posture(vm: Workshop) -> None:
    """Private homes, the hub's API on loopback only, no hub without its firewall, IPv6 alike."""
    users = [vm.trainees[0], vm.admin]
    script = "; ".join(
        [
            "stat -c '%a %U' " + " ".join(f"/home/{u}" for u in users),
            "sudo ss -ltnH 'sport = :8081' | awk '{print \"listen\", $4}'",
            "systemctl show -p Requires --value jupyterhub.service | tr ' ' '\\n' | grep -x "
            "bakery-firewall.service",
            "if [ -e /proc/net/if_inet6 ]; then sudo ip6tables -S BAKERY-INPUT | grep -c DROP; "
            "else echo no-ipv6; fi",
            "curl -sk -o /dev/null -D - https://127.0.0.1/hub/login | grep -i '^server:'",
        ]
    )
    out = ssh(vm, vm.login_user, script)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[: len(users)] == [f"700 {u}" for u in users], lines
    listens = [ln.split()[1] for ln in lines if ln.startswith("listen ")]
    assert listens == ["127.0.0.1:8081"], listens
    assert "bakery-firewall.service" in lines, lines
    assert lines[-2] in ("1", "no-ipv6"), lines
    assert lines[-1].strip().lower() == "server: nginx", lines[-1]


def test_e_hub_and_files_survive_a_reboot(vm: Workshop) -> None:
    serial = vm.run_dir / "serial.log"
    boots = serial.read_bytes().count(b"Linux version")
    start = time.monotonic()
    ssh(vm, vm.login_user, "sudo systemctl reboot")
    deadline = time.monotonic() + 900
    while serial.read_bytes().count(b"Linux version") <= boots:
        assert time.monotonic() < deadline, "the VM did not reboot"
        time.sleep(2)
    s = session()
    while True:
        try:
            if s.get(f"{base(vm)}/hub/login", timeout=10).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "the hub did not come back after the reboot"
        time.sleep(3)
    record("reboot to login page", time.monotonic() - start)
    user = vm.trainees[0]
    s, resp = login(vm, user, vm.passwords[user])
    assert resp.status_code == 302
    open_server(vm, s, user)
    r = s.get(f"{base(vm)}/user/{user}/api/contents/{SAVED_FILE}", timeout=60)
    assert r.status_code == 200, r.status_code
    assert r.json()["content"] == SAVED_TEXT
    # test_b4's shared file, still there and still read-only for the trainee.
    assert run_cell(vm, s, user, "open('/srv/shared/news.txt').read()") == repr(SHARED_NEWS)
    refused = (
        "import os\ne = None\ntry:\n    os.remove('/srv/shared/news.txt')\n"
        "except OSError as x:\n    e = x\nrepr(e)"
    )
    assert "rror" in run_cell(vm, s, user, refused), "a trainee deleted shared data"


def test_status_and_stop_report_the_vm(vm: Workshop) -> None:
    from bakery.providers.local import health

    st = health.vm_status(vm.run_dir)
    assert st.running
    assert st.hub_status == 200
    assert "running" in st.describe()
    assert Path(st.state.credentials).is_file()


# --- the workshop day on the running VM: late trainee, reset password, collect, expiry -----------


def _day_args(vm: Workshop) -> dict[str, Any]:
    return {"hosts": [f"127.0.0.1:{vm.ssh_port}"], "identity": vm.ssh_key}


def _started(vm: Workshop, user: str) -> str | None:
    from bakery.day.users import list_users

    found = {u.name: u for u in list_users(config_path=vm.config, **_day_args(vm))}
    return found[user].started if user in found else None


def test_f_users_add_and_reset_on_the_running_hub(vm: Workshop) -> None:
    from bakery.day.users import add_users, reset_users

    runner, late, forgetful = vm.trainees[0], "latecomer", vm.trainees[1]
    s, resp = login(vm, runner, vm.passwords[runner])
    assert resp.status_code == 302
    open_server(vm, s, runner)
    started = _started(vm, runner)
    assert started, "the first trainee's server should be running"

    text = vm.config.read_text()
    # A walk-in: the instructor adds the name to users.names, then runs `bakery users add`.
    late_config = text.replace("users:\n  count: 2", "users:\n  names: [latecomer]\n  count: 2")
    assert late_config != text
    vm.config.write_text(late_config)
    start = time.monotonic()
    added = add_users(config_path=vm.config, names=[late], **_day_args(vm))
    record("users add (ssh, account, hub API)", time.monotonic() - start)
    assert not added.errors, added.errors
    assert list(added.servers.values()) == [{late: "account created; added to the hub"}]
    password = added.accounts[0].password
    home = ssh(vm, vm.login_user, f"sudo stat -c %a /home/{late}")
    assert home.stdout.strip() == "700", home.stdout + home.stderr

    s2, resp = login(vm, late, password)
    assert resp.status_code == 302, f"late trainee login: {resp.status_code} {resp.text[:300]}"
    open_server(vm, s2, late)
    assert run_cell(vm, s2, late, "import getpass; getpass.getuser()") == repr(late)

    old = vm.passwords[forgetful]
    start = time.monotonic()
    reset = reset_users(config_path=vm.config, names=[forgetful], **_day_args(vm))
    record("users reset", time.monotonic() - start)
    assert not reset.errors, reset.errors
    _, refused = login(vm, forgetful, old)
    assert refused.status_code != 302 and "Invalid username or password" in refused.text
    _, ok = login(vm, forgetful, reset.accounts[0].password)
    assert ok.status_code == 302
    vm.passwords[forgetful] = reset.accounts[0].password
    vm.passwords[late] = password

    # Nobody else's server restarted: the first trainee's still runs since the same moment.
    assert _started(vm, runner) == started


def test_g_collect_returns_a_trainee_file_byte_identical(vm: Workshop, tmp_path: Path) -> None:
    import hashlib
    import tarfile

    from bakery.day.collect import collect

    user = "latecomer"  # test_f's walk-in: their server still runs
    s, resp = login(vm, user, vm.passwords[user])
    assert resp.status_code == 302
    open_server(vm, s, user)
    code = (
        "import hashlib, os\nd = os.urandom(300_000)\nos.makedirs('results', exist_ok=True)\n"
        "open('results/run.bin', 'wb').write(d)\nos.makedirs('.cache/pip', exist_ok=True)\n"
        "open('.cache/pip/junk', 'w').write('x')\nhashlib.sha256(d).hexdigest()"
    )
    digest = run_cell(vm, s, user, code).strip("'")
    out = tmp_path / "work"
    start = time.monotonic()
    result = collect(config_path=vm.config, out_dir=out, **_day_args(vm))
    record("collect (all homes over ssh)", time.monotonic() - start)
    assert not result.errors, result.errors
    assert set(result.collected) == {user, *vm.trainees}
    with tarfile.open(out / f"{user}.tar.gz") as tar:
        names = tar.getnames()
        got = tar.extractfile(f"{user}/results/run.bin")
        assert got is not None
        data = got.read()
    assert len(data) == 300_000 and hashlib.sha256(data).hexdigest() == digest
    assert not [n for n in names if "/.cache" in n], names
    again = collect(config_path=vm.config, out_dir=out, **_day_args(vm))
    assert not again.collected and set(again.skipped) == set(result.collected)


# --- crash recovery (issue 15): the hub, the proxy, a full home, a trainee's bombs ---------------

# JupyterHub.last_activity_interval (default 300 s): how often the hub checks the proxy's routes
# and adds the missing ones, when the proxy is not the hub's child (should_start False).
ROUTE_CHECK_INTERVAL = 300


def server_unit(user: str) -> str:
    return f"jupyter-{user}-singleuser.service"  # SystemdSpawner's default unit_name_template


def test_h_hub_killed_servers_and_kernels_live_on(vm: Workshop) -> None:
    """kill -9 of the hub: systemd restarts it; the trainee's server, kernel and its state stay."""
    user = vm.trainees[0]
    s, resp = login(vm, user, vm.passwords[user])
    assert resp.status_code == 302
    open_server(vm, s, user)
    server = unit_run(vm, server_unit(user))
    assert server["ActiveState"] == "active", server
    with kernel(vm, s, user) as kernel_id:
        ws = connect(vm, s, user, kernel_id)
        try:
            assert execute(ws, user, "x = 42\nprint('set')") == "set\n"
            hub = unit_run(vm, "jupyterhub.service")
            start = time.monotonic()
            root_sh(vm, f"kill -9 {hub['MainPID']}")
            again = wait_restarted(vm, "jupyterhub.service", hub, start + 300)
            wait_healthy(vm, start + 300)
            record("kill -9 hub to /hub/health answering", time.monotonic() - start)
            assert int(again["NRestarts"]) == int(hub["NRestarts"]) + 1, (hub, again)
            # The open notebook's websocket runs through the proxy, not the hub: it stays up.
            assert execute(ws, user, "print(x)") == "42\n"
        finally:
            ws.close()
        # A reconnect to the same kernel (what the lab does) authenticates with the new hub.
        start = time.monotonic()
        ws = connect(vm, s, user, kernel_id)
        try:
            assert execute(ws, user, "x += 1\nprint(x)") == "43\n"
        finally:
            ws.close()
        record("reconnect to the same kernel after the hub's restart", time.monotonic() - start)
    assert unit_run(vm, server_unit(user)) == server, "the trainee's server was re-spawned"
    # The restarted hub logs trainees in and starts servers.
    other = vm.trainees[1]
    s2, resp = login(vm, other, vm.passwords[other])
    assert resp.status_code == 302, resp.status_code
    open_server(vm, s2, other)
    assert run_cell(vm, s2, other, "6 * 7") == "42"


def test_i_proxy_killed_routes_restored_without_a_respawn(vm: Workshop) -> None:
    """kill -9 of configurable-http-proxy: restarted, the hub restores the trainee's route."""
    user = vm.trainees[0]
    s, resp = login(vm, user, vm.passwords[user])
    assert resp.status_code == 302
    open_server(vm, s, user)
    server = unit_run(vm, server_unit(user))
    with kernel(vm, s, user) as kernel_id:
        ws = connect(vm, s, user, kernel_id)
        try:
            assert execute(ws, user, "y = 7\nprint('set')") == "set\n"
        finally:
            ws.close()
        proxy = unit_run(vm, "configurable-http-proxy.service")
        hub = unit_run(vm, "jupyterhub.service")
        start = time.monotonic()
        root_sh(vm, f"kill -9 {proxy['MainPID']}")
        wait_restarted(vm, "configurable-http-proxy.service", proxy, start + 120)
        record("kill -9 proxy to proxy restarted", time.monotonic() - start)
        # Until the hub has put the route back, /user/NAME/ lands at the hub (redirect loop).
        url = f"{base(vm)}/user/{user}/api/kernels/{kernel_id}"
        last = ""
        while True:
            try:
                r = s.get(url, timeout=30, allow_redirects=False)
                if r.status_code == 200 and r.json().get("id") == kernel_id:
                    break
                last = f"{r.status_code} {r.headers.get('Location', '')}"
            except (requests.RequestException, ValueError) as exc:
                last = str(exc)
            elapsed = time.monotonic() - start
            assert elapsed < ROUTE_CHECK_INTERVAL + 60, f"no route after {elapsed:.0f} s: {last}"
            time.sleep(2)
        elapsed = time.monotonic() - start
        record("kill -9 proxy to the trainee's server answering again", elapsed)
        hub_now = unit_run(vm, "jupyterhub.service")
        how = "the hub restarted with it" if hub_now != hub else "the hub's route check"
        print(f"[e2e] route restored after {elapsed:.0f} s by {how}")
        ws = connect(vm, s, user, kernel_id)
        try:
            assert execute(ws, user, "print(y)") == "7\n"
        finally:
            ws.close()
    assert unit_run(vm, server_unit(user)) == server, "the trainee's server was re-spawned"


# Fill the home to the last block: 1 MiB writes, then smaller ones, in rounds (XFS preallocates
# beyond the end of a growing file and gives that back when the file closes: a round after the
# first finds it free again) until a round writes nothing. Answers (first error, MiB written).
FILL_HOME = """
import errno, os
first, size, rounds = None, 0, 0
while rounds < 8:
    rounds += 1
    fd = os.open('fill.bin', os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    before = size
    for chunk in (2**20, 2**16, 4096, 512, 1):
        while True:
            try:
                n = os.write(fd, b'x' * chunk)
            except OSError as exc:
                first = first or exc.errno
                break
            size += n
    try:
        os.fsync(fd)
    except OSError as exc:
        first = first or exc.errno
    os.close(fd)
    if size == before:
        break
(errno.errorcode[first], size >> 20)
"""


def assert_filled_to_quota(answer: str, limit_mib: int) -> None:
    """FILL_HOME's answer: ENOSPC (an XFS project quota's error; a full disk would say the same,
    so the MiB written must be the quota's, within a few MiB of its rounding)."""
    code, written = ast.literal_eval(answer)
    assert code == "ENOSPC", f"the home did not fill to its quota: {answer}"
    assert limit_mib - 4 <= written <= limit_mib, f"{written} MiB written, quota {limit_mib}"


def others_go_on(w: Workshop, other: str) -> None:
    """While one home is full: ``other`` logs in, saves a notebook, runs a cell; the hub is well.
    (A file of 1 MiB from the kernel: more than a small quota's rounding could hide.)"""
    s, resp = login(w, other, w.passwords[other])
    assert resp.status_code == 302
    open_server(w, s, other)
    notebook = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    saved = s.put(
        f"{base(w)}/user/{other}/api/contents/saved.ipynb",
        json={"type": "notebook", "format": "json", "content": notebook},
        headers={"X-XSRFToken": xsrf_for(s, f"/user/{other}/")},
        timeout=60,
    )
    assert saved.status_code in (200, 201), (
        f"{other}'s save: {saved.status_code} {saved.text[:300]}"
    )
    assert run_cell(w, s, other, "open('ok.bin', 'wb').write(b'x' * 2**20)") == "1048576"
    assert session().get(f"{base(w)}/hub/health", timeout=30).status_code == 200


def quota_report(vm: Workshop) -> dict[int, tuple[int, int]]:
    """The homes' project quotas: project id (the home's uid) to (KiB used, KiB hard limit)."""
    out = root_sh(vm, "xfs_quota -x -c 'report -p -n -N' /home")
    rows = (line.split() for line in out.splitlines() if line.startswith("#"))
    return {int(r[0][1:]): (int(r[1]), int(r[3])) for r in rows}


def test_j_full_home_clear_error_others_and_hub_unaffected(vm: Workshop) -> None:
    """A trainee who fills their home (spawner.disk_limit, 64M here: a project quota on the
    homes' own XFS filesystem) gets "No space left on device" on save (an XFS project quota
    answers ENOSPC, not EDQUOT) and `df` on their home shows the quota as its size; another
    trainee logs in and runs cells; the hub's state is on another filesystem; an admin's home
    has no quota; the account `users add` made (test_f) has its quota too; all of it after the
    reboot (test_e)."""
    from bakery.layout import STATE_DIR

    full, other = vm.trainees[1], vm.trainees[0]
    limit_kib = 64 * 1024
    facts = root_sh(
        vm,
        f"findmnt -no TARGET -T {STATE_DIR}/jupyterhub.sqlite; findmnt -no FSTYPE,OPTIONS /home; "
        f"systemctl show -p User --value jupyterhub; "
        f"id -u {full}; id -u latecomer; id -u teacher; id -u {vm.login_user}",
    ).split()
    assert facts[0] == "/" and facts[1] == "xfs" and "prjquota" in facts[2], facts
    assert facts[3] == "root", facts
    uid_full, uid_late, *exempt = (int(u) for u in facts[4:])
    report = quota_report(vm)
    assert report[uid_full][1] == limit_kib and report[uid_late][1] == limit_kib, report
    assert all(report.get(uid, (0, 0))[1] == 0 for uid in exempt), report  # admins: none
    if servers(vm, full, token(vm, full)):
        stop_server(vm, full)
    try:
        s, resp = login(vm, full, vm.passwords[full])
        assert resp.status_code == 302
        open_server(vm, s, user=full)
        start = time.monotonic()
        answer = run_cell(vm, s, full, FILL_HOME)
        assert_filled_to_quota(answer, 64)
        size = root_sh(vm, f"df -B1 --output=size /home/{full} | tail -1").strip()
        assert int(size) == limit_kib * 1024, f"df on the full home: {size}"
        record("fill a 64 MiB home quota from the kernel", time.monotonic() - start)
        xsrf = xsrf_for(s, f"/user/{full}/")
        notebook = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
        r = s.put(
            f"{base(vm)}/user/{full}/api/contents/work.ipynb",
            json={"type": "notebook", "format": "json", "content": notebook},
            headers={"X-XSRFToken": xsrf},
            timeout=60,
        )
        # What the lab shows in its "File Save Error" dialog.
        assert r.status_code == 500, f"save on a full home: {r.status_code} {r.text[:300]}"
        assert "No space left on device" in r.json()["message"], r.text[:500]
        start = time.monotonic()
        others_go_on(vm, other)
        record("other trainee: login to cell answer, one home full", time.monotonic() - start)
        # An admin (the login user) has no quota: 80 MiB goes into their home.
        big = ssh(vm, vm.login_user, "dd if=/dev/zero of=big.bin bs=1M count=80 && rm big.bin")
        assert big.returncode == 0, big.stderr
        stop_server(vm, full)
    finally:
        root_sh(vm, f"rm -f /home/{full}/fill.bin /home/{other}/saved.ipynb /home/{other}/ok.bin")
    assert quota_report(vm)[uid_full][0] < 1024


FORK_BOMB = """
import os, signal, subprocess, sys, time
HOLD = {hold}
kids, refused, full_since = [], 0, None
end = time.monotonic() + 600
while time.monotonic() < end:
    if full_since is not None and time.monotonic() - full_since > HOLD:
        break
    try:
        pid = os.fork()
    except BlockingIOError:  # EAGAIN: the unit's TasksMax
        refused += 1
        full_since = full_since or time.monotonic()
        time.sleep(0.05)
        continue
    if pid == 0:
        os.execv("/bin/sleep", ["sleep", "900"])
    kids.append(pid)
for pid in kids:
    os.kill(pid, signal.SIGKILL)
for pid in kids:
    os.waitpid(pid, 0)
print(len(kids), refused)
"""


def cgroup(vm: Workshop, user: str, *names: str) -> dict[str, str]:
    """Files of the trainee's unit's cgroup (v2), by name."""
    cg = f"/sys/fs/cgroup/system.slice/{server_unit(user)}"
    out = root_sh(vm, "; ".join(f"echo {n}=$(tr '\\n' ' ' < {cg}/{n})" for n in names))
    return {k: v.strip() for k, v in (line.split("=", 1) for line in out.splitlines())}


def pids_refused(vm: Workshop, user: str) -> int:
    """Forks the unit's pids limit has refused so far."""
    return int(cgroup(vm, user, "pids.events")["pids.events"].split()[1])


def oom_kills(vm: Workshop, user: str) -> int:
    events = cgroup(vm, user, "memory.events")["memory.events"].split()
    return int(events[events.index("oom_kill") + 1])


def cell(w: Workshop, s: Any, user: str, kernel_id: str, code: str, timeout: float = 180) -> str:
    """Run ``code`` in an existing kernel over a websocket of its own; return its stdout."""
    ws = connect(w, s, user, kernel_id, timeout)
    try:
        return execute(ws, user, code, timeout)
    finally:
        ws.close()


def test_k_fork_and_memory_bombs_stay_inside_the_trainees_unit(vm: Workshop) -> None:
    from bakery.config.workshop import load_config
    from bakery.vm.context import PIDS_LIMIT
    from bakery.workshop.sizing import mem_limit_bytes

    a, b = vm.trainees[0], "latecomer"
    mem_limit = mem_limit_bytes(load_config(vm.config).spawner.mem_limit)
    sa, resp = login(vm, a, vm.passwords[a])
    assert resp.status_code == 302
    open_server(vm, sa, a)
    sb, resp = login(vm, b, vm.passwords[b])
    assert resp.status_code == 302
    open_server(vm, sb, b)
    limits = cgroup(vm, a, "pids.max", "memory.max")
    assert limits == {"pids.max": str(PIDS_LIMIT), "memory.max": str(mem_limit)}, limits
    server = unit_run(vm, server_unit(a))
    with kernel(vm, sa, a) as ka, kernel(vm, sb, b) as kb:
        # A websocket per cell: an idle one is closed by the server's ping timeout (90 s).
        assert cell(vm, sb, b, kb, "print(6 * 7)") == "42\n"
        refusals = pids_refused(vm, a)
        start = time.monotonic()
        code = (
            "import subprocess, sys\n"
            f"bomb = subprocess.Popen([sys.executable, '-c', {FORK_BOMB.format(hold=15)!r}],"
            " stdout=subprocess.PIPE, text=True)\nprint('started')"
        )
        assert cell(vm, sa, a, ka, code) == "started\n"
        # Wait for the unit to hit its pids limit (forks refused), then time b's cells.
        deadline, peak = start + 400, 0
        while pids_refused(vm, a) == refusals:
            peak = max(peak, int(cgroup(vm, a, "pids.current")["pids.current"]))
            assert time.monotonic() < deadline, f"no fork refused; {peak} tasks"
            time.sleep(2)
        record("fork bomb: start to the unit's pids limit", time.monotonic() - start)
        waits = []
        for _ in range(3):
            t = time.monotonic()
            assert cell(vm, sb, b, kb, "print(6 * 7)", timeout=60) == "42\n"
            waits.append(time.monotonic() - t)
            peak = max(peak, int(cgroup(vm, a, "pids.current")["pids.current"]))
        record("fork bomb: other trainee's slowest cell", max(waits))
        assert peak <= PIDS_LIMIT, peak
        assert peak > PIDS_LIMIT - 50, f"the bomb did not reach the limit: {peak}"
        result = cell(vm, sa, a, ka, "print(bomb.communicate()[0])", timeout=600)
        kids, refused = map(int, result.split())
        assert refused > 0 and kids < PIDS_LIMIT, (kids, refused)
        record("fork bomb: start to cleaned up", time.monotonic() - start)
        assert int(cgroup(vm, a, "pids.current")["pids.current"]) < 100

        # The memory bomb: well over mem_limit, in chunks that are written (not just mapped).
        ooms = oom_kills(vm, a)
        start = time.monotonic()
        wa = connect(vm, sa, a, ka, timeout=300)
        try:
            chunks = 3 * mem_limit // 2**24
            msg_id = send_execute(wa, a, f"chunks = [b'x' * 2**24 for _ in range({chunks})]")
            t = time.monotonic()
            assert cell(vm, sb, b, kb, "print(6 * 7)", timeout=60) == "42\n"
            record("memory bomb: other trainee's cell", time.monotonic() - t)
            died = ""
            while not died:
                assert time.monotonic() < start + 300, "the memory bomb's kernel was not killed"
                msg = json.loads(wa.recv())
                state = msg.get("content", {}).get("execution_state")
                kind = msg.get("msg_type") or msg["header"]["msg_type"]
                if kind == "status" and state in ("restarting", "dead"):
                    died = state
                elif msg.get("parent_header", {}).get("msg_id") == msg_id:
                    assert kind not in ("execute_result", "execute_reply"), msg["content"]
        finally:
            wa.close()
        record("memory bomb: start to the kernel's OOM kill", time.monotonic() - start)
    assert oom_kills(vm, a) > ooms, cgroup(vm, a, "memory.events")
    assert session().get(f"{base(vm)}/hub/health", timeout=30).status_code == 200
    assert unit_run(vm, server_unit(a)) == server, "the trainee's server did not survive its bombs"
    assert run_cell(vm, sa, a, "6 * 7") == "42"
    assert run_cell(vm, sb, b, "6 * 7") == "42"


# What test_l's dry run must plan.
PLANNED = (
    "the workshop's end (ends, grace) and its timer",
    "accounts made: ta (admin)",
    "+c.SystemdSpawner.mem_limit = '640M'",
    "environment: the course's packages",
    "course.from: 2 new or changed file(s)",
)


def _vm_digests(vm: Workshop) -> str:
    paths = "/etc/jupyterhub/jupyterhub_config.py /etc/bakery/expiry.json /srv/course/*"
    return root_sh(vm, f"sha256sum {paths}; id -u ta 2>/dev/null || echo no-ta")


def test_l_update_changes_the_running_class_and_a_kernel_lives_on(vm: Workshop) -> None:
    """`bakery update` (issue 29): a later end, a second admin, more memory, a forgotten
    package and a new course file reach the running VM while a trainee's kernel keeps its
    variable; a dry run changes nothing; a second run has nothing to do; a change of the image's
    kind is refused with exit 2."""
    from e2e_harness import LOCKS, UPDATE_PACKAGE, update_env_files, write_folder
    from typer.testing import CliRunner

    from bakery.cli.main import app
    from bakery.config.lockfile import lock_path
    from bakery.config.workshop import load_config
    from bakery.day.update import update
    from bakery.workshop.accounts import credentials_path, ensure_credentials

    user, other = vm.trainees[0], vm.trainees[1]
    s, resp = login(vm, user, vm.passwords[user])
    assert resp.status_code == 302
    open_server(vm, s, user)
    mine = "a,b\n1,2\nmine,3\n"  # test_b5's edit of the trainee's course copy
    assert root_sh(vm, f"cat /home/{user}/course/data/table.csv") == mine
    original = vm.config.read_text()
    changed = original.replace("ends: 2099-01-01T00:00:00Z", "ends: 2099-01-02T00:00:00Z")
    changed = changed.replace("admins: [teacher]", "admins: [teacher, ta]")
    changed = changed.replace("mem_limit: 512M", "mem_limit: 640M")
    assert changed.count("2099-01-02") == 1 and "[teacher, ta]" in changed and "640M" in changed
    vm.config.write_text(changed)
    write_folder(vm.dir / "env", update_env_files())
    lock_path(vm.config).write_bytes((LOCKS / "systemd-update.lock.json").read_bytes())
    write_folder(
        vm.dir / "course", {"03-after-the-break.ipynb": "{}\n", "data/table.csv": "a,b\n9,9\n"}
    )

    with kernel(vm, s, user) as kernel_id:
        ws = connect(vm, s, user, kernel_id)
        try:
            assert execute(ws, user, "x = 42\nprint('set')") == "set\n"
            before = _vm_digests(vm)
            dry = update(config_path=vm.config, dry_run=True, **_day_args(vm))
            text = "\n".join(dry.plan.lines())
            for words in PLANNED:
                assert words in text, text
            assert _vm_digests(vm) == before, "the dry run changed the VM"
            start = time.monotonic()
            result = update(config_path=vm.config, **_day_args(vm))
            record(
                "update (hub restart, a package, a course file, an account)",
                time.monotonic() - start,
            )
            assert not result.errors, result.errors
            # The trainee's kernel lived through it all: same websocket, same variable.
            assert execute(ws, user, "print(x)") == "42\n"
        finally:
            ws.close()
    # The running server got the new memory limit in place; its course copy the new file, and
    # the trainee's own edit stays.
    limit = root_sh(vm, f"systemctl show -p MemoryMax --value {server_unit(user)}").strip()
    assert limit == str(640 * 2**20), limit
    assert root_sh(vm, f"cat /home/{user}/course/data/table.csv") == mine
    assert root_sh(vm, f"cat /home/{user}/course/03-after-the-break.ipynb") == "{}\n"
    assert "2099-01-02" in root_sh(vm, "cat /etc/bakery/expiry.json")
    # The new admin logs in (the sheet has the password) and reaches the admin page.
    sheet = {
        a.username: a.password
        for a in ensure_credentials(load_config(vm.config), credentials_path(vm.config))
    }
    sa, resp = login(vm, "ta", sheet["ta"])
    assert resp.status_code == 302, resp.status_code
    assert sa.get(f"{base(vm)}/hub/admin", timeout=60).status_code == 200
    # A new server imports the forgotten package and runs under the new limit.
    so, resp = login(vm, other, vm.passwords[other])
    assert resp.status_code == 302
    open_server(vm, so, other)
    name, version = UPDATE_PACKAGE
    got = run_cell(vm, so, other, f"import importlib.metadata as m; m.version({name!r})")
    assert got == repr(version), got
    assert root_sh(vm, f"systemctl show -p MemoryMax --value {server_unit(other)}").strip() == str(
        640 * 2**20
    )
    stop_server(vm, other)
    # Nothing left to do; a change the image holds is refused (exit 2, the field, the way).
    again = update(config_path=vm.config, **_day_args(vm))
    assert [p.items for p in again.plan.servers] == [[]], again.plan.lines()
    # `os`: another OS has another login user; update asks as the image's own to say so.
    host = _day_args(vm)["hosts"][0]
    for change, said in (
        (("users:\n", "hub:\n  install: conda\nusers:\n"), "hub.install: the server has venv, "
         "the file says conda"),
        (("os: debian-12", "os: ubuntu-24.04"), "os: the server has debian-12, the file says "
         "ubuntu-24.04"),
    ):  # fmt: skip
        vm.config.write_text(changed.replace(*change, 1))
        try:
            refused = CliRunner().invoke(
                app, ["update", str(vm.config), "--host", host, "-i", str(vm.ssh_key)]
            )
            assert refused.exit_code == 2, refused.output
            assert said in refused.output
            assert "nothing was changed" in refused.output and "Traceback" not in refused.output
        finally:
            vm.config.write_text(changed)


def test_z_expiry_banner_refused_logins_and_power_off(vm: Workshop) -> None:
    """Last of the VM's tests: the dates move close, the VM enforces them and powers off."""
    from bakery.providers.local import qemu
    from bakery.providers.local import vm as localvm

    # The guest's clock decides (under TCG it may drift from the host's).
    clock = ssh(vm, vm.login_user, "date +%s")
    assert clock.returncode == 0, clock.stderr
    now = int(clock.stdout.strip())
    offset = now - time.time()
    ends = now + 45
    times: dict[str, Any] = {
        "banner_from": now - 60, "ends": ends, "power_off": now + 75,
        "ends_text": "soon", "power_off_text": "a little later",
    }  # fmt: skip
    command = f"echo {shlex.quote(json.dumps(times))} | sudo tee /etc/bakery/expiry.json"
    wrote = ssh(vm, vm.login_user, command)
    assert wrote.returncode == 0, wrote.stderr
    page = session().get(f"{base(vm)}/hub/login", timeout=30)
    assert "This workshop ends at soon" in page.text
    trainee, admin = vm.trainees[0], vm.admin
    time.sleep(max(0, ends - offset - time.time() + 2))
    _, refused = login(vm, trainee, vm.passwords[trainee])
    assert refused.status_code != 302
    assert "This workshop ended at soon: no new logins" in refused.text
    _, ok = login(vm, admin, vm.passwords[admin])
    assert ok.status_code == 302, "admins may still log in"
    start = time.monotonic()
    pid = localvm.VmState.load(vm.run_dir).pid
    deadline = time.monotonic() + 240
    while qemu.alive(pid) and time.monotonic() < deadline:
        time.sleep(5)
    record("ends + grace to VM powered off", time.monotonic() - start)
    assert not qemu.alive(pid), "the VM did not power itself off after the grace"


@pytest.mark.slow
def test_full_stage_in_the_vm(base_image: Path, workshop_files: Workshop) -> None:
    """The stock-image path: the whole full stage installs inside the VM (very slow under TCG).
    Without the local folders, which only a bake carries (the full stage refuses them)."""
    import yaml

    from bakery.providers.local import trial

    settings = yaml.safe_load(workshop_files.config.read_text())
    settings.pop("course")
    settings["shared_data"] = {}
    full_config = workshop_files.config.with_name("full.yaml")
    full_config.write_text(yaml.safe_dump(settings, sort_keys=False))
    shutil.copy(
        workshop_files.config.with_name("workshop.lock.json"),
        full_config.with_name("full.lock.json"),
    )
    shutil.copy(
        workshop_files.config.with_name("workshop.credentials.csv"),
        full_config.with_name("full.credentials.csv"),
    )
    workshop_files = dataclasses.replace(workshop_files, config=full_config)
    run_dir = workshop_files.dir / "vm-full"
    start = time.monotonic()
    try:
        trial.up(
            workshop_files.config,
            image=base_image,
            stage="full",
            https_port=workshop_files.https_port + 10,
            ssh_port=workshop_files.ssh_port + 10,
            memory="3G",
            accel=os.environ.get("BAKERY_E2E_ACCEL", "auto"),  # type: ignore[arg-type]
            run_dir=run_dir,
            progress=tagged("try full"),
        )
        record("full stage in the VM: boot to login page", time.monotonic() - start)
        w = dataclasses.replace(
            workshop_files, https_port=workshop_files.https_port + 10, run_dir=run_dir
        )
        user = w.trainees[1]
        s, resp = login(w, user, w.passwords[user])
        assert resp.status_code == 302
        open_server(w, s, user)
        assert run_cell(w, s, user, "6 * 7") == "42"
    finally:
        with_stop(run_dir)
