"""The one error hierarchy: every exception bakery raises, raised deep, caught once at the CLI edge.

Exit codes (documented in docs/reference.md): 0 ok, 1 an operation failed, 2 bad input, a bad
config or a missing tool (the user must change something first), 70 an internal error (a bug),
130 interrupted.
"""

from __future__ import annotations


class BakeryError(Exception):
    """Anything bakery can explain to the user; the CLI prints it and exits non-zero."""

    exit_code = 1


# --- the user must change something first (exit 2) -----------------------------------------------


class UsageError(BakeryError):
    """Options or arguments that do not fit together, or a value the command cannot take."""

    exit_code = 2


class ConfigError(UsageError):
    """The workshop file (or a file it names) is missing, malformed or invalid."""


class CredentialsError(UsageError):
    """The credentials sheet next to the config cannot be read or does not match the config."""


class ToolMissing(UsageError):
    """A program bakery needs here (qemu, packer, an ISO writer, ...) is not installed."""


class PreflightFailed(UsageError):
    """`bakery launch` refused: a pre-flight check failed (nothing was created)."""


class OutputError(UsageError):
    """A file bakery was asked to write cannot be written safely (a device, a link, no access)."""


# --- an operation failed (exit 1) ----------------------------------------------------------------


class RenderError(BakeryError):
    """A rendered document failed its own checks (size limit, validator, an unquoted value)."""


class TemplateMissing(BakeryError):
    """A template bakery ships is not where it should be: a broken install, a bug."""

    exit_code = 70


class BuildError(BakeryError):
    """A golden-image bake failed (Packer, the openstacksdk builder, the chroot builder)."""


class SidecarError(UsageError, BuildError):
    """An image file's bake sidecar (``FILE.bakery.json``) is missing or not bakery's: bad
    input (exit 2), about a bake."""


class ChrootError(BuildError):
    """The chroot builder could not apply the bake stage to the image's filesystem."""


class LocalVmError(BakeryError):
    """A local VM (`bakery try`) could not be started, did not come up, or could not be stopped."""


class CloudError(BakeryError):
    """The cloud refused or failed an operation; the message says which and why."""


class CloudNotConfigured(CloudError):
    """No cloud to talk to: no clouds.yaml entry, no OS_CLOUD, no OS_* variables."""

    exit_code = 2


class AuthError(CloudError):
    """Credentials were missing or refused."""

    exit_code = 2


class QuotaError(CloudError):
    """A project quota stops the operation."""


class NotFoundError(CloudError):
    """A named cloud resource (image, flavor, network, key pair, ...) does not exist."""

    exit_code = 2


class LeftBehind(CloudError):
    """Something bakery created could not be deleted and keeps costing money; its ID is named."""


# --- not a BakeryError ---------------------------------------------------------------------------


class FieldError(ValueError):
    """A cross-field error of the config model that belongs to one field (``loc``, its path).

    Raised inside pydantic validators, which turn a ValueError into a validation error; the
    message formatter (bakery.config.messages) puts ``loc`` after where pydantic reports the
    model, so the error points at the line of the field at fault instead of the section.
    """

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
