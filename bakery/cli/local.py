"""Local commands: init, validate, render, credentials, schema, config show, try, size."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from bakery.cli.app import (
    ConfigArg,
    RoleChoice,
    RoleOpt,
    StageChoice,
    StageOpt,
    _err,
    app,
    command,
    progress,
    write_stdout,
)


@command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the starter.")] = Path(
        "workshop.yaml"
    ),
    name: Annotated[str | None, typer.Option(help="Workshop name (default: from PATH).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter workshop.yaml."""
    from bakery.config.starter import write_starter

    written = write_starter(path, name=name, force=force)
    _err(f"bakery: wrote {written}; edit it, then: bakery validate {written}")


@command()
def validate(
    config: ConfigArg,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Fail when a check was skipped (its tool is missing)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Check the config and every rendered document with the real validators found here."""
    import json

    from bakery.vm.validate import validate_workshop

    report = validate_workshop(config_path=config)
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2, sort_keys=True))
    else:
        for line in report.lines():
            typer.echo(line)
    if not report.ok(strict=strict):
        if strict and report.ok():
            _err("bakery: --strict: checks were skipped; install the tools named above")
        raise typer.Exit(1)


@command()
def render(
    config: ConfigArg,
    stage: StageOpt = StageChoice.full,
    gzip: Annotated[
        bool | None,
        typer.Option(
            "--gzip/--no-gzip",
            help="Gzip the user-data (default: only when needed to fit Nova's 64 KiB limit).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write to FILE instead of standard output."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite a file that is not bakery's.")
    ] = False,
    role: RoleOpt = RoleChoice.manager,
) -> None:
    """Render the cloud-init user-data (to stdout: `bakery render workshop.yaml > user-data`)."""
    from bakery.vm.write import render_to

    result = render_to(
        config_path=config, stage=stage.value, gzip_data=gzip, output=output, force=force,
        role=role.value, progress=progress(),
    )  # fmt: skip
    if output is None:
        write_stdout(result.data, binary=result.gzipped)


@command()
def credentials(
    config: ConfigArg,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV (username,password).")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON: [{username, password, admin}].")
    ] = False,
    slips: Annotated[
        Path | None,
        typer.Option(
            "--slips", metavar="FILE", help="Write printable login slips (HTML, mode 600) to FILE."
        ),
    ] = None,
    url: Annotated[
        list[str] | None,
        typer.Option(
            "--url",
            metavar="URL",
            help="With --slips: the hub's address, once per server in order (default: "
            "https://tls.domain/).",
        ),
    ] = None,
) -> None:
    """Print the trainees' login sheet, making passwords for accounts that have none yet."""
    if slips is not None or url:
        from bakery.day.handouts import write_slips
        from bakery.errors import UsageError

        if slips is None:
            raise UsageError("--url goes with --slips FILE (the address printed on each slip)")
        made = write_slips(config_path=config, output=slips, urls=url or (), progress=progress())
        plural = "" if len(made) == 1 else "s"
        _err(f"bakery: wrote {len(made)} login slip{plural} to {slips}; print at 100 % and cut")
        return
    from bakery.day.handouts import credentials_sheet

    typer.echo(credentials_sheet(config_path=config, as_csv=csv, as_json=as_json), nl=False)


@command()
def schema(
    as_markdown: Annotated[
        bool,
        typer.Option("--markdown", help="Print the workshop.yaml reference (docs/reference.md)."),
    ] = False,
) -> None:
    """Print the JSON Schema of workshop.yaml (for editors' YAML language servers)."""
    from bakery.config.reference import markdown, schema_text

    typer.echo(markdown() if as_markdown else schema_text(), nl=False)


config_app = typer.Typer(
    name="config", help="Inspect a workshop file.", no_args_is_help=True, add_completion=False
)
app.add_typer(config_app)


@command("show", group=config_app)
def config_show(config: ConfigArg) -> None:
    """Print the effective config: the file with every default filled in, as YAML."""
    from bakery.config.reference import effective_config
    from bakery.config.workshop import load_config

    typer.echo(effective_config(load_config(config)), nl=False)


# --- bakery try (local VM; library: bakery/localvm.py) -------------------------------------------


class TryStage(str, Enum):
    """The user-data stages `bakery try` can boot."""

    full = "full"
    boot = "boot"


class AccelChoice(str, Enum):
    """qemu accelerators: auto uses KVM only where it runs a kernel (probe and watchdog)."""

    auto = "auto"
    kvm = "kvm"
    tcg = "tcg"


TryImage = Annotated[
    Path | None,
    typer.Option(
        "--image",
        help="Base (stage full) or golden (stage boot) qcow2; any Ubuntu/Debian cloud image "
        "with cloud-init. Never modified: the VM runs on an overlay.",
    ),
]
TryStageOpt = Annotated[
    TryStage, typer.Option("--stage", help="full: install in the VM; boot: IMAGE was baked.")
]
TryWorkers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Worker VMs beside the manager (a config with cluster.engine: swarm; default: "
        "its cluster.workers). Worker I's ssh is on SSH_PORT+I.",
        show_default=False,
    ),
]
TryMemory = Annotated[
    str | None,
    typer.Option(
        "--memory",
        help="Guest memory with a unit: 4G, 3072M (at least 1G) [default: 4G; 2560M per VM "
        "of a cluster].",
        show_default=False,
    ),
]
TryAccel = Annotated[
    AccelChoice,
    typer.Option(
        "--accel", help="auto: KVM where it runs a kernel, else TCG (slow); kvm: KVM or fail."
    ),
]
TryTimeout = Annotated[
    float | None,
    typer.Option(
        "--timeout", help="Seconds to wait for the hub (default: by stage, accel, vCPUs per core)."
    ),
]


