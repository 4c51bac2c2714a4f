"""Login slips: one per trainee on the sheet, its own hub's address, all escaped, mode 600."""

from __future__ import annotations

import csv
import shutil
import stat
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
import segno

from bakery.config.workshop import load_config
from bakery.day.handouts import NO_URL_NOTE, write_slips
from bakery.errors import OutputError, UsageError
from bakery.progress import Collector
from bakery.templates import Quoted, environment
from bakery.topology import split_users
from bakery.workshop.accounts import credentials_path

BAKERY = shutil.which("bakery", path=str(Path(sys.executable).parent)) or "bakery"
HOSTILE = "https://hub.example.org/<script>alert('x')</script>&\""


@dataclass
class ParsedSlip:
    """What a reader of one printed slip sees."""

    user_attr: str
    server: str
    title: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    qr: list[str] = field(default_factory=list)


class SlipReader(HTMLParser):
    """An independent reader of the page: the text of each slip's fields and its QR images."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.slips: list[ParsedSlip] = []
        self._field: str | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "section" and "slip" in classes:
            self.slips.append(ParsedSlip(a["data-user"], a["data-server"]))
        elif self.slips and tag == "dd":
            self._field = classes[0]
            self.slips[-1].fields[self._field] = ""
        elif self.slips and tag == "h2":
            self._in_title = True
        elif self.slips and tag == "span":
            self._in_title = False  # "hub 1 of 2" is not part of the title
        elif self.slips and tag == "img":
            self.slips[-1].qr.append(a["src"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "dd":
            self._field = None
        elif tag == "h2":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._field is not None:
            self.slips[-1].fields[self._field] += data
        elif self._in_title:
            self.slips[-1].title += data.strip()


def read_slips(path: Path) -> list[ParsedSlip]:
    reader = SlipReader()
    reader.feed(path.read_text(encoding="utf-8"))
    reader.close()
    return reader.slips


def sheet(config: Path) -> dict[str, str]:
    """The sheet as the instructor's spreadsheet would read it: username -> password."""
    with credentials_path(config).open(encoding="utf-8") as fh:
        return {row["username"]: row["password"] for row in csv.DictReader(fh)}


def svg_of(data_uri: str) -> str:
    head, _, body = data_uri.partition(",")
    assert head.startswith("data:image/svg+xml")
    return urllib.parse.unquote(body)


