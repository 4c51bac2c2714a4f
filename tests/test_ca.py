"""`ca_certificates`: a site's CA in PEM, trusted by the VM through cloud-init's ca_certs, and the
chroot builder doing what cloud-init does with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bakery.bake import chroot_apply
from bakery.config.workshop import parse_config
from bakery.errors import ChrootError, ConfigError
from bakery.vm.image import config_digest
from bakery.vm.userdata import build_cloud_config, dump_cloud_config

# A self-signed EC certificate made for these tests (`openssl req -x509 -newkey ec ...`).
CERT = """\
-----BEGIN CERTIFICATE-----
MIIBiDCCAS+gAwIBAgIUQHGc1gP2IluW16Cbpqq3LC2NkxgwCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOYmFrZXJ5IHRlc3QgQ0EwIBcNMjYxMTI3MjEzNjU3WhgPMjEy
NjExMDMyMTM2NTdaMBkxFzAVBgNVBAMMDmJha2VyeSB0ZXN0IENBMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEoSoDal49rEiBteJZNlXYQ3rbIE3lZIu2NjwhXfuh
O1cZIJqEA+IAeHgt+vRTOvhhwQDsg0YiEvC9xsg6Ha8QqqNTMFEwHQYDVR0OBBYE
FM5n3DmCctoa7vvOAb1jzg6kk2oBMB8GA1UdIwQYMBaAFM5n3DmCctoa7vvOAb1j
zg6kk2oBMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgGw4hgXOK
KBPlt2xYDLBwO2fxhsctx1LyaQq7xDHV6ZQCIEV6Jjdn3w7pUA63a6LQEGkw+l6j
uAPw4GUbfqUgUD+T
-----END CERTIFICATE-----
"""
BODY = CERT.split("\n", 1)[1].rsplit("-----END", 1)[0]


def _config(*certs: str) -> str:
    return yaml.safe_dump({"name": "ok", "ca_certificates": list(certs)}, sort_keys=False)


def test_a_pem_certificate_is_kept_ending_in_a_newline() -> None:
    cfg = parse_config(_config(CERT, CERT.rstrip("\n")), Path("ws.yaml"))
    assert cfg.ca_certificates == [CERT, CERT]


def test_a_yaml_block_is_the_way_to_write_one() -> None:
    block = "".join("    " + line + "\n" for line in CERT.splitlines())
    cfg = parse_config(f"name: ok\nca_certificates:\n  - |\n{block}", Path("ws.yaml"))
    assert cfg.ca_certificates == [CERT]


KEY = CERT.replace("CERTIFICATE", "PRIVATE KEY")


@pytest.mark.parametrize(
    "text",
    [
        KEY,  # a key is never accepted, whatever it holds
        CERT + CERT,  # one certificate per entry
        "subject=CN = proxy\n" + CERT,  # openssl's text around it
        CERT.replace("\n", "\r\n"),
        CERT.replace("MIIB", "MII!"),
        CERT.replace(BODY, "aGVsbG8=\n"),  # base64, but not a DER certificate
        CERT.replace(BODY, ""),
        CERT.replace(BODY, BODY.replace("\n", "")),  # one 500-character line
        "",
        "-----BEGIN CERTIFICATE-----",
    ],
    ids=["key", "two", "text", "crlf", "bad-base64", "not-der", "empty-body", "long-line",
         "empty", "begin-only"],
)  # fmt: skip
def test_anything_but_one_certificate_is_refused_at_its_line(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(text), Path("ws.yaml"))
    assert "ws.yaml:3: ca_certificates.0: " in str(info.value)
    assert "paste one PEM certificate" in str(info.value)


def test_at_most_twenty() -> None:
    with pytest.raises(ConfigError, match="ca_certificates"):
        parse_config(_config(*[CERT] * 21), Path("ws.yaml"))


@pytest.mark.parametrize(("stage", "trusted"), [("bake", True), ("full", True), ("boot", False)])
def test_the_bake_stage_trusts_them_before_apt(
    make_workshop: Any, stage: str, trusted: bool
) -> None:
    cfg, accounts = make_workshop(_config(CERT))
    doc = build_cloud_config(cfg, stage=stage, accounts=accounts)
    assert ("ca_certs" in doc) is trusted
    if trusted:
        assert doc["ca_certs"] == {"trusted": [CERT]}
        keys = list(doc)
        assert keys.index("ca_certs") < keys.index("apt")
        # A readable block in the user-data, read back as the same text.
        text = dump_cloud_config(doc)
        assert "  - |\n    -----BEGIN CERTIFICATE-----\n" in text
        assert yaml.safe_load(text)["ca_certs"]["trusted"] == [CERT]


def test_no_certificates_no_ca_certs_key() -> None:
    cfg = parse_config("name: ok\n", Path("w.yaml"))
    assert "ca_certs" not in build_cloud_config(cfg, stage="bake")


class _Image:
    """Records what the chroot builder writes and runs, with /etc/ca-certificates.conf."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, conf: str) -> None:
        self.files: dict[str, str] = {"/etc/ca-certificates.conf": conf}
        self.ran: list[list[str]] = []
        monkeypatch.setattr(chroot_apply, "write_file", self.write_file)
        monkeypatch.setattr(chroot_apply, "_run", self.run)

    def write_file(self, root: Path, item: dict[str, Any]) -> None:
        self.files[item["path"]] = item["content"]

    def run(self, cmd: list[str], what: str, **_: Any) -> str:
        argv = cmd[cmd.index("TERM=dumb") + 1 :]
        self.ran.append(argv)
        return self.files["/etc/ca-certificates.conf"] if argv[0] == "/bin/sh" else ""


