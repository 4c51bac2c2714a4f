"""bakery's config for the trainees' servers: their wait for the hub's API under a class's load.

The file runs in a real tornado (a subprocess: AsyncHTTPClient's configuration is process-wide),
loaded the way Jupyter loads a config file, then configured again the way JupyterHub 5.5's
single-user extension does (jupyterhub/singleuser/extension.py, ``_default_client``: it calls
``AsyncHTTPClient.configure(AsyncHTTPClient.configured_class(), defaults=...)``, which would put
tornado's 20 s back if bakery had set mere defaults).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_render import MakeWorkshop, files_of, load_hub_config

from bakery.layout import SERVER_CONFIG, SERVER_CONFIG_DIR
from bakery.vm.userdata import build_cloud_config

PROBE = textwrap.dedent(
    """
    import asyncio, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from traitlets.config.loader import PyFileConfigLoader
    from tornado.httpclient import AsyncHTTPClient

    for _ in range(2):  # the server app and its extension may each read it
        cfg = PyFileConfigLoader("jupyter_server_config.py", path=sys.argv[1]).load_config()
    print(cfg.MappingKernelManager.kernel_info_timeout, cfg.KernelRestarter.stable_start_time)
    AsyncHTTPClient.configure(AsyncHTTPClient.configured_class(), defaults={"validate_cert": True})

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(1.5)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"late but fine")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    async def main():
        client = AsyncHTTPClient()
        d = client.defaults
        print(d["request_timeout"], d["connect_timeout"], d["validate_cert"])
        r = await client.fetch(f"http://127.0.0.1:{httpd.server_port}/")
        print(r.body.decode())
        try:  # a request's own timeout still wins over the defaults
            await client.fetch(f"http://127.0.0.1:{httpd.server_port}/", request_timeout=0.3)
        except Exception as exc:
            print(type(exc).__name__)

    asyncio.run(main())
    """
)


def test_servers_wait_for_the_hub_and_their_kernels_after_the_extension_configures(
    make_workshop: MakeWorkshop, tmp_path: Path
) -> None:
    cfg, _ = make_workshop("name: intro\n")
    shipped = files_of(build_cloud_config(cfg, stage="bake"))[SERVER_CONFIG]  # what the VM gets
    (tmp_path / "jupyter_server_config.py").write_text(shipped)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    # A new kernel's 5 minutes (jupyter_server's connection waits follow the kernel manager's),
    # and new ports when it dies within them (jupyter_client's restarter: AsyncIOLoopKernelRestarter
    # is a KernelRestarter, its kernel manager its parent, so the section reaches it).
    assert out == ["300 300", "120 120 True", "late but fine", "HTTPTimeoutError"]


@pytest.mark.parametrize("spawner", ["systemd", "docker"])
def test_every_server_is_pointed_at_the_config(
    make_workshop: MakeWorkshop,
    spawner: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg, accounts = make_workshop(f"name: intro\nspawner: {{kind: {spawner}}}\n")
    bake = files_of(build_cloud_config(cfg, stage="bake"))
    assert "c.MappingKernelManager.kernel_info_timeout = 300" in bake[SERVER_CONFIG]
    ns = load_hub_config(cfg, accounts, tmp_path, monkeypatch)
    assert ns["Spawner.environment"]["JUPYTER_CONFIG_PATH"] == SERVER_CONFIG_DIR
    mounts = ns.get("DockerSpawner.read_only_volumes")  # the same path in a container
    assert mounts == ({SERVER_CONFIG_DIR: SERVER_CONFIG_DIR} if spawner == "docker" else None)
