"""A warmed server's first kernel, started ahead (cloudinit/jupyter_server_config.py.j2).

Each test runs a real jupyter_server with a real ipykernel (the versions the hub's lock installs)
on loopback, with the config file as the VM ships it, and talks to it as JupyterLab does: the
REST API for a notebook's session, its kernel's websocket for a cell.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from test_render import MakeWorkshop, files_of

from bakery.layout import SERVER_CONFIG
from bakery.vm.userdata import build_cloud_config

TOKEN = "t" * 32
CELL = (
    "import os, helper\n"
    "(os.getpid(), os.getcwd(), __session__, os.environ['JPY_SESSION_NAME'], helper.VALUE)"
)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    root: Path

    def api(self, method: str, path: str, body: Any = None) -> Any:
        r = requests.request(
            method, f"{self.url}/api/{path}", json=body, timeout=60,
            headers={"Authorization": f"token {TOKEN}"},
        )  # fmt: skip
        r.raise_for_status()
        return r.json() if r.content else None

    def kernel_pids(self) -> list[int]:
        """The server's kernel processes (its children running ipykernel)."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid), "-f", "ipykernel_launcher"],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        return sorted(int(p) for p in out.split())

    def notebook(self, path: str) -> str:
        """Open ``path`` as JupyterLab does (a session); its kernel's id."""
        body = {"path": path, "name": Path(path).name, "type": "notebook",
                "kernel": {"name": "python3"}}  # fmt: skip
        return str(self.api("POST", "sessions", body)["kernel"]["id"])

    def run(self, kernel_id: str, code: str) -> tuple[Any, int]:
        """``code``'s result (its text, evaluated) and execution count, over the kernel's socket."""
        ws = websocket.create_connection(
            f"{self.url.replace('http', 'ws')}/api/kernels/{kernel_id}/channels?token={TOKEN}",
            timeout=60,
        )
        try:
            msg_id = uuid.uuid4().hex
            header = {"msg_id": msg_id, "username": "ada", "session": uuid.uuid4().hex,
                      "msg_type": "execute_request", "version": "5.3"}  # fmt: skip
            content = {"code": code, "silent": False, "store_history": True,
                       "user_expressions": {}, "allow_stdin": False}  # fmt: skip
            message = {"header": header, "parent_header": {}, "metadata": {},
                       "content": content, "channel": "shell", "buffers": []}  # fmt: skip
            ws.send(json.dumps(message))
            while True:
                msg = json.loads(ws.recv())
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["header"]["msg_type"] == "error":
                    raise AssertionError(f"cell raised {msg['content']['evalue']}")
                if msg["header"]["msg_type"] == "execute_result":
                    import ast

                    text = msg["content"]["data"]["text/plain"]
                    return ast.literal_eval(text), int(msg["content"]["execution_count"])
        finally:
            ws.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def shipped_config(make_workshop: MakeWorkshop, tmp_path: Path) -> Path:
    """The server config file exactly as the VM gets it, in a folder of its own."""
    cfg, _ = make_workshop("name: intro\n")
    folder = tmp_path / "config"
    folder.mkdir()
    shipped = files_of(build_cloud_config(cfg, stage="bake"))[SERVER_CONFIG]
    (folder / "jupyter_server_config.py").write_text(shipped)
    return folder


@contextlib.contextmanager
def server(tmp_path: Path, config: Path, *, warm: bool) -> Iterator[Server]:
    root = tmp_path / "home"
    (root / "course").mkdir(parents=True)
    (root / "course" / "helper.py").write_text("VALUE = 7\n")  # beside the course's notebook
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY"))}
    env |= {"JUPYTER_CONFIG_PATH": str(config), "JUPYTER_RUNTIME_DIR": str(tmp_path / "run"),
            "JUPYTER_DATA_DIR": str(tmp_path / "data"), "HOME": str(root)}  # fmt: skip
    if warm:
        env["BAKERY_WARM_KERNEL"] = "1"
    port = _free_port()
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}",
               "--ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
               f"--ServerApp.root_dir={root}"]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--allow-root")
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    s = Server(f"http://127.0.0.1:{port}", proc, log, root)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(requests.RequestException):
                s.api("GET", "status")
                break
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        yield s
    finally:
        proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down, the hidden one too
        proc.wait(timeout=60)


