"""`make bench-class`: N trainees log in, start servers and run a cell at the same moment."""

from __future__ import annotations

import argparse
import contextlib
import csv
import html
import itertools
import json
import re
import shlex
import ssl
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests
import urllib3
import websocket

from bakery.layout import WARM_STATE
from bakery.progress import ConsoleReporter

ROOT = Path(__file__).resolve().parent.parent
E2E = ROOT / "tests" / "e2e"
PHASES = ("login", "spawn", "cell")
# Over the hub's active_server_limit (or a concurrent_spawn_limit, were one set: bakery queues
# the starts instead) it answers 429: a trainee's page reloads, so a client does too; only other
# errors count as failures.
MAX_TRIES = 60


@dataclass
class Trainee:
    """One client's run: seconds per phase from the common start, retries, error if any."""

    user: str
    phases: dict[str, float] = field(default_factory=dict)
    done_at: float | None = None
    retries_429: int = 0
    reconnects: int = 0  # kernel sockets that closed before any message, reopened
    error: str | None = None


@dataclass
class Target:
    """Where the hub is and how to reach the VM behind it (ssh is optional on a real cloud)."""

    url: str
    accounts: list[tuple[str, str]]
    ssh: list[str] | None
    verify: bool


def _session(verify: bool) -> requests.Session:
    if not verify:  # --insecure or the local VM's self-signed certificate: said once, not per GET
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    s = requests.Session()
    s.trust_env = False  # the host's REQUESTS_CA_BUNDLE / proxies must not apply
    s.verify = verify
    return s


def _get(s: requests.Session, url: str, t: Trainee, timeout: float = 120) -> requests.Response:
    """GET, waiting out the hub's 429 (spawn or server limit) as a trainee would."""
    for _ in range(MAX_TRIES):
        r = s.get(url, timeout=timeout)
        if r.status_code != 429:
            return r
        t.retries_429 += 1
        time.sleep(float(r.headers.get("Retry-After") or 10))
    raise RuntimeError(f"{url}: still 429 after {MAX_TRIES} tries")


def login(tg: Target, user: str, password: str, t: Trainee) -> requests.Session:
    s = _session(tg.verify)
    page = _get(s, f"{tg.url}/hub/login", t)
    page.raise_for_status()
    m = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text)
    data = {"username": user, "password": password, **({"_xsrf": m.group(1)} if m else {})}
    r = s.post(f"{tg.url}/hub/login?next=", data=data, allow_redirects=False, timeout=120)
    if r.status_code != 302:
        raise RuntimeError(f"login: {r.status_code} {r.text[:200]!r}")
    return s


# The hub's waiting page (spawn_pending.html) follows the start on this event stream and reloads
# itself once the server is ready, as a trainee's browser does.
PROGRESS = re.compile(r'new EventSource\("([^"]+)"\)')


def spawn(tg: Target, s: requests.Session, user: str, t: Trainee, timeout: float) -> None:
    """Start the server and open the lab until its page answers (the OAuth hand-off included).
    On the hub's waiting page, wait as its script does: on the start's event stream."""
    r = _get(s, f"{tg.url}/hub/spawn/{user}", t)
    if r.status_code >= 400:
        raise RuntimeError(f"spawn: {r.status_code} {r.url} {r.text[:200]!r}")
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            r = _get(s, f"{tg.url}/user/{user}/lab", t, timeout=60)
        except requests.Timeout as exc:
            last = f"timeout: {exc}"
            continue
        if r.status_code == 200 and f"/user/{user}/lab" in r.url:
            return
        if r.status_code >= 500 or r.status_code == 424:  # 424: the hub's "not running" page
            raise RuntimeError(f"spawn: {r.status_code} {r.url} {r.text[:200]!r}")
        last = f"{r.status_code} {r.url}"
        found = PROGRESS.search(r.text) if r.status_code == 200 else None
        if found is None:
            time.sleep(2)
            continue
        last = _wait_progress(s, tg.url + html.unescape(found.group(1)), deadline) or last
    raise RuntimeError(f"server not open within {timeout:.0f} s; last: {last}")


