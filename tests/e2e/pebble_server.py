"""A local ACME server for the e2e tier: Debian's pebble, its DNS stand-in and their TLS CA.

The VM reaches the host's loopback as 10.0.2.2 (qemu's user network), so pebble listens on
127.0.0.1 with a certificate for IP 10.0.2.2 (and 127.0.0.1, for the test's own requests). That
certificate's CA goes into the e2e workshop's ``ca_certificates``: it is made once and cached
beside the golden images, since a new CA per run would change the bake document (a rebake).
``pebble-challtestsrv`` answers every DNS A query with 127.0.0.1: pebble then validates http-01
on 127.0.0.1:<httpPort>, the VM's forwarded port 80.
The same certificate also names ``oidc.bakery.test``: oidc_server.py's provider serves with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("BAKERY_PEBBLE_CACHE", "/var/cache/bakery/pebble"))
# The ACME directory as the VM sees it (its certbot's --server).
ACME_PORT, MANAGEMENT_PORT = 14000, 15000
ACME_SERVER = f"https://10.0.2.2:{ACME_PORT}/dir"
DOMAIN = "hub.bakery.test"
# The test OpenID Connect provider's host name (oidc_server.py), also in the certificate.
OIDC_HOST = "oidc.bakery.test"


def ca_dir() -> Path:
    """The cached CA and pebble's server certificate (made once, with openssl)."""
    d = CACHE / "tls"
    if (d / "cert.pem").is_file() and _names(d / "cert.pem", f"DNS:{OIDC_HOST}"):
        return d
    work = d.with_name("tls.tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=work, check=True, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "3650", "-subj", "/CN=bakery e2e ACME test CA", "-keyout", "ca-key.pem",
        "-out", "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", "/CN=pebble", "-keyout", "key.pem", "-out", "cert.csr",
    )  # fmt: skip
    (work / "ext.cnf").write_text(
        f"subjectAltName=IP:10.0.2.2,IP:127.0.0.1,DNS:localhost,DNS:{OIDC_HOST}\n"
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    openssl(
        "x509", "-req", "-in", "cert.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
        "-CAcreateserial", "-days", "3650", "-extfile", "ext.cnf", "-out", "cert.pem",
    )  # fmt: skip
    (work / "ca-key.pem").unlink()  # nothing more is signed with it
    shutil.rmtree(d, ignore_errors=True)
    work.rename(d)
    return d


def _names(cert: Path, name: str) -> bool:
    """Whether ``cert``'s subjectAltName has ``name`` (a cache made before it was added: not)."""
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(cert)],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return name in [part.strip() for part in out.replace("\n", ",").split(",")]


def ca_pem() -> str:
    """The PEM of the CA that signed pebble's server certificate (for ``ca_certificates``)."""
    return (ca_dir() / "ca.pem").read_text()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Pebble:
    """A running pebble: its management API (roots, intermediates) on the host."""

    management: str
    ca_file: Path
    log: Path

    def get(self, path: str) -> str:
        import requests

        s = requests.Session()
        s.trust_env = False
        r = s.get(f"{self.management}{path}", verify=str(self.ca_file), timeout=10)
        r.raise_for_status()
        return str(r.text)


def _wait_port(port: int, procs: list[subprocess.Popen[bytes]], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        dead = [p.args for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"pebble did not start ({dead}): {log.read_text()[-2000:]}")
        time.sleep(0.2)


@contextlib.contextmanager
def running(http_port: int, workdir: Path) -> Iterator[Pebble]:
    """pebble on 127.0.0.1:14000 validating http-01 on ``http_port``; DNS from challtestsrv."""
    tls = ca_dir()
    workdir.mkdir(parents=True, exist_ok=True)
    dns = _free_udp_port()
    config = workdir / "pebble.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{ACME_PORT}",
                    "managementListenAddress": f"127.0.0.1:{MANAGEMENT_PORT}",
                    "certificate": str(tls / "cert.pem"),
                    "privateKey": str(tls / "key.pem"),
                    "httpPort": http_port,
                    "tlsPort": _free_tcp_port(),
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            },
            indent=2,
        )
    )
    log = workdir / "pebble.log"
    env = os.environ | {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    procs: list[subprocess.Popen[bytes]] = []
    with log.open("ab") as out:
        try:
            # Every A query: 127.0.0.1; no AAAA answer (nothing listens on the host's ::1).
            procs.append(
                subprocess.Popen(
                    [
                        "pebble-challtestsrv",
                        "-dns01",
                        f"127.0.0.1:{dns}",
                        "-http01",
                        "",
                        "-https01",
                        "",
                        "-tlsalpn01",
                        "",
                        "-defaultIPv6",
                        "",
                        "-management",
                        f"127.0.0.1:{_free_tcp_port()}",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
            procs.append(
                subprocess.Popen(
                    ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns}"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
            _wait_port(ACME_PORT, procs, log)
            _wait_port(MANAGEMENT_PORT, procs, log)
            yield Pebble(f"https://127.0.0.1:{MANAGEMENT_PORT}", tls / "ca.pem", log)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def cert_fields(pem: str) -> dict[str, str]:
    """subject, issuer and serial of a PEM certificate (openssl's one-line forms)."""
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-issuer", "-serial", "-nameopt", "RFC2253"],
        input=pem, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in fields.items()}


def served_certificate(port: int) -> dict[str, str]:
    """The fields of the certificate the hub's nginx serves on 127.0.0.1:``port``."""
    import ssl

    return cert_fields(ssl.get_server_certificate(("127.0.0.1", port), timeout=30))
