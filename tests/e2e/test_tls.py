"""End to end: the hub's certificate from an ACME server (pebble on the host), without the internet.

The e2e workshop (e2e_harness.CONFIG) has ``tls.mode: letsencrypt`` for hub.bakery.test with
``acme_server`` at https://10.0.2.2:14000/dir (the host's pebble as the VM sees it) and pebble's
TLS CA in ``ca_certificates``. This module boots the session's systemd VM (test_try reuses it)
while pebble is down, so certbot's first try at boot fails like an ACME server or DNS that is not
ready yet; then it starts pebble and checks that the retry timer gets the certificate through
nginx's http-01 webroot, and that a renewal runs the deploy hook and reloads nginx.

Honest limits: the retry timer waits 15 minutes between tries; test_b shortens that to seconds
with a systemd drop-in on the VM (removed afterwards), so it proves that the timer fires the
retry and that the retry then installs the certificate and stops the timer, not the 15-minute
interval itself (tests/test_acme.py checks the rendered interval). pebble validates for any name
(its DNS stand-in answers 127.0.0.1, the VM's forwarded port 80), not a real DNS delegation.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pebble_server
import pytest
from e2e_harness import Workshop, record
from test_try import root_sh

pytestmark = pytest.mark.e2e

RETRY_TIMER = "bakery-tls-retry.timer"
DROPIN = f"/run/systemd/system/{RETRY_TIMER}.d/e2e-fast.conf"
LIVE = f"/etc/letsencrypt/live/{pebble_server.DOMAIN}"
RENEWAL = f"/etc/letsencrypt/renewal/{pebble_server.DOMAIN}.conf"


def unit_state(vm: Workshop, unit: str) -> tuple[str, str]:
    """``systemctl is-enabled`` and ``is-active`` of ``unit`` (either may be a negative word)."""
    out = root_sh(vm, f"systemctl is-enabled {unit} || true; systemctl is-active {unit} || true")
    enabled, active = out.split()
    return enabled, active


def timespan(text: str) -> float:
    """Seconds of a systemd time span as ``systemctl show`` prints it (``16min 3.5s``)."""
    units = {"d": 86400, "h": 3600, "min": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"([0-9.]+)(d|h|min|ms|us|s)", text)
    assert parts, text
    return sum(float(n) * units[u] for n, u in parts)


def wait_served(vm: Workshop, want: str, field: str, deadline: float) -> dict[str, str]:
    """Poll the served certificate until its ``field`` is (``want``) or is not (``!want``)."""
    negate, value = want.startswith("!"), want.lstrip("!")
    while True:
        try:
            cert = pebble_server.served_certificate(vm.https_port)
            if (cert[field] == value) != negate:
                return cert
        except OSError as exc:
            cert = {"error": str(exc)}
        assert time.monotonic() < deadline, f"served certificate still {cert}, want {field} {want}"
        time.sleep(2)


@pytest.fixture(scope="module")
def pebble(
    vm: Workshop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[pebble_server.Pebble]:
    """pebble on the host, started only after the VM booted (test_a needs it down); stopped at
    the end of the module, so test_try's VM never talks to it."""
    with pebble_server.running(vm.http_port, tmp_path_factory.mktemp("pebble")) as p:
        yield p


def boot_try_done(vm: Workshop, deadline: float) -> None:
    """Wait until the boot's own ACME try has ended: ``tls.sh letsencrypt`` in cloud-init's
    runcmd, so cloud-final.service (a oneshot that stays active, or failed, once the runcmd has
    run). bakery-tls.service is not it: that one only makes the self-signed certificate before
    nginx starts. The hub answers before the runcmd's try has failed (certbot's start alone takes
    tens of seconds under TCG), and pebble, started for test_b, must not meet that try running."""
    while True:
        state = root_sh(vm, "systemctl show -p ActiveState --value cloud-final.service").strip()
        if state in ("active", "failed"):
            return
        assert time.monotonic() < deadline, f"cloud-final.service still {state}"
        time.sleep(3)


def test_a_self_signed_at_first_boot_and_the_retry_timer_armed(vm: Workshop) -> None:
    """pebble is down at boot: certbot's first try failed, the self-signed certificate serves
    and the retry timer is enabled and waiting."""
    boot_try_done(vm, time.monotonic() + 600)
    cert = pebble_server.served_certificate(vm.https_port)
    assert cert["issuer"] == cert["subject"], cert  # self-signed
    assert "Pebble" not in cert["issuer"], cert
    assert unit_state(vm, RETRY_TIMER) == ("enabled", "active")
    log = root_sh(vm, "cat /var/log/cloud-init-output.log")
    assert "bakery: ACME failed; self-signed until bakery-tls-retry.timer succeeds" in log
    assert root_sh(vm, f"test -e {LIVE} && echo yes || echo no").strip() == "no"
    # Its next try is the configured interval (15 minutes) after the failed one, not sooner.
    out = root_sh(
        vm,
        f"systemctl show -p NextElapseUSecMonotonic --value {RETRY_TIMER}; cut -d' ' -f1 "
        "/proc/uptime",
    )
    when, uptime = out.splitlines()
    left = timespan(when) - float(uptime)
    assert 10 * 60 < left <= 15 * 60 + 30, (when, uptime)


