"""The `bakery` command line: thin Typer commands over the library, errors handled once here."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from bakery import __version__
from bakery.errors import BakeryError
from bakery.progress import ConsoleReporter

# -h as well as --help, on every command.
CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="bakery",
    help="Turn one workshop.yaml into a running JupyterHub on a cloud VM.\n\n"
    "Exit codes: 0 ok, 1 an operation failed, 2 bad input, config or a missing tool, "
    "70 internal error (a bug), 130 interrupted.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
)

F = TypeVar("F", bound=Callable[..., Any])
# --debug is accepted anywhere on the line (main() takes it out before Typer parses the rest).
_state = {"debug": False}

ConfigArg = Annotated[
    Path,
    typer.Argument(
        help="The workshop file (see `bakery init`).", show_default=False, metavar="CONFIG"
    ),
]


class StageChoice(str, Enum):
    """The user-data stages (see bakery.render)."""

    full = "full"
    bake = "bake"
    boot = "boot"


StageOpt = Annotated[
    StageChoice,
    typer.Option(
        "--stage",
        help="full: stock image to working hub; bake: the golden-image part; "
        "boot: what a VM booted from a golden image still needs.",
    ),
]


def _err(message: str) -> None:
    typer.echo(message, err=True)


_reporter: ConsoleReporter | None = None


def progress() -> ConsoleReporter:
    """The reporter library calls get: notes as lines, a live status line on a terminal."""
    global _reporter
    if _reporter is None:
        _reporter = ConsoleReporter()
    return _reporter


def _close_progress() -> None:
    # A new reporter per command: it holds the stderr of its own invocation (tests run many).
    global _reporter
    if _reporter is not None:
        _reporter.close()
        _reporter = None


def handle_errors(func: F) -> F:
    """Turn BakeryError into a message on stderr and its exit code (traceback only with --debug)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        finally:
            _close_progress()  # end a live status line before any message below

    @wraps(func)
    def handled(*args: Any, **kwargs: Any) -> Any:
        try:
            return wrapper(*args, **kwargs)
        except BakeryError as exc:
            if _state["debug"]:
                raise
            _err(f"bakery: error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _err("bakery: interrupted")
            raise typer.Exit(130) from None
        except OSError as exc:
            if _state["debug"]:
                raise
            _err(f"bakery: error: {exc}")
            raise typer.Exit(1) from None
        except Exception as exc:
            # typer.Exit, Abort and BadParameter are click's own control flow: let them through.
            if _state["debug"] or type(exc).__module__.split(".")[0] in ("click", "typer"):
                raise
            _err(f"bakery: internal error: {type(exc).__name__}: {exc}")
            _err("bakery: this is a bug; rerun with --debug for the traceback and report it")
            raise typer.Exit(70) from None

    return handled  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bakery {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks on errors (anywhere on the line).")
    ] = False,
) -> None:
    """bakery: one YAML file describes a workshop; bakery turns it into a running JupyterHub."""
    _state["debug"] = _state["debug"] or debug


