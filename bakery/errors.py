"""The one error hierarchy: raised deep, caught once at the CLI edge."""

from __future__ import annotations


class BakeryError(Exception):
    """Anything bakery can explain to the user; the CLI prints it and exits non-zero."""

    exit_code = 1


class ConfigError(BakeryError):
    """The workshop file (or a file it names) is missing, malformed or invalid."""

    exit_code = 2


class CredentialsError(BakeryError):
    """The credentials sheet next to the config cannot be read or does not match the config."""

    exit_code = 2


class RenderError(BakeryError):
    """A rendered document failed its own checks (size limit, validator)."""

    exit_code = 1
