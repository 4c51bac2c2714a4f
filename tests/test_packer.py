"""Packer rendering: real `packer validate`/`fmt -check` on every render, JSON values, `bake`."""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import EXAMPLES, cloud_config, require_tool

from bakery.bake import folder, packer
from bakery.config.workshop import load_config
from bakery.errors import (
    BuildError,
    CloudNotConfigured,
    ConfigError,
    OutputError,
    RenderError,
    ToolMissing,
)
from bakery.progress import Collector
from bakery.vm import image

OLD, NEW = "1.6.6", "1.11.2"

HOSTILE = [
    "",
    "plain",
    'a "quoted" word',
    "back\\slash\\",
    "${var.flavor}",
    "$${already}",
    "$$${x}",
    "%{ if true }x%{ endif }",
    "%%{y}",
    "$",
    "%",
    "${",
    "trailing $",
    "new\nline\r\n",
    "tab\there",
    "bell\x07 nul\x00 esc\x1b del\x7f c1\x85",
    "line\u2028sep\u2029",
    "ünïcødé ✓ 日本",
    "'single' `back`",
    '\\"${x}\\',
    "\\u0041 is not A",
]

INLINE_CONFIGS = {
    "minimal": "name: mini\n",
    "qemu-and-openstack": """
        name: both-sources
        os: debian-12
        bake:
          image_name: golden-both
          image_suffix: version
          image_visibility: community
          source_image: 0b1e6f5c-3a6a-4b6e-9f2e-1c2d3e4f5a6b
          flavor: m1.large
          networks: [0b1e6f5c-3a6a-4b6e-9f2e-1c2d3e4f5a6b, 1c2d3e4f-3a6a-4b6e-9f2e-0b1e6f5c5a6b]
          floating_ip_network: public
          security_groups: [default, ssh-in]
          ssh_user: debian
          volume_backed: true
          volume_size: 40
          qemu_base_image: /var/lib/images/debian-12-generic.qcow2
          qemu_disk_size: 30
          qemu_memory: 4096
          qemu_cpus: 4
          qemu_accelerator: tcg
    """,
    "hostile": """
        name: hostile
        bake:
          source_image: 'Ubuntu "24.04" ${var.x} %{ if true }y%{ endif } \\ ~'
          flavor: '$${flavor} \\"'
          floating_ip_network: "ext %%{net} $"
          security_groups: ['a"b', '${sg}', '\\', '%{x}']
          image_properties:
            os_distro: '"; rm -rf / #'
            "weird.key:ok": '${jsonencode({})} and \\n not a newline'
            description: 'ünïcødé ✓ <b>&amp;</b>'
          qemu_base_image: /srv/images/base@2024+1.qcow2
    """,
}


def _configs() -> list[Any]:
    params = [pytest.param(p, id=f"example-{p.stem}") for p in EXAMPLES]
    params += [pytest.param(text, id=name) for name, text in INLINE_CONFIGS.items()]
    return params


@pytest.fixture
def config_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    value = request.param
    if isinstance(value, Path):
        return value
    path = tmp_path / "workshop.yaml"
    path.write_text(textwrap.dedent(value))
    return path


class _Keystone(BaseHTTPRequestHandler):
    """Just enough Keystone v3 for Packer 1.6's openstack builder, which logs in to validate."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        token = {"token": {"expires_at": "2099-01-01T00:00:00.000000Z", "catalog": []}}
        body = json.dumps(token).encode()
        self.send_response(201)
        self.send_header("X-Subject-Token", "dummy-token")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def os_env() -> Iterator[dict[str, str]]:
    """Dummy OS_* variables pointing at a local fake Keystone (no cloud, no credentials)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Keystone)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env |= {
        "OS_AUTH_URL": f"http://127.0.0.1:{server.server_address[1]}/v3",
        "OS_USERNAME": "dummy",
        "OS_PASSWORD": "dummy",
        "OS_PROJECT_NAME": "dummy",
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_REGION_NAME": "RegionOne",
        "CHECKPOINT_DISABLE": "1",
    }
    yield env
    server.shutdown()


