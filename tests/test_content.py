"""Shared data and course material: config, deterministic packing, render, the hub's hook, bakes."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from helpers import require_tool

from bakery import topology
from bakery.bake import chroot, packer
from bakery.config.workshop import load_config, parse_config
from bakery.errors import ConfigError, UsageError
from bakery.layout import COURSE_TAR, SHARED_DATA_TAR, USER_IMAGE_ARCHIVE
from bakery.templates import render
from bakery.versions import NBGITPULLER, NBGITPULLER_SHA256
from bakery.vm.context import course_url
from bakery.vm.userdata import build_cloud_config
from bakery.workshop import content

HUB_CONFIG = "/etc/jupyterhub/jupyterhub_config.py"
HOOK = "/usr/local/lib/bakery/bakery_content.py"
SCRIPT = "/usr/local/lib/bakery/content.sh"


def _cfg(text: str) -> Any:
    return parse_config("name: class\n" + text, Path("w.yaml"))


def _files(doc: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["content"] for f in doc["write_files"]}


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


# --- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("shared_data: {path: /home/data}", "shared_data.path: '/home/data' is under /home"),
        ("shared_data: {path: /etc/x}", "is under /etc, a system folder"),
        ("shared_data: {path: data}", "must be an absolute path"),
        ("shared_data: {path: /srv/jupyterhub/x}", "overlaps /srv/jupyterhub, which bakery"),
        ("shared_data: {path: /srv/course}", "overlaps /srv/course"),
        ("shared_data: {path: /srv/shared/}", "no '.', '//' or trailing /"),
        ("shared_data: {from_: ./d}", "did you mean 'from'?"),
        ("course: {}", "course.git: give exactly one of from"),
        ("course: {from: ./nb, git: 'https://h/r'}", "course.from: give exactly one of from"),
        ("course: {from: ./nb, branch: dev}", "course.branch: branch: only with git"),
        ("course: {git: 'ftp://h/r'}", "course.git: 'ftp://h/r': write the repository's"),
        ("course: {git: 'https://h/r', branch: 'a b'}", "course.branch: 'a b': write a branch"),
        ("course: {git: 'https://h/r?x=1'}", "course.git:"),
    ],
)
def test_bad_content_settings_name_the_field(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _cfg(text)
    assert error in str(exc.value)


def test_presence_turns_shared_data_on_with_its_default_path() -> None:
    cfg = _cfg("shared_data: {}\n")
    assert cfg.shared_data is not None and cfg.shared_data.path == "/srv/shared"
    assert cfg.shared_data.source(Path("/c")) is None
    assert _cfg("").shared_data is None


def test_config_show_round_trips_the_from_alias() -> None:
    from bakery.config.reference import effective_config

    for text in (
        "shared_data: {from: ./d}\ncourse: {from: ./nb}\n",
        "course: {git: 'https://h/r'}\n",
    ):
        cfg = _cfg(text)
        shown = effective_config(cfg)
        assert "from_" not in shown
        assert parse_config(shown, Path("shown.yaml")).model_dump() == cfg.model_dump()


# --- packing --------------------------------------------------------------------------------------


def test_pack_is_deterministic_and_normalised(tmp_path: Path) -> None:
    src = _tree(tmp_path / "nb", {"b.ipynb": "{}", "a/x.csv": "1,2\n", "a/run.sh": "echo\n"})
    (src / "a" / "run.sh").chmod(0o700)
    (src / "a" / "link").symlink_to("x.csv")
    folder = content.Folder("course.from", src, COURSE_TAR)
    one = content.pack(folder, tmp_path / "1.tar")
    os.utime(src / "b.ipynb", (1, 1))
    (src / "a").chmod(0o700)
    two = content.pack(folder, tmp_path / "2.tar")
    assert one.sha256 == two.sha256
    assert (tmp_path / "1.tar").read_bytes() == (tmp_path / "2.tar").read_bytes()
    assert (one.files, one.size) == (3, 11)
    with tarfile.open(tmp_path / "1.tar") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members) == ["a", "a/link", "a/run.sh", "a/x.csv", "b.ipynb"]
    assert {m.mode for m in members.values() if m.isfile()} == {0o644}
    assert members["a"].mode == 0o755 and members["a/link"].linkname == "x.csv"
    assert {(m.uid, m.gid, m.mtime) for m in members.values()} == {(0, 0, 0)}


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside.txt"])
def test_pack_refuses_a_symlink_leading_out(tmp_path: Path, target: str) -> None:
    src = _tree(tmp_path / "data", {"ok.txt": "ok"})
    (src / "bad").symlink_to(target)
    with pytest.raises(ConfigError, match=r"shared_data.from: .*bad is a symlink to .*outside"):
        content.pack(content.Folder("shared_data.from", src, SHARED_DATA_TAR), tmp_path / "o.tar")


def test_pack_refuses_a_pipe_and_a_missing_folder(tmp_path: Path) -> None:
    src = tmp_path / "data"
    src.mkdir()
    os.mkfifo(src / "pipe")
    folder = content.Folder("shared_data.from", src, SHARED_DATA_TAR)
    with pytest.raises(ConfigError, match="is a device, pipe or socket"):
        content.pack(folder, tmp_path / "o.tar")
    missing = content.Folder("course.from", tmp_path / "nope", COURSE_TAR)
    with pytest.raises(ConfigError, match=r"course.from: .*nope: no such folder"):
        content.pack(missing, tmp_path / "o.tar")


# --- render -------------------------------------------------------------------------------------


def test_without_content_nothing_is_rendered() -> None:
    doc = build_cloud_config(_cfg(""), stage="bake")
    assert SCRIPT not in _files(doc) and HOOK not in _files(doc)
    assert "acl" not in doc["packages"]


def test_shared_data_and_course_from_render(tmp_path: Path) -> None:
    cfg = _cfg("spawner: {kind: systemd}\nshared_data: {path: /data/class}\ncourse: {from: nb}\n")
    bake = build_cloud_config(cfg, stage="bake")
    files = _files(bake)
    assert "acl" in bake["packages"] and "git" not in bake["packages"]
    cmds = [c[0] for c in bake["runcmd"]]
    assert cmds.index(SCRIPT) == cmds.index("/usr/local/lib/bakery/install-hub.sh") + 1
    script = files[SCRIPT]
    assert "install -d -o root -g root -m 0755 /data/class" in script
    assert f"-f {SHARED_DATA_TAR} -C /data/class" in script and "/srv/course.new" in script
    (tmp_path / "content.sh").write_text(script)
    subprocess.run([require_tool("shellcheck"), str(tmp_path / "content.sh")], check=True)
    compile(files[HOOK], HOOK, "exec")
    boot = build_cloud_config(cfg, stage="boot", accounts=_accounts(cfg))
    hub = _files(boot)[HUB_CONFIG]
    compile(hub, HUB_CONFIG, "exec")
    assert "c.Spawner.default_url = '/lab/tree/course'" in hub
    assert "bakery_content.hook('/data/class', '/srv/course', False)" in hub
    assert "c.JupyterHub.default_url" not in hub


def test_course_git_lands_on_the_nbgitpuller_link() -> None:
    cfg = _cfg("spawner: {kind: systemd}\ncourse: {git: 'git://10.0.2.2:9418/c.git', branch: b1}\n")
    url = course_url(cfg)
    assert url is not None and url.startswith("/hub/user-redirect/git-pull?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query == {
        "repo": "git://10.0.2.2:9418/c.git",
        "branch": "b1",
        "targetpath": "course",
        "urlpath": "lab/tree/course",
    }
    bake = build_cloud_config(cfg, stage="bake")
    assert "git" in bake["packages"]
    assert (
        f"nbgitpuller=={NBGITPULLER} " in _files(bake)["/usr/local/lib/bakery/hub-requirements.txt"]
    )
    assert SCRIPT not in _files(bake)  # nothing to unpack, no hook
    hub = _files(build_cloud_config(cfg, stage="boot", accounts=_accounts(cfg)))[HUB_CONFIG]
    assert f"c.JupyterHub.default_url = {url!r}" in hub and "bakery_content" not in hub
    docker = _cfg("course: {git: 'https://example.org/c'}\nspawner: {default_url: /tree}\n")
    bake = build_cloud_config(docker, stage="bake")
    assert "git" not in bake["packages"]  # the user image's git
    assert "nbgitpuller" not in _files(bake)["/usr/local/lib/bakery/hub-requirements.txt"]
    # The user image gets it instead (the default one has none), hash-checked.
    layer = _files(bake)["/etc/jupyterhub/image/workshop-requirements.txt"]
    assert layer == f"nbgitpuller=={NBGITPULLER} --hash=sha256:{NBGITPULLER_SHA256}\n"
    assert "--require-hashes" in _files(bake)["/etc/jupyterhub/image/Dockerfile"]
    assert (course_url(docker) or "").endswith("&urlpath=tree/course")


def _accounts(cfg: Any) -> Any:
    from bakery.workshop.accounts import preview_accounts

    return preview_accounts(cfg)


# --- the hub's hook (bakery_content.py, run here with a fake spawner) ------------------------


def _hook_module(tmp_path: Path) -> ModuleType:
    path = tmp_path / "bakery_content.py"
    path.write_text(
        render("cloudinit/bakery_content.py.j2", bakery_version="t", course_home="course")
    )
    spec = importlib.util.spec_from_file_location("bakery_content", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_copy_never_overwrites_adds_new_files_and_ignores_a_symlink(tmp_path: Path) -> None:
    mod = _hook_module(tmp_path)
    src = _tree(tmp_path / "srv", {"a.ipynb": "v1", "d/b.csv": "1"})
    home = tmp_path / "home"
    home.mkdir()
    assert mod.copy_missing(str(src), str(home / "course")) == 0
    (home / "course" / "a.ipynb").write_text("mine")
    _tree(src, {"a.ipynb": "v2", "d/new.txt": "new"})
    assert mod.copy_missing(str(src), str(home / "course")) == 0
    assert (home / "course" / "a.ipynb").read_text() == "mine"
    assert (home / "course" / "d" / "new.txt").read_text() == "new"
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (home / "other").symlink_to(elsewhere)
    assert mod.copy_missing(str(src), str(home / "other")) == 1
    (home / "course" / "d2").symlink_to(elsewhere)
    _tree(src, {"d2/x": "x"})
    mod.copy_missing(str(src), str(home / "course"))
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(("docker", "admin"), [(True, True), (True, False), (False, False)])
def test_hook_mounts_shared_data_and_copies_as_the_trainee(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker: bool, admin: bool
) -> None:
    mod = _hook_module(tmp_path)
    calls: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    async def fake_exec(*cmd: str, **kwargs: Any) -> Any:
        calls.append((cmd, kwargs))

        async def communicate() -> tuple[bytes, None]:
            return b"", None

        return SimpleNamespace(returncode=0, communicate=communicate)

    monkeypatch.setattr(mod.asyncio, "create_subprocess_exec", fake_exec)
    pw = SimpleNamespace(pw_uid=1234, pw_gid=1234, pw_dir="/home/t1")
    monkeypatch.setattr(mod.pwd, "getpwnam", lambda name: pw)
    log = SimpleNamespace(warning=lambda *a: None)
    spawner = SimpleNamespace(
        user=SimpleNamespace(name="t1", admin=admin), volumes={}, readonly_paths=None, log=log
    )
    asyncio.run(mod.hook("/srv/shared", "/srv/course", docker)(spawner))
    if docker:
        mode = "rw" if admin else "ro"
        assert spawner.volumes == {"/srv/shared": {"bind": "/srv/shared", "mode": mode}}
    else:
        assert spawner.readonly_paths == ["/srv/shared"]
    acl = [c for c, _ in calls if c[0] == "setfacl"]
    assert acl == (
        [("setfacl", "-R", "-m", "u:1234:rwX,d:u:1234:rwX", "/srv/shared")] if admin else []
    )
    (copy, kwargs) = calls[-1]
    assert copy[-2:] == ("/srv/course", "/home/t1/course")
    assert (kwargs["user"], kwargs["group"], kwargs["extra_groups"]) == (1234, 1234, [])


# --- bakes and sizing ---------------------------------------------------------------------------


@pytest.fixture
def workshop(write_config: Callable[[str], Path]) -> Path:
    path = write_config(
        "name: class\nspawner: {kind: systemd}\nshared_data: {from: data}\n"
        "course: {from: nb}\nbake:\n  qemu_base_image: /var/lib/images/base.qcow2\n"
    )
    _tree(path.parent / "data", {"big.bin": "x" * 3_000_000})
    _tree(path.parent / "nb", {"a.ipynb": "y" * 1_000_000})
    return path


def test_chroot_copies_the_packed_folders(workshop: Path, tmp_path: Path) -> None:
    copies = chroot._copies(load_config(workshop), workshop, tmp_path)
    assert set(copies) == {SHARED_DATA_TAR, COURSE_TAR}
    with tarfile.open(copies[COURSE_TAR]) as tar:
        assert tar.getnames() == ["a.ipynb"]
    assert USER_IMAGE_ARCHIVE not in copies


def test_packer_uploads_and_unpacks_the_folders(workshop: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    written = packer.write_packer(
        load_config(workshop), out_dir=out, packer_version="1.6.6", config_dir=workshop.parent
    )
    assert out / "content" / "course.tar" in written and (out / "content/shared-data.tar").is_file()
    hcl = (out / "bakery.pkr.hcl").read_text()
    assert 'source      = "${path.root}/content/course.tar"' in hcl
    assert f"sudo install -D -o root -g root -m 0600 /tmp/bakery-course.tar {COURSE_TAR}" in hcl
    assert "sudo /usr/local/lib/bakery/content.sh" in hcl
    if require_tool("packer"):
        proc = subprocess.run(["packer", "fmt", "-check", "."], cwd=out, check=False)
        assert proc.returncode == 0


def test_openstacksdk_builder_refuses_folders(workshop: Path) -> None:
    from bakery.bake import sdk as bake_openstack

    with pytest.raises(UsageError, match=r"shared_data\.from and course\.from: the openstacksdk"):
        bake_openstack.bake(config_path=workshop)


def test_size_counts_shared_data_once_and_the_course_per_home(workshop: Path) -> None:
    cfg = load_config(workshop)
    plain = topology.estimate_workshop(cfg)
    need = topology.estimate_workshop(cfg, workshop.parent)
    accounts = len(cfg.users.all_names())
    assert need.content_mb == 3 + 1 * (1 + accounts)
    assert need.disk_gb >= plain.disk_gb
    assert "MB of shared data and course material" in need.lines()[-1]
    assert json.loads(json.dumps(need.as_dict()))["content_mb"] == need.content_mb


def test_packing_a_folder_is_quick_enough(tmp_path: Path) -> None:
    src = _tree(tmp_path / "nb", {f"f{i:03d}.txt": "x" * 1000 for i in range(300)})
    start = time.monotonic()
    packed = content.pack(content.Folder("course.from", src, COURSE_TAR), tmp_path / "c.tar")
    assert packed.files == 300 and time.monotonic() - start < 10


# --- shared data from an archive (shared_data.url), and what only a bake carries -----------------


def test_a_local_folder_in_the_full_stage_is_refused_with_the_ways_out() -> None:
    cfg = _cfg("shared_data: {from: ./data}\ncourse: {from: ./nb}\n")
    with pytest.raises(ConfigError) as info:
        build_cloud_config(cfg, stage="full", accounts=_accounts(cfg))
    message = str(info.value)
    assert "shared_data.from and course.from" in message
    assert "`bakery bake`" in message and "shared_data: {url:" in message
    build_cloud_config(cfg, stage="bake")  # the bake carries them
    build_cloud_config(cfg, stage="boot", accounts=_accounts(cfg))


def test_validate_checks_the_stages_a_bake_needs_and_says_why_not_the_full(tmp_path: Path) -> None:
    from bakery.vm.validate import check_workshop

    cfg = _cfg("shared_data: {from: ./data}\n")
    report = check_workshop(cfg, _accounts(cfg), stages=("full", "boot"))
    assert report.checks[0].name == "full stage" and "need a bake" in report.checks[0].detail
    assert not any(c.name.startswith("full stage:") for c in report.checks)


SHA = "0" * 64


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            f"shared_data: {{url: 'https://d.example.org/x.tar', from: ./d, sha256: '{SHA}'}}",
            "not both",
        ),
        ("shared_data: {url: 'https://d.example.org/x.tar'}", "go together"),
        (f"shared_data: {{sha256: '{SHA}'}}", "go together"),
        (
            f"shared_data: {{url: 'https://me:tok@d.example.org/x', sha256: '{SHA}'}}",
            "user or token",
        ),
        (f"shared_data: {{url: 'ftp://d.example.org/x', sha256: '{SHA}'}}", "https://"),
        ("shared_data: {url: 'https://d.example.org/x', sha256: 'abc'}", "64 hex digits"),
    ],
)
def test_a_bad_data_url_is_refused(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        _cfg(text)
    assert "s3cr3t" not in str(info.value)  # a token is never echoed


def test_the_boot_stage_names_the_archive_and_fetches_it_before_the_hub() -> None:
    url = "https://data.example.org/course-data.tar.gz"
    cfg = _cfg(f"shared_data: {{url: '{url}', sha256: '{SHA}'}}\n")
    boot = build_cloud_config(cfg, stage="boot", accounts=_accounts(cfg))
    source = json.loads(_files(boot)["/etc/bakery/shared-data.json"])
    assert source == {"url": url, "sha256": SHA, "path": "/srv/shared"}
    cmds = [" ".join(c) for c in boot["runcmd"]]
    fetch = cmds.index("/usr/bin/python3 /usr/local/lib/bakery/fetch-data.py")
    assert fetch < next(i for i, c in enumerate(cmds) if "enable --now" in c)
    assert "/usr/local/lib/bakery/fetch-data.py" in _files(build_cloud_config(cfg, stage="bake"))
    # Works without a bake too: the full stage carries it all.
    build_cloud_config(cfg, stage="full", accounts=_accounts(cfg))


def _fetch_script(tmp_path: Path, url: str, sha: str) -> Path:
    dest = tmp_path / "shared"
    source = tmp_path / "shared-data.json"
    source.write_text(json.dumps({"url": url, "sha256": sha, "path": str(dest)}))
    script = tmp_path / "fetch-data.py"
    script.write_text(
        render(
            "cloudinit/fetch-data.py.j2",
            bakery_version="t",
            data_source=str(source),
            content_dir=str(tmp_path / "work"),
        )
    )
    return script


def test_the_vm_fetches_checks_and_unpacks_the_archive_and_refuses_anything_else(
    tmp_path: Path,
) -> None:
    import hashlib
    import http.server
    import io
    import threading

    served = tmp_path / "www"
    served.mkdir()

    def archive(name: str, members: list[tuple[tarfile.TarInfo, bytes]]) -> str:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for info, data in members:
                tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
        (served / name).write_bytes(buf.getvalue())
        return hashlib.sha256(buf.getvalue()).hexdigest()

    def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE) -> Any:
        info = tarfile.TarInfo(name)
        info.type, info.size = kind, len(data)
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
        return info, data

    good = archive(
        "good.tar.gz", [member("data/a.csv", b"1,2\n"), member("link", kind=tarfile.SYMTYPE)]
    )
    evil = archive("evil.tar.gz", [member("../outside.txt", b"x")])

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        ok = tmp_path / "ok"
        ok.mkdir()
        script = _fetch_script(ok, f"{base}/good.tar.gz", good)
        run = subprocess.run(["python3", str(script)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert (ok / "shared/data/a.csv").read_text() == "1,2\n"
        assert not (ok / "shared/link").exists() and "skipped link" in run.stderr
        again = subprocess.run(["python3", str(script)], capture_output=True, text=True)
        assert again.returncode == 0 and again.stdout == ""  # done once
        wrong = tmp_path / "wrong"
        wrong.mkdir()
        run = subprocess.run(
            ["python3", str(_fetch_script(wrong, f"{base}/good.tar.gz", SHA))],
            capture_output=True,
            text=True,
        )
        assert (
            run.returncode != 0 and f"not {SHA}" in run.stderr and "nothing unpacked" in run.stderr
        )
        assert not any((wrong / "shared").iterdir())
        out = tmp_path / "out"
        out.mkdir()
        run = subprocess.run(
            ["python3", str(_fetch_script(out, f"{base}/evil.tar.gz", evil))],
            capture_output=True,
            text=True,
        )
        assert run.returncode != 0 and "would land outside" in run.stderr
        assert not (out / "outside.txt").exists()
    finally:
        server.shutdown()
