"""Random valid workshops: the output parses, passes the schema, fits Nova, keeps every user."""

from __future__ import annotations

import gzip
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml
from helpers import require_tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bakery.config import RESERVED_USERNAMES, Workshop
from bakery.credentials import Account
from bakery.render import NOVA_USER_DATA_LIMIT, render_user_data

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
