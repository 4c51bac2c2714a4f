"""Random valid workshops: the output parses, passes the schema, fits Nova, keeps every user."""

from __future__ import annotations

import gzip
import re
import subprocess
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import require_tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from bakery.config.fields import RESERVED_USERNAMES
from bakery.config.infra import NOVA_USER_DATA_LIMIT
from bakery.config.workshop import Workshop
from bakery.vm.userdata import render_user_data
from bakery.workshop.accounts import Account

# A fixed, valid hash: hashing is tested elsewhere and would only slow the search down.
HASH = (
    "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEO"
    "faS35inz1"
)

# Explicit names never look like generated ones (PREFIX + digits), so every draw is valid.
usernames = st.from_regex(r"[a-z_][a-z0-9_-]{0,31}", fullmatch=True).filter(
    lambda n: (
        n not in RESERVED_USERNAMES
        and n not in {"ubuntu", "debian"}
        and not re.fullmatch(r"(training|student|t|ws_)[0-9]+", n)
    )
)
text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=200
)


@st.composite
def workshops(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(usernames, max_size=8, unique=True))
    admins = draw(st.lists(usernames.filter(lambda n: n not in names), max_size=2, unique=True))
    users: dict[str, Any] = {"names": names, "admins": admins}
    if draw(st.booleans()) or not names:
        prefix = draw(st.sampled_from(["training", "student", "t", "ws_"]))
        users.update(prefix=prefix, count=draw(st.integers(1, 40)))
    return {
        "name": draw(st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)),
        "os": draw(st.sampled_from(["ubuntu-24.04", "ubuntu-22.04", "debian-12"])),
        "hub": {"install": draw(st.sampled_from(["venv", "conda"]))},
        "users": users,
        "spawner": {
            "kind": draw(st.sampled_from(["docker", "systemd"])),
            "mem_limit": draw(st.sampled_from(["512M", "2G", "1536M", 2**30])),
            "disk_limit": draw(st.sampled_from(["auto", "64M", "2G", 2**31])),
            "cpu_limit": draw(st.floats(0.1, 8, allow_nan=False)),
            "idle_cull_minutes": draw(st.integers(0, 600)),
        },
        "files": [
            {"path": f"/etc/bakery-extra/{i}.txt", "content": draw(text)}
            for i in range(draw(st.integers(0, 2)))
        ],
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(raw=workshops(), stage=st.sampled_from(["full", "boot"]))
def test_random_workshops_render_valid_user_data(raw: dict[str, Any], stage: str) -> None:
    cfg = Workshop.model_validate(raw)
    accounts = [Account(n, "unused-here", HASH) for n in cfg.users.all_names()]
    result = render_user_data(cfg, stage=stage, accounts=accounts)  # type: ignore[arg-type]
    assert result.encoded_size <= NOVA_USER_DATA_LIMIT
    plain = gzip.decompress(result.data) if result.gzipped else result.data
    doc = yaml.safe_load(plain)
    assert [u["name"] for u in doc["users"][1:]] == cfg.users.all_names()
    contents = {f["path"]: f["content"] for f in doc["write_files"]}
    for extra in cfg.files:
        assert contents[extra.path] == extra.content
    hub = contents["/etc/jupyterhub/jupyterhub_config.py"]
    compile(hub, "jupyterhub_config.py", "exec")
    cloud_init = require_tool("cloud-init")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "user-data"
        path.write_bytes(plain)
        check = subprocess.run(
            [cloud_init, "schema", "-c", str(path)], capture_output=True, text=True, check=False
        )
    assert check.returncode == 0, check.stdout + check.stderr


# --- every checked string refuses line breaks and control characters -----------------------------

