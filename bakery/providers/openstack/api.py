"""OpenStack connection and look-ups: connect, turn SDK errors into bakery's, find by name.

openstacksdk is imported here and in the modules that build on this one (the rest of this
package), only by the commands that need a cloud. Safe retries (GET, DELETE, 429/503) are
keystoneauth's own, set on the connection; a create is never blindly repeated (see resources).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bakery.config.workshop import Workshop
from bakery.errors import (
    AuthError,
    CloudError,
    CloudNotConfigured,
    NotFoundError,
    QuotaError,
)

if TYPE_CHECKING:
    from openstack.connection import Connection

__all__ = [
    "api",
    "connect",
    "default_network",
    "find_flavor",
    "find_image",
    "find_network",
    "find_networks",
    "glance_formats",
    "network_ids",
]

T = TypeVar("T")

# keystoneauth retries these itself (with its exponential backoff): a read or a delete is safe to
# repeat; 429 and 503 mean the request was not taken. Creates switch the others off (resources).
CONNECT_RETRIES = 4
STATUS_RETRIES = 4
RETRIABLE_STATUS = [429, 500, 502, 503, 504]
RETRIABLE_FOR_CREATE = [429, 503]

TEST_COMMAND = "openstack --os-cloud NAME token issue"


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
        raise CloudError(f"{what}: {scrub(str(exc))}") from None
    except os_exc.HttpException as exc:
        raise _http_error(what, exc) from None
    except (ks.ClientException, os_exc.SDKException) as exc:
        # Not HTTP: discovery failures, ResourceTimeout of a waiter, ...
        raise CloudError(f"{what}: {scrub(str(exc))}") from None


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
    text = scrub(str(details or getattr(exc, "message", None) or exc).strip())
    return f"HTTP {status}: {text}" if status else text


# Nova's schema errors quote the whole request ("Invalid input for field/attribute server.
# Value: {...}. 'networks' is a required property"): the user-data (password hashes, the hub's
# config) in base64, 42 KB of it. An error message never carries a request body.
_QUOTED_VALUE = re.compile(r"Value: [\[{].*[\]}]\. ", re.DOTALL)
_LONG_BLOB = re.compile(r"[A-Za-z0-9+/=_-]{120,}")
DETAIL_MAX = 600


def scrub(text: str) -> str:
    """A cloud's message as bakery prints it: no quoted request, no long blob, bounded."""
    text = _QUOTED_VALUE.sub("Value: (the request, not shown). ", text)
    text = _LONG_BLOB.sub(lambda m: f"({len(m.group())} characters not shown)", text)
    if len(text) > DETAIL_MAX:
        text = text[:DETAIL_MAX] + f"... ({len(text) - DETAIL_MAX} more characters not shown)"
    return text


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


def find_flavor(conn: Connection, name: str, field: str = "openstack.flavor") -> Any:
    """The flavor ``name`` (``field`` names the setting in the message)."""
    flavor = api(f"find flavor {name}", conn.compute.find_flavor, name)
    if flavor is None:
        raise NotFoundError(
            f"{field}: flavor {name!r} not found; `openstack flavor list` shows them, "
            "`bakery size CONFIG --flavors` picks the smallest that fits, or set it to auto"
        )
    return flavor


def find_network(conn: Connection, name: str, field: str = "openstack.networks") -> Any:
    """The network ``name`` (``field`` names the setting in the message)."""
    net = api(f"find network {name}", conn.network.find_network, name)
    if net is None:
        raise NotFoundError(
            f"{field}: network {name!r} not found; `openstack network list` shows them"
        )
    return net


def find_networks(conn: Connection, cfg: Workshop) -> list[Any]:
    """The config's networks; none named: the project's own (``default_network``)."""
    if not cfg.openstack.networks:
        return [default_network(conn)]
    return [find_network(conn, name) for name in cfg.openstack.networks]


def network_ids(conn: Connection, cfg: Workshop) -> list[str]:
    """The IDs of :func:`find_networks`."""
    return [str(n.id) for n in find_networks(conn, cfg)]


def default_network(conn: Connection) -> Any:
    """``openstack.networks: []``: the network a server boots on, found before anything is made.

    Nova picks a network by itself only when the project sees exactly one; a project that sees
    its own and a shared or external one gets a 400 at the create. So: of the networks that are
    not external, the project's own if it has exactly one, else the only one it sees.

    Raises:
        NotFoundError: none, or several (named, with how to choose).
    """
    nets = api("list networks", lambda: list(conn.network.networks()))
    bootable = sorted((n for n in nets if not n.is_router_external), key=lambda n: (n.name, n.id))
    own = [n for n in bootable if n.project_id == conn.current_project_id]
    for pool in (own, bootable):
        if len(pool) == 1:
            return pool[0]
    if not bootable:
        raise NotFoundError(
            "openstack.networks: empty, and the project sees no network a server can boot on "
            "(only external ones); create one (`openstack network create`, a subnet and a "
            "router to the external network) or ask the cloud's admins which to use"
        )
    listed = ", ".join(f"{n.name} ({n.id})" for n in bootable)
    raise NotFoundError(
        f"openstack.networks: empty, and the project sees {len(bootable)} networks a server "
        f"can boot on: {listed}; name one, e.g. `networks: [{bootable[0].name}]`"
    )


# --- Glance ---------------------------------------------------------------------------------------


def glance_formats(conn: Connection) -> list[str] | None:
    """The disk formats this Glance takes (its image schema's list; None: it does not say)."""
    resp = api("read Glance's image schema", conn.image.get, "/schemas/image")
    if resp.status_code != 200:
        return None
    prop = (resp.json().get("properties") or {}).get("disk_format") or {}
    formats = [f for f in prop.get("enum") or [] if isinstance(f, str)]
    return formats or None


# --- servers --------------------------------------------------------------------------------------
