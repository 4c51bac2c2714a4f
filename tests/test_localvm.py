"""The local VM without a VM: memory sizes, the hub wait on a fake console, status, ports."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pycdlib
import pytest
import yaml
from helpers import require_tool

from bakery.errors import LocalVmError, ToolMissing, UsageError
from bakery.providers.local import cluster as local_cluster
from bakery.providers.local import health, qemu, trial
from bakery.providers.local import vm as localvm

GIB = 1024


@pytest.mark.parametrize(
    ("memory", "mb"),
    [("4G", 4 * GIB), ("1G", GIB), ("3072M", 3072), ("2.5GiB", 2560), ("1048576K", GIB),
     ("2gb", 2 * GIB), (" 4G ", 4 * GIB), ("1024MiB", GIB)],
)  # fmt: skip
def test_memory_with_a_unit(memory: str, mb: int) -> None:
    assert localvm.memory_mb(memory) == mb


@pytest.mark.parametrize(
    ("memory", "error"),
    [
        ("512K", "at least 1G"),  # once asked qemu for 512 GiB
        ("512M", "at least 1G"),
        ("0.5G", "at least 1G"),
        ("1023M", "at least 1G"),
        ("4096", "give a unit"),  # MiB to qemu, bytes to bakery's sizes: ambiguous
        ("4", "give a unit"),
        ("4096B", "give a unit"),
        ("", "give a unit"),
        ("1.2.3G", "not a size"),
        ("4X", "give a unit"),
        ("1E", "give a unit"),
    ],
)
def test_memory_refused(memory: str, error: str) -> None:
    with pytest.raises(UsageError, match=rf"^--memory.*{error}") as exc:
        localvm.memory_mb(memory)
    assert exc.value.exit_code == 2


def test_memory_beyond_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localvm, "host_memory", lambda: 8 * 1024**3)
    assert localvm.memory_mb("8G") == 8 * GIB
    with pytest.raises(UsageError, match=r"--memory 9G: this machine has only 8\.0G"):
        localvm.memory_mb("9G")


# --- the wait for the hub, on a console file that grows as the "VM" boots ----------------------

BOOT = [
    "[    0.000000] Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org)",
    "cloud-init[201]: Cloud-init v. 22.4.2 running 'init-local' at Fri, 27 Nov 2026.",
    "cloud-init[240]: Cloud-init v. 22.4.2 running 'init' at Fri, 27 Nov 2026.",
    "cloud-init[300]: Cloud-init v. 22.4.2 running 'modules:config' at Fri, 27 Nov 2026.",
    "cloud-init[320]: Cloud-init v. 22.4.2 running 'modules:final' at Fri, 27 Nov 2026.",
    "cloud-init[320]: bakery: attempt 1 of 3 failed: curl -fsSL https://example.org/x",
]
DONE = "cloud-init[320]: bakery: demo boot stage done after 90.01 seconds"
FAILED = (
    "cloud-init[320]: cc_scripts_user.py[WARNING]: Failed to run module scripts-user "
    "(scripts in /var/lib/cloud/instance/scripts)"
)


class Recorder:
    """A reporter keeping (message, transient) pairs."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, bool]] = []

    def __call__(self, message: str, *, transient: bool = False) -> None:
        self.reports.append((message, transient))

    def live(self) -> list[str]:
        return [m for m, transient in self.reports if transient]


class FakeVm:
    """A started VM whose console gains one line per look, and a hub that answers on cue."""

    def __init__(self, run_dir: Path, lines: list[str], hub: Callable[[int], int | None]) -> None:
        self.state = localvm.VmState(
            run_dir=str(run_dir), image="base.qcow2", accel="tcg", accel_reason="test",
            https_port=18443, http_port=18444, ssh_port=12222, memory_mb=GIB, cpus=1, pid=0,
            started_at=0.0, extra={"workshop": "demo", "login_user": "debian"},
        )  # fmt: skip
        self.lines, self.hub, self.looks, self.alive = iter(lines), hub, 0, True
        self.console = run_dir / "serial.log"
        self.console.write_text("")

    def https_status(self, port: int, *_: object, **__: object) -> int | None:
        assert port == self.state.https_port
        self.looks += 1
        with self.console.open("a") as out:
            out.write(next(self.lines, "") + "\r\n")
        return self.hub(self.looks)


