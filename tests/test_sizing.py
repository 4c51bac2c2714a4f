"""`bakery size`: the documented rules, worked through by hand."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from bakery.config.workshop import Workshop, parse_config
from bakery.errors import UsageError
from bakery.topology import cluster_estimate, estimate_workshop, size_estimate
from bakery.workshop.sizing import (
    PER_USER_MEMORY,
    estimate,
    servers_held,
    smallest_flavor,
    workers_for,
)


def flavor(guest_mib: int) -> int:
    """The VM memory whose kernel leaves ``guest_mib`` (KERNEL_SHARE, measured)."""
    from bakery.workshop.sizing import KERNEL_SHARE

    return math.ceil(guest_mib / (1 - KERNEL_SHARE))


def test_rules_for_a_class_of_30() -> None:
    need = estimate(30, data_gb=0.05, concurrency=1.0, mem_limit="2G")
    # 1 GiB base + 30 x (160 MiB measured + 5 x 51.2 MiB), and what the VM's kernel keeps
    assert need.memory_mib == flavor(1024 + 30 * 416) == 13922
    assert (need.active, need.per_server_mib) == (30, 416)
    assert need.vcpus == 8  # one per four active trainees
    assert need.disk_gb == 37  # 20 + 30 x 0.55, rounded up
    assert need.worst_case_memory_mib == flavor(1024 + 30 * 2048)


def test_mem_limit_caps_and_concurrency_scales() -> None:
    capped = estimate(10, data_gb=10, mem_limit="1G")
    assert capped.memory_mib == flavor(1024 + 10 * 1024)
    half = estimate(40, data_gb=0, concurrency=0.5)
    assert half.memory_mib == flavor(1024 + 20 * 160) and half.vcpus == 5
    assert estimate(1).vcpus == 2


def test_workshop_split_over_servers() -> None:
    cfg = parse_config(
        "name: ab\nusers: {count: 60, admins: [boss]}\nopenstack: {count: 2}\n", Path("w")
    )
    need = estimate_workshop(cfg)
    assert (need.trainees, need.admins, need.users) == (30, 1, 31)  # the admin is on each server
    assert need.memory_mib == estimate(31).memory_mib


def test_smallest_flavor_prefers_fewest_cpus_then_ram() -> None:
    need = estimate(8, data_gb=0)
    flavors = [
        {"name": "big", "ram": 65536, "vcpus": 16, "disk": 200},
        {"name": "fits", "ram": 4096, "vcpus": 2, "disk": 40},
        {"name": "roomier", "ram": 8192, "vcpus": 2, "disk": 40},
        {"name": "small-disk", "ram": 4096, "vcpus": 2, "disk": 10},
    ]
    assert smallest_flavor(flavors, need)["name"] == "fits"  # type: ignore[index]
    assert smallest_flavor(flavors[3:], need) is None
    assert smallest_flavor(flavors[3:], need, boot_volume=True)["name"] == "small-disk"  # type: ignore[index]


def _cfg(text: str = "") -> Workshop:
    return parse_config("name: ab\nusers: {count: 20, admins: [boss]}\n" + text, Path("w"))


def test_admins_are_reported_apart_from_trainees() -> None:
    cfg = parse_config(
        "name: ab\nusers: {count: 60, admins: [boss, chef]}\nopenstack: {count: 2}\n", Path("w")
    )
    need = estimate_workshop(cfg)
    assert (need.trainees, need.admins) == (30, 2)
    assert "trainees per server: 30" in need.lines()
    assert "admins per server: 2" in need.lines()
    assert need.as_dict()["trainees_per_server"] == 30


def test_command_line_values_override_the_config() -> None:
    cfg = _cfg("openstack: {data_gb_per_user: 0, concurrency: 1.0}\nspawner: {mem_limit: 4G}\n")
    base = size_estimate(cfg)
    more_data = size_estimate(cfg, data_gb=1.0)
    assert more_data.memory_mib > base.memory_mib and more_data.disk_gb > base.disk_gb
    half = size_estimate(cfg, concurrency=0.5)
    assert half.memory_mib < base.memory_mib
    capped = size_estimate(cfg, data_gb=10, mem_limit="512M")
    assert capped.worst_case_memory_mib == flavor(1024 + 21 * 512)
    assert size_estimate(cfg, users=5).trainees == 5
    assert size_estimate(cfg, users=5).admins == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mem_limit": "abc"}, "--mem-limit: 'abc' is not a size"),
        ({"mem_limit": "1M"}, "below 128M"),
        ({"data_gb": math.inf}, "--data-gb inf"),
        ({"data_gb": math.nan}, "--data-gb nan"),
        ({"data_gb": -1.0}, "--data-gb -1.0"),
        ({"concurrency": 0.0}, "--concurrency 0.0"),
        ({"concurrency": math.nan}, "--concurrency nan"),
        ({"concurrency": 2.0}, "--concurrency 2.0"),
    ],
)
def test_bad_sizing_options_are_usage_errors(kwargs: dict[str, Any], message: str) -> None:
    for cfg in (None, _cfg()):
        with pytest.raises(UsageError, match=re.escape(message)):
            size_estimate(cfg, users=3, **kwargs)


def test_size_cli_json_and_overrides(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bakery.cli.main import app

    config = tmp_path / "w.yaml"
    config.write_text("name: ab\nusers: {count: 8, admins: [boss]}\n")
    runner = CliRunner()
    plain = runner.invoke(app, ["size", str(config), "--json"])
    assert plain.exit_code == 0, plain.output
    data = json.loads(plain.output)
    assert data["trainees_per_server"] == 8 and data["admins_per_server"] == 1
    bigger = json.loads(
        runner.invoke(app, ["size", str(config), "--json", "--data-gb", "2"]).output
    )
    assert bigger["memory_mib"] > data["memory_mib"]
    for bad in (["--mem-limit", "abc"], ["--data-gb", "inf"], ["--data-gb", "nan"]):
        result = runner.invoke(app, ["size", str(config), *bad])
        assert result.exit_code == 2, (bad, result.output)
        assert "internal error" not in result.output


def test_the_idle_server_figure_is_the_measured_one() -> None:
    # bakery/sizing.py names the measurement (141-150 MiB per idle server + kernel, peak 152).
    assert PER_USER_MEMORY == 160 * 1024**2


@pytest.mark.parametrize(
    ("memory_mib", "per_server_mib", "held"),
    # 16 GiB: its kernel leaves 15,892 MiB (3 %), which hold 99 servers of 150 MiB past the base.
    [(4096, 416, 7), (1024, 150, 1), (512, 150, 1), (16384, 150, 99)],
)
def test_servers_held_inverts_the_estimate(memory_mib: int, per_server_mib: int, held: int) -> None:
    assert servers_held(memory_mib, per_server_mib) == held


# --- a swarm cluster ------------------------------------------------------------------------------

SWARM = "spawner: {kind: docker}\ncluster: {engine: swarm, workers: 3}\n"


def test_a_swarm_splits_the_rule_over_manager_and_workers() -> None:
    cfg = parse_config("name: ab\nusers: {count: 60, admins: [boss]}\n" + SWARM, Path("w"))
    need = cluster_estimate(cfg)
    # Each worker: a third of the class by the per-trainee rule; no homes on its disk.
    assert (need.worker.trainees, need.worker.admins) == (20, 1)
    assert need.worker.memory_mib == estimate(20, admins=1).memory_mib == flavor(1024 + 21 * 416)
    assert need.worker.vcpus == estimate(20, admins=1).vcpus == 6
    assert need.worker.disk_gb == 20
    # The manager: the base (hub, proxy, NFS), no servers; every home (61 x 0.55 GB) on its disk.
    assert (need.manager.memory_mib, need.manager.vcpus) == (1024, 2)  # the base, no servers
    assert need.manager.disk_gb == math.ceil(20 + 61 * 0.55)
    assert need.manager.per_server_mib == 416  # the hub's limits keep the per-server figure
    assert need.workers == 3
    # `bakery size` and the manager's flavor (openstack.flavor: auto) use the same numbers.
    assert estimate_workshop(cfg) == need.manager
    assert size_estimate(cfg) == need
    assert any(
        "each worker (20 trainees' and 1 admins' servers): 9.8 GiB" in x for x in need.lines()
    )
    assert need.as_dict()["worker"]["memory_mib"] == need.worker.memory_mib


def test_a_manager_that_runs_servers_takes_its_share() -> None:
    cfg = parse_config(
        "name: ab\nusers: {count: 60}\nspawner: {kind: docker}\n"
        "cluster: {engine: swarm, workers: 3, manager_runs_servers: true}\n",
        Path("w"),
    )
    need = cluster_estimate(cfg)
    assert need.worker.trainees == need.manager.trainees == 15  # 60 over 3 workers + the manager
    assert len(cfg.users.admins) == 1  # the default admin, whose server lands on a node too
    assert need.manager.memory_mib == estimate(15, admins=1).memory_mib
    assert need.manager.disk_gb == math.ceil(20 + 61 * 0.55)


def test_workers_needed_for_a_flavor() -> None:
    cfg = parse_config("name: ab\nusers: {count: 60}\n" + SWARM, Path("w"))
    # 4 GiB holds 7 active servers of 416 MiB: 60 need 9 workers; 16 GiB holds 36: 2.
    assert workers_for(cfg, 4096) == 9
    assert workers_for(cfg, 16384) == 2


def test_size_cli_for_a_swarm(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bakery.cli.main import app

    config = tmp_path / "w.yaml"
    config.write_text("name: ab\nusers: {count: 30}\n" + SWARM)
    runner = CliRunner()
    text = runner.invoke(app, ["size", str(config)])
    assert text.exit_code == 0, text.output
    assert "servers spread over 3 workers" in text.output
    assert "manager (hub, proxy, NFS, every home): 1.0 GiB, 2 vCPUs" in text.output
    data = json.loads(runner.invoke(app, ["size", str(config), "--json"]).output)
    assert data["workers"] == 3
    assert data["worker"]["trainees_per_server"] == 10
    assert data["manager"]["memory_mib"] == 1024
