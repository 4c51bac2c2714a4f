"""A hostile battery: bad workshop files, each refused with a clear `file:line: field:` message."""

from __future__ import annotations

import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import cloud_config, config_error

from bakery.config.workshop import load_config, parse_config
from bakery.errors import BakeryError, ConfigError, OutputError, RenderError
from bakery.layout import SSHD_DROPIN
from bakery.vm.userdata import render_user_data
from bakery.vm.write import render_to
from bakery.workshop.accounts import credentials_path, ensure_credentials

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDx4 me@laptop"


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "name: ok\n" + "\n".join(lines) + "\n"


# (YAML, expected line, fragments of the message)
HOSTILE: list[tuple[str, int, list[str]]] = [
    # --- YAML that is not plain data ---
    (_bomb(), 2, ["anchor &a0 refused", "no anchors or aliases"]),
    ("name: ok\nx: *nope\n", 2, ["alias *nope refused"]),
    ("name: &n ok\n", 1, ["anchor &n refused"]),
    ("base: {a: 1}\nname: ok\nusers:\n  <<: {count: 2}\n", 4, ["merge key '<<' refused"]),
    ("name: ok\n? [a, b]\n: 1\n", 2, ["a key must be a plain name"]),
    ("name: ok\n? {a: 1}\n: 1\n", 2, ["a key must be a plain name"]),
    ("name: ok\nx: " + "[" * 1000 + "]" * 1000 + "\n", 2, ["nested more than"]),
    ("name: ok\nx: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n", 2, ["nested more than"]),
    ("name: ok\nx: !!python/object:os.system x\n", 2, ["invalid YAML"]),
    ("name: ok\nx: !!binary AAAA\n", 2, ["x: unknown key"]),
    ("name: ok\n\x00\n", 2, ["invalid YAML"]),
    ("name: ok\nname: again\n", 2, ["duplicate key 'name'"]),
    # --- a trailing newline or a control character in a checked value ---
    ('name: "ok\\n"\n', 1, ["name:", "use 2-40 characters"]),
    ('name: ok\nusers: {names: ["root\\n"]}\n', 2, ["users.names.0", "not a valid Linux user"]),
    ('name: ok\nusers: {names: ["alice\\n"]}\n', 2, ["users.names.0"]),
    ('name: ok\nusers: {admins: ["boss\\t"]}\n', 2, ["users.admins.0"]),
    ('name: ok\nusers: {prefix: "t\\n"}\n', 2, ["users.prefix"]),
    ('name: ok\nhostname: "a.org\\n"\n', 2, ["hostname", "DNS name"]),
    (
        'name: ok\ntls: {mode: letsencrypt, domain: "a.org\\n", email: a@b.org}\n',
        2,
        ["tls.domain"],
    ),
    (
        'name: ok\ntls: {mode: letsencrypt, domain: a.org, email: "a@b.org\\n"}\n',
        2,
        ["tls.email", "e-mail"],
    ),
    ('name: ok\nspawner: {image: "quay.io/x/y:1\\n"}\n', 2, ["spawner.image"]),
    ('name: ok\nspawner: {mem_limit: "2G\\nx"}\n', 2, ["spawner.mem_limit", "not a size"]),
    ('name: ok\nssh: {login_user: "ubuntu\\n"}\n', 2, ["ssh.login_user"]),
    ('name: ok\nssh: {authorized_keys: ["' + KEY + '\\n"]}\n', 2, ["authorized_keys.0"]),
    ('name: ok\npackages: ["vim\\n"]\n', 2, ["packages.0"]),
    ('name: ok\nhub: {versions: {jupyterhub: "5.2.1\\n"}}\n', 2, ["hub.versions.jupyterhub"]),
    ('name: ok\nfiles: [{path: "/etc/motd\\n", content: x}]\n', 2, ["files.0.path"]),
    ('name: ok\nfiles: [{path: /etc/motd, content: x, owner: "root:root\\n"}]\n', 2, ["owner"]),
    ('name: ok\nfiles: [{path: /etc/m, content: x, permissions: "0644\\n"}]\n', 2, ["permiss"]),
    ('name: ok\nbake: {ssh_user: "ubuntu\\n"}\n', 2, ["bake.ssh_user"]),
    ('name: ok\nbake: {image_name: "img\\n"}\n', 2, ["bake.image_name"]),
    ('name: ok\nbake: {flavor: "m1\\n"}\n', 2, ["bake.flavor", "control characters"]),
    ('name: ok\nopenstack: {flavor: "m1\\n"}\n', 2, ["openstack.flavor"]),
    ('name: ok\nopenstack: {metadata: {k: "v\\n"}}\n', 2, ["openstack.metadata.k"]),
    ('name: ok\nspawner: {network_subnet: "10.1.0.0/24\\n"}\n', 2, ["network_subnet"]),
    # --- system users and groups as trainee or admin names ---
    *[
        (f"name: ok\nusers: {{names: [{n}]}}\n", 2, ["users.names.0", "reserved"])
        for n in [
            "users",
            "sudo",
            "adm",
            "shadow",
            "staff",
            "disk",
            "kvm",
            "video",
            "audio",
            "plugdev",
            "netdev",
            "render",
            "input",
            "dialout",
            "cdrom",
            "floppy",
            "tape",
            "voice",
            "src",
            "operator",
            "utmp",
            "tty",
            "kmem",
            "sasl",
            "lxd",
            "ssl-cert",
            "crontab",
            "dhcpcd",
            "systemd-oom",
            "statd",
            "_rpc",
            "messagebus",
            "systemd-journal",
            "nogroup",
            "_ssh",
            "docker",
            "www-data",
        ]
    ],
    ("name: ok\nusers: {admins: [sudo]}\n", 2, ["users.admins.0", "reserved"]),
    ("name: ok\nssh: {login_user: daemon}\n", 2, ["ssh.login_user", "reserved"]),
    ("name: ok\nusers:\n  count: 2\n  names: [training01]\n", 4, ["'training01' is listed"]),
    ("name: ok\nusers:\n  prefix: abcdefghijklmnopqrstuvwxyz012\n", 3, ["users.prefix"]),
    # --- files that would replace bakery's own, folders, dangerous modes ---
    *[
        (f"name: ok\nfiles:\n  - {{path: {p}, content: x}}\n", 3, ["files.0.path", why])
        for p, why in [
            ("/etc/ssh/sshd_config.d/10-bakery.conf", "bakery's own"),
            ("/etc/jupyterhub/jupyterhub_config.py", "bakery"),
            ("/etc/jupyterhub/proxy.env", "bakery"),
            ("/usr/local/lib/bakery/firewall.sh", "bakery"),
            ("/etc/systemd/system/jupyterhub.service", "bakery's own"),
            ("/etc/systemd/system/bakery-firewall.service", "bakery's own"),
            ("/etc/nginx/conf.d/jupyterhub.conf", "bakery's own"),
            ("/etc/docker/daemon.json", "bakery's own"),
            ("/etc/bakery/bake.json", "bakery"),
            ("/srv/jupyterhub/jupyterhub_cookie_secret", "bakery manages"),
            ("/opt/jupyterhub/bin/jupyterhub", "bakery manages"),
            ("/etc/jupyterhub", "bakery manages"),
            ("/etc/ssh/sshd_config.d", "folder holding"),
            ("/etc/systemd", "folder holding"),
            ("/etc", "folder holding"),
            ("/", "names a folder"),
            ("/etc/.", "names a folder"),
            ("/etc/motd/", "names a folder"),
            ("/etc//motd", "names a folder"),
            ("/etc/./motd", "names a folder"),
            ("/etc/motd/..", "without '..'"),
            ("/proc/sys/kernel/x", "virtual filesystem"),
            ("/dev/sda", "virtual filesystem"),
        ]
    ],
    *[
        (
            f"name: ok\nfiles:\n  - path: /etc/x\n    content: x\n    permissions: '{m}'\n",
            5,
            ["files.0.permissions", "unsafe_permissions"],
        )
        for m in ("07777", "4755", "2755", "1777", "0666", "0777", "0602")
    ],
    (
        "name: ok\nfiles:\n  - {path: /etc/m, content: x}\n  - {path: /etc/m, content: y}\n",
        4,
        ["files.1.path", "more than once"],
    ),
    # --- networks that would expose the metadata service or the host ---
    *[
        (f"name: ok\nspawner:\n  network_subnet: {n}\n", 3, ["spawner.network_subnet", why])
        for n, why in [
            ("169.254.0.0/16", "link-local"),
            ("169.254.169.0/24", "link-local"),
            ("127.0.0.0/24", "loopback"),
            ("0.0.0.0/8", "unspecified"),
            ("240.0.0.0/4", "reserved"),
            ("224.0.0.0/24", "multicast"),
            ("100.64.0.0/24", "private IPv4"),
            ("8.8.8.0/24", "private IPv4"),
            ("10.0.0.0/30", "/28 or larger"),
            ("172.30.0.1/24", "host bits"),
            ("fd00::/64", "network_subnet"),
        ]
    ],
    # --- cross-field errors point at the field's line ---
    (
        "name: ok\ntls:\n  mode: letsencrypt\n  domain: hub.example.org\n  email: a@b.org\n"
        "openstack:\n  count: 2\n",
        7,
        ["openstack.count", "cannot point at 2 servers"],
    ),
    ("name: ok\nssh:\n  login_user: alice\n", 3, ["ssh.login_user", "authorized_keys"]),
    (
        "name: ok\nusers: {names: [alice]}\nssh:\n  login_user: alice\n  authorized_keys: ['"
        + KEY
        + "']\n",
        4,
        ["ssh.login_user", "ssh login user"],
    ),
    ("name: ok\nbake:\n  volume_size: 10\n", 3, ["bake.volume_size", "volume_backed"]),
    ("name: ok\nspawner:\n  kind: systemd\n  custom_image: {}\n", 4, ["spawner.custom_image"]),
    ("name: ok\nopenstack:\n  metadata:\n    bakery_x: y\n", 4, ["metadata.bakery_x"]),
    # --- YAML 1.1 values in string fields: "quote it", with the value as written ---
    (
        "name: ok\nusers: {names: [no]}\n",
        2,
        ["users.names.0", "YAML reads no as the boolean", "'no'"],
    ),
    ("name: ok\nusers: {names: [yes, bob]}\n", 2, ["quote it: 'yes'"]),
    ("name: ok\nusers: {admins: [on]}\n", 2, ["quote it: 'on'"]),
    ("name: ok\nusers: {names: [1234]}\n", 2, ["YAML reads 1234 as the number 1234"]),
    (
        "name: ok\nfiles:\n  - path: /etc/m\n    content: x\n    permissions: 0644\n",
        5,
        ["files.0.permissions", "YAML reads 0644 as the number 420", "quote it: '0644'"],
    ),
    ("name: 2024\n", 1, ["name", "quote it: '2024'"]),
    ("name: ok\npackages: [off]\n", 2, ["packages.0", "quote it: 'off'"]),
    ("name: ok\nusers: {password: yes}\n", 2, ["users.password", "quote it"]),
    ("name:\n", 1, ["name", "a value is needed"]),
    ("name: ok\nyes: 1\n", 2, ["key yes as bool True", "quote it: 'yes'"]),
    ("name: ok\nopenstack:\n  metadata: {on: x}\n", 3, ["quote it: 'on'"]),
    ("name: ok\nopenstack:\n  metadata: {12: x}\n", 3, ["key 12 as int 12"]),
    ("name: ok\n~: x\n", 2, ["quote it"]),
    (
        "name: ok\nspawner:\n  mem_limit: [1]\n",
        3,
        ["mem_limit: expected one value here, not a list"],
    ),
    ("name: ok\nspawner:\n  cpu_limit: {a: 1}\n", 3, ["expected one value here, not a mapping"]),
    ("name: ok\nfiles:\n  - {path: /etc/m, content: 2001-01-01}\n", 3, ["the date 2001-01-01"]),
    # --- issue 26: values that were accepted and broke the class later, or crashed (exit 70) ---
    (
        "name: ok\ncourse:\n  git: https://bob:ghp_T0KEN@github.com/org/repo.git\n",
        3,
        ["course.git", "user or token", "every trainee's browser"],
    ),
    *[
        (
            f"name: ok\ncourse:\n  git: https://github.com/o/r\n  branch: '{b}'\n",
            4,
            ["course.branch", "a branch name git takes"],
        )
        for b in ("-f", "a..b", "x.lock", "rel/.hidden", "v1.")
    ],
    (
        "name: ok\ntls:\n  mode: letsencrypt\n  domain: a.org\n  email: a@b.org\n"
        "  acme_server: https://ca.example.org:99999/dir\n",
        6,
        ["tls.acme_server", "the port must be 1-65535"],
    ),
    ("name: ok\nends: 2026-02-30T10:00:00+01:00\n", 2, ["is not a real date and time"]),
    ("name: ok\nends: 2026-12-01T10:00:00+24:00\n", 2, ["between -23:59 and +23:59"]),
    ("name: ok\nends: 0001-01-01T00:00:00+00:00\n", 2, ["ends", "years 2000-2199"]),
    ("name: ok\nends: 9999-12-31T23:59:59-12:00\n", 2, ["ends", "years 2000-2199"]),
    ("name: ok\ngrace: .inf\n", 2, ["grace", "is not a duration"]),
    ("name: ok\nopenstack: {hub_timeout: .inf}\n", 2, ["hub_timeout", "is not a duration"]),
    ("name: ok\nopenstack: {hub_timeout: 25h}\n", 2, ["hub_timeout", "at most 24 h"]),
    (
        "name: ok\nspawner: {kind: docker}\ncluster: {engine: swarm}\n"
        "shared_data:\n  path: /srv/cluster/data\n",
        5,
        ["shared_data.path", "/srv/cluster"],
    ),
    # A private key pasted where a CA certificate goes is refused, never rendered into user-data.
    (
        "name: ok\nca_certificates:\n  - |\n    -----BEGIN PRIVATE KEY-----\n    MIIB\n"
        "    -----END PRIVATE KEY-----\n",
        3,
        ["ca_certificates.0: paste one PEM certificate", "never a key"],
    ),
]


