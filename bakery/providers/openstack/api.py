"""OpenStack connection and look-ups: connect, turn SDK errors into bakery's, find, wait, watch.

openstacksdk is imported here and in the modules that build on this one (resources, launch,
launch_plan), only by the commands that need a cloud. Safe retries (GET, DELETE, 429/503) are
keystoneauth's own, set on the connection; a create is never blindly repeated (see resources).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bakery.config.workshop import Workshop
from bakery.errors import (
    AuthError,
    BakeryError,
    CloudError,
    CloudNotConfigured,
    NotFoundError,
    QuotaError,
)
from bakery.progress import Reporter, quiet
from bakery.vm import image as bake_image
from bakery.vm.console import ConsoleScan
from bakery.vm.console import scan as scan_console
from bakery.vm.stages import Stage
from bakery.workshop.sizing import Estimate, estimate_workshop, smallest_flavor

if TYPE_CHECKING:
    from openstack.connection import Connection

__all__ = [
    "META_KEY",
    "api",
    "choose_flavor",
    "connect",
    "console_scan",
    "console_state",
    "find_image",
    "find_network",
    "hub_health",
    "image_properties",
    "image_stage",
    "network_ids",
    "server_fault",
    "wait_active",
]

T = TypeVar("T")

META_KEY = "bakery_workshop"
# keystoneauth retries these itself (with its exponential backoff): a read or a delete is safe to
# repeat; 429 and 503 mean the request was not taken. Creates switch the others off (resources).
CONNECT_RETRIES = 4
STATUS_RETRIES = 4
RETRIABLE_STATUS = [429, 500, 502, 503, 504]
RETRIABLE_FOR_CREATE = [429, 503]

TEST_COMMAND = "openstack --os-cloud NAME token issue"


def _quiet() -> None:
    # urllib3 warns on every unverified HTTPS request; the hub's certificate is self-signed.
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")


# --- SDK errors into bakery's ---------------------------------------------------------------------


def api(what: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``func`` and turn openstacksdk's and keystoneauth's errors into bakery's.

    No retries here: the connection's keystoneauth settings retry what is safe to repeat.

    Raises:
        AuthError, QuotaError, NotFoundError (HTTP 404), CloudError: with ``what`` and the
            cloud's own message.
    """
    from keystoneauth1 import exceptions as ks
    from openstack import exceptions as os_exc

    try:
        return func(*args, **kwargs)
    except ks.Unauthorized as exc:
        raise AuthError(
            f"{what}: the cloud refused the credentials ({exc}); check clouds.yaml / "
            f"OS_CLOUD, or the application credential's expiry; test with `{TEST_COMMAND}`"
        ) from None
    except (ks.ConnectFailure, ks.ConnectTimeout, ks.RetriableConnectionFailure) as exc:
        raise CloudError(f"{what}: cannot reach the cloud: {exc}") from None
    except os_exc.ResourceFailure as exc:
        raise CloudError(f"{what}: {exc}") from None
    except os_exc.HttpException as exc:
        raise _http_error(what, exc) from None
    except (ks.ClientException, os_exc.SDKException) as exc:
        # Not HTTP: discovery failures, ResourceTimeout of a waiter, ...
        raise CloudError(f"{what}: {exc}") from None


def _http_error(what: str, exc: Any) -> CloudError:
    status = exc.status_code or 0
    detail = _http_detail(exc)
    if status == 401:
        return AuthError(f"{what}: unauthorized: {detail}")
    if "quota" in detail.lower() or status == 413:
        return QuotaError(f"{what}: quota exceeded: {detail}")
    if status == 404:
        return NotFoundError(f"{what}: not found: {detail}")
    error = CloudError(f"{what}: {detail}")
    error.status = status  # type: ignore[attr-defined]
    return error


def http_status(exc: BaseException) -> int:
    """The HTTP status of a CloudError that ``api`` made from an HTTP answer (0: none)."""
    return int(getattr(exc, "status", 0) or 0)


def _http_detail(exc: Exception) -> str:
    details = getattr(exc, "details", None)
    status = getattr(exc, "status_code", None)
    text = str(details or getattr(exc, "message", None) or exc).strip()
    return f"HTTP {status}: {text}" if status else text


# --- the connection -------------------------------------------------------------------------------


