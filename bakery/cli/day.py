"""The workshop day's commands on the `bakery` app: check, users add/reset/list, warm, collect."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bakery.cli.app import CONTEXT, ConfigArg, app, command, progress
from bakery.errors import BakeryError, UsageError

HostOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--host",
        metavar="HOST[:PORT]",
        help="Reach this server instead of the workshop's running servers in the cloud "
        "(repeatable; a `bakery try` VM: 127.0.0.1:SSH_PORT).",
        show_default=False,
    ),
]
IdentityOpt = Annotated[
    Path | None,
    typer.Option(
        "--identity",
        "-i",
        help="The ssh private key (default: openstack.public_key without .pub, else ssh's own).",
        show_default=False,
    ),
]
NamesArg = Annotated[list[str], typer.Argument(help="Account names.", show_default=False)]


@command()
def check(
    config: ConfigArg,
    image: Annotated[
        str | None, typer.Option(help="Image name or ID (default: openstack.image).")
    ] = None,
    count: Annotated[int | None, typer.Option(min=1, max=50, help="Servers to plan for.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Pre-flight: will `launch` work? Creates nothing; exit 1 when a check fails.

    Checks credentials, the image and its bake record, the flavor against `bakery size`, quota
    headroom for this launch, networks and the floating-IP pool, the key pair, DNS.
    """
    from bakery.providers.openstack.check import check as run_check

    report = run_check(config_path=config, image=image, count=count)
    typer.echo(report.to_json() if as_json else "\n".join(report.lines()))
    if not report.ok:
        raise typer.Exit(1)


users_app = typer.Typer(
    name="users",
    help="Late trainees and forgotten passwords on the running hub(s), over ssh.",
    no_args_is_help=True,
    context_settings=CONTEXT,
)
app.add_typer(users_app)


def _report_accounts(
    action: str, config: Path, hosts: list[str] | None, identity: Path | None, names: list[str]
) -> None:
    from bakery.day.users import add_users, reset_users

    do = add_users if action == "add" else reset_users
    result = do(
        config_path=config, names=names, hosts=hosts, identity=identity, progress=progress()
    )
    for acc in result.accounts:
        typer.echo(f"{acc.username}  password: {acc.password}")
    for server, done in result.servers.items():
        for name, what in done.items():
            typer.echo(f"{server}: {name}: {what}")
    if result.errors:
        raise BakeryError(
            "the sheet has the passwords, but these servers were not updated (run again): "
            + "; ".join(result.errors)
        )


@command("add", group=users_app)
def users_add(
    config: ConfigArg, names: NamesArg, host: HostOpt = None, identity: IdentityOpt = None
) -> None:
    """Accounts for trainees in the config (e.g. just added to users.names) on every running hub.

    The sheet gets their passwords; nobody's server restarts.
    """
    _report_accounts("add", config, host, identity, names)


@command("reset", group=users_app)
def users_reset(
    config: ConfigArg, names: NamesArg, host: HostOpt = None, identity: IdentityOpt = None
) -> None:
    """New passwords for these accounts, in the sheet and on every running hub."""
    _report_accounts("reset", config, host, identity, names)


@command("list", group=users_app)
def users_list(config: ConfigArg, host: HostOpt = None, identity: IdentityOpt = None) -> None:
    """Who logged in to each hub, and whose server runs (the hub's REST API)."""
    from bakery.day.users import list_users

    for user in list_users(config_path=config, hosts=host, identity=identity):
        typer.echo(user.line())


@command()
def warm(
    config: ConfigArg,
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Only these trainees (default: every trainee).", show_default=False),
    ] = None,
    host: HostOpt = None,
    identity: IdentityOpt = None,
) -> None:
    """Start the trainees' servers on the running hub(s) now, before they arrive.

    Trainees who have no server and have not logged in yet get one, as fast as the hub's spawn
    limit allows and never past its server limit; each is waited for. The hub keeps a warmed
    server from the idle culler until its trainee has logged in once. Says who was left cold
    and why; exit 1 when a hub could not be reached. (`warm: boot` or a time in workshop.yaml
    does this by itself.)
    """
    from bakery.day.warm import warm as do_warm

    result = do_warm(
        config_path=config, names=names, hosts=host, identity=identity, progress=progress()
    )
    for line in result.lines():
        typer.echo(line)
    if result.errors:
        raise BakeryError("not warmed (run again): " + "; ".join(result.errors))


MaxSizeOpt = Annotated[
    str, typer.Option("--max-size", help="Largest archive per trainee (compressed), e.g. 500M.")
]


@command()
def collect(
    config: ConfigArg,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Folder for NAME.tar.gz archives.", show_default=False),
    ],
    host: HostOpt = None,
    identity: IdentityOpt = None,
    max_size: MaxSizeOpt = "2G",
) -> None:
    """Download every trainee's home as OUT/NAME.tar.gz, caches left out.

    Resumable: archives already in OUT are kept. Exit 1 when one failed.
    """
    from bakery.day.collect import collect as do_collect

    result = do_collect(
        config_path=config, out_dir=out, hosts=host, identity=identity, max_size=max_size,
        progress=progress(),
    )  # fmt: skip
    for line in result.lines():
        typer.echo(line)
    if result.errors:
        raise typer.Exit(1)


@command()
def update(
    config: ConfigArg,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing.")
    ] = False,
    restart_servers: Annotated[
        bool,
        typer.Option(
            "--restart-servers",
            help="Also restart the trainees' running servers for changes that need it (one at "
            "a time, through the hub; their files stay, their kernels do not).",
        ),
    ] = False,
    host: HostOpt = None,
    identity: IdentityOpt = None,
) -> None:
    """Change the running workshop to match its file, without stopping anyone's work.

    Prints a plan per server in three groups: applied live (and to whom), reaches running
    servers only when they restart (--restart-servers), needs a relaunch (refused: exit 2, with
    the field and the command to use). Then applies the live part over ssh and says what
    changed. A second run with the same file changes nothing; a run that failed half way is
    finished by the next.
    """
    from bakery.day.update import refusal_message
    from bakery.day.update import update as do_update

    result = do_update(
        config_path=config, hosts=host, identity=identity, dry_run=dry_run,
        restart_servers=restart_servers, progress=progress(),
    )  # fmt: skip
    for line in result.plan.lines():
        typer.echo(line)
    if result.plan.refusals():
        raise UsageError(refusal_message(result.plan, config))
    if dry_run:
        typer.echo("dry run: nothing was changed")
        return
    changed = result.lines()
    if changed:
        typer.echo("done:")
        for line in changed:
            typer.echo(f"  {line}")
    if result.errors or result.plan.unreachable:
        why = result.errors + [f"{n}: not reached" for n in result.plan.unreachable]
        raise BakeryError("not finished (run `bakery update` again): " + "; ".join(why))