def _packer(*args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str = "") -> str:
    exe = require_tool("packer")
    proc = subprocess.run(
        [exe, *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"packer {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _hcl2() -> Any:
    return pytest.importorskip("hcl2") if not os.environ.get("CI") else __import__("hcl2")


# --- every render is valid and canonical ----------------------------------------------------------


@pytest.mark.parametrize("config_path", _configs(), indirect=True)
def test_render_validates_with_real_packer(
    config_path: Path, tmp_path: Path, os_env: dict[str, str]
) -> None:
    cfg = load_config(config_path)
    out = tmp_path / "packer"
    written = packer.write_packer(cfg, out_dir=out, packer_version=OLD)
    names = {p.relative_to(out).as_posix() for p in written}
    assert {"bakery.pkr.hcl", packer.VARS_FILE, "bake-user-data", "image.json"} <= names
    assert "plugins.pkr.hcl" not in names and not (out / "plugins.pkr.hcl").exists()
    assert ("qemu-seed/meta-data" in names) == (cfg.bake.qemu_base_image is not None)
    _packer("validate", ".", cwd=out, env=os_env)
    _packer("fmt", "-check", ".", cwd=out)
    shellcheck = require_tool("shellcheck")
    scripts = [str(out / "scripts" / n) for n in ("wait-cloud-init.sh", "clean.sh")]
    proc = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("config_path", _configs(), indirect=True)
def test_modern_packer_shape(config_path: Path, tmp_path: Path) -> None:
    """Packer >= 1.7: the same build plus plugins.pkr.hcl; parsed with python-hcl2."""
    hcl2 = _hcl2()
    cfg = load_config(config_path)
    old, new = tmp_path / "old", tmp_path / "new"
    packer.write_packer(cfg, out_dir=old, packer_version=OLD)
    packer.write_packer(cfg, out_dir=new, packer_version=NEW)
    for name in ("bakery.pkr.hcl", packer.VARS_FILE):
        assert (old / name).read_bytes() == (new / name).read_bytes()
    plugins = hcl2.loads((new / "plugins.pkr.hcl").read_text())
    block = plugins["packer"][0]
    assert block["required_version"] == '">= 1.7.0"'
    required = block["required_plugins"][0]
    for name, (source, version) in packer.PLUGINS.items():
        entry = {k.strip('"'): v.strip('"') for k, v in required[name].items()}
        assert entry == {"source": source, "version": version}
    for path in new.glob("*.hcl"):
        hcl2.loads(path.read_text())
    _packer("fmt", "-check", ".", cwd=new)
    # Re-rendering for an old Packer removes the plugins file again.
    packer.write_packer(cfg, out_dir=new, packer_version=OLD)
    assert not (new / "plugins.pkr.hcl").exists()


def test_build_structure(write_config: Callable[[str], Path], tmp_path: Path) -> None:
    hcl2 = _hcl2()
    cfg = load_config(write_config(INLINE_CONFIGS["qemu-and-openstack"]))
    out = tmp_path / "p"
    packer.write_packer(cfg, out_dir=out, packer_version=OLD)
    doc = hcl2.loads((out / "bakery.pkr.hcl").read_text())
    sources = {k: v for s in doc["source"] for k, v in s.items()}
    assert set(sources) == {'"openstack"', '"qemu"'}
    ostack = sources['"openstack"']['"golden"']
    assert ostack["user_data_file"] == '"${path.root}/bake-user-data"'
    assert ostack["metadata"] == "${var.image_metadata}"
    qemu = sources['"qemu"']['"golden"']
    assert qemu["cd_label"] == '"cidata"' and qemu["disk_image"] is True
    assert "userdel -f -r packer" in qemu["shutdown_command"]
    build = doc["build"][0]
    assert build["sources"] == ['"source.openstack.golden"', '"source.qemu.golden"']
    scripts = [p['"shell"'].get("script") for p in build["provisioner"] if '"shell"' in p]
    assert scripts == [
        '"${path.root}/scripts/wait-cloud-init.sh"',
        '"${path.root}/scripts/clean.sh"',
    ]
    variables = json.loads((out / packer.VARS_FILE).read_text())
    assert variables["source_image"] == "0b1e6f5c-3a6a-4b6e-9f2e-1c2d3e4f5a6b"
    assert variables["source_image_name"] == ""
    assert variables["image_name"] == image.image_name(cfg)
    assert variables["image_name"].startswith("golden-both-0.1.0-")
    assert "image_date_suffix" not in variables
    assert variables["volume_size"] == 40
    assert variables["qemu_disk_size"] == "30720M"
    meta = variables["image_metadata"]
    record = json.loads((out / "image.json").read_text())
    assert record == image.record(cfg)
    assert meta == image.properties(cfg, record)
    assert meta["bakery_config_sha256"] == record["config_sha256"]
    assert meta["bakery_jupyterhub"] == record["components"]["jupyterhub"]
    # The bake stage itself writes the record into the image.
    bake_doc = cloud_config((out / "bake-user-data").read_bytes())
    (entry,) = [f for f in bake_doc["write_files"] if f["path"] == image.RECORD_PATH]
    assert json.loads(entry["content"]) == record


def test_variable_values_reach_packer_unchanged(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    """Packer itself reads the hostile config's values back exactly (`packer console`)."""
    cfg = load_config(write_config(INLINE_CONFIGS["hostile"]))
    out = tmp_path / "p"
    packer.write_packer(cfg, out_dir=out, packer_version=OLD)
    expr = (
        "jsonencode([var.source_image_name, var.flavor, var.floating_ip_network, "
        "var.security_groups, var.image_metadata])"
    )
    got = json.loads(_packer("console", ".", cwd=out, stdin=expr + "\n").strip())
    b = cfg.bake
    assert got[:4] == [b.source_image, b.flavor, b.floating_ip_network, b.security_groups]
    assert {k: got[4][k] for k in b.image_properties} == b.image_properties


# --- the variables file ---------------------------------------------------------------------------


def test_json_values_round_trip_through_packer(tmp_path: Path) -> None:
    """The real oracle: Packer reads every hostile string back from the JSON file unchanged."""
    lines = ["variable x {", "  type = list(string)", "}"]
    (tmp_path / "x.pkr.hcl").write_text(
        "\n".join(lines) + "\n" + 'source "null" "n" {\n'
        '  communicator = "none"\n}\n\nbuild {\n'
        '  sources = ["source.null.n"]\n}\n'
    )
    (tmp_path / "x.auto.pkrvars.json").write_text(packer.variables_json({"x": HOSTILE}))
    got = json.loads(_packer("console", ".", cwd=tmp_path, stdin="jsonencode(var.x)\n").strip())
    assert got == HOSTILE


@pytest.mark.parametrize(
    "variables",
    [
        {"flavor": "{{ timestamp }}"},
        {"image_metadata": {"k": "{{ .Evil }}"}},
        {"image_metadata": {"{{ .Key }}": "v"}},
        {"security_groups": ["ok", "a{{b"]},
    ],
)
def test_go_template_braces_are_refused(variables: dict[str, Any]) -> None:
    with pytest.raises(RenderError, match="cannot be passed to Packer"):
        packer.variables_json(variables)


def test_no_hcl_values_file_is_left(write_config: Callable[[str], Path], tmp_path: Path) -> None:
    """A render over an older one removes its bakery.auto.pkrvars.hcl (Packer would read both)."""
    out = tmp_path / "p"
    out.mkdir()
    (out / "bakery.auto.pkrvars.hcl").write_text('flavor = "old"\n')
    packer.write_packer(load_config(write_config("name: mini\n")), out_dir=out, packer_version=OLD)
    assert not (out / "bakery.auto.pkrvars.hcl").exists()
    assert json.loads((out / packer.VARS_FILE).read_text())["flavor"] == "m1.medium"


@pytest.mark.parametrize(
    ("bake", "error"),
    [
        ("flavor: '{{ timestamp }}'", "not allowed"),
        ("security_groups: ['a}}b']", "not allowed"),
        ('source_image: "line\\nbreak"', "control characters"),
        ("image_properties: {bakery_version: x}", "bakery's"),
        ("image_properties: {'bad key': x}", "use letters, digits"),
        ("image_name: 'has space'", "use 1-100 letters"),
        ("image_name: '../up'", "use 1-100 letters"),
        ("networks: [private]", "network UUID"),
        ("ssh_user: root", "not root"),
        ("volume_size: 10", "volume_backed"),
        ("qemu_base_image: relative.qcow2", "absolute path"),
        ("qemu_accelerator: xen", "kvm"),
        ("flavour: m1.small", "did you mean 'flavor'"),
    ],
)
def test_bad_bake_settings(write_config: Callable[[str], Path], bake: str, error: str) -> None:
    path = write_config(f"name: bad\nbake:\n  {bake}\n")
    with pytest.raises(ConfigError, match=error):
        load_config(path)


# --- no secrets, qemu seed ------------------------------------------------------------------------


def test_no_secret_in_any_file(
    write_config: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OS_PASSWORD", "sentinel-os-password")
    monkeypatch.setenv("OS_APPLICATION_CREDENTIAL_SECRET", "sentinel-app-secret")
    cfg = load_config(write_config(INLINE_CONFIGS["qemu-and-openstack"]))
    out = tmp_path / "p"
    written = packer.write_packer(cfg, out_dir=out, packer_version=NEW)
    for path in written:
        text = path.read_bytes().decode(errors="replace")
        for needle in ("sentinel-", "$6$", "PRIVATE KEY", "passwd:", "OS_PASSWORD"):
            assert needle not in text, f"{needle!r} in {path}"
    assert all(not p.name.endswith(("_ed25519", ".pem", ".key")) for p in written)


def _parts(data: bytes) -> list[tuple[str, str | None, dict[str, Any]]]:
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/mixed"
    out = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        out.append((part.get_content_type(), part["Merge-Type"], yaml.safe_load(payload)))
    return out


def test_qemu_seed(write_config: Callable[[str], Path], tmp_path: Path) -> None:
    cfg = load_config(write_config(INLINE_CONFIGS["qemu-and-openstack"]))
    out = tmp_path / "p"
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly bakery"
    packer.write_packer(cfg, out_dir=out, packer_version=OLD, ssh_public_key=key)
    bake_doc = cloud_config((out / "bake-user-data").read_bytes())
    parts = _parts((out / "qemu-seed" / "user-data").read_bytes())
    assert [p[0] for p in parts] == ["text/cloud-config", "text/cloud-config"]
    assert parts[0][2] == bake_doc and "users" not in bake_doc
    _, merge, build_user = parts[1]
    assert merge == "list(append)+dict(recurse_array)+str()"
    assert build_user["users"][0]["name"] == packer.QEMU_BUILD_USER
    assert build_user["users"][0]["ssh_authorized_keys"] == [key]
    meta = yaml.safe_load((out / "qemu-seed" / "meta-data").read_text())
    assert meta["instance-id"] == "bakery-both-sources-build"
    # Without a key (`bakery packer`), nobody can log in to the qemu build.
    packer.write_packer(cfg, out_dir=out, packer_version=OLD)
    assert len(_parts((out / "qemu-seed" / "user-data").read_bytes())) == 1


def test_qemu_seed_of_gzipped_user_data(tmp_path: Path) -> None:
    import gzip

    doc = b"#cloud-config\nruncmd:\n  - [true]\n"
    parts = _parts(packer.qemu_user_data(gzip.compress(doc), "ssh-ed25519 AAAA k"))
    assert parts[0][2] == {"runcmd": [[True]]}
    with pytest.raises(RenderError, match="neither"):
        packer.qemu_user_data(b"#!/bin/sh\necho hi\n", None)


# --- bake() ---------------------------------------------------------------------------------------

FAKE_PACKER = """\
#!{python}
import json, pathlib, sys
log = pathlib.Path({log!r})
log.open("a").write(json.dumps([pathlib.Path.cwd().name, *sys.argv[1:]]) + "\\n")
if sys.argv[1] == "version":
    print("Packer v{version}")
elif sys.argv[1] == "build":
    builds = [{{"name": "golden", "builder_type": "qemu", "artifact_id": "VM",
               "packer_run_uuid": "r2", "custom_data": {{"image_name": "img-1"}},
               "files": [{{"name": "./images/img-1/img-1.qcow2"}}]}},
              {{"name": "golden", "builder_type": "openstack", "artifact_id": "old",
               "packer_run_uuid": "r1"}}]
    pathlib.Path("packer-manifest.json").write_text(
        json.dumps({{"builds": builds, "last_run_uuid": "r2"}}))
    pathlib.Path("images/img-1").mkdir(parents=True, exist_ok=True)
    pathlib.Path("images/img-1/img-1.qcow2").write_bytes(b"QFI")
    print("==> Builds finished.")
    sys.exit({build_rc})
"""


def _fake_packer(tmp_path: Path, version: str, build_rc: int = 0) -> tuple[str, Path]:
    log = tmp_path / "packer-calls.jsonl"
    exe = tmp_path / "fake-packer"
    exe.write_text(
        FAKE_PACKER.format(python=sys.executable, log=str(log), version=version, build_rc=build_rc)
    )
    exe.chmod(0o755)
    return str(exe), log


@pytest.mark.parametrize(("version", "init"), [(OLD, False), (NEW, True)])
def test_bake_runs_packer(
    write_config: Callable[[str], Path], tmp_path: Path, version: str, init: bool
) -> None:
    path = write_config(INLINE_CONFIGS["qemu-and-openstack"])
    cfg = load_config(path)
    exe, log = _fake_packer(tmp_path, version)
    out_dir = tmp_path / "bake"
    progress = Collector()
    results = packer.bake(
        config_path=path, only="qemu", output=out_dir, packer=exe, progress=progress
    )
    (result,) = results
    qcow2 = out_dir / "images/img-1/img-1.qcow2"
    assert (result.builder, result.image_name, result.path, result.image_id) == (
        "packer:qemu",
        "img-1",
        qcow2,
        None,
    )
    assert result.record == image.record(cfg) and "packer build" in result.timings
    # A file image carries its sidecar: an upload gives it the record's properties.
    side = image.read_sidecar(qcow2)
    assert side["record"] == result.record and side["image_name"] == "img-1"
    assert side["properties"] == image.properties(cfg, result.record)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[1] for c in calls] == ["version", *(["init"] if init else []), "build"]
    build = calls[-1]
    assert build[0] == "bake" and "-only=qemu.golden" in build and build[-1] == "."
    key_arg = build[build.index("-var") + 1]
    assert key_arg.startswith("qemu_ssh_private_key_file=")
    # The throwaway key lived outside the output folder and is gone after the build.
    assert not Path(key_arg.split("=", 1)[1]).exists()
    assert not any(p.name.endswith("ed25519") for p in out_dir.rglob("*"))
    seed = _parts((out_dir / "qemu-seed" / "user-data").read_bytes())
    assert seed[1][2]["users"][0]["ssh_authorized_keys"][0].startswith("ssh-ed25519 ")
    assert (out_dir / "plugins.pkr.hcl").exists() == init
    assert "==> Builds finished." in progress.messages
    assert any(m.startswith(f"running {exe} build -color=false") for m in progress.messages)


def test_bake_reports_packer_failure(write_config: Callable[[str], Path], tmp_path: Path) -> None:
    path = write_config(INLINE_CONFIGS["qemu-and-openstack"])
    exe, _ = _fake_packer(tmp_path, OLD, build_rc=1)
    with pytest.raises(BuildError, match="exit 1"):
        packer.bake(config_path=path, only="qemu", output=tmp_path / "b", packer=exe)


def test_bake_checks_the_cloud_before_packer_starts(
    write_config: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config("name: mini\n")
    exe, log = _fake_packer(tmp_path, OLD)
    for var in [v for v in os.environ if v.startswith("OS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CloudNotConfigured, match=r"clouds\.yaml") as info:
        packer.bake(config_path=path, output=tmp_path / "b", packer=exe)
    assert info.value.exit_code == 2
    # Packer was asked its version, never to build.
    assert [json.loads(line)[1] for line in log.read_text().splitlines()] == ["version"]


def test_bake_without_packer(write_config: Callable[[str], Path], tmp_path: Path) -> None:
    path = write_config("name: mini\n")
    with pytest.raises(ToolMissing, match="apt-get install packer") as info:
        packer.bake(config_path=path, packer=str(tmp_path / "no-packer"))
    assert info.value.exit_code == 2


def test_bake_qemu_needs_base_image(write_config: Callable[[str], Path]) -> None:
    path = write_config("name: mini\n")
    with pytest.raises(ConfigError, match="qemu_base_image"):
        packer.bake(config_path=path, only="qemu")


@pytest.mark.parametrize(
    ("version", "needed"), [("1.6.6", False), ("1.7.0", True), ("v1.11.2", True), (None, True)]
)
def test_needs_plugins(version: str | None, needed: bool) -> None:
    assert packer.needs_plugins(version) is needed


# --- CLI ------------------------------------------------------------------------------------------

BAKERY = shutil.which("bakery", path=str(Path(sys.executable).parent)) or "bakery"


def test_cli_packer_writes_a_valid_build(tmp_path: Path, os_env: dict[str, str]) -> None:
    example = EXAMPLES[0] if EXAMPLES else None
    config = tmp_path / "workshop.yaml"
    config.write_text(example.read_text() if example else "name: cli-demo\n")
    out = tmp_path / "build" / "packer"
    proc = subprocess.run(
        [BAKERY, "packer", str(config), "-o", str(out), "--packer-version", OLD],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(out / "bakery.pkr.hcl") in proc.stdout.splitlines()
    _packer("validate", ".", cwd=out, env=os_env)
    _packer("fmt", "-check", ".", cwd=out)


def test_cli_bake_without_packer_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "workshop.yaml"
    config.write_text("name: no-packer\n")
    env = {**os.environ, "PATH": str(tmp_path / "empty")}
    proc = subprocess.run(
        [BAKERY, "bake", str(config)], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 2
    assert "Packer is not installed" in proc.stderr and "Traceback" not in proc.stderr


# --- a real local bake (slow: boots a VM under qemu) ----------------------------------------------


def cut_down_bake(config: Path) -> bytes:
    """A bake stage of seconds: the bake record (as the real one writes it) and a proof file."""
    record = image.record_json(image.record(load_config(config)))
    doc = {
        "write_files": [{"path": image.RECORD_PATH, "content": record}],
        "runcmd": [["sh", "-c", "echo baked > /var/lib/bakery-proof"]],
    }
    return ("#cloud-config\n" + yaml.safe_dump(doc)).encode()


@pytest.mark.e2e
def test_qemu_bake_end_to_end(tmp_path: Path) -> None:
    """`bake --only qemu` with a cut-down bake stage (the real one takes >20 min under TCG)."""
    for tool in ("packer", "qemu-system-x86_64", "qemu-img", "genisoimage", "ssh-keygen"):
        require_tool(tool)
    if os.geteuid() != 0:
        pytest.fail("the image is inspected through a loop device: run as root")
    sys.path.insert(0, str(Path(__file__).parent / "e2e"))
    import baseimage

    base = baseimage.ensure_base_image()
    config = tmp_path / "workshop.yaml"
    config.write_text(
        f"name: tinybake\nos: debian-12\nbake:\n  qemu_base_image: {base}\n"
        "  qemu_accelerator: tcg\n  qemu_disk_size: 8\n  qemu_memory: 1536\n"
    )
    results = packer.bake(
        config_path=config,
        only="qemu",
        output=tmp_path / "out",
        bake_user_data=cut_down_bake(config),
        progress=lambda m, *, transient=False: print(m, file=sys.stderr),
    )
    assert len(results) == 1 and results[0].image_name.startswith("bakery-tinybake-20")
    qcow2 = str(results[0].path)
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", qcow2, str(raw)], check=True)
    loop = subprocess.run(
        ["losetup", "--show", "-f", "-r", "-o", str(2048 * 512), str(raw)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    root = tmp_path / "mnt"
    root.mkdir()
    try:
        subprocess.run(["mount", "-o", "ro,noload", loop, str(root)], check=True)
        try:
            users = [
                line.split(":")[0]
                for f in ("passwd", "passwd-", "shadow", "shadow-", "group", "group-")
                if (root / "etc" / f).exists()
                for line in (root / "etc" / f).read_text().splitlines()
            ]
            assert packer.QEMU_BUILD_USER not in users
            assert not (root / "home" / packer.QEMU_BUILD_USER).exists()
            assert (root / "etc/machine-id").read_text() == ""
            assert not list((root / "etc/ssh").glob("ssh_host_*"))
            assert not list((root / "var/lib/cloud").iterdir())
            assert not (root / "root/.ssh/authorized_keys").exists()
            assert not list((root / "var/log/journal").iterdir())
            assert not (root / "var/lib/systemd/random-seed").exists()
            record = json.loads((root / image.RECORD_PATH.lstrip("/")).read_text())
            assert record == json.loads((tmp_path / "out/image.json").read_text())
            assert record == results[0].record
            assert (root / "var/lib/bakery-proof").read_text() == "baked\n"
        finally:
            subprocess.run(["umount", str(root)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)


def test_image_archive_is_uploaded_and_loaded(
    write_config: Callable[[str], Path], tmp_path: Path, os_env: dict[str, str]
) -> None:
    """spawner.image_archive: a file provisioner uploads it, user-image.sh loads it; valid HCL."""
    hcl2 = _hcl2()
    path = write_config(
        "name: offline\nspawner:\n  image_archive: {path: images/nb.tar}\n"
        "bake:\n  qemu_base_image: /var/lib/images/base.qcow2\n"
    )
    (path.parent / "images").mkdir()
    (path.parent / "images" / "nb.tar").write_bytes(b"not really a tarball")
    out = tmp_path / "p"
    packer.write_packer(load_config(path), out_dir=out, packer_version=OLD, config_dir=path.parent)
    build = hcl2.loads((out / "bakery.pkr.hcl").read_text())["build"][0]
    kinds = [next(iter(p)) for p in build["provisioner"]]
    assert kinds == ['"shell"', '"file"', '"shell"', '"shell"']
    upload = build["provisioner"][1]['"file"']
    assert upload["source"] == "${var.user_image_archive}"
    load = build["provisioner"][2]['"shell"']["inline"]
    assert load[-1] == '"sudo /usr/local/lib/bakery/user-image.sh"'
    assert "/var/lib/bakery/user-image.tar" in load[0]
    variables = json.loads((out / packer.VARS_FILE).read_text())
    assert variables["user_image_archive"] == str(path.parent / "images" / "nb.tar")
    _packer("validate", ".", cwd=out, env=os_env)
    _packer("fmt", "-check", ".", cwd=out)


# --- issue 26: bakery never deletes what it did not make ------------------------------------------


def test_a_folder_holding_the_users_files_is_refused_untouched(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    """`bakery packer -o .` once deleted the user's content/ and qemu-seed/ folders."""
    cfg = load_config(write_config("name: mini\n"))
    mine = tmp_path / "mine"
    (mine / "content").mkdir(parents=True)
    (mine / "content" / "lecture.ipynb").write_text("the instructor's notebook")
    (mine / "qemu-seed").mkdir()
    (mine / "qemu-seed" / "notes.txt").write_text("mine too")
    (mine / "workshop.yaml").write_text("name: mini\n")
    with pytest.raises(OutputError, match="which bakery did not write there"):
        packer.write_packer(cfg, out_dir=mine, packer_version=OLD)
    assert (mine / "content" / "lecture.ipynb").read_text() == "the instructor's notebook"
    assert (mine / "qemu-seed" / "notes.txt").read_text() == "mine too"
    assert not (mine / "image.json").exists() and not (mine / folder.MARKER).exists()
    # Even a folder holding nothing but a content/ of the user's is not taken for bakery's.
    only = tmp_path / "only"
    (only / "content").mkdir(parents=True)
    with pytest.raises(OutputError, match="content"):
        packer.write_packer(cfg, out_dir=only, packer_version=OLD)


def test_bakerys_own_folder_is_written_again(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    cfg = load_config(write_config("name: mini\n"))
    out = tmp_path / "p"
    packer.write_packer(cfg, out_dir=out, packer_version=OLD)
    (out / "images").mkdir()  # Packer's own output may sit beside bakery's
    (out / "packer-manifest.json").write_text("{}")
    packer.write_packer(cfg, out_dir=out, packer_version=OLD)
    assert (out / folder.MARKER).is_file() and (out / "image.json").is_file()


def test_links_in_the_folder_are_never_written_through(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    cfg = load_config(write_config("name: mini\n"))
    victim = tmp_path / "victim.txt"
    victim.write_text("must stay")
    out = tmp_path / "p"
    packer.write_packer(cfg, out_dir=out, packer_version=OLD)
    (out / "image.json").unlink()
    (out / "image.json").symlink_to(victim)
    with pytest.raises(OutputError, match=r"image\.json is a link"):
        packer.write_packer(cfg, out_dir=out, packer_version=OLD)
    assert victim.read_text() == "must stay"
    linked = tmp_path / "linked"
    linked.symlink_to(out)
    with pytest.raises(OutputError, match="not a folder"):
        packer.write_packer(cfg, out_dir=linked, packer_version=OLD)
