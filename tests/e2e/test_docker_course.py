"""End to end, docker spawner on one VM: `bakery update` pushes course files (issue 29).

The CI's docker workshop takes its course from git (nbgitpuller, test_docker.test_2c), so its
update pushes shared data; the swarm e2e pushes a course to a server on a worker. This one is the
single VM's own case: a course baked from a folder, a trainee's container running with a kernel
holding ``x = 42`` and their edited copy of a course file, then `bakery update` with that file
fixed and a new one. The kernel keeps ``x``, the container sees the new file in ~/course at once,
and the trainee's edit stays theirs. One more VM boot and bake: `make test-docker-course`, not in
CI.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import userimage
from e2e_harness import (
    Workshop,
    build_golden,
    dump_console,
    e2e_ssh_key,
    record,
    tagged,
    with_stop,
    workshop_for,
    write_folder,
)
from test_try import connect, kernel, login, open_server, root_sh, run_cell
from test_try import execute as printed

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COURSE_FILE, COURSE_TEXT = "intro.md", "# Intro\n"
CONFIG = """\
name: e2e-docker-course
os: debian-12
users:
  count: 1
spawner:
  kind: docker
  image: {image}
  mem_limit: 256M
  image_archive: {archive}
tls:
  mode: self-signed
ssh:
  authorized_keys:
    - {key}
course:
  from: ./course
"""


@pytest.fixture(scope="module")
def cws(tmp_path_factory: pytest.TempPathFactory, user_image: Path) -> Workshop:
    d = tmp_path_factory.mktemp("docker-course")
    key = e2e_ssh_key()
    archive = {"path": str(user_image), "format": "rootfs", **userimage.IMPORT_SETTINGS}
    (d / "workshop.yaml").write_text(
        CONFIG.format(
            image=f"bakery/e2e-notebook:{user_image.parent.name[:12]}",
            archive=json.dumps(archive),
            key=key.with_suffix(".pub").read_text().strip(),
        )
    )
    write_folder(d / "course", {COURSE_FILE: COURSE_TEXT})
    return workshop_for(
        d / "workshop.yaml",
        key=key,
        https_port=int(os.environ.get("BAKERY_E2E_COURSE_PORT", "18483")),
        ssh_port=int(os.environ.get("BAKERY_E2E_COURSE_SSH_PORT", "12262")),
    )


@pytest.fixture(scope="module")
def cvm(base_image: Path, cws: Workshop) -> Iterator[Workshop]:
    from bakery.providers.local import trial

    golden = build_golden(base_image, cws.config)
    start = time.monotonic()
    try:
        trial.up(
            cws.config,
            image=golden,
            stage="boot",
            https_port=cws.https_port,
            ssh_port=cws.ssh_port,
            memory="3G",
            cpus=2,
            run_dir=cws.run_dir,
            progress=tagged("try docker course"),
        )
    except Exception:
        dump_console(cws.run_dir)
        with_stop(cws.run_dir)
        raise
    record("docker course: boot to login page", time.monotonic() - start)
    yield cws
    with_stop(cws.run_dir)


def test_update_pushes_course_files_into_the_running_container(cvm: Workshop) -> None:
    from bakery.day.update import update
    from bakery.layout import COURSE_DIR

    user = cvm.trainees[0]
    s, resp = login(cvm, user, cvm.passwords[user])
    assert resp.status_code == 302, resp.status_code
    open_server(cvm, s, user)
    name = f"jupyter-{user}"
    assert name in root_sh(cvm, "docker ps --format '{{.Names}}'").split()
    mine = "# Intro, with my notes\n"
    path = f"os.path.expanduser('~/course/{COURSE_FILE}')"
    code = f"import os\nopen({path}).read(), open({path}, 'w').write({mine!r})"
    assert run_cell(cvm, s, user, code) == repr((COURSE_TEXT, len(mine)))
    write_folder(cvm.dir / "course", {COURSE_FILE: "# Intro, fixed\n", "after-break.md": "# 2\n"})
    hosts = [f"127.0.0.1:{cvm.ssh_port}"]
    with kernel(cvm, s, user) as kernel_id:
        ws = connect(cvm, s, user, kernel_id)
        try:
            assert printed(ws, user, "x = 42\nprint('set')") == "set\n"
            start = time.monotonic()
            result = update(config_path=cvm.config, hosts=hosts, identity=cvm.ssh_key)
            record("docker course: update (course files)", time.monotonic() - start)
            assert not result.errors, result.errors
            assert printed(ws, user, "print(x)") == "42\n"
            # In the same container, at once: its ~/course is the host's home, mounted.
            code = (
                "import os\nc = os.path.expanduser('~/course')\n"
                f"print(open(f'{{c}}/after-break.md').read() + open(f'{{c}}/{COURSE_FILE}').read(),"
                " end='')"
            )
            assert printed(ws, user, code) == "# 2\n" + mine
        finally:
            ws.close()
    lines = "\n".join(result.plan.lines())
    assert "course.from: 2 new or changed file(s)" in lines, lines
    done = "\n".join(result.lines())
    assert f"course files copied where ~/course lacked them: {user}" in done, done
    assert root_sh(cvm, f"cat {COURSE_DIR}/{COURSE_FILE}") == "# Intro, fixed\n"
    assert root_sh(cvm, f"stat -c %U /home/{user}/course/after-break.md").strip() == user
    again = update(config_path=cvm.config, hosts=hosts, identity=cvm.ssh_key)
    assert [p.items for p in again.plan.servers] == [[]], again.plan.lines()
