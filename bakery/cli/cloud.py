"""OpenStack commands: launch, status, destroy, scale."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bakery.cli.app import (
    ConfigArg,
    StageChoice,
    _err,
    command,
    progress,
)

ImageOpt = Annotated[
    str | None, typer.Option(help="Image name or ID (default: openstack.image in the config).")
]
CountOpt = Annotated[
    int | None,
    typer.Option(min=1, max=50, help="Servers (default: openstack.count); trainees are split."),
]
LaunchStageOpt = Annotated[
    StageChoice | None,
    typer.Option(
        help="User-data stage (default: boot for an image bakery baked, else full).",
        show_default=False,
    ),
]
WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait",
        help="Wait until the hub answers on https://IP/hub/health (or cloud-init fails).",
    ),
]
HubTimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--hub-timeout",
        "--timeout",
        metavar="DURATION",
        help="How long to wait for the hub: seconds or 90s, 20m, 1h "
        "(default: openstack.hub_timeout, 45m).",
        show_default=False,
    ),
]
ActiveTimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--active-timeout",
        metavar="DURATION",
        help="How long a server may take to be ACTIVE (default: openstack.active_timeout, 15m).",
        show_default=False,
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Print the checks of `bakery check` and the plan (image, stage, flavor, networks, "
        "rules, user-data sizes, quota headroom); create nothing.",
    ),
]
CheckOpt = Annotated[
    bool, typer.Option("--check/--no-check", help="Run `bakery check` first; refuse on a failure.")
]
IdentityOpt = Annotated[
    Path | None,
    typer.Option(
        "--identity",
        "-i",
        help="A swarm's manager: the ssh private key (default: openstack.public_key without "
        ".pub, else ssh's own).",
        show_default=False,
    ),
]


@command()
def launch(
    config: ConfigArg,
    image: ImageOpt = None,
    count: CountOpt = None,
    stage: LaunchStageOpt = None,
    wait: WaitOpt = True,
    hub_timeout: HubTimeoutOpt = None,
    active_timeout: ActiveTimeoutOpt = None,
    dry_run: DryRunOpt = False,
    check: CheckOpt = True,
) -> None:
    """Create (or reuse) security group, key pair, server(s) and floating IPs; print the URL(s).

    Safe to run twice: what exists is reused. A failed boot reports Nova's fault and removes what
    this run created.
    """
    if dry_run:
        from bakery.providers.openstack.plan import dry_run as plan_and_check

        report, plan = plan_and_check(
            config_path=config, image=image, count=count, stage=stage.value if stage else None
        )
        for line in plan.lines():
            typer.echo(line)
        typer.echo("checks (`bakery check`):")
        for line in report.lines():
            typer.echo(f"  {line}")
        return
    from bakery.providers.openstack.launch import launch as do_launch

    result = do_launch(
        config_path=config,
        image=image,
        count=count,
        stage=stage.value if stage else None,
        wait=wait,
        hub_timeout=hub_timeout,
        active_timeout=active_timeout,
        check=check,
        progress=progress(),
    )
    for line in result.lines(config, wait=wait):
        typer.echo(line)
    if result.workers_note:
        typer.echo(
            f"workers: not all Ready: {result.workers_note}. The hub works; a trainee's server "
            f"starts once a worker is Ready (bakery status {config}).",
            err=True,
        )


@command()
def status(
    config: ConfigArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    identity: IdentityOpt = None,
    config_check: Annotated[
        bool,
        typer.Option(
            "--config/--no-config",
            help="Ask each running server over ssh whether it matches the workshop file.",
        ),
    ] = True,
) -> None:
    """Show the workshop's servers: state, addresses, hub health, cloud-init progress, and
    whether each matches the workshop file (`bakery update` applies the difference).

    A swarm cluster also shows its nodes (Ready/Down, availability) and the trainees' servers on
    each, asked over ssh from the manager.
    """
    from bakery.providers.openstack.status import status as get_status

    found = get_status(config_path=config, identity=identity)
    if config_check and found.any_up:
        # Over ssh, each server that is up: does it run what the workshop file says?
        from bakery.day.update import config_states

        found.show_config(config_states(found.workshop, config, identity))
    typer.echo(found.as_json() if as_json else "\n".join(found.lines()))


@command()
def destroy(
    config: ConfigArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    collect_dir: Annotated[
        Path | None,
        typer.Option(
            "--collect",
            metavar="DIR",
            help="First download every trainee's home into DIR (`bakery collect`); nothing is "
            "deleted if that fails.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Delete exactly what bakery created for this workshop (safe to re-run).

    The servers' disks go with them: the trainees' files (their homes) are deleted for good
    (`--collect DIR` downloads them first).
    """
    from bakery.providers.openstack.destroy import DestroyPlan
    from bakery.providers.openstack.destroy import destroy as do_destroy

    if collect_dir is not None and not dry_run:
        from bakery.day.collect import collect_before_destroy

        collect_before_destroy(config_path=config, out_dir=collect_dir, progress=progress())

    def confirm(plan: DestroyPlan) -> bool:
        for line in plan.lines():
            _err(f"  {line}")
        if plan.warning:
            _err(f"bakery: warning: {plan.warning}")
        if yes:
            return True
        if not sys.stdin.isatty():
            _err("bakery: not a terminal: pass --yes to delete without asking")
            return False
        return typer.confirm(
            f"Delete these {len(plan.items)} resources, the trainees' files with the servers?",
            default=False,
        )

    plan = do_destroy(config_path=config, confirm=confirm, dry_run=dry_run, progress=progress())
    if dry_run:
        for line in plan.lines():
            typer.echo(line)
        typer.echo(
            f"would delete these {len(plan.items)} resources"
            + (f"; {plan.warning}" if plan.warning else "")
            if plan.items
            else "nothing to delete"
        )


@command()
def scale(
    config: ConfigArg,
    workers: Annotated[
        int,
        typer.Option("--workers", help="The swarm's worker VMs after the change (at least 1)."),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before removing.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
    ] = False,
    image: Annotated[
        str | None,
        typer.Option(help="Image for new workers (default: the manager's own image)."),
    ] = None,
    identity: IdentityOpt = None,
) -> None:
    """Add swarm workers, or drain and remove the highest-numbered ones (cluster.engine swarm).

    A removed worker's running servers are stopped by the swarm (their files stay in /home on
    the manager); asks first unless --yes.
    """
    from bakery.providers.openstack.scale import ScalePlan
    from bakery.providers.openstack.scale import scale as do_scale

    def confirm(plan: ScalePlan) -> bool:
        for line in plan.lines():
            _err(line)
        if plan.warning:
            _err(f"bakery: warning: {plan.warning}")
        if yes:
            return True
        if not sys.stdin.isatty():
            _err("bakery: not a terminal: pass --yes to remove workers without asking")
            return False
        return typer.confirm(f"Drain and remove {len(plan.remove)} workers?", default=False)

    plan = do_scale(
        config_path=config, workers=workers, image=image, identity=identity, dry_run=dry_run,
        confirm=confirm, progress=progress(),
    )  # fmt: skip
    if dry_run:
        for line in plan.lines():
            typer.echo(line)
        if plan.warning:
            typer.echo(f"warning: {plan.warning}")
        return
    typer.echo(f"workers: {plan.workers}" + ("" if plan.add or plan.remove else " (unchanged)"))