@pytest.fixture
def fake_vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeVm]]:
    def make(lines: list[str], hub: Callable[[int], int | None] = lambda _: None) -> FakeVm:
        vm = FakeVm(tmp_path, lines, hub)
        monkeypatch.setattr(health, "_https_status", vm.https_status)
        monkeypatch.setattr(qemu, "alive", lambda pid: vm.alive)
        return vm

    yield make


def test_wait_reports_each_stage_live_until_the_hub_answers(
    fake_vm: Callable[..., FakeVm],
) -> None:
    vm = fake_vm([*BOOT, DONE], hub=lambda look: 200 if look > len(BOOT) + 2 else None)
    progress = Recorder()
    seconds = health.wait_for_hub(vm.state, progress=progress, poll=0, workshop="demo")
    assert seconds > 0
    assert list(dict.fromkeys(progress.live())) == [
        "waiting for the VM's console",
        "kernel booting",
        "cloud-init: local stage (finding its datasource)",
        "cloud-init: network stage (users, files, ssh)",
        "cloud-init: config stage",
        "cloud-init: final stage (packages, runcmd)",
        "waiting for https://127.0.0.1:18443/hub/login (no answer)",
    ]
    assert ("cloud-init finished; waiting for the hub", False) in progress.reports


def test_a_console_failure_ends_the_wait_with_its_lines(fake_vm: Callable[..., FakeVm]) -> None:
    vm = fake_vm([*BOOT, FAILED, DONE, *["more"] * 50])
    with pytest.raises(LocalVmError) as exc:
        health.wait_for_hub(vm.state, timeout=600, poll=0, workshop="demo")
    message = str(exc.value)
    assert message.startswith("cloud-init reported a failure on the serial console.")
    assert "Failed to run module scripts-user" in message
    assert "attempt 1 of 3" not in message  # a retried download is not the failure
    assert "bakery try --stop" in message
    assert vm.looks == len(BOOT) + 2  # the look after the failure line was written: no later one


def test_the_hub_wins_over_a_failure_seen_in_the_same_look(
    fake_vm: Callable[..., FakeVm],
) -> None:
    vm = fake_vm([FAILED], hub=lambda _: 200)
    assert health.wait_for_hub(vm.state, poll=0, workshop="demo") > 0


def test_another_workshops_end_is_not_this_ones(
    fake_vm: Callable[..., FakeVm], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "AFTER_FINISH_GRACE", 0.0)
    vm = fake_vm([DONE.replace("demo", "demo-2"), *["x"] * 5])
    with pytest.raises(LocalVmError, match=r"did not come up within 0 s"):
        health.wait_for_hub(vm.state, timeout=0, poll=0, workshop="demo")


def test_finished_but_no_hub_gives_up_after_the_grace(
    fake_vm: Callable[..., FakeVm], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "AFTER_FINISH_GRACE", 0.0)
    vm = fake_vm([DONE, "x", "x"], hub=lambda _: 502)
    with pytest.raises(LocalVmError, match=r"cloud-init finished but .* \(last: 502\)"):
        health.wait_for_hub(vm.state, timeout=600, poll=0.01, workshop="demo")


def test_qemu_gone_ends_the_wait_with_the_console_tail(fake_vm: Callable[..., FakeVm]) -> None:
    vm = fake_vm(BOOT[:2])
    vm.alive = False
    with pytest.raises(LocalVmError, match=r"qemu exited before the hub came up") as exc:
        health.wait_for_hub(vm.state, poll=0, workshop="demo")
    assert "Linux version" in str(exc.value)