@pytest.mark.parametrize(("text", "line", "words"), HOSTILE, ids=[h[0][:50] for h in HOSTILE])
def test_hostile_config_refused_clearly(text: str, line: int, words: list[str]) -> None:
    message = config_error(text, line, words)
    assert "should match pattern" not in message and "Input should be" not in message, message


def test_alias_bomb_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(12))
    start = time.monotonic()
    with pytest.raises(ConfigError, match="refused"):
        load_config(path)
    assert time.monotonic() - start < 0.5


def test_a_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("name: ok\n#" + "x" * (5 * 1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="too large for a workshop file"):
        load_config(path)


def test_non_utf8_config(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_a_file_too_big_for_nova_is_named_at_its_line() -> None:
    import secrets

    blob = secrets.token_hex(60_000)  # random: gzip cannot shrink it below the limit
    text = f"name: ok\nfiles:\n  - path: /srv/data.txt\n    content: {blob}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("ws.yaml"))
    assert str(info.value).startswith("ws.yaml:4: files.0.content: /srv/data.txt: 120,000")


def test_unsafe_permissions_opt_in_and_safe_paths_pass() -> None:
    cfg = parse_config(
        "name: ok\nfiles:\n"
        "  - {path: /usr/local/bin/tool, content: x, permissions: '4755', "
        "unsafe_permissions: true}\n"
        "  - {path: /etc/ssh/sshd_config.d/20-site.conf, content: x}\n"
        "  - {path: /etc/jupyterhub-site.txt, content: x}\n",
        Path("ws.yaml"),
    )
    assert [f.path for f in cfg.files][-1] == "/etc/jupyterhub-site.txt"


def test_subnet_is_canonical() -> None:
    cfg = parse_config("name: ok\nspawner: {network_subnet: 10.9.0.0/255.255.0.0}\n", Path("w"))
    assert cfg.spawner.network_subnet == "10.9.0.0/16"


def test_every_debian_base_user_and_group_is_reserved() -> None:
    """Debian's own static users and groups (base-passwd's master files) are refused as names.

    The master files, not this machine's /etc/passwd: a developer's or CI's machine also has
    accounts of whatever it runs (the OpenStack test cloud adds nova, glance, ...), which no
    workshop VM has.
    """
    from bakery.config.fields import SYSTEM_NAMES

    names = set()
    for table in ("passwd.master", "group.master"):
        path = Path("/usr/share/base-passwd") / table
        if not path.is_file():
            if os.environ.get("CI"):
                pytest.fail(f"{path} is missing (Debian's base-passwd)")
            pytest.skip("not a Debian machine")
        text = path.read_text(encoding="utf-8")
        names |= {line.split(":")[0] for line in text.splitlines() if line and line[0] != "#"}
    assert len(names) > 30
    assert sorted(names - SYSTEM_NAMES) == []


# --- rendering what a hostile or careless config asks for ----------------------------------------


def _render(make_workshop: Any, text: str) -> dict[str, Any]:
    cfg, accounts = make_workshop(text)
    doc = cloud_config(render_user_data(cfg, stage="full", accounts=accounts).data)
    assert isinstance(doc, dict)
    return doc


def test_a_new_login_user_is_created_with_the_keys_and_sudo(make_workshop: Any) -> None:
    doc = _render(
        make_workshop,
        f"name: ok\nusers: {{count: 1}}\nssh:\n  login_user: alice\n  authorized_keys: ['{KEY}']\n",
    )
    alice = [u for u in doc["users"] if isinstance(u, dict) and u["name"] == "alice"]
    assert alice == [
        {
            "name": "alice",
            "shell": "/bin/bash",
            "lock_passwd": True,
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "ssh_authorized_keys": [KEY],
        }
    ]
    sshd = {f["path"]: f["content"] for f in doc["write_files"]}[SSHD_DROPIN]
    assert "AllowUsers alice\n" in sshd


def test_the_image_user_is_not_created_again(make_workshop: Any) -> None:
    for text in (
        "name: ok\nusers: {count: 1}\n",
        "name: ok\nusers: {count: 1}\nssh: {login_user: ubuntu}\n",
    ):
        doc = _render(make_workshop, text)
        assert doc["users"][0] == "default"
        assert [u["name"] for u in doc["users"][1:]] == ["training01", "instructor"]


def test_shared_password_never_reaches_the_admins(make_workshop: Any) -> None:
    _, accounts = make_workshop("name: ok\nusers: {count: 3, password: shared}\n")
    by_name = {a.username: a for a in accounts}
    assert by_name["instructor"].password != by_name["training01"].password
    assert by_name["training01"].password == by_name["training03"].password


def test_nova_size_error_names_the_biggest_file(make_workshop: Any) -> None:
    import secrets

    blob = secrets.token_hex(20_000)
    cfg, accounts = make_workshop(
        f"name: ok\nusers: {{count: 2}}\nfiles:\n  - {{path: /srv/a.txt, content: {blob}}}\n"
        f"  - {{path: /srv/b.txt, content: {blob}x}}\n"
    )
    with pytest.raises(RenderError) as info:
        render_user_data(cfg, stage="full", accounts=accounts, gzip_data=False)
    message = str(info.value)
    assert "files: /srv/b.txt (40,001 characters); files: /srv/a.txt" in message, message
    assert "Each of the" not in message and "copy large files another way" in message


# --- render -o: never onto a device, a FIFO, through a link, or via a reused temp file ------------


@pytest.fixture
def config(write_config: Any) -> Path:
    path: Path = write_config("name: ok\nusers: {count: 1}\n")
    return path


def test_render_refuses_a_device(config: Path) -> None:
    with pytest.raises(OutputError, match="not a regular file"):
        render_to(config_path=config, output=Path("/dev/null"), force=True)
    assert Path("/dev/null").is_char_device()


def test_render_refuses_a_fifo_without_hanging(config: Path) -> None:
    fifo = config.parent / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="not a regular file"):
        render_to(config_path=config, output=fifo)


def test_render_refuses_dev_stdout_and_links(config: Path) -> None:
    with pytest.raises(OutputError, match="symbolic link"):
        render_to(config_path=config, output=Path("/dev/stdout"))
    target = config.parent / "target"
    target.write_text("#cloud-config\n")
    link = config.parent / "user-data"
    link.symlink_to(target)
    with pytest.raises(OutputError, match="symbolic link"):
        render_to(config_path=config, output=link, force=True)
    assert target.read_text() == "#cloud-config\n" and link.is_symlink()


def test_render_does_not_reuse_a_planted_temp_file(config: Path) -> None:
    out = config.parent / "user-data"
    planted = config.parent / ".user-data.tmp"
    planted.write_text("planted")
    planted.chmod(0o666)
    render_to(config_path=config, output=out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert planted.read_text() == "planted"
    assert cloud_config(out.read_bytes())["write_files"]


def test_render_into_a_read_only_folder_names_the_file(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    ensure_credentials(load_config(config), credentials_path(config))
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    out = config.parent / "user-data"
    with pytest.raises(OutputError) as info:
        render_to(config_path=config, output=out)
    assert str(info.value).startswith(f"{out}: cannot write in"), info.value
    assert ".tmp" not in str(info.value)


def test_render_refuses_a_folder_and_a_foreign_file(config: Path) -> None:
    with pytest.raises(OutputError, match="is a folder"):
        render_to(config_path=config, output=config.parent)
    with pytest.raises(BakeryError, match="not bakery user-data"):
        render_to(config_path=config, output=config)


# --- issue 26: no secret in a message; certificates checked as DER, not by their label -----------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("name: ok\ncourse: {git: 'https://bob:ghp_T0KEN@github.com/o/r'}\n", "ghp_T0KEN"),
        (
            "name: ok\nssh:\n  authorized_keys:\n    - '-----BEGIN OPENSSH PRIVATE KEY----- "
            "b3BlbnNzaC1rZXktdjE SECRETBODY'\n",
            "SECRETBODY",
        ),
    ],
)
def test_a_refused_secret_is_not_repeated(text: str, secret: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, Path("w.yaml"))
    assert secret not in str(exc.value)
    assert "w.yaml:" in str(exc.value)


def _pem_config(pem: str) -> str:
    body = "".join(f"    {line}\n" for line in pem.strip().splitlines())
    return f"name: ok\nca_certificates:\n  - |\n{body}"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A real self-signed certificate and a real private key, both PEM (openssl)."""
    import subprocess

    from helpers import require_tool

    openssl = require_tool("openssl")
    d = tmp_path_factory.mktemp("ca")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=bakery test CA", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return (d / "cert.pem").read_text(), (d / "key.pem").read_text()


def test_a_real_certificate_passes(certificate: tuple[str, str]) -> None:
    cfg = parse_config(_pem_config(certificate[0]), Path("w.yaml"))
    assert cfg.ca_certificates[0].startswith("-----BEGIN CERTIFICATE-----")


def test_a_truncated_certificate_is_refused(certificate: tuple[str, str]) -> None:
    lines = certificate[0].strip().splitlines()
    truncated = "\n".join([*lines[:3], *lines[5:]])  # two whole base64 lines gone
    with pytest.raises(ConfigError, match=r"ca_certificates\.0: paste one PEM certificate"):
        parse_config(_pem_config(truncated), Path("w.yaml"))


def test_a_private_key_relabelled_as_a_certificate_is_refused(
    certificate: tuple[str, str],
) -> None:
    key = certificate[1].strip().splitlines()
    relabelled = "\n".join(["-----BEGIN CERTIFICATE-----", *key[1:-1], "-----END CERTIFICATE-----"])
    with pytest.raises(ConfigError) as exc:
        parse_config(_pem_config(relabelled), Path("w.yaml"))
    assert "never a key" in str(exc.value)
    assert key[2] not in str(exc.value)
