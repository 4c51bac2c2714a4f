"""End to end: trainees log in with an OpenID Connect provider (auth.kind oidc), issue 31.

A real provider (oidc-provider from the npm registry, tests/e2e/oidc/) runs on the host; the e2e
golden image (test_try's: auth is a boot-stage setting) boots with the try workshop turned into a
single sign-on one: no accounts before the class, the client secret in the VM's meta-data only.
Debian's Chromium logs each person in through the provider's login page:

- ana (group students) reaches JupyterLab and runs a cell in her new server;
- eve (no allowed group, not listed) gets the hub's refusal page, and no account;
- mallory (group students, username ``Mal Lory; rm -rf /``) gets a safe Linux name;
- boss (group staff, the admin claim) reaches the admin page.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import browser
import oidc_server
import pytest
from conftest import E2E_ACCEL
from e2e_harness import (
    Workshop,
    dump_console,
    record,
    tagged,
    with_stop,
    workshop_for,
    write_config,
)
from test_try import (
    _day_args,
    base,
    open_server,
    quota_report,
    root_sh,
    run_cell,
    server_unit,
    session,
)

pytestmark = pytest.mark.e2e

HTTPS_PORT = int(os.environ.get("BAKERY_E2E_OIDC_PORT", "18683"))
SSH_PORT = int(os.environ.get("BAKERY_E2E_OIDC_SSH_PORT", "12462"))
SECRET_FILE = "oidc-client.secret"
# The try workshop's users block, and what replaces it: a provider's people are no accounts.
TRY_USERS = "users:\n  count: 2\n  admins: [teacher]\n"
AUTH = f"""\
users:
  count: 3
auth:
  kind: oidc
  issuer: {oidc_server.ISSUER}
  client_id: {oidc_server.CLIENT_ID}
  client_secret_file: {SECRET_FILE}
  allowed_groups: [students]
  admin_groups: [staff]
  login_service: Uni SSO
"""
# The VM finds the provider on the host (qemu's user network: 10.0.2.2), as a site's DNS would.
HOSTS = f"""\
files:
  - path: /etc/hosts
    content: |
      127.0.0.1 localhost
      127.0.1.1 hub.bakery.test hub
      ::1 localhost ip6-localhost ip6-loopback
      10.0.2.2 {oidc_server.ISSUER_HOST}
"""


@pytest.fixture(scope="module")
def sso(
    golden_image: Path, workshop_files: Workshop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Workshop, oidc_server.Provider]]:
    """The provider, and the workshop booted from test_try's golden image with auth.kind oidc."""
    from bakery.providers.local import trial

    d = tmp_path_factory.mktemp("oidc")
    config = d / "workshop.yaml"
    write_config(config, "e2e-workshop", workshop_files.ssh_key.with_suffix(".pub").read_text())
    text = config.read_text()
    assert TRY_USERS in text
    config.write_text(text.replace(TRY_USERS, AUTH) + HOSTS)
    callback = f"https://127.0.0.1:{HTTPS_PORT}/hub/oauth_callback"
    with oidc_server.running(d / "provider", [callback]) as provider:
        secret = d / SECRET_FILE
        secret.write_text(provider.client_secret + "\n")
        secret.chmod(0o600)
        key = workshop_files.ssh_key
        w = workshop_for(config, key=key, https_port=HTTPS_PORT, ssh_port=SSH_PORT)
        start = time.monotonic()
        try:
            trial.up(
                config, image=golden_image, stage="boot", https_port=HTTPS_PORT,
                ssh_port=SSH_PORT, memory="3G", cpus=2, accel=E2E_ACCEL,  # type: ignore[arg-type]
                run_dir=w.run_dir, progress=tagged("oidc"),
            )  # fmt: skip
        except Exception:
            dump_console(w.run_dir)
            with_stop(w.run_dir)
            print(provider.log.read_text()[-3000:], file=sys.stderr)
            raise
        record("oidc: boot to login page", time.monotonic() - start)
        try:
            yield w, provider
        finally:
            with_stop(w.run_dir)


