"""SHA-512-crypt: the reference vectors, and the pure-Python path agrees with libcrypt."""

from __future__ import annotations

import os
import subprocess

import pytest

from bakery.workshop import sha512crypt

# From Ulrich Drepper's specification (SHA-crypt.txt), the test vectors for $6$.
VECTORS = [
    (
        "Hello world!",
        "saltstring",
        5000,
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdF"
        "CoEOfaS35inz1",
    ),
    (
        "Hello world!",
        "saltstringsaltstring",
        10000,
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vO"
        "uZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
    ),
]


@pytest.mark.parametrize(("password", "salt", "rounds", "expected"), VECTORS)
@pytest.mark.parametrize("native", [True, False])
def test_reference_vectors(
    password: str, salt: str, rounds: int, expected: str, native: bool
) -> None:
    assert sha512crypt.crypt(password, salt[:16], rounds, native=native) == expected
    assert sha512crypt.verify(password, expected)
    assert not sha512crypt.verify(password + "x", expected)


def test_libcrypt_is_used_where_installed() -> None:
    # Debian and Ubuntu ship libcrypt1 in every image: in CI the native path must be the one that
    # runs, or the comparisons below would compare the pure-Python path with itself.
    if sha512crypt._libcrypt() is None:
        if os.environ.get("CI"):
            pytest.fail("libcrypt not found: the native SHA-512-crypt path is untested")
        pytest.skip("no libcrypt here")


@pytest.mark.parametrize("password", ["", "a", "pässwörd", "x" * 200, "with space:and$dollar"])
def test_pure_python_matches_libcrypt(password: str) -> None:
    salt = "abcdefghABCDEF./"
    if sha512crypt._libcrypt() is None:
        pytest.skip("no libcrypt here (CI fails in test_libcrypt_is_used_where_installed)")
    assert sha512crypt.crypt(password, salt, native=False) == sha512crypt.crypt(password, salt)


def test_matches_openssl_passwd() -> None:
    out = subprocess.run(
        ["openssl", "passwd", "-6", "-salt", "Zr4NaCl", "correct horse"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert sha512crypt.crypt("correct horse", "Zr4NaCl", native=False) == out


def test_random_salts_and_bad_input() -> None:
    a, b = sha512crypt.hash_password("pw"), sha512crypt.hash_password("pw")
    assert a != b and a.startswith("$6$") and len(a.split("$")[2]) == 16
    assert not sha512crypt.verify("pw", "$1$md5$notours")
    with pytest.raises(ValueError, match="salt"):
        sha512crypt.crypt("pw", "bad salt!")