def _wait_progress(s: requests.Session, url: str, deadline: float) -> str:
    """Read the start's event stream until it says ready (or ends); raise if it says failed.
    Returns the last message."""
    message = ""
    try:
        with s.get(url, stream=True, timeout=(30, 60)) as r:
            if r.status_code != 200:
                time.sleep(2)
                return f"progress: {r.status_code}"
            for raw in r.iter_lines(decode_unicode=True):
                line = raw.decode() if isinstance(raw, bytes) else raw
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[len("data:") :])
                message = str(event.get("message", message))
                if event.get("failed"):
                    raise RuntimeError(f"spawn failed: {message}")
                if event.get("ready") or time.monotonic() > deadline:
                    break
    except (requests.ConnectionError, requests.Timeout) as exc:
        return f"progress: {exc}"
    return message


def _xsrf(s: requests.Session, prefix: str) -> str:
    found = [c for c in s.cookies if c.name == "_xsrf" and prefix.startswith(c.path.rstrip("/"))]
    if not found:
        raise RuntimeError(f"no _xsrf cookie for {prefix}")
    return str(max(found, key=lambda c: len(c.path)).value)


# JupyterLab reconnects a kernel's socket that closes (with backoff) and sends what it queued:
# a trainee whose socket closed before the kernel said anything tries again, as the lab would.
RECONNECTS = 3


def cell(tg: Target, s: requests.Session, user: str, timeout: float) -> int:
    """Open a notebook as JupyterLab does (a session, whose kernel is left running: the idle
    memory counts it) and run one cell over its kernel's socket; the number of reconnects it took
    (a socket closed before any kernel message)."""
    xsrf = _xsrf(s, f"/user/{user}/")
    api = f"{tg.url}/user/{user}/api"
    notebook = {"path": "first.ipynb", "name": "first.ipynb", "type": "notebook"}
    r = s.post(
        f"{api}/sessions",
        json={**notebook, "kernel": {"name": "python3"}},
        headers={"X-XSRFToken": xsrf},
        timeout=120,
    )
    if r.status_code != 201:
        raise RuntimeError(f"notebook: {r.status_code} {r.text[:200]!r}")
    ws_url = re.sub(r"^http", "ws", api) + f"/kernels/{r.json()['kernel']['id']}/channels"
    deadline = time.monotonic() + timeout
    for attempt in range(RECONNECTS + 1):
        states: list[str] = []
        try:
            _run_cell(tg, s, user, ws_url, xsrf, deadline, states)
            return attempt
        except websocket.WebSocketConnectionClosedException as exc:
            # The kernel's states so far tell a dead kernel from a dropped connection.
            if states or attempt == RECONNECTS or time.monotonic() > deadline:
                raise RuntimeError(
                    f"socket closed after kernel states {states[-6:]} ({attempt} reconnects)"
                ) from exc
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