def _browser_login(tmp_path: Path, w: Workshop, login: str) -> tuple[Any, str]:
    driver = browser.chromium(tmp_path / f"profile-{login}", [oidc_server.RESOLVER_RULES])
    try:
        url = browser.oidc_login(driver, base(w), login, oidc_server.password(login), 300)
    except Exception:
        driver.quit()
        raise
    return driver, url


def _requests_session(driver: Any) -> Any:
    """The browser's cookies in a requests session: the same login, for the kernel's API."""
    s = session()
    for c in driver.get_cookies():
        s.cookies.set(c["name"], c["value"], domain=c.get("domain", ""), path=c.get("path", "/"))
    return s


def test_a_secret_travels_in_meta_data_only(sso: tuple[Workshop, oidc_server.Provider]) -> None:
    w, provider = sso
    assert root_sh(w, "stat -c %a /srv/jupyterhub/oauth-client-secret").strip() == "600"
    assert root_sh(w, "cat /srv/jupyterhub/oauth-client-secret").strip() == provider.client_secret
    # Not in the user-data cloud-init keeps, nor in anything it wrote, nor in the hub's log.
    found = root_sh(
        w,
        f"grep -rlF {provider.client_secret} /var/lib/cloud/instance/user-data.txt* "
        "/etc/jupyterhub /usr/local/lib/bakery /var/log/cloud-init-output.log; "
        f"journalctl -u jupyterhub | grep -cF {provider.client_secret}; true",
    )
    assert found.split() == ["0"], found
    # No account was made before the class: only the image's login user has a home.
    assert root_sh(w, "ls /home").split() == [w.login_user]


def test_b_trainee_logs_in_with_the_provider_and_runs_a_cell(
    sso: tuple[Workshop, oidc_server.Provider], tmp_path: Path
) -> None:
    w, _ = sso
    start = time.monotonic()
    driver, _url = _browser_login(tmp_path, w, "ana")
    try:
        browser.wait_for_lab(driver, 600)
        record("oidc: provider login to JupyterLab", time.monotonic() - start)
        assert "/user/ana/lab" in driver.current_url, driver.current_url
        s = _requests_session(driver)
    finally:
        driver.quit()
    open_server(w, s, "ana")
    assert run_cell(w, s, "ana", "import os; (os.getuid() != 0, os.environ['USER'], 6 * 7)") == (
        "(True, 'ana', 42)"
    )
    # The isolation of bakery's own trainees: a private home with the homes' quota, the
    # spawner's memory limit, the metadata service closed to every UID but root's, no password.
    home = root_sh(w, "stat -c '%U %a' /home/ana").split()
    assert home == ["ana", "700"], home
    uid = int(root_sh(w, "id -u ana"))
    assert quota_report(w)[uid][1] == 64 * 1024, "ana's home has spawner.disk_limit's quota"
    memory = root_sh(w, f"systemctl show -p MemoryMax --value {server_unit('ana')}").strip()
    assert memory == str(512 * 2**20), memory
    rules = root_sh(w, "iptables -S OUTPUT")
    assert "-d 169.254.169.254/32 -m owner ! --uid-owner 0 -j REJECT" in rules, rules
    assert root_sh(w, "passwd -S ana").split()[1] in ("L", "NP"), "no password of its own"


def test_c_outsider_gets_the_refusal_page_and_no_account(
    sso: tuple[Workshop, oidc_server.Provider], tmp_path: Path
) -> None:
    w, _ = sso
    driver, url = _browser_login(tmp_path, w, "eve")
    try:
        text = browser.page_text(driver)
    finally:
        driver.quit()
    assert "403" in text and "not on this workshop's list" in text, (url, text[:1000])
    assert "eve" not in root_sh(w, "getent passwd | cut -d: -f1").split()


