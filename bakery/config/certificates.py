"""A CA certificate in workshop.yaml: one whole PEM certificate, checked as DER (never a key)."""

from __future__ import annotations

import base64
import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    Field,
    WithJsonSchema,
)

_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\n((?:[A-Za-z0-9+/]{1,76}={0,2}\n)+)-----END CERTIFICATE-----"
)


def _tlv(der: bytes, at: int) -> tuple[int, int, int] | None:
    """The DER element at ``at``: (tag, where its value starts, where it ends); None when the
    bytes end before it does."""
    if at + 2 > len(der):
        return None
    tag, size, start = der[at], der[at + 1], at + 2
    if size & 0x80:
        count = size & 0x7F
        if not 0 < count <= 4 or start + count > len(der):
            return None
        size, start = int.from_bytes(der[start : start + count], "big"), start + count
    end = start + size
    return (tag, start, end) if end <= len(der) else None


def _is_certificate(der: bytes) -> bool:
    """Whether ``der`` is whole and shaped as an X.509 certificate: a SEQUENCE of the signed
    part (a SEQUENCE), the algorithm (a SEQUENCE) and the signature (a BIT STRING). A private
    key relabelled CERTIFICATE (its first element is a version INTEGER) or a truncated
    certificate (OpenSSL would reject the whole trust bundle at bake) is not."""
    outer = _tlv(der, 0)
    if outer is None or outer[0] != 0x30 or outer[2] != len(der):
        return False
    tags, at = [], outer[1]
    while at < outer[2]:
        element = _tlv(der, at)
        if element is None:
            return False
        tags.append(element[0])
        at = element[2]
    return tags == [0x30, 0x30, 0x03]


def _pem_certificate(value: str) -> str:
    """One PEM certificate and nothing else (no key, no comment); stored ending in a newline."""
    text = value.strip("\n")
    match = _PEM_CERTIFICATE.fullmatch(text)
    der = b""
    if match:
        try:
            der = base64.b64decode(match.group(1).replace("\n", ""), validate=True)
        except ValueError:
            der = b""
    if not _is_certificate(der):
        raise ValueError(
            "paste one PEM certificate: the lines from -----BEGIN CERTIFICATE----- to "
            "-----END CERTIFICATE----- (a public certificate, never a key), as a | block"
        )
    return text + "\n"


# A CA certificate the VM trusts (a site's TLS-inspecting proxy or internal CA), in PEM.
PemCertificate = Annotated[
    str,
    Field(max_length=20_000),
    AfterValidator(_pem_certificate),
    WithJsonSchema({"type": "string", "$comment": "one PEM certificate"}),
]