def test_b_retry_timer_gets_the_certificate_through_http01(
    vm: Workshop, pebble: pebble_server.Pebble
) -> None:
    """With pebble up, the timer's next run (made seconds away by a drop-in) gets a certificate
    over http-01 through nginx's /.well-known/acme-challenge/; nginx serves it (issued by
    pebble's intermediate) and the timer is stopped and disabled. certbot reached pebble over
    HTTPS trusting its CA from ca_certificates: Debian's requests uses the system bundle
    (python3-certifi points at /etc/ssl/certs/ca-certificates.crt), no REQUESTS_CA_BUNDLE."""
    start = time.monotonic()
    intermediate = pebble_server.cert_fields(pebble.get("/intermediates/0"))
    root = pebble_server.cert_fields(pebble.get("/roots/0"))
    assert intermediate["issuer"] == root["subject"], (intermediate, root)
    # An empty OnActiveSec= resets every timer setting of the unit (both 15-minute ones).
    dropin = "[Timer]\nOnActiveSec=\nOnActiveSec=2s\nOnUnitInactiveSec=20s\n"
    root_sh(
        vm,
        f"mkdir -p {Path(DROPIN).parent} && printf %s {shlex.quote(dropin)} > {DROPIN} && "
        f"systemctl daemon-reload && systemctl restart {RETRY_TIMER}",
    )
    try:
        cert = wait_served(vm, intermediate["subject"], "issuer", time.monotonic() + 240)
    finally:
        root_sh(vm, f"rm -f {DROPIN} && systemctl daemon-reload")
    record("ACME certificate by the retry timer", time.monotonic() - start)
    assert cert["subject"] == f"CN={pebble_server.DOMAIN}", cert
    # The timer's service did it (not the boot's runcmd), and switched the timer off.
    journal = root_sh(vm, "journalctl -u bakery-tls-retry.service --no-pager -o cat")
    assert "Successfully received certificate" in journal, journal[-2000:]
    assert unit_state(vm, RETRY_TIMER) == ("disabled", "inactive")
    # The challenge came through nginx's webroot: pebble fetched it over port 80 (HTTP 200).
    access = root_sh(vm, "grep -h 'GET /.well-known/acme-challenge/' /var/log/nginx/access.log")
    assert [ln for ln in access.splitlines() if '" 200 ' in ln], access
    url = f"http://{pebble_server.DOMAIN}:{vm.http_port}/.well-known/acme-challenge/"
    assert f"Attempting to validate w/ HTTP: {url}" in pebble.log.read_text()
    # What certbot.timer renews with: our ACME server and our deploy hook.
    renewal = root_sh(vm, f"cat {RENEWAL}")
    assert f"server = {pebble_server.ACME_SERVER}" in renewal, renewal
    assert "renew_hook = /usr/local/lib/bakery/tls-deploy.sh" in renewal, renewal


def test_c_renewal_runs_the_deploy_hook_and_nginx_reloads(
    vm: Workshop, pebble: pebble_server.Pebble
) -> None:
    """``certbot renew --force-renewal`` (what certbot.timer runs, forced): the stored deploy
    hook installs the new certificate and reloads nginx, so the served serial changes."""
    start = time.monotonic()
    before = pebble_server.served_certificate(vm.https_port)
    assert "Pebble" in before["issuer"], before
    pid = root_sh(vm, "cat /run/nginx.pid").strip()
    out = root_sh(vm, "certbot renew --force-renewal --no-random-sleep-on-renew 2>&1")
    assert "all renewals succeeded" in out, out
    # certbot logs each run to letsencrypt.log (the previous runs' rotated to .1, .2, ...).
    log = root_sh(vm, "cat /var/log/letsencrypt/letsencrypt.log")
    assert "Running deploy-hook command: /usr/local/lib/bakery/tls-deploy.sh" in log, log[-3000:]
    after = wait_served(vm, "!" + before["serial"], "serial", time.monotonic() + 60)
    record("ACME renewal, deploy hook, nginx reload", time.monotonic() - start)
    assert after["issuer"] == before["issuer"] and after["subject"] == before["subject"], after
    # A reload, not a restart: the same nginx master serves the new certificate.
    assert root_sh(vm, "cat /run/nginx.pid").strip() == pid
    # The renewal did not restart the retry timer.
    assert unit_state(vm, RETRY_TIMER) == ("disabled", "inactive")


def test_d_update_moves_the_hub_to_a_new_domain_and_back(
    vm: Workshop, pebble: pebble_server.Pebble
) -> None:
    """`bakery update` (issue 29) with a new ``tls.domain``: nginx answers to the new name, certbot
    gets its certificate (http-01 through the same webroot) and nginx serves it; the old name's
    renewal is forgotten (its deploy hook would put the old certificate back). Then back to the
    first name, the same way; a third run has nothing to do."""
    from bakery.day.update import update

    original = vm.config.read_text()
    day = {"hosts": [f"127.0.0.1:{vm.ssh_port}"], "identity": vm.ssh_key}
    intermediate = pebble_server.cert_fields(pebble.get("/intermediates/0"))["subject"]
    try:
        for domain in ("class.bakery.test", pebble_server.DOMAIN):
            vm.config.write_text(
                original.replace(f"domain: {pebble_server.DOMAIN}", f"domain: {domain}")
            )
            start = time.monotonic()
            result = update(config_path=vm.config, **day)
            assert not result.errors, result.errors
            said = "\n".join(result.lines())
            assert f"the certificate: for {domain}" in said, said
            cert = wait_served(vm, f"CN={domain}", "subject", time.monotonic() + 60)
            record(
                f"update: tls.domain to {domain} (ACME order, nginx reload)",
                time.monotonic() - start,
            )
            assert cert["issuer"] == intermediate, cert
            site = root_sh(vm, "cat /etc/nginx/conf.d/jupyterhub.conf")
            assert f"server_name {domain};" in site, site
            renewals = root_sh(vm, "ls /etc/letsencrypt/renewal").split()
            assert renewals == [f"{domain}.conf"], renewals
        again = update(config_path=vm.config, **day)
        assert [p.items for p in again.plan.servers] == [[]], again.plan.lines()
    finally:
        vm.config.write_text(original)
