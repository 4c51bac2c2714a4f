"""The workshop model: defaults that reproduce the recipe, and one clear message per bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import config_error

from bakery.config.units import parse_size
from bakery.config.workshop import Workshop, load_config, parse_config
from bakery.errors import ConfigError


def test_defaults_reproduce_the_recipe() -> None:
    cfg = parse_config("name: intro\n", Path("w.yaml"))
    assert cfg.os == "ubuntu-24.04"
    assert cfg.hub.install == "venv"
    assert cfg.spawner.kind == "docker"
    assert cfg.spawner.image.startswith("quay.io/jupyter/datascience-notebook:")
    assert cfg.tls.mode == "self-signed"
    assert cfg.users.password == "random"
    assert cfg.users.trainees()[:2] == ["training01", "training02"]
    assert len(cfg.users.trainees()) == 30
    assert cfg.users.admins == ["instructor"]
    assert cfg.login_user == "ubuntu"
    assert cfg.spawner.gateway == "172.30.0.1"


def test_users_names_and_count_combine_and_pad() -> None:
    cfg = parse_config(
        "name: ab\nusers: {names: [ada, bob], prefix: t, count: 100}\n", Path("w.yaml")
    )
    trainees = cfg.users.trainees()
    assert trainees[:3] == ["ada", "bob", "t001"]
    assert trainees[-1] == "t100"
    only_names = parse_config("name: ab\nusers: {names: [ada]}\n", Path("w.yaml"))
    assert only_names.users.trainees() == ["ada"]


def test_debian_login_user_and_sizes() -> None:
    cfg = parse_config("name: ab\nos: debian-12\nspawner: {mem_limit: 1536M}\n", Path("w"))
    assert cfg.login_user == "debian"
    assert cfg.spawner.mem_limit == "1536M"
    assert parse_size("2G") == 2 * 1024**3
    assert parse_size("1.5GiB") == 1536 * 1024**2


# (YAML, expected line, expected words in the one message)
BAD = [
    ("nam: x\n", 1, ["nam", "did you mean 'name'"]),
    ("name: ok\nuserz: {}\n", 2, ["userz", "did you mean 'users'"]),
    ("name: ok\nspawner:\n  imgae: x\n", 3, ["spawner.imgae", "did you mean 'image'"]),
    ("name: ok\nusers:\n  count: 0\n", 3, ["users.count", "greater than or equal to 1"]),
    ("name: ok\nusers:\n  count: 1001\n", 3, ["users.count", "less than or equal to 1000"]),
    ("name: ok\nusers:\n  names: [root]\n", 3, ["users.names.0", "reserved"]),
    ("name: ok\nusers:\n  names: [Bob]\n", 3, ["users.names.0", "not a valid Linux user name"]),
    ("name: ok\nusers:\n  names: ['a b']\n", 3, ["not a valid Linux user name"]),
    ("name: ok\nusers:\n  names: [ada, ada]\n", 3, ["'ada' is listed twice"]),
    ("name: ok\nusers:\n  admins: [training01]\n", 3, ["'training01' is listed twice"]),
    ('name: ok\nusers:\n  names: ["x$(reboot)"]\n', 3, ["not a valid Linux user name"]),
    ("name: ok\ntls:\n  mode: letsencrypt\n", 3, ["tls.mode", "needs domain and email"]),
    ("name: ok\ntls: {mode: letsencrypt, domain: a.org}\n", 2, ["needs email"]),
    ("name: ok\ntls: {mode: letsencrypt, domain: 'a.org;', email: a@b.org}\n", 2, ["DNS name"]),
    ("name: ok\nspawner:\n  mem_limit: lots\n", 3, ["spawner.mem_limit", "not a size"]),
    ("name: ok\nspawner:\n  mem_limit: 1M\n", 3, ["below 128M"]),
    ("name: ok\nspawner:\n  image: 'Bad Image'\n", 3, ["spawner.image", "image reference"]),
    ("name: ok\nspawner:\n  image: 'x:1\"; rm -rf /'\n", 3, ["image reference"]),
    ("name: ok\nspawner:\n  kind: kubernetes\n", 3, ["spawner.kind", "'docker' or 'systemd'"]),
    ("name: ok\nos: windows\n", 2, ["os", "ubuntu-24.04"]),
    ("name: Bad_Name\n", 1, ["name", "lower-case letters, digits and '-'"]),
    ("name: 'x\"; import os'\n", 1, ["use 2-40 characters"]),
    ("name: ok\npackages: ['nginx; rm -rf /']\n", 2, ["packages.0", "Debian package name"]),
    ("name: ok\nfiles:\n  - {path: etc/motd, content: x}\n", 3, ["files.0.path", "absolute"]),
    ("name: ok\nfiles:\n  - {path: /a/../etc/shadow, content: x}\n", 3, ["without '..'"]),
    ("name: ok\nfiles:\n  - {path: /etc/m, content: x, permissions: 'rwx'}\n", 3, ["permissions"]),
    ("name: ok\nhub:\n  versions: {jupyterhub: '5; curl x'}\n", 3, ["hub.versions.jupyterhub"]),
    ("name: ok\nssh: {authorized_keys: ['not a key']}\n", 2, ["ssh.authorized_keys.0"]),
    ("name: ok\nssh: {login_user: root}\n", 2, ["ssh.login_user", "non-root"]),
    ("name: ok\nssh: {login_user: ubuntu}\nusers: {names: [ubuntu]}\n", 3, ["reserved"]),
    ("name: ok\nspawner: {network_subnet: 8.8.8.0/24}\n", 2, ["private IPv4"]),
    (
        "name: ok\nspawner: {custom_image: {pip: [x]}}\n",
        2,
        ["spawner.custom_image: moved", "environment:"],
    ),
    ("name: ok\nenvironment: {pip: ['x @ https://evil']}\n", 2, ["environment.pip.0", "URL"]),
    ("name: ok\nenvironment: {pip: ['pandas=2']}\n", 2, ["environment.pip.0", "not a requirement"]),
    (
        "name: ok\nspawner: {kind: systemd}\nenvironment: {conda: [x]}\n",
        3,
        ["spawner.kind: docker"],
    ),
    ("name: ok\nspawner: {kind: systemd}\nenvironment: {r: [dplyr]}\n", 3, ["kernels: [r]"]),
    ("name: ok\nspawner: {kind: systemd}\nenvironment: {python: '3.12'}\n", 3, ["VM's"]),
    ("name: ok\nenvironment: {r: [dplyr]}\n", 2, ["conda", "r-ggplot2"]),
    ("name: ok\nenvironment: {r: ['dplyr; x']}\n", 2, ["environment.r.0", "CRAN"]),
    ("name: ok\nenvironment: {index_url: 'ftp://pypi.example.org/simple'}\n", 2, ["simple index"]),
    (
        "name: ok\nenvironment: {index_url: 'https://u:t@pypi.example.org/s'}\n",
        2,
        ["user or token"],
    ),
    (
        "name: ok\nspawner: {kind: systemd, image_archive: {path: a.tar}}\n",
        2,
        ["image_archive needs spawner.kind: docker"],
    ),
    ("name: ok\nspawner: {image_archive: {path: 'a b.tar'}}\n", 2, ["archive's path"]),
    ("name: ok\nspawner: {image_archive: {path: a.tar, format: zip}}\n", 2, ["format"]),
    ("name: ok\nspawner: {image_archive: {path: a.tar, format: rootfs}}\n", 2, ["needs cmd"]),
    ("name: ok\nspawner: {image_archive: {path: a.tar, cmd: [x]}}\n", 2, ["only for format"]),
    (
        "name: ok\nspawner: {image_archive: {path: a.tar, format: rootfs, cmd: [x], "
        "env: {PATH: '/bin; reboot'}}}\n",
        2,
        ["image_archive.env.PATH"],
    ),
    ("name: ok\nname: again\n", 2, ["duplicate key 'name'", "first on line 1"]),
    ("name: ok\nusers: [1, 2\n", 3, ["invalid YAML"]),
    ("- just\n- a list\n", 1, ["expected a mapping"]),
]


@pytest.mark.parametrize(("text", "line", "words"), BAD, ids=[b[0][:40] for b in BAD])
def test_bad_input_gets_one_clear_message(text: str, line: int, words: list[str]) -> None:
    config_error(text, line, words)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file; `bakery init"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_config(tmp_path / "empty.yaml")


def test_missing_required_name() -> None:
    with pytest.raises(ConfigError, match=r"w.yaml:1: name: required field is missing"):
        parse_config("users: {count: 2}\n", Path("w.yaml"))


def test_model_is_frozen_and_strict(write_config: Callable[[str], Path]) -> None:
    cfg = load_config(write_config("name: ok\n"))
    assert isinstance(cfg, Workshop)
    with pytest.raises(Exception, match="frozen"):
        cfg.name = "other"  # type: ignore[misc]


def test_starter_validates_and_refuses_links_and_newline_names(tmp_path: Path) -> None:
    from bakery.config.starter import write_starter
    from bakery.errors import BakeryError, OutputError

    made = write_starter(tmp_path / "intro.yaml")
    assert load_config(made).name == "intro"
    with pytest.raises(BakeryError, match="--name"):
        write_starter(tmp_path / "x.yaml", name="ok\n")
    target = tmp_path / "target.yaml"
    target.write_text("keep\n")
    (tmp_path / "link.yaml").symlink_to(target)
    with pytest.raises(OutputError, match="symbolic link"):
        write_starter(tmp_path / "link.yaml", force=True)
    assert target.read_text() == "keep\n"
