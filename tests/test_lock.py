"""`bakery lock` and installing from a lock, against a package index served on loopback.

The index holds wheels made here (pure Python, a few bytes each) and is served the way PyPI's
simple API is (PEP 503 pages with each file's sha256). uv resolves against it as against PyPI; the
rendered workshop-env.sh installs from it with pip into a real venv.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bakery.bake.lock import file_hashes, lock_workshop, target_tags
from bakery.config.lockfile import lock_path, normalize, parse_lock, read_lock
from bakery.config.workshop import load_config
from bakery.errors import ConfigError
from bakery.templates import render
from bakery.vm.context import context
from bakery.vm.validate import validate_workshop
from bakery.workshop import software

# A kernel package standing in for ipykernel: `python -m ipykernel install` writes a kernel.json.
FAKE_IPYKERNEL = """\
import json, os, sys
args = sys.argv[1:]
prefix, name = args[args.index("--prefix") + 1], args[args.index("--name") + 1]
folder = os.path.join(prefix, "share", "jupyter", "kernels", name)
os.makedirs(folder, exist_ok=True)
with open(os.path.join(folder, "kernel.json"), "w") as fh:
    json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
               "display_name": args[args.index("--display-name") + 1]}, fh)
"""


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal pure-Python wheel (METADATA, WHEEL, RECORD and a package)."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"__version__ = {version!r}\n"}
    if name == "ipykernel":
        files["ipykernel/__main__.py"] = FAKE_IPYKERNEL
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files[f"{dist}/METADATA"] = meta
    files[f"{dist}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{dist}/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{dist}/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for inner, text in sorted(files.items()):
            zf.writestr(zipfile.ZipInfo(inner, (2020, 1, 1, 0, 0, 0)), text)
    return path


def publish(root: Path) -> None:
    """Write the simple index's pages for every wheel in root/files."""
    by_name: dict[str, list[Path]] = {}
    for wheel in sorted((root / "files").glob("*.whl")):
        by_name.setdefault(normalize(wheel.name.split("-")[0]), []).append(wheel)
    for name, wheels in by_name.items():
        page = root / "simple" / name / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        links = "".join(
            f'<a href="../../files/{w.name}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">'
            f"{w.name}</a>\n"
            for w in wheels
        )
        page.write_text(f"<html><body>\n{links}</body></html>\n")


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An index on 127.0.0.1: alpha 1.0 (needs beta>=2), beta 2.0 and 2.1, ipykernel; events
    (needs rfc3987-syntax through an extra, as jupyter-events does), which needs lark."""
    root = tmp_path_factory.mktemp("index")
    (root / "files").mkdir()
    make_wheel(root / "files", "alpha", "1.0", ("beta>=2",))
    make_wheel(root / "files", "beta", "2.0")
    make_wheel(root / "files", "beta", "2.1")
    make_wheel(root / "files", "events", "1.0", ("beta", "rfc3987_syntax"))
    make_wheel(root / "files", "rfc3987_syntax", "1.1.0", ("lark", "beta"))
    make_wheel(root / "files", "lark", "1.3.1")
    from bakery import versions

    make_wheel(root / "files", "ipykernel", versions.IPYKERNEL)
    publish(root)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple", root
    server.shutdown()


def workshop(folder: Path, index_url: str, pip: str = "[alpha]") -> Path:
    config = folder / "workshop.yaml"
    config.write_text(
        f"name: locked\nos: debian-12\nspawner: {{kind: systemd}}\n"
        f"environment: {{pip: {pip}, index_url: '{index_url}'}}\n"
    )
    return config


def test_a_lock_pins_every_package_with_its_hashes_and_is_the_same_bytes_again(
    index: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = index
    config = workshop(tmp_path, url)
    path, changed = lock_workshop(config_path=config)
    assert changed and path == tmp_path / "workshop.lock.json"
    lock = read_lock(path)
    assert lock is not None and lock.trainees is not None
    pins = {p.name: p for p in lock.trainees.pins}
    assert set(pins) == {"alpha", "beta", "ipykernel"}
    assert pins["beta"].version == "2.1"  # the newest that fits
    wheel = root / "files" / "beta-2.1-py3-none-any.whl"
    assert pins["beta"].hashes == (hashlib.sha256(wheel.read_bytes()).hexdigest(),)
    assert lock.trainees.python == "3.11"  # debian-12's
    first = path.read_bytes()
    assert lock_workshop(config_path=config) == (path, False)
    assert path.read_bytes() == first  # deterministic: the same inputs, the same bytes
    # The hub's environment: bakery's own versions, so bakery's shipped lock, as it is.
    assert lock.hub == software.shipped_hub(load_config(config))


@pytest.mark.parametrize(
    ("pip", "locked"),
    [
        ("[events]", {"events", "beta", "ipykernel"}),  # and lark, needed by it alone: gone
        ("[events, lark]", {"events", "beta", "lark", "ipykernel"}),  # asked for: kept
        ("[rfc3987-syntax]", {"rfc3987-syntax", "lark", "beta", "ipykernel"}),
    ],
)
def test_a_left_out_package_and_what_only_it_needs_are_not_locked_unless_asked_for(
    index: tuple[str, Path], tmp_path: Path, pip: str, locked: set[str]
) -> None:
    """rfc3987-syntax (LEFT_OUT: a slow import at every server start, an optional extra) is
    left out with lark, which only it needs; beta, needed by another package too, stays."""
    from bakery.bake.lock import LEFT_OUT

    assert "rfc3987-syntax" in LEFT_OUT
    path, _ = lock_workshop(config_path=workshop(tmp_path, index[0], pip))
    lock = read_lock(path)
    assert lock is not None and lock.trainees is not None
    assert {p.name for p in lock.trainees.pins} == locked


def test_a_stale_lock_is_said_by_render_and_validate(
    index: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = index
    config = workshop(tmp_path, url)
    lock_workshop(config_path=config)
    assert software.trainee_lock(load_config(config)) is not None
    config.write_text(config.read_text().replace("[alpha]", "[alpha, beta==2.0]"))
    cfg = load_config(config)
    with pytest.raises(ConfigError, match=r"was made for other packages.*`bakery lock "):
        software.trainee_lock(cfg)
    report = validate_workshop(config_path=config)
    assert [(c.name, c.status) for c in report.checks] == [
        (f"config {config}", "ok"),
        ("lock", "failed"),
    ]
    lock_path(config).unlink()
    with pytest.raises(ConfigError, match=r"has no lock of the trainees' packages"):
        software.trainee_lock(load_config(config))


def test_resolution_failures_are_clear(index: tuple[str, Path], tmp_path: Path) -> None:
    from bakery.errors import BuildError

    url, _ = index
    config = workshop(tmp_path, url, "[alpha, 'beta<2']")
    with pytest.raises(BuildError, match=r"resolving .* failed"):
        lock_workshop(config_path=config)
    assert not lock_path(config).exists()  # nothing half written
    down = workshop(tmp_path, "http://127.0.0.1:9/simple")
    with pytest.raises(BuildError):
        lock_workshop(config_path=down)
    assert not lock_path(down).exists()


def test_the_files_kept_are_the_ones_pip_may_take_on_the_vm() -> None:
    files = [
        {"filename": f, "hashes": {"sha256": hashlib.sha256(f.encode()).hexdigest()}}
        for f in (
            "gamma-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "gamma-1.0-cp311-cp311-manylinux_2_28_x86_64.whl",
            "gamma-1.0-cp312-cp312-manylinux_2_17_x86_64.whl",
            "gamma-1.0-cp311-cp311-win_amd64.whl",
            "gamma-1.0-cp311-cp311-musllinux_1_2_x86_64.whl",
            "gamma-1.0-cp311-cp311-manylinux_2_17_aarch64.whl",
            "gamma-1.1-cp311-cp311-manylinux_2_17_x86_64.whl",
            "gamma-1.0.tar.gz",
        )
    ]
    digest = {f["filename"]: f["hashes"]["sha256"] for f in files}
    kept = file_hashes(files, "1.0", target_tags("3.11"))
    assert kept == sorted(
        [
            digest["gamma-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"],
            digest["gamma-1.0-cp311-cp311-manylinux_2_28_x86_64.whl"],
        ]
    )
    # No wheel for that Python: the source archive.
    assert file_hashes(files, "1.0", target_tags("3.10")) == [digest["gamma-1.0.tar.gz"]]


def _install_script(tmp_path: Path, config: Path) -> Path:
    cfg = load_config(config)
    lock = software.trainee_lock(cfg)
    assert lock is not None
    reqs = tmp_path / "workshop-requirements.txt"
    reqs.write_text(lock.requirements())
    ctx = context(cfg)
    ctx.update(
        workshop_env=str(tmp_path / "env"),
        workshop_requirements=str(reqs),
        hub_prefix=str(tmp_path / "hub"),
    )
    script = tmp_path / "workshop-env.sh"
    script.write_text(render("cloudinit/workshop-env.sh.j2", **ctx))
    return script


def test_the_vm_installs_the_lock_and_refuses_a_file_that_changed(
    index: tuple[str, Path], tmp_path: Path
) -> None:
    """workshop-env.sh as the VM runs it (a real venv, pip from the index); then one wheel on the
    index is replaced: the install stops with a clear message and installs nothing."""
    url, root = index
    config = workshop(tmp_path, url)
    lock_workshop(config_path=config)
    work = tmp_path / "ok"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    done = subprocess.run(
        ["bash", str(_install_script(work, config))], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    freeze = subprocess.run(
        [str(work / "env/bin/python3"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    installed = {p["name"]: p["version"] for p in json.loads(freeze.stdout)}
    assert installed["alpha"] == "1.0" and installed["beta"] == "2.1"
    kernel = json.loads((work / "hub/share/jupyter/kernels/python3/kernel.json").read_text())
    assert kernel["argv"][0] == str(work / "env/bin/python3")
    assert kernel["display_name"] == "Python 3 (locked)"

    # The index now serves another beta 2.1 (same name, other bytes): refused, nothing installed.
    original = root / "files" / "beta-2.1-py3-none-any.whl"
    saved = original.read_bytes()
    try:
        make_wheel(root / "files", "beta", "2.1", ("alpha",))
        publish(root)
        bad = tmp_path / "bad"
        bad.mkdir()
        failed = subprocess.run(
            ["bash", str(_install_script(bad, config))], capture_output=True, text=True, env=env
        )
    finally:
        original.write_bytes(saved)
        publish(root)
    assert failed.returncode != 0
    assert "is not the one the lock names (its sha256 differs); nothing was installed" in (
        failed.stderr
    )
    assert "attempt 2" not in failed.stderr  # said at once, not retried
    listed = subprocess.run(
        [str(bad / "env/bin/python3"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "alpha" not in listed.stdout


def test_a_lock_that_is_not_bakerys_is_refused(tmp_path: Path) -> None:
    for text in ("{", "[]", '{"bakery_lock": 9}', '{"bakery_lock": 1, "hub": {"inputs": 1}}'):
        with pytest.raises(ConfigError, match="make it again with `bakery lock`"):
            parse_lock(text, "w.lock.json")
    bad_hash = {
        "bakery_lock": 1,
        "trainees": {
            "inputs": "x",
            "python": "3.11",
            "packages": [{"name": "a", "version": "1", "sha256": ["not-hex"]}],
        },
    }
    with pytest.raises(ConfigError, match="64 hex digits"):
        parse_lock(json.dumps(bad_hash), "w.lock.json")


def test_an_index_the_vm_cannot_reach_fails_the_install_clearly_with_nothing_installed(
    index: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = index
    config = workshop(tmp_path, url)
    lock_workshop(config_path=config)
    # The same lock, from an index nothing answers on (the retries' waits cut short here).
    config.write_text(config.read_text().replace(url, "http://127.0.0.1:9/simple"))
    work = tmp_path / "down"
    work.mkdir()
    script = _install_script(work, config)
    script.write_text(script.read_text().replace("sleep $((n * 10))", "sleep 0"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_RETRIES": "0", "PIP_TIMEOUT": "2"}
    failed = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert failed.returncode != 0
    assert "attempt 3 of 3 failed" in failed.stderr
    assert "is http://127.0.0.1:9/simple reachable from here? Nothing was installed" in (
        failed.stderr
    )
    assert not (work / "hub/share/jupyter/kernels/python3").exists()  # no kernel registered