@app.command()
@handle_errors
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the starter.")] = Path(
        "workshop.yaml"
    ),
    name: Annotated[str | None, typer.Option(help="Workshop name (default: from PATH).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter workshop.yaml."""
    from bakery.starter import write_starter

    written = write_starter(path, name=name, force=force)
    _err(f"bakery: wrote {written}; edit it, then: bakery validate {written}")


@app.command()
@handle_errors
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

    from bakery.checks import validate_workshop

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


@app.command()
@handle_errors
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
) -> None:
    """Render the cloud-init user-data (to stdout: `bakery render workshop.yaml > user-data`)."""
    from bakery.workflow import render_to

    render_to(config_path=config, stage=stage.value, gzip_data=gzip, output=output, force=force)


@app.command()
@handle_errors
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
        from bakery.errors import UsageError
        from bakery.slips import write_slips

        if slips is None:
            raise UsageError("--url goes with --slips FILE (the address printed on each slip)")
        made = write_slips(config_path=config, output=slips, urls=url or (), progress=progress())
        plural = "" if len(made) == 1 else "s"
        _err(f"bakery: wrote {len(made)} login slip{plural} to {slips}; print at 100 % and cut")
        return
    from bakery.workflow import credentials_sheet

    typer.echo(credentials_sheet(config_path=config, as_csv=csv, as_json=as_json), nl=False)


@app.command()
@handle_errors
def schema(
    as_markdown: Annotated[
        bool,
        typer.Option("--markdown", help="Print the workshop.yaml reference (docs/reference.md)."),
    ] = False,
) -> None:
    """Print the JSON Schema of workshop.yaml (for editors' YAML language servers)."""
    from bakery.reference import markdown, schema_text

    typer.echo(markdown() if as_markdown else schema_text(), nl=False)


config_app = typer.Typer(
    name="config", help="Inspect a workshop file.", no_args_is_help=True, add_completion=False
)
app.add_typer(config_app)


@config_app.command("show")
@handle_errors
def config_show(config: ConfigArg) -> None:
    """Print the effective config: the file with every default filled in, as YAML."""
    from bakery.config import load_config
    from bakery.reference import effective_config

    typer.echo(effective_config(load_config(config)), nl=False)


# --- bakery try (local VM; library: bakery/localvm.py) -------------------------------------------


class TryStage(str, Enum):
    """The user-data stages `bakery try` can boot."""

    full = "full"
    boot = "boot"


class AccelChoice(str, Enum):
    """qemu accelerators: auto uses KVM only when a probe guest runs under it."""

    auto = "auto"
    kvm = "kvm"
    tcg = "tcg"


@app.command("try")
@handle_errors
def try_(
    config: ConfigArg,
    image: Annotated[
        Path | None,
        typer.Option(
            "--image",
            help="Base (stage full) or golden (stage boot) qcow2; any Ubuntu/Debian cloud image "
            "with cloud-init. Never modified: the VM runs on an overlay.",
        ),
    ] = None,
    stage: Annotated[
        TryStage,
        typer.Option("--stage", help="full: install in the VM; boot: IMAGE was baked."),
    ] = TryStage.full,
    port: Annotated[int, typer.Option("--port", help="Local HTTPS port (HTTP is PORT+1).")] = 8443,
    ssh_port: Annotated[int, typer.Option("--ssh-port", help="Local ssh port.")] = 2222,
    memory: Annotated[
        str, typer.Option("--memory", help="Guest memory with a unit: 4G, 3072M (at least 1G).")
    ] = "4G",
    cpus: Annotated[int, typer.Option("--cpus", min=1, help="Guest CPUs.")] = 2,
    accel: Annotated[
        AccelChoice,
        typer.Option("--accel", help="auto: KVM if a probe guest runs under it, else TCG (slow)."),
    ] = AccelChoice.auto,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Seconds to wait for the hub (default by stage/accel)."),
    ] = None,
    status: Annotated[bool, typer.Option("--status", help="Show the local VM's state.")] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Shut the local VM down.")] = False,
    keep: Annotated[
        bool, typer.Option("--keep", help="With --stop: keep the overlay disk.")
    ] = False,
) -> None:
    """Boot the workshop in a local qemu VM and wait until its hub answers."""
    from bakery import localvm
    from bakery.config import load_config
    from bakery.errors import UsageError

    run_dir = localvm.run_dir_for(load_config(config).name)
    if status:
        typer.echo(localvm.vm_status(run_dir).describe())
        return
    if stop:
        localvm.stop_vm(run_dir, keep=keep, progress=progress())
        progress()(f"stopped{' (overlay kept in ' + str(run_dir) + ')' if keep else ''}")
        return
    if image is None:
        raise UsageError(
            f"--image is required to start a VM: bakery try {config} --image BASE.qcow2 "
            "(or --status / --stop)"
        )
    result = localvm.try_workshop(
        config,
        image=image,
        stage=stage.value,
        https_port=port,
        ssh_port=ssh_port,
        memory=memory,
        cpus=cpus,
        accel=accel.value,
        timeout=timeout,
        run_dir=run_dir,
        progress=progress(),
    )
    typer.echo(f"hub ready after {result.seconds:.0f} s: {result.url}")
    typer.echo(f"credentials: {result.credentials}")
    login = result.state.extra.get("login_user", "LOGIN_USER")
    typer.echo(f"ssh: ssh -p {ssh_port} {login}@127.0.0.1    stop: bakery try {config} --stop")


# --- bakery packer / bakery bake (golden image with Packer; library: bakery/packer.py) ----------


class BakeSource(str, Enum):
    """The Packer sources `bakery bake --only` can pick."""

    openstack = "openstack"
    qemu = "qemu"


@app.command("packer")
@handle_errors
def packer_(
    config: ConfigArg,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder to write the Packer build into.")
    ] = Path("build/packer"),
    packer_version: Annotated[
        str | None,
        typer.Option(
            "--packer-version",
            help="Write for this Packer (e.g. 1.6.6); default: the installed one, else >= 1.7.",
        ),
    ] = None,
) -> None:
    """Write the golden image's Packer build (HCL, variables, bake user-data); no credentials."""
    from bakery.config import load_config
    from bakery.packer import write_packer

    written = write_packer(
        load_config(config),
        out_dir=output,
        packer_version=packer_version,
        config_dir=Path(config).parent,
    )
    for path in written:
        typer.echo(path)
    _err(f"bakery: wrote {len(written)} files; build with: cd {output} && packer build .")