def wait_for(what: Any, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := what()):
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.2)
    return found


def test_a_warmed_servers_first_notebook_gets_the_kernel_started_ahead(
    tmp_path: Path, shipped_config: Path
) -> None:
    with server(tmp_path, shipped_config, warm=True) as s:
        (ahead,) = wait_for(s.kernel_pids)  # running before anyone opened anything
        assert s.api("GET", "kernels") == []  # and not in the trainee's list of kernels
        kernel_id = s.notebook("course/intro.ipynb")
        course = str(s.root / "course")
        notebook = f"{course}/intro.ipynb"
        # That same process, moved to the notebook's folder and session; the first cell is In [1].
        assert s.run(kernel_id, CELL) == ((ahead, course, notebook, notebook, 7), 1)
        assert [k["id"] for k in s.api("GET", "kernels")] == [kernel_id]
        # A restart starts a new process where the notebook is, as for any notebook's kernel.
        s.api("POST", f"kernels/{kernel_id}/restart")
        (pid, cwd, session, _, _), _ = s.run(kernel_id, CELL)
        assert pid != ahead and (cwd, session) == (course, notebook)
        # The next notebook starts its own kernel, as usual.
        other = s.notebook("other.ipynb")
        (pid2, cwd2), _ = s.run(other, "import os\n(os.getpid(), os.getcwd())")
        assert other != kernel_id and pid2 not in (ahead, pid) and cwd2 == str(s.root)
    assert "started ahead, is now for 'course'" in s.log.read_text()
    assert not s.kernel_pids()  # the server's stop took its kernels


def test_a_kernel_ahead_that_died_is_replaced_by_a_new_one(
    tmp_path: Path, shipped_config: Path
) -> None:
    with server(tmp_path, shipped_config, warm=True) as s:
        (ahead,) = wait_for(s.kernel_pids)
        time.sleep(3)  # started and connected: its death is the restarter's to notice
        os.kill(ahead, signal.SIGKILL)
        kernel_id = s.notebook("course/intro.ipynb")
        (pid, cwd, *_), count = s.run(kernel_id, CELL)
        assert pid != ahead and cwd == str(s.root / "course") and count == 1


def test_a_server_nobody_warmed_starts_no_kernel_until_asked(
    tmp_path: Path, shipped_config: Path
) -> None:
    """The same file without BAKERY_WARM_KERNEL: jupyter_server's own kernel manager."""
    with server(tmp_path, shipped_config, warm=False) as s:
        time.sleep(5)  # a warmed server's kernel is there within a second or two
        assert s.kernel_pids() == []
        kernel_id = s.notebook("course/intro.ipynb")
        (_, cwd, *_), count = s.run(kernel_id, CELL)
        assert cwd == str(s.root / "course") and count == 1
    assert "started ahead" not in s.log.read_text()


def test_the_test_servers_are_the_versions_the_hub_installs() -> None:
    from importlib.metadata import version

    lock_file = Path(__file__).parents[1] / "bakery/locks/hub-systemd-py3.11.json"
    lock = json.loads(lock_file.read_text())
    pinned = {p["name"]: p["version"] for p in lock["packages"]}
    for name in ("jupyter-server", "ipykernel", "jupyter-client"):
        assert version(name) == pinned[name], name


@pytest.mark.parametrize(
    ("text", "stage", "shipped"),
    [
        ("", "bake", True),  # a golden image may boot with any warm
        ("", "full", False),  # one workshop without warm: Nova's 64 KiB at 300 accounts
        ("warm: boot\n", "full", True),
    ],
)
def test_the_kernel_ahead_is_in_every_golden_image_and_a_full_stage_with_warm(
    make_workshop: MakeWorkshop, text: str, stage: str, shipped: bool
) -> None:
    cfg, accounts = make_workshop("name: intro\n" + text)
    files = files_of(build_cloud_config(cfg, stage=stage, accounts=accounts))  # type: ignore[arg-type]
    assert ("_AheadKernels" in files[SERVER_CONFIG]) is shipped
    assert "kernel_info_timeout = 300" in files[SERVER_CONFIG]