def test_d_a_hostile_username_becomes_a_safe_name(
    sso: tuple[Workshop, oidc_server.Provider], tmp_path: Path
) -> None:
    w, _ = sso
    driver, _url = _browser_login(tmp_path, w, "mallory")
    try:
        browser.wait_for_lab(driver, 600)
        assert "/user/mal-lory-rm-rf/lab" in driver.current_url, driver.current_url
    finally:
        driver.quit()
    entry = root_sh(w, "getent passwd mal-lory-rm-rf").strip().split(":")
    assert entry[5] == "/home/mal-lory-rm-rf", entry
    assert root_sh(w, "test -d / && ls /").strip(), "the VM's root is where it was"


def test_e_admin_from_the_claim_reaches_the_admin_page(
    sso: tuple[Workshop, oidc_server.Provider], tmp_path: Path
) -> None:
    w, _ = sso
    driver, _url = _browser_login(tmp_path, w, "boss")
    try:
        s = _requests_session(driver)
        driver.get(f"{base(w)}/hub/admin")
        time.sleep(2)
        assert "/hub/admin" in driver.current_url, driver.current_url
        page = s.get(f"{base(w)}/hub/admin", timeout=60)
        assert page.status_code == 200, page.status_code
        assert "admin-react" in page.text or "Admin" in page.text, page.text[:500]
    finally:
        driver.quit()
    # `bakery users list`: who logged in, and only boss is an admin.
    from bakery.day.users import list_users

    day = _day_args(w)
    admin = {u.name: u.admin for u in list_users(config_path=w.config, **day)}
    assert admin == {"ana": False, "boss": True, "mal-lory-rm-rf": False}, admin


def test_f_collect_takes_every_home_of_the_class(
    sso: tuple[Workshop, oidc_server.Provider], tmp_path: Path
) -> None:
    from bakery.day.collect import collect

    w, _ = sso
    root_sh(w, "printf 'ana was here' > /home/ana/work.txt && chown ana: /home/ana/work.txt")
    day = _day_args(w)
    result = collect(config_path=w.config, out_dir=tmp_path / "collected", **day)
    assert not result.errors, result.errors
    assert sorted(result.collected) == ["ana", "boss", "mal-lory-rm-rf"], result.collected


def test_g_a_walk_in_is_let_in_by_update_and_nobody_stops(
    sso: tuple[Workshop, oidc_server.Provider], tmp_path: Path
) -> None:
    """eve is added to auth.allowed_users; `bakery update` restarts the hub with the new list
    (ana's server keeps running) and says the client secret needs nothing; eve logs in."""
    from bakery.day.update import update
    from bakery.day.users import list_users

    w, provider = sso
    day = _day_args(w)
    before = {u.name: u.started for u in list_users(config_path=w.config, **day)}
    assert before["ana"], "ana's server runs (test_b)"
    text = w.config.read_text()
    walk_in = "  allowed_groups: [students]\n  allowed_users: [eve@elsewhere.example]\n"
    w.config.write_text(text.replace("  allowed_groups: [students]\n", walk_in))
    start = time.monotonic()
    done = update(config_path=w.config, **day)
    record("oidc: update (allowed_users)", time.monotonic() - start)
    lines = "\n".join(done.plan.lines())
    assert "the hub's config" in lines and "client secret" not in lines, lines
    assert not done.errors, done.errors
    driver, _url = _browser_login(tmp_path, w, "eve")
    try:
        browser.wait_for_lab(driver, 600)
        assert "/user/eve/lab" in driver.current_url, driver.current_url
    finally:
        driver.quit()
    after = {u.name: u.started for u in list_users(config_path=w.config, **day)}
    assert after["ana"] == before["ana"], "ana's server was not restarted"
    assert provider.client_secret not in lines
    # A second update has nothing to do.
    again = update(config_path=w.config, **day)
    assert "nothing to do" in "\n".join(again.plan.lines()), again.plan.lines()
