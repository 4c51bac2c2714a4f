"""The console scan: cloud-init's stages, its end and the failure lines that stop a wait."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bakery.config.workshop import Workshop
from bakery.vm import console
from bakery.vm import userdata as render
from bakery.vm.stages import STAGES
from bakery.workshop.accounts import Account

CONSOLE = """\
[    0.000000] Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org)
[   38.1] cloud-init[201]: Cloud-init v. 22.4.2 running 'init-local' at Fri, 27 Nov 2026.
[   52.3] cloud-init[240]: Cloud-init v. 22.4.2 running 'init' at Fri, 27 Nov 2026.
[   70.0] cloud-init[300]: Cloud-init v. 22.4.2 running 'modules:config' at Fri, 27 Nov 2026.
[   80.0] cloud-init[320]: Cloud-init v. 22.4.2 running 'modules:final' at Fri, 27 Nov 2026.
[   85.0] cloud-init[320]: bakery: attempt 1 of 3 failed: curl -fsSL -o /tmp/x https://example
[   90.0] cloud-init[320]: bakery: e2e-workshop boot stage done after 90.01 seconds
\x1b[0;1;39me2e-workshop login: \r
"""


def test_a_clean_boot_is_done() -> None:
    scan = console.scan(CONSOLE, workshop="e2e-workshop")
    assert scan.kernel_started and scan.login_prompt and scan.finished
    assert scan.stages == ["init-local", "init", "modules:config", "modules:final"]
    assert scan.failures == []
    assert (scan.state, scan.stage) == ("done", "cloud-init finished")


def test_another_workshops_marker_is_not_the_end() -> None:
    scan = console.scan(CONSOLE, workshop="e2e")
    assert not scan.finished and scan.state == "running"
    assert console.scan(CONSOLE).finished  # no workshop named: any bakery stage's end counts


def test_the_marker_is_what_render_writes(
    make_workshop: Callable[[str], tuple[Workshop, list[Account]]],
) -> None:
    cfg, accounts = make_workshop("name: py-intro\n")
    for stage in STAGES:
        doc = render.build_cloud_config(cfg, stage=stage, accounts=accounts)
        line = "cloud-init[9]: " + doc["final_message"].replace("$UPTIME", "61.25")
        scan = console.scan(line, workshop="py-intro")
        assert scan.finished, stage
        assert not console.scan(line, workshop="py").finished  # a prefix is another workshop


def test_cloud_inits_default_final_line_is_the_end() -> None:
    line = "cloud-init[9]: Cloud-init v. 22.4.2 finished at Fri, 27 Nov 2026. Up 95.1 seconds"
    assert console.scan(line, workshop="x").finished


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("", ""),
        ("[    0.000000] Linux version 6.1.0-28-cloud-amd64 (gcc 12)", "kernel booting"),
        (CONSOLE.split("[   52.3]")[0], "cloud-init: local stage (finding its datasource)"),
        (CONSOLE.split("[   85.0]")[0], "cloud-init: final stage (packages, runcmd)"),
        ("cloud-init[1]: Cloud-init v. 24.1 running 'modules:future' at now", "cloud-init: "
         "modules:future"),
    ],
)  # fmt: skip
def test_the_stage_label_follows_the_console(text: str, label: str) -> None:
    assert console.scan(text).stage == label


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("", "unknown"),
        ("\n \r\n", "unknown"),
        ("Get:1 http://deb.debian.org/debian bookworm InRelease", "running"),
        (CONSOLE, "done"),
        (CONSOLE + "cc_scripts_user.py[WARNING]: Failed to run module scripts-user (x)", "error"),
    ],
)
def test_state(text: str, state: str) -> None:
    assert console.scan(text, workshop="e2e-workshop").state == state


# (console line, a failure?) -- what ends a wait, and the look-alikes that must not.
FAILURE_TABLE = [
    # cloud-init: a runcmd or script exited non-zero
    ("cloud-init[320]: 2026-11-27 10:00:01,000 - cc_scripts_user.py[WARNING]: Failed to run "
     "module scripts-user (scripts in /var/lib/cloud/instance/scripts)", True),
    # cloud-init: any other module raised
    ("cloud-init[320]: util.py[WARNING]: Running module package-update-upgrade-install "
     "(<module 'cloudinit.config.cc_package_update_upgrade_install'>) failed", True),
    ("cloud-init[240]: Traceback (most recent call last):", True),
    ("cloud-init[201]: 2026-11-27 - __init__.py[CRITICAL]: Failed loading yaml blob", True),
    ("[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
     True),
    ("[    2.1] ---[ end Kernel panic - not syncing: VFS: Unable to mount root fs ]---", True),
    # systemd, bakery's units: by name (systemd >= 250) or by a description naming the workshop
    ("[FAILED] Failed to start \x1b[0;1;39mjupyterhub.service\x1b[0m - JupyterHub for workshop "
     "demo.", True),
    ("[FAILED] Failed to start bakery-tls.service - TLS certificate for the hub (demo).", True),
    ("[FAILED] Failed to start TLS certificate for the hub (demo).", True),
    ("[DEPEND] Dependency failed for JupyterHub for workshop demo.", True),
    ("[FAILED] Failed to start bakery-user-image.service.", True),
    # look-alikes that are not failures
    ("[FAILED] Failed to start ModemManager.service - Modem Manager.", False),
    ("[FAILED] Failed to start Docker Application Container Engine.", False),
    ("[FAILED] Failed to start demo-extra.service - Something else.", False),
    ("bakery: attempt 1 of 3 failed: curl -fsSL https://github.com/...", False),
    ("bakery: attempt 3 of 3 failed: curl -fsSL https://github.com/...", False),
    ("bakery: Let's Encrypt failed; keeping the self-signed certificate.", False),
    ("ERROR: pip's dependency resolver does not currently take into account all the packages",
     False),
    ("WARNING: Running pip as the 'root' user can result in broken permissions", False),
    ("cloud-init[240]: util.py[WARNING]: Failed to get raw userdata in module rightscale", False),
    ("cloud-init[240]: cc_ssh.py[WARNING]: ssh_genkeytypes is deprecated", False),
    ("[    0.52] ACPI Error: AE_NOT_FOUND, While resolving a named reference", False),
    ("E: Unable to locate package foo", False),
    ("  File \"/usr/lib/python3/dist-packages/foo.py\", line 3, in <module>", False),
    ("[  OK  ] Started jupyterhub.service - JupyterHub for workshop demo.", False),
]  # fmt: skip


@pytest.mark.parametrize(("line", "failure"), FAILURE_TABLE)
def test_failure_lines(line: str, failure: bool) -> None:
    scan = console.scan(line, workshop="demo")
    assert (scan.failures != []) is failure
    assert scan.state == ("error" if failure else "running")


def test_a_description_needs_the_workshop_to_be_known() -> None:
    line = "[FAILED] Failed to start TLS certificate for the hub (demo)."
    assert console.scan(line).failures == []
    assert console.scan(line, workshop="dem").failures == []


def test_failure_lines_are_kept_clean_and_in_order() -> None:
    text = CONSOLE.replace(
        "[   90.0]",
        "[FAILED] Failed to start \x1b[0;1;39mjupyterhub.service\x1b[0m - JupyterHub.\r\n"
        "[   85.5] cloud-init[320]: cc_scripts_user.py[WARNING]: Failed to run module "
        "scripts-user\n[   90.0]",
    )
    scan = console.scan(text, workshop="e2e-workshop")
    assert scan.failures == [
        "[FAILED] Failed to start jupyterhub.service - JupyterHub.",
        "[   85.5] cloud-init[320]: cc_scripts_user.py[WARNING]: Failed to run module scripts-user",
    ]
    assert scan.finished and scan.state == "error"  # cloud-init ends even when a module failed


def test_cloud_init_state_for_the_cloud_side() -> None:
    assert console.scan("", workshop="demo").summary() == ("unknown", [])
    assert console.scan("Get:1 http://deb.debian.org", workshop="demo").summary() == ("running", [])
    done = "cloud-init[1]: bakery: demo boot stage done after 61.2 seconds"
    assert console.scan(done, workshop="demo").summary() == ("done", [])
    assert console.scan(done, workshop="demo-2").summary()[0] == "running"
    bad = [
        f"cc_scripts_user.py[WARNING]: Failed to run module scripts-user ({n})" for n in range(20)
    ]
    state, lines = console.scan("\n".join([*bad, done]), workshop="demo").summary()
    assert state == "error" and lines == bad[-15:]