def _run_cell(
    tg: Target,
    s: requests.Session,
    user: str,
    ws_url: str,
    xsrf: str,
    deadline: float,
    states: list[str],
) -> None:
    cookies = "; ".join(f"{c.name}={c.value}" for c in s.cookies)
    sslopt = {} if tg.verify else {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
    ws = websocket.create_connection(
        ws_url,
        header=[f"Cookie: {cookies}", f"X-XSRFToken: {xsrf}"],
        sslopt=sslopt,
        timeout=max(1.0, deadline - time.monotonic()),
    )
    try:
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "username": user,
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
            "date": datetime.now(timezone.utc).isoformat(),
        }
        content = {
            "code": "sum(range(10**6))",
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        ws.send(
            json.dumps(
                {
                    "header": header,
                    "parent_header": {},
                    "metadata": {},
                    "content": content,
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg["header"]["msg_type"] == "status":
                states.append(msg["content"].get("execution_state"))
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["header"]["msg_type"] == "execute_result":
                if msg["content"]["data"]["text/plain"] != str(sum(range(10**6))):
                    raise RuntimeError(f"wrong answer: {msg['content']['data']}")
                return
            if msg["header"]["msg_type"] == "error":
                raise RuntimeError(f"cell raised {msg['content'].get('ename')}")
        raise RuntimeError("no answer within the timeout")
    finally:
        ws.close()


def trainee(
    tg: Target,
    user: str,
    password: str,
    start: threading.Barrier,
    t0: list[float],
    t: Trainee,
    timeout: float,
) -> None:
    start.wait()
    try:
        s = login(tg, user, password, t)
        t.phases["login"] = time.monotonic() - t0[0]
        spawn(tg, s, user, t, timeout)
        t.phases["spawn"] = time.monotonic() - t0[0] - t.phases["login"]
        t.reconnects = cell(tg, s, user, timeout)
        t.done_at = time.monotonic() - t0[0]
        t.phases["cell"] = t.done_at - t.phases["login"] - t.phases["spawn"]
    except Exception as exc:  # a benchmark reports every failure
        t.error = f"{type(exc).__name__}: {exc}"[:300]


# --- watching the hub ----------------------------------------------------------------------------

HUB_PROBE = (
    "for u in jupyterhub configurable-http-proxy; do for p in CPUUsageNSec MemoryCurrent; do "
    "echo $u.$p=$(systemctl show $u.service -p $p --value); done; done; "
    "echo load1=$(cut -d' ' -f1 /proc/loadavg); "
    "echo memavail=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)"
)
# Every trainee server's cgroup: systemd spawner units, or docker containers' scopes.
SERVERS_PROBE = (
    "for d in /sys/fs/cgroup/system.slice/jupyter-*-singleuser.service "
    "/sys/fs/cgroup/system.slice/docker-*.scope; do [ -f $d/memory.current ] && "
    "echo $(basename $d) $(cat $d/memory.current) $(cat $d/memory.peak 2>/dev/null || echo 0); "
    "done; true"
)


def ssh_run(ssh: list[str], command: str) -> str:
    """``command``'s output on the VM; empty if it failed or the VM did not answer within a
    minute (a class storm can load a small VM that much: a missed sample, not a crash)."""
    try:
        proc = subprocess.run(
            [*ssh, command],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def watch_hub(ssh: list[str], stop: threading.Event, samples: list[dict[str, float]]) -> None:
    """Sample the hub's and proxy's CPU time and memory, load and free memory every 5 s."""
    while not stop.is_set():
        out = ssh_run(ssh, "sudo sh -c " + shlex.quote(HUB_PROBE))
        v = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        # A sample lost to a busy VM (ssh timed out) is skipped: the next one counts.
        with contextlib.suppress(KeyError, ValueError):
            samples.append(
                {
                    "t": time.monotonic(),
                    "hub_cpu_ns": int(v["jupyterhub.CPUUsageNSec"]),
                    "proxy_cpu_ns": int(v["configurable-http-proxy.CPUUsageNSec"]),
                    "hub_mem": int(v["jupyterhub.MemoryCurrent"]),
                    "proxy_mem": int(v["configurable-http-proxy.MemoryCurrent"]),
                    "load1": float(v["load1"]),
                    "mem_available_kib": int(v["memavail"]),
                }
            )
        stop.wait(5)


def watch_login_page(tg: Target, stop: threading.Event, out: list[float]) -> None:
    """The login page's latency under the load, every 2 s (what a late trainee waits for)."""
    s = _session(tg.verify)
    while not stop.is_set():
        start = time.monotonic()
        try:
            s.get(f"{tg.url}/hub/login", timeout=60).raise_for_status()
            out.append(time.monotonic() - start)
        except requests.RequestException:
            out.append(float("inf"))
        stop.wait(2)


def cpu_percent(samples: list[dict[str, float]], key: str) -> list[float]:
    """Per interval between two samples: the CPU time ``key`` used, as % of one CPU."""
    return [
        (b[key] - a[key]) / 1e9 / (b["t"] - a["t"]) * 100 for a, b in itertools.pairwise(samples)
    ]


def hub_summary(samples: list[dict[str, float]]) -> dict[str, float]:
    if len(samples) < 2:
        return {}
    cpu, proxy = cpu_percent(samples, "hub_cpu_ns"), cpu_percent(samples, "proxy_cpu_ns")
    return {
        "hub_cpu_percent_mean": round(statistics.mean(cpu), 1),
        "hub_cpu_percent_max": round(max(cpu), 1),
        "proxy_cpu_percent_max": round(max(proxy), 1),
        "hub_mem_mib_max": round(max(s["hub_mem"] for s in samples) / 2**20, 1),
        "proxy_mem_mib_max": round(max(s["proxy_mem"] for s in samples) / 2**20, 1),
        "load1_max": max(s["load1"] for s in samples),
        "mem_available_mib_min": round(min(s["mem_available_kib"] for s in samples) / 1024),
    }


def idle_memory(ssh: list[str], idle: float) -> dict[str, Any]:
    """memory.current of every trainee server's cgroup after ``idle`` seconds (kernel running)."""
    time.sleep(idle)
    rows = [
        line.split()
        for line in ssh_run(ssh, "sudo sh -c " + shlex.quote(SERVERS_PROBE)).splitlines()
    ]
    mib = sorted(int(r[1]) / 2**20 for r in rows if len(r) == 3)
    if not mib:
        return {}
    return {
        "idle_seconds": idle,
        "servers": len(mib),
        "mib_mean": round(statistics.mean(mib), 1),
        "mib_max": round(max(mib), 1),
        "mib_min": round(min(mib), 1),
        "peak_mib_max": round(max(int(r[2]) for r in rows if len(r) == 3) / 2**20, 1),
    }


# --- the run -------------------------------------------------------------------------------------


def vm_errors(ssh: list[str], seconds: float, most: int = 30) -> list[str]:
    """What JupyterHub and the single-user servers logged as errors and warnings on the VM in
    the past ``seconds``, one line per kind of message (ids and numbers folded), the most
    frequent first: ``"12x [W ServerApp] Kernel # died, removing from map."``. Their own
    ``[E ...]``/``[W ...]`` prefixes tell (journald files a program's stderr as info); a message
    may start on the line after its prefix."""
    since = f"-{int(seconds) + 60}s"
    cmd = f"journalctl --since={since} --no-pager -o cat | grep -E -A1 '^\\[[EW] [0-9]{{4}}-'"
    lines = ssh_run(ssh, "sudo sh -c " + shlex.quote(cmd + " || true")).splitlines()
    head = re.compile(r"^\[([EW]) \S+ \S+ (\w+)[^\]]*\] ?(.*)$")
    kinds: Counter[str] = Counter()
    for i, line in enumerate(lines):
        if m := head.match(line):
            level, app, text = m.groups()
            if not text and i + 1 < len(lines) and not head.match(lines[i + 1]):
                text = lines[i + 1].strip()
            text = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\b\d+(\.\d+)?", "#", text)[:200]
            kinds[f"[{level} {app}] {text}"] += 1
    return [f"{n}x {kind}" for kind, n in kinds.most_common(most)]


def save_journal(ssh: list[str] | None, path: Path) -> str:
    """The VM's journal of this boot, gzipped, at ``path`` (its name, or why not)."""
    if not ssh:
        return "no ssh to the VM"
    cmd = "sudo sh -c " + shlex.quote("journalctl -b --no-pager -o short-iso | gzip -6")
    try:
        proc = subprocess.run([*ssh, cmd], capture_output=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        return "the VM did not send its journal within 10 minutes"
    if proc.returncode != 0:
        return f"journalctl failed: {proc.stderr.decode(errors='replace')[-200:]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proc.stdout)
    return str(path)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


def run(tg: Target, n: int, timeout: float, idle: float) -> dict[str, Any]:
    """Run the class storm against ``tg``; the results as a JSON-ready dict."""
    if len(tg.accounts) < n:
        raise SystemExit(f"{n} trainees asked for, the credentials sheet has {len(tg.accounts)}")
    runs = [Trainee(user) for user, _ in tg.accounts[:n]]
    barrier = threading.Barrier(n + 1)
    t0 = [0.0]
    threads = [
        threading.Thread(target=trainee, args=(tg, u, p, barrier, t0, t, timeout))
        for (u, p), t in zip(tg.accounts, runs, strict=False)
    ]
    stop, samples, page = threading.Event(), [], []  # type: ignore[var-annotated]
    watchers = [threading.Thread(target=watch_login_page, args=(tg, stop, page))]
    if tg.ssh:
        watchers.append(threading.Thread(target=watch_hub, args=(tg.ssh, stop, samples)))
    for th in threads + watchers:
        th.start()
    t0[0] = time.monotonic()
    barrier.wait()
    for th in threads:
        th.join()
    stop.set()
    for th in watchers:
        th.join()
    done = [t.done_at for t in runs if t.done_at is not None]
    phases = {
        p: {"p50": pct(v, 0.5), "p95": pct(v, 0.95), "max": pct(v, 1.0)}
        for p in PHASES
        if (v := [t.phases[p] for t in runs if p in t.phases])
    }
    finite = [x for x in page if x != float("inf")]
    failed = [t for t in runs if t.error]
    return {
        "trainees": n,
        "url": tg.url,
        "first_cell_s": round(min(done), 1) if done else None,
        "last_cell_s": round(max(done), 1) if done else None,
        # Every trainee opens the login page at the same moment: from it to their cell's answer.
        "login_to_cell": {"p50": pct(done, 0.5), "p95": pct(done, 0.95)} if done else {},
        "phases": phases,
        "failures": [{"user": t.user, "error": t.error} for t in failed],
        "retries_429": sum(t.retries_429 for t in runs),
        "kernel_reconnects": sum(t.reconnects for t in runs),
        "login_page": {
            "samples": len(page),
            "failed": len(page) - len(finite),
            **(
                {"p50": pct(finite, 0.5), "p95": pct(finite, 0.95), "max": pct(finite, 1.0)}
                if finite
                else {}
            ),
        },
        "hub": hub_summary(samples),
        "idle_memory": idle_memory(tg.ssh, idle) if tg.ssh and idle else {},
        # Why trainees failed, as the VM logged it (the hub's and servers' errors and warnings).
        "vm_errors": vm_errors(tg.ssh, time.monotonic() - t0[0]) if tg.ssh and failed else [],
        "trainee_runs": [asdict(t) for t in runs],
    }


def table(res: dict[str, Any]) -> str:
    lines = [f"class bench: {res['trainees']} trainees at {res['url']}  ({res.get('machine', '')})"]
    lines.append(f"{'phase':<12}{'p50 s':>8}{'p95 s':>8}{'max s':>8}")
    for name, p in res["phases"].items():
        lines.append(f"{name:<12}{p['p50']:>8}{p['p95']:>8}{p['max']:>8}")
    lp, lc = res["login_page"], res["login_to_cell"]
    lines += [
        f"first cell answered: {res['first_cell_s']} s, last: {res['last_cell_s']} s",
        f"login to cell: p50 {lc.get('p50')} s, p95 {lc.get('p95')} s",
        f"failures: {len(res['failures'])}   429 retries (hub limits): {res['retries_429']}   "
        f"kernel socket reconnects: {res.get('kernel_reconnects', 0)}",
        f"login page under load: p50 {lp.get('p50')} s, p95 {lp.get('p95')} s, "
        f"max {lp.get('max')} s, failed {lp['failed']}/{lp['samples']}",
    ]
    lines += [f"hub {k}: {v}" for k, v in res["hub"].items()]
    lines += [f"idle server {k}: {v}" for k, v in res["idle_memory"].items()]
    lines += [f"boot to login page {k}: {v}" for k, v in res.get("boot_to_login_page", {}).items()]
    lines += [f"warm {k}: {v}" for k, v in res.get("warm", {}).items()]
    lines += [f"  FAILED {f['user']}: {f['error']}" for f in res["failures"]]
    if res.get("vm_errors"):
        lines.append("the VM's last errors and warnings (all in the results file):")
        lines += [f"  {line}" for line in res["vm_errors"][:15]]
    if res.get("journal"):
        lines.append(f"the VM's journal of the run: {res['journal']}")
    return "\n".join(lines)


def read_sheet(path: Path, config: Path | None = None) -> list[tuple[str, str]]:
    """Accounts of a bakery credentials sheet: the config's trainees if given, else every row."""
    with path.open(newline="") as fh:
        rows = [(row["username"], row["password"]) for row in csv.DictReader(fh)]
    if config is None:
        return rows
    from bakery.config.workshop import load_config

    trainees = load_config(config).users.trainees()
    return sorted((r for r in rows if r[0] in trainees), key=lambda r: trainees.index(r[0]))


_say = ConsoleReporter(sys.stderr, live=False, prefix="[vm] ")  # a state once, not per poll


def _e2e_path() -> None:
    """The e2e tier's harness (base image, golden bake, user image, configs) on sys.path."""
    if str(E2E) not in sys.path:
        sys.path.insert(0, str(E2E))


# The class of the systemd benchmark: the e2e tier's workshop as it was when the results in the
# README were measured (its later additions -- R, course material, an ACME server on the test
# host -- are not what a class's first minute is about, and would change the golden image).
CLASS_CONFIG = """\
name: {name}
os: debian-12
ends: 2099-01-01T00:00:00Z
users:
  count: 2
  admins: [teacher]
spawner:
  kind: systemd
  mem_limit: 512M
  idle_cull_minutes: 0
tls:
  mode: self-signed
ssh:
  authorized_keys:
    - {key}
"""


def bench_config(work: Path, n: int, spawner: str, warm: bool = False) -> Path:
    """The e2e tier's workshop (systemd, or docker with the e2e user image) for ``n`` trainees;
    ``warm``: with `warm: boot` (the same golden image: warm is a boot-stage setting)."""
    _e2e_path()
    from e2e_harness import e2e_ssh_key  # type: ignore[import-not-found]

    key = e2e_ssh_key().with_suffix(".pub").read_text().strip()
    config = work / "workshop.yaml"
    if spawner == "docker":
        import userimage  # type: ignore[import-not-found]
        from test_docker import CONFIG as DOCKER  # type: ignore[import-not-found]

        archive = userimage.ensure_user_image()
        settings = {"path": str(archive), "format": "rootfs", **userimage.IMPORT_SETTINGS}
        text = DOCKER.format(
            name="bench-docker",
            image=f"bakery/e2e-notebook:{archive.parent.name[:12]}",
            archive=json.dumps(settings),
            key=key,
        )
    else:
        text = CLASS_CONFIG.format(name="e2e-workshop", key=key)
    text = text.replace("count: 2", f"count: {n}", 1)
    config.write_text(text + ("warm: boot\n" if warm else ""))
    return config


@contextlib.contextmanager
def local_vm(
    n: int, memory: str, cpus: int, spawner: str, boot: dict[str, float], warm: bool = False
) -> Iterator[Target]:
    """Boot the e2e golden image (chroot bake, cached) with ``n`` trainees; stop it afterwards.

    ``boot`` gets ``golden_s``: seconds from VM start to the login page.
    """
    _e2e_path()
    import baseimage  # type: ignore[import-not-found]
    from e2e_harness import build_golden, e2e_ssh_key  # type: ignore[import-not-found]

    from bakery.config.workshop import load_config
    from bakery.providers.local import trial
    from bakery.providers.local import vm as localvm

    work = ROOT / "build" / f"class-bench-{spawner}-{n}"
    work.mkdir(parents=True, exist_ok=True)
    config = bench_config(work, n, spawner, warm)
    key = e2e_ssh_key()
    golden = build_golden(baseimage.ensure_base_image(), config)
    start = time.monotonic()
    result = trial.up(
        config,
        image=golden,
        stage="boot",
        https_port=18643,
        ssh_port=12422,
        memory=memory,
        cpus=cpus,
        run_dir=work / "vm",
        progress=_say,
    )
    boot["golden_s"] = round(time.monotonic() - start, 1)
    ssh = [
        "ssh",
        "-p",
        "12422",
        "-i",
        str(key),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        f"{load_config(config).login_user}@127.0.0.1",
    ]
    try:
        accounts = read_sheet(result.credentials, config)
        yield Target(result.url.rstrip("/"), accounts, ssh, verify=False)
    finally:
        localvm.stop_vm(work / "vm", progress=_say)


def sized_memory(n: int, spawner: str) -> str:
    """The memory `bakery size` asks for the class workshop with ``n`` trainees (qemu's -m)."""
    from bakery.config.workshop import load_config
    from bakery.workshop.sizing import hub_estimate

    work = ROOT / "build" / f"class-bench-{spawner}-{n}"
    work.mkdir(parents=True, exist_ok=True)
    return f"{hub_estimate(load_config(bench_config(work, n, spawner))).memory_mib}M"


def wait_warm(tg: Target, n: int, timeout: float) -> dict[str, Any]:
    """Wait until the warm service has every trainee's server ready (its state file on the VM),
    as a class starting at 9:00 with `warm` at 8:30 would, or has finished a pass that left some
    cold (the server limit, failed starts); what it warmed, left cold, and when."""
    assert tg.ssh, "warm is watched over ssh"
    trainees = {user for user, _ in tg.accounts[:n]}
    start, state = time.monotonic(), {}
    while time.monotonic() - start < timeout:
        out = ssh_run(tg.ssh, f"sudo cat {WARM_STATE} 2>/dev/null || true")
        with contextlib.suppress(ValueError):
            state = json.loads(out or "{}")
        seen = set(state.get("warmed", ())) | set(state.get("cold", {}))
        if trainees <= set(state.get("warmed", ())) or ("at" in state and trainees <= seen):
            break
        time.sleep(10)
    warmed = trainees & set(state.get("warmed", ()))
    _say(f"warm: {len(warmed)} of {n} servers ready")
    return {
        "ready_s_after_login_page": round(time.monotonic() - start, 1),
        "warmed": len(warmed),
        "cold": {k: v for k, v in state.get("cold", {}).items() if k in trainees - warmed},
    }


def from_scratch(n: int, memory: str, cpus: int, spawner: str) -> float:
    """Seconds from VM start to the login page for the full stage on the stock Debian image."""
    _e2e_path()
    import baseimage  # type: ignore[import-not-found]

    from bakery.providers.local import trial
    from bakery.providers.local import vm as localvm

    work = ROOT / "build" / f"class-bench-{spawner}-{n}"
    config = bench_config(work, n, spawner)
    start = time.monotonic()
    try:
        trial.up(
            config,
            image=baseimage.ensure_base_image(),
            stage="full",
            https_port=18653,
            ssh_port=12432,
            memory=memory,
            cpus=cpus,
            timeout=3600,
            run_dir=work / "vm-full",
            progress=_say,
        )
        return round(time.monotonic() - start, 1)
    finally:
        localvm.stop_vm(work / "vm-full", progress=_say)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", "--trainees", type=int, default=10)
    ap.add_argument("--url", help="a running hub (https://HOST); default: boot the local VM")
    ap.add_argument("--credentials", type=Path, help="the credentials sheet (with --url)")
    ap.add_argument("--config", type=Path, help="workshop.yaml: only its trainees log in")
    ap.add_argument("--ssh", help="ssh destination of the hub's VM, for its CPU and memory")
    ap.add_argument("--ssh-key", type=Path)
    ap.add_argument("--insecure", action="store_true", help="accept a self-signed certificate")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per trainee phase")
    ap.add_argument("--idle", type=float, default=60, help="idle seconds before memory is read")
    ap.add_argument("--memory", help="local VM memory (default: what `bakery size` asks)")
    ap.add_argument("--cpus", type=int, default=2, help="local VM vCPUs")
    ap.add_argument(
        "--spawner",
        choices=("systemd", "docker"),
        default="systemd",
        help="local VM: the e2e workshop's spawner",
    )
    ap.add_argument(
        "--warm",
        action="store_true",
        help="local VM: `warm: boot`, the class waits until every server is warm",
    )
    ap.add_argument("--warm-timeout", type=float, default=3600, help="seconds to wait for warm")
    ap.add_argument(
        "--compare-scratch",
        action="store_true",
        help="local VM: then boot the stock image with the full stage, for the ratio",
    )
    ap.add_argument("--machine", default="", help="what it ran on, for the record")
    ap.add_argument("--out", type=Path, help="JSON results (default build/class-bench-N.json)")
    a = ap.parse_args(argv)
    name = f"class-bench-{a.trainees}" if a.url else f"class-bench-{a.spawner}-{a.trainees}"
    name += "-warm" if a.warm else ""
    out = a.out or ROOT / "build" / f"{name}.json"
    if a.url:
        if a.credentials is None:
            ap.error("--url needs --credentials (the workshop's credentials sheet)")
        ssh = None
        if a.ssh:
            ssh = [
                "ssh",
                "-o",
                "BatchMode=yes",
                *(["-i", str(a.ssh_key)] if a.ssh_key else []),
                a.ssh,
            ]
        accounts = read_sheet(a.credentials, a.config)
        res = run(
            Target(a.url.rstrip("/"), accounts, ssh, verify=not a.insecure),
            a.trainees,
            a.timeout,
            a.idle,
        )
    else:
        boot: dict[str, float] = {}
        memory = a.memory or sized_memory(a.trainees, a.spawner)
        with local_vm(a.trainees, memory, a.cpus, a.spawner, boot, a.warm) as tg:
            warmed = wait_warm(tg, a.trainees, a.warm_timeout) if a.warm else {}
            res = run(tg, a.trainees, a.timeout, a.idle)
            if res["failures"]:  # the whole story, before the VM goes
                res["journal"] = save_journal(tg.ssh, out.with_suffix(".journal.gz"))
        if a.compare_scratch:  # after the class VM stopped: one VM at a time
            boot["scratch_s"] = from_scratch(a.trainees, memory, a.cpus, a.spawner)
            boot["ratio_percent"] = round(100 * boot["golden_s"] / boot["scratch_s"], 1)
        res["spawner"] = a.spawner
        res["boot_to_login_page"] = boot
        res["warm"] = warmed
        res["vm"] = {"vcpus": a.cpus, "memory": memory, "sized_by_bakery": a.memory is None}
        res["machine"] = a.machine or f"local VM: {a.cpus} vCPU / {memory} under qemu"
    res.setdefault("machine", a.machine)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(table(res))
    print(f"results: {out}")
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