def test_a_kernel_panic_is_a_failure(fake_vm: Callable[..., FakeVm]) -> None:
    vm = fake_vm([BOOT[0], "[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs"])
    with pytest.raises(LocalVmError, match="Kernel panic"):
        health.wait_for_hub(vm.state, poll=0, workshop="demo")


# --- state, status, start ------------------------------------------------------------------------


def test_state_is_saved_privately_and_read_back(fake_vm: Callable[..., FakeVm]) -> None:
    vm = fake_vm([*BOOT, DONE])
    vm.state.save()
    saved = Path(vm.state.run_dir) / "state.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert localvm.VmState.load(saved.parent) == vm.state


def test_status_reads_the_console_with_the_workshops_marker(
    fake_vm: Callable[..., FakeVm],
) -> None:
    vm = fake_vm([])
    vm.state.save()
    vm.console.write_text("\n".join([*BOOT, FAILED, DONE]) + "\n")
    vm.alive = False
    status = health.vm_status(Path(vm.state.run_dir))
    assert not status.running and status.hub_status is None
    assert status.console.finished and status.console.state == "error"
    text = status.describe()
    assert "modules:final (finished)" in text and "Failed to run module" in text


def test_status_without_a_vm_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LocalVmError, match="no local VM"):
        health.vm_status(tmp_path)