# A valid value for every string in the model (path: "[]" a list item, "{key}"/"{value}" a dict's).
VALID: dict[tuple[str, ...], str] = {
    ("name",): "ok",
    ("hostname",): "hub.example.org",
    ("hub", "versions", "jupyterhub"): "5.2.1",
    ("hub", "versions", "dockerspawner"): "14.0.0",
    ("hub", "versions", "configurable_http_proxy"): "4.6.2",
    ("hub", "versions", "idle_culler"): "1.4.0",
    ("hub", "versions", "oauthenticator"): "17.4.0",
    ("auth", "issuer"): "https://login.example.edu/realms/main",
    ("auth", "client_id"): "bakery-hub",
    ("auth", "client_secret_file"): "client.secret",
    ("auth", "allowed_users", "[]"): "ana@example.edu",
    ("auth", "allowed_groups", "[]"): "/students",
    ("auth", "admin_users", "[]"): "prof",
    ("auth", "admin_groups", "[]"): "staff",
    ("auth", "groups_claim"): "groups",
    ("auth", "username_claim"): "preferred_username",
    ("auth", "login_service"): "Example University",
    ("hub", "versions", "systemdspawner"): "1.0.2",
    ("hub", "versions", "jupyterlab"): "4.3.5",
    ("environment", "from"): "./env",
    ("shared_data", "url"): "https://data.example.org/d.tar.gz",
    ("shared_data", "sha256"): "0" * 64,
    ("environment", "pip", "[]"): "pandas==2.2.3",
    ("environment", "conda", "[]"): "r-ggplot2",
    ("environment", "apt", "[]"): "graphviz",
    ("environment", "r", "[]"): "ggplot2",
    ("environment", "index_url"): "https://pypi.example.org/simple",
    ("users", "prefix"): "student",
    ("users", "names", "[]"): "alice",
    ("users", "admins", "[]"): "boss",
    ("spawner", "image"): "quay.io/jupyter/base-notebook:2025-01-01",
    ("spawner", "image_archive", "path"): "images/nb.tar",
    ("spawner", "image_archive", "entrypoint", "[]"): "tini",
    ("spawner", "image_archive", "cmd", "[]"): "jupyterhub-singleuser",
    ("spawner", "image_archive", "env", "{key}"): "PATH",
    ("spawner", "image_archive", "env", "{value}"): "/usr/bin:/bin",
    ("spawner", "mem_limit"): "2G",
    ("spawner", "disk_limit"): "3G",
    ("spawner", "network_subnet"): "10.20.0.0/24",
    ("tls", "domain"): "hub.example.org",
    ("tls", "email"): "me@example.org",
    ("tls", "acme_server"): "https://ca.example.org:9000/acme/acme/directory",
    ("ssh", "login_user"): "ubuntu",
    ("ssh", "authorized_keys", "[]"): "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDx4 me@laptop",
    ("packages", "[]"): "vim",
    ("kernels", "[]"): "r",
    ("files", "[]", "path"): "/etc/motd",
    ("files", "[]", "permissions"): "0644",
    ("files", "[]", "owner"): "root:root",
    ("bake", "image_name"): "golden",
    ("bake", "image_properties", "{key}"): "os_distro",
    ("bake", "image_properties", "{value}"): "ubuntu",
    ("bake", "source_image"): "Ubuntu 24.04",
    ("bake", "flavor"): "m1.large",
    ("bake", "networks", "[]"): "0e8f5a4c-1234-4bcd-9def-0123456789ab",
    ("bake", "floating_ip_network"): "public",
    ("bake", "security_groups", "[]"): "ssh",
    ("bake", "ssh_user"): "ubuntu",
    ("bake", "qemu_base_image"): "/var/lib/images/base.qcow2",
    ("openstack", "cloud"): "mycloud",
    ("openstack", "flavor"): "m1.xlarge",
    ("cluster", "worker_flavor"): "m1.large",
    ("openstack", "image"): "bakery-ok",
    ("openstack", "networks", "[]"): "private",
    ("openstack", "floating_ip_network"): "public",
    ("openstack", "key_name"): "mykey",
    ("openstack", "security_group"): "mygroup",
    ("openstack", "admin_cidr"): "203.0.113.0/24",
    ("openstack", "metadata", "{key}"): "course",
    ("openstack", "metadata", "{value}"): "intro",
    ("shared_data", "path"): "/srv/shared",
    ("shared_data", "from"): "./data",
    ("course", "from"): "./notebooks",
    ("course", "git"): "https://example.org/org/course",
    ("course", "branch"): "main",
}
# Free text on purpose: a file's content; a path on the machine running bakery (never rendered);
# a PEM certificate (lines by nature; checked whole in tests/test_ca.py).
FREE_TEXT = {("files", "[]", "content"), ("openstack", "public_key"), ("ca_certificates", "[]")}
# Siblings a value needs to be valid.
CONTEXT: dict[tuple[str, ...], dict[str, Any]] = {
    ("files", "[]"): {"path": "/etc/motd", "content": "x"},
    ("spawner", "image_archive"): {"path": "a.tar", "format": "rootfs", "cmd": ["x"]},
    ("tls",): {"mode": "letsencrypt", "domain": "hub.example.org", "email": "me@example.org"},
    ("cluster",): {"engine": "swarm"},
    ("auth",): {
        "kind": "oidc",
        "issuer": "https://login.example.edu",
        "client_id": "c",
        "client_secret_file": "s.txt",
        "allowed_groups": ["students"],
        "admin_users": ["prof"],
    },
    # A leaf's own siblings, where its section's other leaves must not have them.
    ("course", "branch"): {"git": "https://example.org/org/course"},
    ("shared_data", "url"): {"sha256": "0" * 64},
    ("shared_data", "sha256"): {"url": "https://data.example.org/d.tar.gz"},
}
# Top-level siblings a section needs (kernels: only with the systemd spawner; a swarm: docker).
ROOT_CONTEXT: dict[str, dict[str, Any]] = {
    "kernels": {"spawner": {"kind": "systemd"}},
    "cluster": {"spawner": {"kind": "docker"}},
    # R from the distro and conda packages: a docker image of the site's own.
    "environment": {"spawner": {"kind": "docker", "image": "registry.example.org/nb:1"}},
}


