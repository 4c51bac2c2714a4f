"""Printable login slips: one per trainee, with the hub's address, its QR code and cut lines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import segno

from bakery.config.workshop import Workshop, load_config
from bakery.errors import RenderError, UsageError
from bakery.files import write_private
from bakery.progress import Reporter, quiet
from bakery.templates import render
from bakery.topology import topology
from bakery.workshop.accounts import Account, credentials_path, ensure_credentials, sheet_order

TEMPLATE = "print/slips.html.j2"
NO_URL_NOTE = (
    "no hub address known (no tls.domain, no --url): the slips say 'ask your instructor for the "
    "address' and have no QR code; pass --url once per server to print it"
)


@dataclass(frozen=True)
class Slip:
    """One trainee's slip: the login, and the address of the hub that has the account."""

    username: str
    password: str
    server: str
    index: int
    url: str | None
    qr: str | None
    # auth.kind oidc or github: what trainees log in with (no username or password on the slip).
    service: str | None = None


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(
            f"--url {url!r}: give the whole address trainees type, e.g. https://hub.example.org/"
        )
    if any(c.isspace() or not c.isprintable() for c in url):
        raise UsageError(f"--url {url!r}: an address has no spaces or control characters")
    return url


def hub_urls(cfg: Workshop, hubs: Sequence[str], urls: Sequence[str]) -> list[str | None]:
    """The address of each hub (``hubs``: their names, in order): ``--url`` values, else
    ``https://tls.domain/``.

    Raises:
        UsageError: the number of ``--url`` values is not the number of hubs, or one is not an
            http(s) address.
    """
    count = len(hubs)
    if not urls:
        return [f"https://{cfg.tls.domain}/" if cfg.tls.domain else None] * count
    checked = [_check_url(u) for u in urls]
    if len(checked) < count:
        missing = ", ".join(hubs[len(checked) :])
        raise UsageError(
            f"openstack.count is {count} but --url is given {len(checked)} time(s): the address "
            f"of {missing} is missing; pass --url once per server, in server order"
        )
    if len(checked) > count:
        raise UsageError(
            f"--url is given {len(checked)} times for {count} server(s) (openstack.count); pass "
            "it once per server"
        )
    return list(checked)


def _qr(url: str) -> str:
    """An SVG data URI of the QR code of ``url`` (no file, no network; the same bytes each time)."""
    return str(segno.make_qr(url, error="m").svg_data_uri(border=4, dark="#000", light="#fff"))


def make_slips(
    cfg: Workshop, accounts: Sequence[Account], urls: Sequence[str], order: Sequence[str] = ()
) -> list[Slip]:
    """One slip per trainee (admins get none), each with its own server's address.

    Trainees are dealt over ``openstack.count`` servers as ``bakery launch`` deals them (``order``:
    the sheet's, `sheet_order`).
    """
    by_name = {a.username: a for a in accounts}
    hubs = topology(cfg, order).hubs
    addresses = hub_urls(cfg, [hub.name for hub in hubs], urls)
    qr_codes = {u: _qr(u) for u in dict.fromkeys(addresses) if u is not None}
    if cfg.auth.oauth:  # one hub; users.count slips, each the address and how to log in
        (url,) = addresses
        qr = qr_codes[url] if url is not None else None
        return [
            Slip(f"slip-{i}", "", hubs[0].name, 1, url, qr, cfg.auth.service)
            for i in range(1, len(cfg.users.trainees()) + 1)
        ]
    slips = []
    for index, (hub, url) in enumerate(zip(hubs, addresses, strict=True), start=1):
        for name in hub.trainees:
            account = by_name[name]
            qr = qr_codes[url] if url is not None else None
            slips.append(Slip(name, account.password, hub.name, index, url, qr))
    return slips


class _SlipCounter(HTMLParser):
    """Reads back the rendered page: the user named by each slip, in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.users: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section" and values.get("class") == "slip":
            self.users.append(values.get("data-user") or "")


def render_slips(cfg: Workshop, slips: Sequence[Slip]) -> str:
    """The HTML page of ``slips``, checked to hold exactly one slip per trainee given."""
    page = render(TEMPLATE, title=cfg.name, slips=list(slips), servers=len(topology(cfg).hubs))
    reader = _SlipCounter()
    reader.feed(page)
    reader.close()
    if reader.users != [s.username for s in slips]:
        raise RenderError(
            f"{TEMPLATE}: the page holds slips for {len(reader.users)} users, not the "
            f"{len(slips)} trainees given; a bug in the template"
        )
    return page


def write_slips(
    *,
    config_path: str | Path,
    output: str | Path,
    urls: Sequence[str] = (),
    progress: Reporter = quiet,
) -> list[Slip]:
    """Write the trainees' login slips to ``output`` (mode 600: they hold the passwords).

    The passwords come from the credentials sheet beside the config, made as
    ``bakery credentials`` makes them. Returns the slips written.
    """
    cfg = load_config(config_path)
    sheet = credentials_path(config_path)
    accounts = ensure_credentials(cfg, sheet)
    slips = make_slips(cfg, accounts, urls, sheet_order(sheet))
    if any(s.url is None for s in slips):
        progress(NO_URL_NOTE)
    write_private(output, render_slips(cfg, slips))
    return slips


def credentials_sheet(*, config_path: Path, as_csv: bool = False, as_json: bool = False) -> str:
    """The login sheet to hand out: one line per account, trainees first.

    ``as_csv`` gives ``username,password`` lines; ``as_json`` a list of ``{"username",
    "password", "admin"}`` objects (for mail merges and scripts).
    """
    if as_csv and as_json:
        raise UsageError("--csv and --json: choose one")
    cfg = load_config(config_path)
    if cfg.auth.oauth:
        raise UsageError(
            f"{config_path}: auth.kind {cfg.auth.kind}: there is no login sheet, people log in "
            f"with {cfg.auth.service} (bakery holds no password); `bakery credentials --slips "
            "FILE` prints the address and how to log in"
        )
    accounts = ensure_credentials(cfg, credentials_path(config_path))
    admins = set(cfg.users.admins)
    if as_json:
        rows = [
            {"username": a.username, "password": a.password, "admin": a.username in admins}
            for a in accounts
        ]
        return json.dumps(rows, indent=2) + "\n"
    if as_csv:
        return "username,password\n" + "".join(f"{a.username},{a.password}\n" for a in accounts)
    width = max(len(a.username) for a in accounts)
    where = f"https://{cfg.tls.domain}/" if cfg.tls.domain else "https://<the VM's address>/"
    lines = [f"Workshop {cfg.name}: {where}", ""]
    lines += [
        f"{a.username:<{width}}  {a.password}{'  (admin)' if a.username in admins else ''}"
        for a in accounts
    ]
    return "\n".join(lines) + "\n"