def test_start_refuses_a_busy_port(tmp_path: Path) -> None:
    require_tool("qemu-system-x86_64")
    qemu_img = require_tool("qemu-img")
    image = tmp_path / "img.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(image), "1G"], check=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(LocalVmError, match="already in use"):
            localvm.start_vm(
                image=image, user_data=b"", run_dir=tmp_path / "run", ssh_port=port, memory="1G"
            )
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_start_refuses_a_bad_memory_before_anything_else(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--memory 512K"):
        localvm.start_vm(image=tmp_path / "none.qcow2", user_data=b"", run_dir=tmp_path,
                         memory="512K")  # fmt: skip


# --- qemu as a process ---------------------------------------------------------------------------


def test_alive_means_a_qemu_process() -> None:
    assert not qemu.alive(0)
    assert not qemu.alive(os.getpid())  # running, but python, not qemu (a recycled pid)


def test_a_missing_tool_names_its_package() -> None:
    with pytest.raises(ToolMissing, match=r"no-such-qemu not found.*apt-get install qemu-x"):
        qemu.need("no-such-qemu", "qemu-x")


def test_qmp_speaks_the_protocol(tmp_path: Path) -> None:
    """Greeting, capabilities, then the command; events in between are skipped."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "qmp.sock"))
    server.listen(1)
    seen: list[dict[str, object]] = []

    def monitor() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rwb") as io:
            io.write(b'{"QMP": {"version": {}}}\n')
            io.flush()
            for reply in (b'{"return": {}}\n', b'{"event": "RESET"}\n{"return": {"status": 1}}\n'):
                seen.append(json.loads(io.readline()))
                io.write(reply)
                io.flush()

    thread = threading.Thread(target=monitor)
    thread.start()
    try:
        assert qemu.qmp(tmp_path, "query-status", {"x": 1}) == {"status": 1}
    finally:
        thread.join(5)
        server.close()
    assert seen == [
        {"execute": "qmp_capabilities"},
        {"execute": "query-status", "arguments": {"x": 1}},
    ]


def test_qmp_without_a_vm_is_a_local_vm_error(tmp_path: Path) -> None:
    with pytest.raises(LocalVmError, match="cannot reach the VM's QMP socket"):
        qemu.qmp(tmp_path, "system_powerdown")


# --- a cluster's VMs (bakery try --workers N) ----------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "stage", "accel", "vcpus", "cores", "expected"),
    [
        (None, "boot", "tcg", 2, 2, 900.0),  # one VM, as many vCPUs as cores
        (None, "boot", "tcg", 6, 2, 2700.0),  # a manager and two workers share 2 cores
        (None, "boot", "tcg", 6, 16, 900.0),  # a big machine: no slower than one VM
        (None, "full", "kvm", 4, 2, 5400.0),  # KVM halves, the shared cores double
        (1200.0, "boot", "tcg", 6, 2, 1200.0),  # --timeout is the user's word
    ],
)
def test_the_hubs_default_wait_grows_with_the_guests_vcpus_over_the_cores(
    monkeypatch: pytest.MonkeyPatch,
    timeout: float | None,
    stage: str,
    accel: str,
    vcpus: int,
    cores: int,
    expected: float,
) -> None:
    monkeypatch.setattr(trial.os, "cpu_count", lambda: cores)
    state = cluster_state(Path("/nonexistent"), 0)
    state.accel = accel
    assert trial._hub_timeout(timeout, stage, state, vcpus=vcpus) == expected


def cluster_state(run_dir: Path, index: int, *, web: bool = True) -> localvm.VmState:
    return localvm.VmState(
        run_dir=str(run_dir), image="golden.qcow2", accel="tcg", accel_reason="test",
        https_port=18643 if web else 0, http_port=18644 if web else 0, ssh_port=12442 + index,
        memory_mb=2560, cpus=2, cluster_index=index, cluster_port=18643,
    )  # fmt: skip


def option(cmd: list[str], flag: str) -> list[str]:
    """Every value given to ``flag`` on a command line."""
    return [cmd[i + 1] for i, arg in enumerate(cmd) if arg == flag]


def test_a_plain_vm_has_one_nic_and_no_fixed_mac(tmp_path: Path) -> None:
    state = cluster_state(tmp_path, 0)
    state.cluster_port = 0
    cmd = localvm.qemu_command(state)
    assert option(cmd, "-netdev") == [] and option(cmd, "-device") == []
    assert option(cmd, "-nic") == [
        "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:18643-:443,"
        "hostfwd=tcp:127.0.0.1:18644-:80,hostfwd=tcp:127.0.0.1:12442-:22"
    ]


def test_a_cluster_manager_gets_a_second_nic_on_the_multicast_network(tmp_path: Path) -> None:
    cmd = localvm.qemu_command(cluster_state(tmp_path, 0))
    assert option(cmd, "-nic") == [
        "user,model=virtio-net-pci,mac=52:54:00:12:34:0a,hostfwd=tcp:127.0.0.1:18643-:443,"
        "hostfwd=tcp:127.0.0.1:18644-:80,hostfwd=tcp:127.0.0.1:12442-:22"
    ]
    assert option(cmd, "-netdev") == ["socket,id=cluster,mcast=230.0.0.1:18643,localaddr=127.0.0.1"]
    assert option(cmd, "-device") == ["virtio-net-pci,netdev=cluster,mac=52:54:00:77:00:0a"]


def test_a_worker_forwards_only_ssh_and_has_its_own_macs(tmp_path: Path) -> None:
    cmd = localvm.qemu_command(cluster_state(tmp_path, 2, web=False))
    assert option(cmd, "-nic") == [
        "user,model=virtio-net-pci,mac=52:54:00:12:34:0c,hostfwd=tcp:127.0.0.1:12444-:22"
    ]
    assert option(cmd, "-device") == ["virtio-net-pci,netdev=cluster,mac=52:54:00:77:00:0c"]
    assert option(cmd, "-netdev") == ["socket,id=cluster,mcast=230.0.0.1:18643,localaddr=127.0.0.1"]


@pytest.mark.parametrize(
    ("index", "address"), [(0, "10.77.0.10"), (1, "10.77.0.11"), (9, "10.77.0.19")]
)
def test_cluster_network_config_static_address_mtu_1450(index: int, address: str) -> None:
    nic = local_cluster.ClusterNic(index, 18643)
    assert nic.address == address
    doc = yaml.safe_load(nic.network_config())
    assert doc["version"] == 2
    lan, cluster = doc["ethernets"]["lan0"], doc["ethernets"]["cluster0"]
    assert lan["match"] == {"macaddress": nic.lan_mac} and lan["dhcp4"] is True
    assert "addresses" not in lan and "mtu" not in lan
    assert cluster["match"] == {"macaddress": nic.mac}
    assert cluster["addresses"] == [f"{address}/24"] and cluster["mtu"] == 1450
    assert cluster["dhcp4"] is False and "gateway4" not in cluster and "routes" not in cluster


SWARM = """\
name: swarm-try
os: debian-12
users: {count: 2}
spawner: {kind: docker}
tls: {mode: self-signed}
cluster: {engine: swarm, workers: 2}
"""


def iso_file(iso_path: Path, name: str) -> bytes:
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
        return out.getvalue()
    finally:
        iso.close()


@pytest.fixture
def no_qemu(monkeypatch: pytest.MonkeyPatch) -> list[localvm.VmState]:
    """start_vm writes overlays and seeds, but no qemu starts and the hub answers at once."""
    require_tool("qemu-system-x86_64")
    require_tool("qemu-img")
    booted: list[localvm.VmState] = []

    def boot(state: localvm.VmState) -> None:
        state.pid, state.started_at = 4242 + len(booted), 1.0
        state.save()
        booted.append(state)

    monkeypatch.setattr(localvm, "boot_vm", boot)

    def waited(state: localvm.VmState, *, timeout: float, **_: Any) -> float:
        state.extra["waited"] = timeout
        return 12.0

    monkeypatch.setattr(health, "wait_for_hub", waited)
    monkeypatch.setattr(localvm, "host_memory", lambda: 64 * 1024**3)
    return booted


def base_image(tmp_path: Path) -> Path:
    image = tmp_path / "golden.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1G"], check=True)
    return image


def test_try_cluster_boots_a_manager_and_workers_with_the_secret_in_meta_data_only(
    tmp_path: Path, no_qemu: list[localvm.VmState], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bakery.vm import userdata as render

    roles: list[str] = []
    real = render.render_user_data

    def render_role(cfg: Any, **kwargs: Any) -> Any:
        roles.append(kwargs.get("role", "manager"))
        return real(cfg, **kwargs)

    monkeypatch.setattr(render, "render_user_data", render_role)
    # Ports as numbers only (no qemu here): a real cluster may hold them while this runs.
    monkeypatch.setattr(localvm.qemu, "port_free", lambda port: True)
    monkeypatch.setattr(trial.os, "cpu_count", lambda: 2)
    config = tmp_path / "workshop.yaml"
    config.write_text(SWARM)
    run = tmp_path / "run"
    result = trial.up(
        config, image=base_image(tmp_path), stage="boot", https_port=18643, ssh_port=12442,
        run_dir=run, accel="tcg",
    )  # fmt: skip
    assert sorted(roles) == ["manager", "worker"]
    assert [s.run_dir for s in no_qemu] == [str(run), str(run / "worker-1"), str(run / "worker-2")]
    manager, *workers = no_qemu
    assert result.state.workers == [str(run / "worker-1"), str(run / "worker-2")]
    assert localvm.VmState.load(run).workers == result.state.workers  # --stop finds them
    assert (manager.https_port, manager.http_port, manager.ssh_port) == (18643, 18644, 12442)
    assert [(w.https_port, w.http_port, w.ssh_port) for w in workers] == [
        (0, 0, 12443),
        (0, 0, 12444),
    ]
    assert [s.memory_mb for s in no_qemu] == [2560] * 3

    secret_file = run / "cluster-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip()
    assert len(secret) == 64 and int(secret, 16) >= 0
    for i, state in enumerate(no_qemu):
        iso = Path(state.run_dir) / "seed.iso"
        meta = yaml.safe_load(iso_file(iso, "meta-data"))
        assert meta["bakery_cluster_secret"] == secret
        assert meta["bakery_manager"] == "10.77.0.10"
        assert secret.encode() not in iso_file(iso, "user-data")
        net = yaml.safe_load(iso_file(iso, "network-config"))
        assert net["ethernets"]["cluster0"]["addresses"] == [f"10.77.0.{10 + i}/24"]
        assert state.cluster_nic == local_cluster.ClusterNic(i, 18643)
    # Three 2-vCPU guests under emulation on 2 cores: the hub's default wait is 3x one VM's.
    assert result.state.extra["waited"] == 2700.0
    # A second cluster gets a new secret.
    localvm.stop_vm(run)
    trial.up(config, image=base_image(tmp_path), https_port=18643, ssh_port=12442,
                        run_dir=run, workers=1, accel="tcg")  # fmt: skip
    assert secret_file.read_text().strip() != secret
    assert localvm.VmState.load(run).workers == [str(run / "worker-1")]


def test_try_cluster_refuses_a_config_without_swarm(tmp_path: Path) -> None:
    config = tmp_path / "workshop.yaml"
    config.write_text(SWARM.replace("{engine: swarm, workers: 2}", "{engine: none}"))
    with pytest.raises(UsageError, match=r"is not a cluster; set cluster.engine: swarm"):
        trial.up(config, image=tmp_path / "none.qcow2", run_dir=tmp_path / "run", workers=2)
    assert not (tmp_path / "run").exists()


def test_try_cluster_refuses_more_memory_than_the_machine_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(localvm, "host_memory", lambda: 8 * 1024**3)
    config = tmp_path / "workshop.yaml"
    config.write_text(SWARM)
    with pytest.raises(UsageError, match=r"4 VMs need 10\.0G; this machine has only 8\.0G"):
        trial.up(config, image=tmp_path / "x.qcow2", workers=3, run_dir=tmp_path / "r")


def test_try_workers_without_swarm_is_refused_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bakery.cli.main import app

    config = tmp_path / "workshop.yaml"
    config.write_text(SWARM.replace("cluster: {engine: swarm, workers: 2}\n", ""))
    result = CliRunner().invoke(app, ["try", str(config), "--workers", "2", "--image", "x.qcow2"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--workers needs a cluster" in lines[0], result.stderr
    assert "cluster.engine: swarm" in lines[0]


def test_stop_stops_the_workers_first_then_the_manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    manager = cluster_state(run, 0)
    manager.workers = [str(run / "worker-1"), str(run / "worker-2")]
    for i, state in enumerate([manager, cluster_state(run / "worker-1", 1, web=False),
                               cluster_state(run / "worker-2", 2, web=False)]):  # fmt: skip
        Path(state.run_dir).mkdir(parents=True, exist_ok=True)
        state.pid = 100 + i
        state.save()
        (Path(state.run_dir) / "overlay.qcow2").write_text("disk")
    (run / "cluster-secret").write_text("s")
    stopped: list[int] = []
    monkeypatch.setattr(localvm, "_stop_one", lambda run, state, *_: stopped.append(state.pid))
    localvm.stop_vm(run)
    assert stopped == [101, 102, 100]
    assert not list(run.rglob("overlay.qcow2")) and not list(run.rglob("state.json"))
    assert not (run / "cluster-secret").exists()


def test_stop_goes_on_when_a_worker_fails_and_reports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    manager = cluster_state(run, 0)
    manager.workers = [str(run / "worker-1")]  # never started: no state.json
    run.mkdir()
    manager.save()
    stopped: list[str] = []
    monkeypatch.setattr(localvm, "_stop_one", lambda run, state, *_: stopped.append(state.run_dir))
    with pytest.raises(LocalVmError, match=r"no local VM was started from .*worker-1"):
        localvm.stop_vm(run)
    assert stopped == [str(run)]


def test_status_lists_the_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    manager = cluster_state(run, 0)
    manager.workers = [str(run / "worker-1")]
    worker = cluster_state(run / "worker-1", 1, web=False)
    worker.extra["login_user"] = "debian"
    for state in (manager, worker):
        Path(state.run_dir).mkdir(parents=True, exist_ok=True)
        state.save()
    monkeypatch.setattr(qemu, "alive", lambda pid: False)
    text = health.vm_status(run).describe()
    assert text.splitlines()[-1] == (
        "worker 1: not running (pid 0, 10.77.0.11), ssh -p 12443 debian@127.0.0.1, "
        "cloud-init: not started"
    )
