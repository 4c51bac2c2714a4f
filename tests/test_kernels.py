"""Kernels beside Python (`kernels: [r]`) and the first screen (no JupyterLab news pop-up)."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from typing import Any

import pytest
from helpers import config_error, require_tool

from bakery.config.workshop import Workshop
from bakery.layout import HUB_PREFIX, LAB_PAGE_CONFIG, SCRIPT_DIR, SERVER_CONFIG_DIR
from bakery.vm.userdata import build_cloud_config
from bakery.vm.validate import check_workshop
from bakery.workshop.accounts import Account, preview_accounts

MakeWorkshop = Callable[[str], tuple[Workshop, list[Account]]]
SYSTEMD_R = "name: stats\nos: debian-12\nspawner: {kind: systemd}\nkernels: [r]\n"
HUB_CONFIG = "/etc/jupyterhub/jupyterhub_config.py"
ANNOUNCEMENTS = "@jupyterlab/apputils-extension:announcements"


def files_of(doc: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["content"] for f in doc["write_files"]}


def assigned(source: str, target: str) -> Any:
    """The literal value ``source`` (Python) assigns to ``target`` (e.g. ``c.X.y``), else None."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == target:
            return ast.literal_eval(node.value)
    return None


def test_r_installs_irkernel_at_bake_and_registers_it_for_the_hubs_jupyter(
    make_workshop: MakeWorkshop,
) -> None:
    cfg, accounts = make_workshop(SYSTEMD_R)
    bake = build_cloud_config(cfg, stage="bake")
    assert {"r-base-core", "r-cran-irkernel"} <= set(bake["packages"])
    runcmd = bake["runcmd"]
    register = [
        f"{HUB_PREFIX}/bin/jupyter", "kernelspec", "install", "--prefix", HUB_PREFIX,
        "--name", "ir", "/usr/lib/R/site-library/IRkernel/kernelspec",
    ]  # fmt: skip
    assert register in runcmd
    # After the hub's environment (its jupyter) exists, before the units are enabled.
    enable = next(i for i, c in enumerate(runcmd) if c[:2] == ["systemctl", "enable"])
    assert runcmd.index([f"{SCRIPT_DIR}/install-hub.sh"]) < runcmd.index(register) < enable
    # Nothing of it in the boot stage: a golden image carries R already.
    boot = build_cloud_config(cfg, stage="boot", accounts=accounts)
    assert "packages" not in boot and register not in boot["runcmd"]


def test_no_kernels_no_r(make_workshop: MakeWorkshop) -> None:
    cfg, _ = make_workshop("name: plain\nspawner: {kind: systemd}\n")
    bake = build_cloud_config(cfg, stage="bake")
    assert not [p for p in bake["packages"] if p.startswith("r-")]
    assert not [c for c in bake["runcmd"] if "kernelspec" in c]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("name: ok\nspawner: {kind: systemd}\nkernels: [julia]\n", 3,
         ["kernels.0", "julia is not installable", "PyPI", "spawner.kind: docker"]),
        ("name: ok\nspawner: {kind: systemd}\nkernels: [R]\n", 3, ["kernels.0", "lower case"]),
        ("name: ok\nspawner: {kind: systemd}\nkernels: [python3]\n", 3,
         ["Python is always there"]),
        ("name: ok\nspawner: {kind: systemd}\nkernels: [octave]\n", 3,
         ["'octave' is not a kernel bakery installs", "use one of: r"]),
        ("name: ok\nspawner: {kind: systemd}\nkernels: [r, r]\n", 3,
         ["kernels.1", "r is listed twice"]),
        ("name: ok\nkernels: [r]\n", 2,
         ["kernels", "come from the user image", "spawner.kind: systemd"]),
        ("name: ok\nspawner: {kind: systemd}\nkernels: r\n", 3, ["kernels", "list"]),
    ],
)  # fmt: skip
def test_bad_kernels_get_one_clear_message(text: str, line: int, words: list[str]) -> None:
    config_error(text, line, words)


@pytest.mark.parametrize("kind", ["docker", "systemd"])
def test_page_config_turns_the_news_pop_up_off_at_bake(
    make_workshop: MakeWorkshop, kind: str
) -> None:
    cfg, accounts = make_workshop(f"name: intro\nspawner: {{kind: {kind}}}\n")
    baked = files_of(build_cloud_config(cfg, stage="bake"))
    page = json.loads(baked[LAB_PAGE_CONFIG])
    assert page == {"disabledExtensions": {ANNOUNCEMENTS: True}}
    boot = build_cloud_config(cfg, stage="boot", accounts=accounts)
    assert LAB_PAGE_CONFIG not in files_of(boot)
    mounts = assigned(files_of(boot)[HUB_CONFIG], "c.DockerSpawner.read_only_volumes")
    # docker: the host's folder, read-only at the same path in every container; systemd: the
    # servers run on the host and read it there (both: JUPYTER_CONFIG_PATH, test_server_config).
    assert LAB_PAGE_CONFIG.startswith(SERVER_CONFIG_DIR + "/labconfig/")
    assert mounts == ({SERVER_CONFIG_DIR: SERVER_CONFIG_DIR} if kind == "docker" else None)


def test_user_files_cannot_replace_the_page_config() -> None:
    config_error(
        f"name: ok\nfiles:\n  - {{path: {LAB_PAGE_CONFIG}, content: x}}\n",
        3,
        ["files.0.path", "one of bakery's own files"],
    )


def test_r_workshop_passes_every_validator(make_workshop: MakeWorkshop) -> None:
    for tool in ("cloud-init", "shellcheck", "nginx", "systemd-analyze", "openssl"):
        require_tool(tool)
    cfg, _ = make_workshop(SYSTEMD_R)
    report = check_workshop(cfg, preview_accounts(cfg))
    failed = [c for c in report.checks if c.status != "ok"]
    assert not failed, "\n".join(report.lines())
    assert "cloud-init schema" in " ".join(c.name for c in report.checks)


def test_schema_lists_the_installable_kernels() -> None:
    schema = Workshop.model_json_schema()
    assert schema["properties"]["kernels"]["items"] == {"type": "string", "enum": ["r"]}