class BakeBuilder(str, Enum):
    """How `bakery bake` builds the image (see bakery.builders)."""

    packer = "packer"
    openstacksdk = "openstacksdk"
    chroot = "chroot"


@app.command()
@handle_errors
def bake(
    config: ConfigArg,
    only: Annotated[
        BakeSource | None,
        typer.Option("--only", help="Packer: build one source: openstack, or qemu (local qcow2)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="packer: its folder (default: build/packer/NAME); chroot: the golden qcow2 "
            "(default: build/NAME-golden.qcow2).",
        ),
    ] = None,
    builder: Annotated[
        BakeBuilder,
        typer.Option(
            "--builder",
            help="packer; openstacksdk: no Packer (boot a builder server, let it seal itself, "
            "snapshot it); chroot: install into bake.qemu_base_image's filesystem at native "
            "speed (root).",
        ),
    ] = BakeBuilder.packer,
    upload: Annotated[
        bool,
        typer.Option(
            "--upload",
            help="Put the image file made (chroot, or Packer's qemu) into the config's cloud "
            "(as `bakery image upload` does).",
        ),
    ] = False,
) -> None:
    """Bake the golden image (Packer by default), streaming progress; prints the images made."""
    from bakery.builders import bake as bake_image

    results = bake_image(
        config_path=config,
        builder=builder.value,
        output=output,
        only=only.value if only else None,
        upload=upload,
        progress=progress(),
    )
    for r in results:
        typer.echo(f"{r.builder}: {r.image_name} {r.where}")


# --- OpenStack: launch, status, destroy, size (library: bakery/cloud.py, bakery/sizing.py) -------


@app.command()
@handle_errors
def launch(
    config: ConfigArg,
    image: Annotated[
        str | None,
        typer.Option(help="Image name or ID (default: openstack.image in the config)."),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option(min=1, max=50, help="Servers (default: openstack.count); trainees are split."),
    ] = None,
    stage: Annotated[
        StageChoice | None,
        typer.Option(
            help="User-data stage (default: boot for an image bakery baked, else full).",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="Wait until the hub answers on https://IP/hub/health (or cloud-init fails).",
        ),
    ] = True,
    hub_timeout: Annotated[
        str | None,
        typer.Option(
            "--hub-timeout",
            "--timeout",
            metavar="DURATION",
            help="How long to wait for the hub: seconds or 90s, 20m, 1h "
            "(default: openstack.hub_timeout, 45m).",
            show_default=False,
        ),
    ] = None,
    active_timeout: Annotated[
        str | None,
        typer.Option(
            "--active-timeout",
            metavar="DURATION",
            help="How long a server may take to be ACTIVE (default: openstack.active_timeout, "
            "15m).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the checks of `bakery check` and the plan (image, stage, flavor, "
            "networks, rules, user-data sizes, quota headroom); create nothing.",
        ),
    ] = False,
    check: Annotated[
        bool,
        typer.Option("--check/--no-check", help="Run `bakery check` first; refuse on a failure."),
    ] = True,
) -> None:
    """Create (or reuse) security group, key pair, server(s) and floating IPs; print the URL(s).

    Safe to run twice: what exists is reused. A failed boot reports Nova's fault and removes what
    this run created.
    """
    if dry_run:
        from bakery.preflight import dry_run as plan_and_check

        report, plan = plan_and_check(
            config_path=config, image=image, count=count, stage=stage.value if stage else None
        )
        for line in plan.lines():
            typer.echo(line)
        typer.echo("checks (`bakery check`):")
        for line in report.lines():
            typer.echo(f"  {line}")
        return
    from bakery.launch import launch as unchecked_launch
    from bakery.preflight import checked_launch

    do_launch = checked_launch if check else unchecked_launch
    result = do_launch(
        config_path=config,
        image=image,
        count=count,
        stage=stage.value if stage else None,
        wait=wait,
        hub_timeout=hub_timeout,
        active_timeout=active_timeout,
        progress=progress(),
    )
    for server in result.servers:
        hub = "" if not wait else f"  (hub: {server.hub})"
        typer.echo(f"{server.name}: {server.url or 'no address yet'}{hub}")
    typer.echo(f"credentials: {result.credentials}  (print them: bakery credentials {config})")


