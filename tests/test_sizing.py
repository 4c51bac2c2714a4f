"""`bakery size`: the documented rules, worked through by hand."""

from __future__ import annotations

from pathlib import Path

from bakery.config import parse_config
from bakery.sizing import estimate, estimate_workshop, smallest_flavor


def test_rules_for_a_class_of_30() -> None:
    need = estimate(30, data_gb=0.05, concurrency=1.0, mem_limit="2G")
    # 1 GiB base + 30 x (200 MiB + 5 x 51.2 MiB)
    assert need.memory_mib == 1024 + 30 * 456
    assert need.vcpus == 8  # one per four active trainees
    assert need.disk_gb == 37  # 20 + 30 x 0.55, rounded up
    assert need.worst_case_memory_mib == 1024 + 30 * 2048


def test_mem_limit_caps_and_concurrency_scales() -> None:
    capped = estimate(10, data_gb=10, mem_limit="1G")
    assert capped.memory_mib == 1024 + 10 * 1024
    half = estimate(40, data_gb=0, concurrency=0.5)
    assert half.memory_mib == 1024 + 20 * 200 and half.vcpus == 5
    assert estimate(1).vcpus == 2


def test_workshop_split_over_servers() -> None:
    cfg = parse_config(
        "name: ab\nusers: {count: 60, admins: [boss]}\nopenstack: {count: 2}\n", Path("w")
    )
    assert estimate_workshop(cfg).users == 31  # 30 trainees and the admin per server


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