def _string_leaves(annotation: Any, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [
            leaf
            for name, field in annotation.model_fields.items()
            for leaf in _string_leaves(field.annotation, (*path, field.alias or name))
        ]
    if origin is typing.Annotated:
        return _string_leaves(args[0], path)
    if origin is list:
        return _string_leaves(args[0], (*path, "[]"))
    if origin is dict:
        return [
            *_string_leaves(args[0], (*path, "{key}")),
            *_string_leaves(args[1], (*path, "{value}")),
        ]
    if origin in (typing.Union, types.UnionType):
        leaves = {leaf for arg in args for leaf in _string_leaves(arg, path)}
        return sorted(leaves)
    return [path] if annotation is str else []


def _config_with(path: tuple[str, ...], value: str) -> dict[str, Any]:
    root: dict[str, Any] = {"name": "ok", **ROOT_CONTEXT.get(path[0], {})}
    node: Any = root
    for i, part in enumerate(path[:-1]):
        nxt = path[i + 1]
        if nxt == "[]":
            child: Any = []
        elif nxt in ("{key}", "{value}"):
            child = {}
        else:
            own = i == len(path) - 2 and path in CONTEXT  # the leaf's own siblings
            child = dict(CONTEXT.get(path if own else path[: i + 1], {}))
        if part == "[]":
            child = dict(CONTEXT.get(path[: i + 1], {}))
            node.append(child)
        else:
            node[part] = child
        node = child
    last = path[-1]
    if last == "[]":
        node.append(value)
    elif last == "{key}":
        node[value] = VALID[(*path[:-1], "{value}")]
    elif last == "{value}":
        node[VALID[(*path[:-1], "{key}")]] = value
    else:
        node[last] = value
    return root


def test_every_string_of_the_model_has_a_valid_example() -> None:
    leaves = set(_string_leaves(Workshop, ()))
    assert leaves - FREE_TEXT == set(VALID), "add new string fields to VALID (or FREE_TEXT)"
    for path, value in VALID.items():
        Workshop.model_validate(_config_with(path, value))


CONTROLS = st.sampled_from([chr(c) for c in [*range(32), 127]])


@settings(max_examples=300, deadline=None)
@given(path=st.sampled_from(sorted(VALID)), control=CONTROLS, where=st.integers(0, 2))
def test_a_control_character_anywhere_is_refused(
    path: tuple[str, ...], control: str, where: int
) -> None:
    valid = VALID[path]
    value = [valid + control, control + valid, valid[:1] + control + valid[1:]][where]
    with pytest.raises(ValidationError):
        Workshop.model_validate(_config_with(path, value))


@pytest.mark.parametrize("path", sorted(VALID), ids=".".join)
def test_a_trailing_newline_is_refused(path: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError):
        Workshop.model_validate(_config_with(path, VALID[path] + "\n"))