def test_chroot_writes_them_as_cloud_init_does(monkeypatch: pytest.MonkeyPatch) -> None:
    image = _Image(monkeypatch, "mozilla/A.crt\ncloud-init-ca-certs.crt\nmozilla/B.crt\n\n")
    chroot_apply.apply_ca_certs(Path("/img"), {"trusted": [CERT, CERT]})
    assert image.files["/usr/share/ca-certificates/cloud-init-ca-certs.crt"] == CERT + "\n" + CERT
    assert image.files["/etc/ca-certificates.conf"] == (
        "mozilla/A.crt\nmozilla/B.crt\ncloud-init-ca-certs.crt\n"
    )
    assert image.ran[-1] == ["update-ca-certificates"]


def test_chroot_applies_them_after_write_files_and_before_apt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = _Image(monkeypatch, "")
    cfg = parse_config(_config(CERT), Path("w.yaml"))
    doc = build_cloud_config(cfg, stage="bake")
    steps = [name for name, _ in chroot_apply._steps(Path("/img"), doc, lambda *a, **k: None)]
    assert steps[:3] == ["write_files", "ca_certs", "apt configure"]
    dict(chroot_apply._steps(Path("/img"), doc, lambda *a, **k: None))["ca_certs"]()
    assert image.files["/etc/ca-certificates.conf"] == "cloud-init-ca-certs.crt\n"
    assert image.ran[-1] == ["update-ca-certificates"]


def test_chroot_refuses_remove_defaults() -> None:
    with pytest.raises(ChrootError, match="remove_defaults"):
        chroot_apply.apply_ca_certs(Path("/img"), {"remove_defaults": True, "trusted": [CERT]})


def test_they_count_in_the_image_record_only_when_set() -> None:
    """Set, they change the config's digest; unset, it is what it was before the setting."""
    plain = parse_config("name: ok\n", Path("w.yaml"))
    empty = parse_config("name: ok\nca_certificates: []\n", Path("w.yaml"))
    assert config_digest(empty) == config_digest(plain)
    assert config_digest(parse_config(_config(CERT), Path("w.yaml"))) != config_digest(plain)