@command("try")
def try_(
    config: ConfigArg,
    image: TryImage = None,
    stage: TryStageOpt = TryStage.full,
    port: Annotated[int, typer.Option("--port", help="Local HTTPS port (HTTP is PORT+1).")] = 8443,
    ssh_port: Annotated[int, typer.Option("--ssh-port", help="Local ssh port.")] = 2222,
    workers: TryWorkers = None,
    memory: TryMemory = None,
    cpus: Annotated[int, typer.Option("--cpus", min=1, help="Guest CPUs.")] = 2,
    accel: TryAccel = AccelChoice.auto,
    timeout: TryTimeout = None,
    status: Annotated[bool, typer.Option("--status", help="Show the local VMs' state.")] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Shut the local VMs down.")] = False,
    keep: Annotated[
        bool, typer.Option("--keep", help="With --stop: keep the overlay disk.")
    ] = False,
) -> None:
    """Boot the workshop in a local qemu VM and wait until its hub answers.

    A swarm cluster (cluster.engine: swarm) boots as a manager VM and worker VMs on a private
    network; --status and --stop cover them all.
    """
    from bakery.errors import UsageError
    from bakery.providers.local import trial

    if status:
        typer.echo(trial.status(config).describe())
        return
    if stop:
        run_dir = trial.down(config, keep=keep, progress=progress())
        progress()(f"stopped{' (overlay kept in ' + str(run_dir) + ')' if keep else ''}")
        return
    if image is None:
        raise UsageError(
            f"--image is required to start a VM: bakery try {config} --image BASE.qcow2 "
            "(or --status / --stop)"
        )
    result = trial.up(
        config, image=image, workers=workers, stage=stage.value, https_port=port,
        ssh_port=ssh_port, memory=memory, cpus=cpus, accel=accel.value, timeout=timeout,
        progress=progress(),
    )  # fmt: skip
    for line in result.lines(config):
        typer.echo(line)


SizeConfig = Annotated[
    Path | None,
    typer.Argument(help="A workshop file (or give --users).", show_default=False, metavar="CONFIG"),
]
SizeUsers = Annotated[
    int | None, typer.Option(min=1, help="Trainees per server (overrides the config's).")
]
SizeData = Annotated[
    float | None, typer.Option(help="Data each trainee loads, GB [default: config's, else 0.05].")
]
SizeConcurrency = Annotated[
    float | None,
    typer.Option(help="Share of trainees active at once, (0, 1] [default: config's, else 1]."),
]
SizeMemLimit = Annotated[
    str | None,
    typer.Option(help="Per-trainee memory limit, e.g. 2G [default: config's, else 2G]."),
]
SizeFlavors = Annotated[
    bool, typer.Option("--flavors", help="Also pick the smallest fitting flavor of the cloud.")
]


@command()
def size(
    config: SizeConfig = None,
    users: SizeUsers = None,
    data_gb: SizeData = None,
    concurrency: SizeConcurrency = None,
    mem_limit: SizeMemLimit = None,
    flavors: SizeFlavors = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the estimate as JSON.")] = False,
) -> None:
    """Estimate memory, vCPUs and disk for one server (rules: see bakery/workshop/sizing.py).

    With a CONFIG, --data-gb, --concurrency and --mem-limit replace its values.
    """
    import json

    from bakery import topology
    from bakery.config.workshop import load_config
    from bakery.errors import UsageError

    if config is None and users is None:
        raise UsageError("give a CONFIG or --users N")
    if flavors and (as_json or config is None):
        raise UsageError("--flavors needs a CONFIG (for its cloud) and no --json")
    need = topology.size_estimate(
        load_config(config) if config is not None else None, users=users, data_gb=data_gb,
        concurrency=concurrency, mem_limit=mem_limit,
        config_dir=config.parent if config is not None else None,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(need.as_dict(), indent=2))
        return
    for line in need.lines():
        typer.echo(line)
    if flavors and config is not None:
        from bakery.providers.openstack.flavors import size_flavors

        lines = size_flavors(
            config_path=config, data_gb=data_gb, concurrency=concurrency, mem_limit=mem_limit
        )
        for line in lines:
            typer.echo(line)


# The workshop day's commands (check, users, collect) live in their own module.
