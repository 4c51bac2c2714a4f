"""SHA-512-crypt (``$6$``) hashes, as /etc/shadow and cloud-init's ``passwd`` expect.

Uses the system's libcrypt when present (fast, C) and a pure-Python implementation of Ulrich
Drepper's specification otherwise (Python 3.13 removed the ``crypt`` module); both give the same
string for the same password and salt.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import hmac
import secrets
from functools import cache

_B64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ROUNDS_DEFAULT = 5000


@cache
def _libcrypt() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("crypt")
    if not name:
        return None
    try:
        func = ctypes.CDLL(name).crypt
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    func.restype = ctypes.c_char_p
    return func


def _b64_from_24bit(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(_B64[w & 0x3F])
        w >>= 6
    return "".join(out)


def _pure(password: bytes, salt: bytes, rounds: int) -> str:
    """The reference algorithm (https://www.akkadia.org/drepper/SHA-crypt.txt)."""
    h = hashlib.sha512
    b = h(password + salt + password).digest()
    a = h(password + salt)
    n = len(password)
    while n > 64:
        a.update(b)
        n -= 64
    a.update(b[:n])
    n = len(password)
    while n:
        a.update(b if n & 1 else password)
        n >>= 1
    a_digest = a.digest()
    dp = h(password * len(password)).digest()
    p = (dp * (len(password) // 64 + 1))[: len(password)]
    ds = h(salt * (16 + a_digest[0])).digest()
    s = (ds * (len(salt) // 64 + 1))[: len(salt)]
    c = a_digest
    for i in range(rounds):
        ctx = h(p if i & 1 else c)
        if i % 3:
            ctx.update(s)
        if i % 7:
            ctx.update(p)
        ctx.update(c if i & 1 else p)
        c = ctx.digest()
    order = [
        (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26),
        (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32),
        (12, 33, 54), (34, 55, 13), (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38),
        (18, 39, 60), (40, 61, 19), (62, 20, 41),
    ]  # fmt: skip
    out = "".join(_b64_from_24bit(c[x], c[y], c[z], 4) for x, y, z in order)
    out += _b64_from_24bit(0, 0, c[63], 2)
    prefix = "$6$" if rounds == ROUNDS_DEFAULT else f"$6$rounds={rounds}$"
    return f"{prefix}{salt.decode()}${out}"


def crypt(password: str, salt: str, rounds: int = ROUNDS_DEFAULT, *, native: bool = True) -> str:
    """The ``$6$`` hash of ``password`` with ``salt`` (1-16 characters of ``[./0-9A-Za-z]``)."""
    if not salt or len(salt) > 16 or any(ch not in _B64 for ch in salt):
        raise ValueError("salt must be 1-16 characters of [./0-9A-Za-z]")
    func = _libcrypt() if native else None
    if func is not None:
        setting = f"$6${salt}" if rounds == ROUNDS_DEFAULT else f"$6$rounds={rounds}${salt}"
        result = func(password.encode(), setting.encode())
        if result and result.startswith(b"$6$"):
            return str(result.decode())
    return _pure(password.encode(), salt.encode(), rounds)


def hash_password(password: str) -> str:
    """A new hash with a random 16-character salt."""
    salt = "".join(secrets.choice(_B64) for _ in range(16))
    return crypt(password, salt)


def verify(password: str, hashed: str) -> bool:
    """Whether ``hashed`` (a ``$6$`` string) is the hash of ``password``."""
    parts = hashed.split("$")
    if len(parts) not in (4, 5) or parts[1] != "6":
        return False
    rounds = ROUNDS_DEFAULT
    if len(parts) == 5:
        if not parts[2].startswith("rounds="):
            return False
        try:
            rounds = int(parts[2].removeprefix("rounds="))
        except ValueError:
            return False
    try:
        again = crypt(password, parts[-2], rounds)
    except ValueError:
        return False
    return hmac.compare_digest(again, hashed)