def test_one_slip_per_trainee_matching_the_sheet(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    config = write_config("name: python-101\nusers: {count: 5, admins: [boss, helper]}\n")
    out = tmp_path / "slips.html"
    made = write_slips(config_path=config, output=out, urls=["https://hub.example.org/"])
    assert stat.S_IMODE(out.stat().st_mode) == 0o600

    passwords = sheet(config)
    trainees = [n for n in passwords if n not in {"boss", "helper"}]
    assert len(trainees) == 5
    slips = read_slips(out)
    assert [s.user_attr for s in slips] == trainees == [m.username for m in made]
    for slip in slips:
        assert slip.title == "python-101"
        assert slip.fields["username"] == slip.user_attr
        assert slip.fields["password"] == passwords[slip.user_attr]
        assert slip.fields["url"] == "https://hub.example.org/"
        # One QR code per slip, encoding exactly this slip's address.
        assert len(slip.qr) == 1
        assert "<path" in svg_of(slip.qr[0])
        qr = segno.make_qr("https://hub.example.org/", error="m")
        assert slip.qr[0] == qr.svg_data_uri(border=4, dark="#000", light="#fff")


def test_trainees_split_over_servers_each_with_its_url(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    config = write_config(
        "name: python-101\nusers: {names: [ada, bob], count: 5, admins: [boss]}\n"
        "openstack: {count: 2}\n"
    )
    urls = ["https://one.example.org/", "https://two.example.org/"]
    out = tmp_path / "slips.html"
    write_slips(config_path=config, output=out, urls=urls)
    slips = read_slips(out)
    parts = split_users(load_config(config))
    expected = [
        (name, part.hostname, url)
        for part, url in zip(parts, urls, strict=True)
        for name in part.users.trainees()
    ]
    assert [(s.user_attr, s.server, s.fields["url"]) for s in slips] == expected
    # Dealt round-robin, as `bakery launch` places them: every other trainee on hub 1.
    assert [s.user_attr for s in slips if s.fields["url"] == urls[0]] == [
        "ada",
        "training01",
        "training03",
        "training05",
    ]
    assert len(slips) == 7 and "boss" not in {s.user_attr for s in slips}
    assert {s.server for s in slips} == {"python-101-1", "python-101-2"}
    passwords = sheet(config)
    assert all(s.fields["password"] == passwords[s.user_attr] for s in slips)
    for slip in slips:
        qr = segno.make_qr(slip.fields["url"], error="m")
        assert slip.qr == [qr.svg_data_uri(border=4, dark="#000", light="#fff")]


def test_a_hostile_url_is_escaped(write_config: Callable[[str], Path], tmp_path: Path) -> None:
    config = write_config("name: python-101\nusers: {count: 2}\n")
    out = tmp_path / "slips.html"
    write_slips(config_path=config, output=out, urls=[HOSTILE])
    text = out.read_text(encoding="utf-8")
    assert "<script" not in text and "alert('x')" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;&quot;" in text
    # Escaped, not mangled: a reader (and the QR code) gets the address back unchanged.
    slips = read_slips(out)
    assert [s.fields["url"] for s in slips] == [HOSTILE, HOSTILE]
    assert all(
        s.qr
        == [segno.make_qr(HOSTILE, error="m").svg_data_uri(border=4, dark="#000", light="#fff")]
        for s in slips
    )


def test_html_filter_escapes_and_marks_safe() -> None:
    escaped = environment().filters["html"]('<a href="x">&\'')
    assert isinstance(escaped, Quoted)
    assert escaped == "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;"


def test_the_same_sheet_gives_the_same_bytes(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    config = write_config("name: python-101\nusers: {count: 3}\nopenstack: {count: 3}\n")
    urls = ["https://a.example.org/", "https://b.example.org/", "https://c.example.org/"]
    write_slips(config_path=config, output=tmp_path / "1.html", urls=urls)
    write_slips(config_path=config, output=tmp_path / "2.html", urls=urls)
    assert (tmp_path / "1.html").read_bytes() == (tmp_path / "2.html").read_bytes()


def test_tls_domain_is_the_address(write_config: Callable[[str], Path], tmp_path: Path) -> None:
    config = write_config(
        "name: python-101\nusers: {count: 2}\n"
        "tls: {mode: letsencrypt, domain: hub.example.org, email: me@example.org}\n"
    )
    out = tmp_path / "slips.html"
    write_slips(config_path=config, output=out)
    assert [s.fields["url"] for s in read_slips(out)] == ["https://hub.example.org/"] * 2


def test_no_address_prints_a_placeholder_and_a_note(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    config = write_config("name: python-101\nusers: {count: 2}\nopenstack: {count: 2}\n")
    out = tmp_path / "slips.html"
    notes = Collector()
    write_slips(config_path=config, output=out, progress=notes)
    assert notes.messages == [NO_URL_NOTE]
    slips = read_slips(out)
    assert [s.fields["url"] for s in slips] == ["ask your instructor for the address"] * 2
    assert all(s.qr == [] for s in slips)


def test_a_sheet_row_the_config_dropped_gets_no_slip(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    config = write_config("name: python-101\nusers: {count: 3}\n")
    write_slips(config_path=config, output=tmp_path / "slips.html")
    config.write_text("name: python-101\nusers: {count: 2}\n")
    write_slips(config_path=config, output=tmp_path / "slips.html")
    assert "training03" in sheet(config)  # kept on the sheet, but no account on the hub
    assert [s.user_attr for s in read_slips(tmp_path / "slips.html")] == [
        "training01",
        "training02",
    ]


@pytest.mark.parametrize(
    ("count", "urls", "message"),
    [
        (3, ["https://a.example.org/"], "the address of python-101-2, python-101-3 is missing"),
        (1, ["https://a.example.org/", "https://b.example.org/"], "given 2 times for 1 server"),
        (1, ["hub.example.org"], "give the whole address"),
        (1, ["javascript:alert(1)"], "give the whole address"),
        (1, ["https://hub.example.org/a b"], "no spaces or control characters"),
    ],
)
def test_bad_urls(
    write_config: Callable[[str], Path], tmp_path: Path, count: int, urls: list[str], message: str
) -> None:
    config = write_config(f"name: python-101\nusers: {{count: 4}}\nopenstack: {{count: {count}}}\n")
    out = tmp_path / "slips.html"
    with pytest.raises(UsageError, match=message):
        write_slips(config_path=config, output=out, urls=urls)
    assert not out.exists()


def test_refuses_to_write_through_a_link(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    config = write_config("name: python-101\nusers: {count: 1}\n")
    target = tmp_path / "elsewhere.html"
    target.write_text("keep")
    (tmp_path / "slips.html").symlink_to(target)
    with pytest.raises(OutputError, match="symbolic link"):
        write_slips(config_path=config, output=tmp_path / "slips.html")
    assert target.read_text() == "keep"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BAKERY, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_cli(write_config: Callable[[str], Path], tmp_path: Path) -> None:
    write_config("name: python-101\nusers: {count: 4, admins: [boss]}\nopenstack: {count: 2}\n")
    ok = run(
        "credentials", "workshop.yaml", "--slips", "slips.html",
        "--url", "https://a.example.org/", "--url", "https://b.example.org/",
        cwd=tmp_path,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "" and "wrote 4 login slips to slips.html" in ok.stderr
    assert stat.S_IMODE((tmp_path / "slips.html").stat().st_mode) == 0o600

    missing = run(
        "credentials", "workshop.yaml", "--slips", "s.html", "--url", "https://a.example.org/",
        cwd=tmp_path,
    )  # fmt: skip
    assert missing.returncode == 2 and "python-101-2 is missing" in missing.stderr
    assert "traceback" not in missing.stderr.lower()

    stray = run("credentials", "workshop.yaml", "--url", "https://a.example.org/", cwd=tmp_path)
    assert stray.returncode == 2 and "--url goes with --slips" in stray.stderr

    placeholder = run("credentials", "workshop.yaml", "--slips", "p.html", cwd=tmp_path)
    assert placeholder.returncode == 0 and "ask your instructor" in placeholder.stderr


def test_look_alikes_on_a_hand_edited_password(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    config = write_config("name: python-101\nusers: {count: 1}\n")
    credentials_path(config).write_text("username,password\ntraining01,Il1O0o<&>\n")
    out = tmp_path / "slips.html"
    write_slips(config_path=config, output=out)
    text = out.read_text(encoding="utf-8")
    # Every zero carries a drawn dot (whatever font prints it); the text itself is unchanged.
    assert '<dd class="password mono">Il1O<span class="zero">0</span>o&lt;&amp;&gt;</dd>' in text
    assert 'training<span class="zero">0</span>1' in text
    [slip] = read_slips(out)
    assert (slip.fields["username"], slip.fields["password"]) == ("training01", "Il1O0o<&>")