image_app = typer.Typer(
    name="image",
    help="Golden images in the cloud: upload a baked file, delete one.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(image_app)


@image_app.command("upload")
@handle_errors
def image_upload(
    config: ConfigArg,
    image_file: Annotated[
        Path,
        typer.Argument(
            help="A qcow2 baked by `bakery bake --builder chroot` (or Packer's qemu), with its "
            "FILE.bakery.json beside it.",
            show_default=False,
            metavar="FILE",
        ),
    ],
) -> None:
    """Upload a baked image file into Glance as the golden image (same name, record, properties).

    An image of that name with the same checksum is reused, not sent again.
    """
    from bakery.upload import upload as do_upload

    result = do_upload(config_path=config, image_file=image_file, progress=progress())
    typer.echo(f"{result.image_name} {result.image_id}")
    _err(f"bakery: launch it: bakery launch {config} --image {result.image_name}")


@image_app.command("delete")
@handle_errors
def image_delete(
    config: ConfigArg,
    name_or_id: Annotated[
        str, typer.Argument(help="The image's name or ID.", show_default=False, metavar="IMAGE")
    ],
) -> None:
    """Delete one of this workshop's golden images from Glance (never one bakery did not bake)."""
    from bakery.upload import delete_image

    delete_image(config_path=config, name_or_id=name_or_id, progress=progress())


@app.command()
@handle_errors
def status(
    config: ConfigArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Show the workshop's servers: state, addresses, hub health, cloud-init progress."""
    from bakery.expiry import status_line
    from bakery.launch import status as get_status
    from bakery.launch import status_json

    infos = get_status(config_path=config)
    if as_json:
        typer.echo(status_json(infos))
        return
    ends = status_line(config_path=config, servers=len(infos))
    if ends:
        typer.echo(ends)
    if not infos:
        typer.echo("no servers")
        return
    for s in infos:
        typer.echo(
            f"{s.name}  {s.status}  {s.floating_ip or ', '.join(s.addresses) or '-'}  "
            f"hub: {s.hub}  cloud-init: {s.cloud_init}" + (f"  fault: {s.fault}" if s.fault else "")
        )


@app.command()
@handle_errors
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
    from bakery.launch import DestroyPlan
    from bakery.launch import destroy as do_destroy

    if collect_dir is not None and not dry_run:
        from bakery.collect import collect_before_destroy

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


@app.command()
@handle_errors
def size(
    config: Annotated[
        Path | None,
        typer.Argument(
            help="A workshop file (or give --users).", show_default=False, metavar="CONFIG"
        ),
    ] = None,
    users: Annotated[
        int | None, typer.Option(min=1, help="Trainees per server (overrides the config's).")
    ] = None,
    data_gb: Annotated[
        float | None,
        typer.Option(help="Data each trainee loads, GB [default: config's, else 0.05]."),
    ] = None,
    concurrency: Annotated[
        float | None,
        typer.Option(help="Share of trainees active at once, (0, 1] [default: config's, else 1]."),
    ] = None,
    mem_limit: Annotated[
        str | None,
        typer.Option(help="Per-trainee memory limit, e.g. 2G [default: config's, else 2G]."),
    ] = None,
    flavors: Annotated[
        bool, typer.Option("--flavors", help="Also pick the smallest fitting flavor of the cloud.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the estimate as JSON.")] = False,
) -> None:
    """Estimate memory, vCPUs and disk for one server (rules: see bakery/sizing.py).

    With a CONFIG, --data-gb, --concurrency and --mem-limit replace its values.
    """
    import json

    from bakery import sizing
    from bakery.config import load_config
    from bakery.errors import UsageError

    if config is None and users is None:
        raise UsageError("give a CONFIG or --users N")
    if as_json and flavors:
        raise UsageError("--json does not cover --flavors yet; run them separately")
    cfg = load_config(config) if config is not None else None
    if cfg is not None:
        # The options replace the config's values, here and for --flavors below.
        cfg = sizing.with_overrides(
            cfg, data_gb=data_gb, concurrency=concurrency, mem_limit=mem_limit
        )
    need = sizing.size_estimate(
        cfg, users=users, data_gb=data_gb, concurrency=concurrency, mem_limit=mem_limit
    )
    if as_json:
        typer.echo(json.dumps(need.as_dict(), indent=2))
        return
    for line in need.lines():
        typer.echo(line)
    if flavors:
        if cfg is None:
            raise typer.BadParameter("--flavors needs a CONFIG (for its cloud)")
        from bakery.cloud import choose_flavor, connect

        conn = connect(cfg)
        auto = cfg.model_copy(
            update={"openstack": cfg.openstack.model_copy(update={"flavor": "auto"})}
        )
        flavor = choose_flavor(conn, auto)
        typer.echo(
            f"smallest fitting flavor: {flavor.name} ({flavor.vcpus} vCPUs, "
            f"{flavor.ram} MiB, {flavor.disk} GB)"
        )


# The workshop day's commands (check, users, collect) live in their own module.
from bakery import cli_day as _cli_day  # noqa: E402,F401


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[: args.index("--") if "--" in args else len(args)]:
        args.remove("--debug")
        _state["debug"] = True
    app(args=args, prog_name="bakery")


if __name__ == "__main__":  # pragma: no cover
    main()