def config_files() -> list[str]:
    """Where openstacksdk looks for clouds.yaml, in its order (OS_CLIENT_CONFIG_FILE first)."""
    from openstack.config import loader

    files = [f for f in loader.CONFIG_FILES if f.endswith(".yaml")]
    override = os.environ.get("OS_CLIENT_CONFIG_FILE")
    return [override, *files] if override else list(dict.fromkeys(files))


def not_configured(cloud: str | None, detail: str) -> CloudNotConfigured:
    """The error for a missing or incomplete cloud entry, with how to configure one."""
    which = f"cloud {cloud!r}" if cloud else "no cloud is configured"
    return CloudNotConfigured(
        f"{which}: {detail}\n"
        "  name the cloud with openstack.cloud in the workshop file or OS_CLOUD=NAME, and give "
        "it credentials in a clouds.yaml, looked for in: " + ", ".join(config_files()) + "\n"
        "  (or set OS_CLIENT_CONFIG_FILE to the file, or OS_AUTH_URL and the other OS_* "
        f"variables of an openrc file); test it with `{TEST_COMMAND}`"
    )


def connect(cfg: Workshop) -> Connection:
    """An openstacksdk connection to the config's cloud (``openstack.cloud``, else OS_CLOUD).

    Raises:
        CloudNotConfigured: no such cloud, or no cloud at all (with how to configure one).
        AuthError: the cloud refused the credentials.
    """
    import openstack
    from keystoneauth1 import exceptions as ks
    from openstack import exceptions as os_exc

    cloud = cfg.openstack.cloud or os.environ.get("OS_CLOUD")
    retries: dict[str, Any] = {
        "connect_retries": CONNECT_RETRIES,
        "status_code_retries": STATUS_RETRIES,
        "retriable_status_codes": RETRIABLE_STATUS,
    }
    try:
        conn = openstack.connect(cloud=cloud, **retries) if cloud else openstack.connect(**retries)
    except os_exc.ConfigException as exc:
        raise not_configured(cloud, str(exc)) from None
    except (ks.MissingAuthPlugin, ks.NoMatchingPlugin, ks.OptionError) as exc:
        raise not_configured(cloud, f"no usable credentials ({exc})") from None
    api("authenticate", _authenticate, conn, cloud)
    return conn


def _authenticate(conn: Connection, cloud: str | None) -> None:
    # Not conn.authorize(): it turns keystoneauth's Unauthorized into a bare SDKException.
    from keystoneauth1 import exceptions as ks

    try:
        conn.session.get_token()
    except (ks.MissingAuthPlugin, ks.NoMatchingPlugin, ks.OptionError) as exc:
        raise not_configured(cloud, f"no usable credentials ({exc})") from None


# --- look-ups -------------------------------------------------------------------------------------


def find_image(conn: Connection, name_or_id: str) -> Any:
    """The image named (or with the ID) ``name_or_id``.

    Raises:
        NotFoundError: no such image (the message says how to list them).
    """
    image = api(f"find image {name_or_id}", conn.image.find_image, name_or_id)
    if image is None:
        raise NotFoundError(
            f"image {name_or_id!r} not found; `openstack image list` shows the images you can "
            "use: pass --image NAME or set openstack.image"
        )
    return image


def image_properties(img: Any) -> dict[str, Any]:
    """An image's Glance properties, wherever openstacksdk put them (attributes, ``properties``)."""
    props = dict(getattr(img, "properties", None) or {})
    props.update({k: v for k, v in img.to_dict().items() if isinstance(k, str)})
    return props


def image_stage(img: Any) -> Stage:
    """``boot`` for an image bakery baked (its properties hold a bake record), else ``full``.

    The same test as ``check``, ``image upload`` and ``image delete`` use: bakery.vm.image decides.
    """
    return "full" if bake_image.record_from_properties(image_properties(img)) is None else "boot"


def find_flavor(conn: Connection, name: str, field: str = "openstack.flavor") -> Any:
    """The flavor ``name`` (``field`` names the setting in the message)."""
    flavor = api(f"find flavor {name}", conn.compute.find_flavor, name)
    if flavor is None:
        raise NotFoundError(
            f"{field}: flavor {name!r} not found; `openstack flavor list` shows them, "
            "`bakery size CONFIG --flavors` picks the smallest that fits, or set it to auto"
        )
    return flavor


def choose_flavor(conn: Connection, cfg: Workshop) -> Any:
    """The configured flavor, or with ``auto`` the smallest that fits `bakery size`."""
    if cfg.openstack.flavor != "auto":
        return find_flavor(conn, cfg.openstack.flavor)
    return auto_flavor(conn, cfg, estimate_workshop(cfg))


def auto_flavor(conn: Connection, cfg: Workshop, need: Estimate) -> Any:
    """The smallest flavor that holds ``need``."""
    flavors = api("list flavors", lambda: list(conn.compute.flavors(details=True)))
    table = [
        {"name": f.name, "ram": f.ram, "vcpus": f.vcpus, "disk": f.disk, "obj": f}
        for f in flavors
        if cfg.openstack.boot_volume or f.disk
    ]
    best = smallest_flavor(table, need, boot_volume=cfg.openstack.boot_volume)
    if best is None:
        raise NotFoundError(
            f"no flavor fits {need.memory_mib} MiB, {need.vcpus} vCPUs, {need.disk_gb} GB; "
            "raise openstack.count to split the trainees, or name a flavor"
        )
    return best["obj"]


def find_network(conn: Connection, name: str, field: str = "openstack.networks") -> Any:
    """The network ``name`` (``field`` names the setting in the message)."""
    net = api(f"find network {name}", conn.network.find_network, name)
    if net is None:
        raise NotFoundError(
            f"{field}: network {name!r} not found; `openstack network list` shows them"
        )
    return net


def network_ids(conn: Connection, cfg: Workshop) -> list[str]:
    """The IDs of the config's networks."""
    return [str(find_network(conn, name).id) for name in cfg.openstack.networks]


# --- servers --------------------------------------------------------------------------------------


def server_fault(server: Any) -> str:
    """Nova's fault message of a server in ERROR."""
    fault = server.fault or {}
    return str(fault.get("message") or fault.get("details") or "no fault message from Nova")


def wait_active(conn: Connection, server: Any, timeout: float, progress: Reporter = quiet) -> Any:
    """Wait (openstacksdk's waiter) until ``server`` is ACTIVE; returns it fresh.

    Raises:
        CloudError: the server went to ERROR (with Nova's fault) or is not up after ``timeout``.
    """
    from openstack import exceptions as os_exc

    name = server.name
    start = time.monotonic()

    def wait() -> Any:
        try:
            return conn.compute.wait_for_server(
                server, status="ACTIVE", failures=["ERROR"], interval=2, wait=timeout
            )
        except os_exc.ResourceFailure:
            failed = api(f"get server {name}", conn.compute.get_server, server.id)
            raise CloudError(f"server {name} failed to build: {server_fault(failed)}") from None
        except os_exc.ResourceTimeout:
            raise CloudError(
                f"server {name} still not ACTIVE after {timeout:.0f} s; "
                "the cloud may be out of capacity"
            ) from None

    progress(f"server {name}: waiting for ACTIVE", transient=True)
    server = api(f"wait for server {name}", wait)
    progress(f"server {name}: ACTIVE after {time.monotonic() - start:.0f} s")
    return server


def console_scan(conn: Connection, server: Any, cfg: Workshop) -> ConsoleScan:
    """What the server's console log says of cloud-init (bakery.console reads it): its stage,
    end and failure lines; an empty scan when the cloud does not give the log."""
    try:
        out = api("read console", conn.compute.get_server_console_output, server, length=400).get(
            "output", ""
        )
    except BakeryError:
        return ConsoleScan()
    return scan_console(str(out), workshop=cfg.name)


def console_state(conn: Connection, server: Any, cfg: Workshop) -> tuple[str, list[str]]:
    """cloud-init's state from the console log: ``done``, ``error``, ``running`` or ``unknown``,
    and the failure lines (the last 15)."""
    result = console_scan(conn, server, cfg)
    return result.state, result.failures[-15:]


def hub_health(ip: str, timeout: float = 5) -> str:
    """``ok`` when https://IP/hub/health answers 200 (self-signed certificates accepted)."""
    import requests

    _quiet()
    session = requests.Session()
    session.trust_env = False  # a REQUESTS_CA_BUNDLE in the environment would override verify
    try:
        resp = session.get(f"https://{ip}/hub/health", verify=False, timeout=timeout)
    except requests.RequestException as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok" if resp.status_code == 200 else f"HTTP {resp.status_code}"
