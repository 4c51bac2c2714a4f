"""The workshop model's constrained values: names, paths, sizes, each checked as a whole string."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
)

# Every string that ends up in a shell script, a Python file, an nginx config or a unit file is
# either constrained here to a safe alphabet or quoted by the template filter for its language.
# Patterns are matched against the whole string with re.fullmatch: Python's `$` also matches
# before a final newline, so "root\n" would pass a `^...$` check.


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo must not silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _pattern_check(regex: str, rule: str) -> Callable[[str], str]:
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r}: {rule}")
        return value

    return check


def anchored(regex: str) -> str:
    """``regex`` as a JSON Schema pattern that matches whole strings only (editors check it)."""
    return rf"^(?:{regex})(?![\s\S])"


def pattern_str(regex: str, rule: str) -> Any:
    r"""A string type matching ``regex`` as a whole; errors say ``rule`` (words, not the regex).

    The JSON Schema carries the same pattern for editors, anchored with ``(?![\s\S])`` ("nothing
    follows"), which means the same in ECMA-262 and in Python validators (where ``$`` does not).
    """
    return Annotated[
        str,
        AfterValidator(_pattern_check(regex, rule)),
        WithJsonSchema({"type": "string", "pattern": anchored(regex), "$comment": rule}),
    ]


def _no_controls(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{value!r}: no control characters or line breaks")
    return value


# --- user and group names ------------------------------------------------------------------------

# POSIX portable user names, lower case (useradd's default NAME_REGEX), at most 32 characters.
USERNAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
USERNAME_RULE = (
    "use 1-32 characters: lower-case letters, digits, '_' or '-', starting with a letter or '_'"
)

# Users and groups of Debian 12, Ubuntu 22.04 and 24.04 (base-passwd's static list, systemd's,
# the packages of a cloud image and those bakery installs) and bakery's own names. A trainee or
# admin with one of these names breaks `useradd` (it makes a group of the same name), and
# cloud-init then silently skips every later account.
_SYSTEM_NAME_GROUPS = (
    # base-passwd (users and groups)
    "root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc gnats "
    "nobody nogroup adm tty disk kmem dialout fax voice cdrom floppy tape sudo audio dip "
    "operator src shadow utmp video sasl plugdev staff users ",
    # systemd, dbus, polkit, udev groups
    "systemd-journal systemd-network systemd-resolve systemd-timesync systemd-coredump "
    "systemd-oom systemd-journal-remote systemd-journal-upload systemd-bus-proxy messagebus "
    "polkitd input kvm render sgx clock netdev ",
    # cloud-image and server packages
    "_apt _ssh ssh sshd _chrony chrony ntp _ntp ntpsec syslog uuidd tcpdump tss landscape "
    "pollinate usbmux lxd dnsmasq fwupd-refresh dhcpcd statd _rpc rpc crontab ssl-cert rdma "
    "admin lpadmin sambashare ubuntu debian cloud-user ec2-user centos fedora wheel "
    "postfix postdrop Debian-exim mlocate plocate avahi colord geoclue pulse rtkit saned "
    "whoopsie kernoops sssd tape-admin libvirt libvirt-qemu libvirt-dnsmasq qemu "
    "postgres cloudsdk _laurel _flatpak bluetooth scanner lp-admin ",
    # what bakery installs or names
    "docker dockremap jupyterhub jovyan nginx certbot bakery",
)
SYSTEM_NAMES = frozenset(n for group in _SYSTEM_NAME_GROUPS for n in group.split())
# Kept for callers of the old name.
RESERVED_USERNAMES = SYSTEM_NAMES


def check_username(value: str) -> str:
    """A trainee or admin name: a valid user name that no system user or group already has."""
    if not USERNAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid Linux user name: {USERNAME_RULE}")
    if value in SYSTEM_NAMES:
        raise ValueError(
            f"{value!r} is reserved: a system user or group on Debian/Ubuntu; pick another name"
        )
    return value


Username = Annotated[
    str,
    AfterValidator(check_username),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": anchored(USERNAME_RE.pattern),
            "not": {"enum": sorted(SYSTEM_NAMES)},
        }
    ),
]

# The image's default admin users: a login user may be one of these (it exists on the image).
IMAGE_USERS = frozenset({"ubuntu", "debian", "cloud-user", "admin"})


def _login_name(value: str) -> str:
    if not USERNAME_RE.fullmatch(value) or value == "root":
        raise ValueError(f"{value!r} is not a valid login user (a non-root POSIX user name)")
    if value in SYSTEM_NAMES and value not in IMAGE_USERS:
        raise ValueError(f"{value!r} is reserved: a system user or group; pick another login user")
    return value


# The admin's ssh user: the image's own (ubuntu, debian) or a new one bakery creates.
LoginName = Annotated[str, AfterValidator(_login_name)]


UserPrefix = pattern_str(
    r"[a-z_][a-z0-9_-]{0,27}",
    "use 1-28 characters: lower-case letters, digits, '_' or '-', starting with a letter or '_'",
)
FileOwner = pattern_str(
    r"[a-z_][a-z0-9_-]{0,31}:[a-z_][a-z0-9_-]{0,31}",
    "write USER:GROUP, each a lower-case Linux name (e.g. root:root)",
)

# --- names on the network ------------------------------------------------------------------------

WORKSHOP_NAME_RE = r"[a-z][a-z0-9-]{0,38}[a-z0-9]"
# A workshop name becomes a hostname, a resource tag and part of file names: a DNS label.
WorkshopName = pattern_str(
    WORKSHOP_NAME_RE,
    "use 2-40 characters: lower-case letters, digits and '-', starting with a letter and not "
    "ending with '-'",
)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*", re.DOTALL)


def _hostname(value: str) -> str:
    value = value.lower()
    if not _HOSTNAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid DNS name (letters, digits, '-' and '.')")
    return value


Hostname = Annotated[str, AfterValidator(_hostname)]
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def _email(value: str) -> str:
    if not _EMAIL_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


Email = Annotated[str, AfterValidator(_email)]
# An https URL without user, query or fragment (an ACME directory): it lands in a shell script.
_HTTPS_URL = (
    r"https://[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::[0-9]{1,5})?"
    r"(?:/[A-Za-z0-9._~%/:@+=-]{0,500})?",
    "write an https:// URL (a host name or address, an optional :port and path; no user, "
    "query or spaces), e.g. https://acme-v02.api.letsencrypt.org/directory",
)


def _port_in_range(value: str) -> str:
    try:
        port = urlsplit(value).port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"{value!r}: the port must be 1-65535")
    return value


HttpsUrl = Annotated[
    str,
    AfterValidator(_pattern_check(*_HTTPS_URL)),
    AfterValidator(_port_in_range),
    WithJsonSchema(
        {"type": "string", "pattern": anchored(_HTTPS_URL[0]), "$comment": _HTTPS_URL[1]}
    ),
]

# A container image reference (docker's reference grammar, lower-case repository, optional digest).
_IMAGE_RE = re.compile(
    r"(?:(?:[a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+(?::[0-9]+)?/)?"  # registry host[:port]/
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"  # path
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"  # :tag
    r"(?:@sha256:[a-f0-9]{64})?"  # @digest
)


def _image(value: str) -> str:
    if not _IMAGE_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a container image reference; expected e.g. "
            "'quay.io/jupyter/datascience-notebook:2025-03-14'"
        )
    return value


ImageRef = Annotated[str, AfterValidator(_image)]

# --- packages and versions -----------------------------------------------------------------------

# PEP 440-ish release strings, also safe in a shell word and an npm/pip spec.
Version = pattern_str(
    r"[0-9]+(?:\.[0-9]+){0,3}[a-z0-9.+-]{0,20}",
    "write a release number such as 5.2.1 (digits and dots, then an optional suffix like rc1)",
)
# Debian package names (Policy 5.6.1), optionally pinned with =VERSION.
AptPackage = pattern_str(
    r"[a-z0-9][a-z0-9+.-]+(?:=[A-Za-z0-9.+~:-]+)?",
    "write a Debian package name (lower-case letters, digits, + . -), optionally =VERSION",
)
# pip / conda requirement specs: a name and an optional version constraint, no URLs or options.
PackageSpec = pattern_str(
    r"[A-Za-z0-9][A-Za-z0-9._-]*(?:\[[A-Za-z0-9._,-]+\])?"
    r"(?:(?:==|>=|<=|~=|!=|>|<|=)[A-Za-z0-9.*+!-]+(?:,(?:==|>=|<=|~=|!=|>|<)[A-Za-z0-9.*+!-]+)*)?",
    "write a package name with an optional [extras] and version constraint, e.g. "
    "'plotly==5.24.1' (no spaces, URLs or options)",
)

# CRAN package names (letters, digits, dots; a letter first); Debian ships them as r-cran-NAME.
RPackage = pattern_str(
    r"[A-Za-z][A-Za-z0-9.]*[A-Za-z0-9]",
    "write a CRAN package name such as ggplot2 or data.table (letters, digits and dots)",
)

# A file's sha256, as sha256sum prints it.
Sha256 = pattern_str(r"[0-9a-f]{64}", "write the file's sha256: 64 hex digits (sha256sum FILE)")

# Kernels `kernels:` adds beside Python (spawner.kind systemd), each from the distro's packages.
KERNELS = ("r",)
# Asked for, but not installable from the registries bakery installs from and is tested with.
_UNINSTALLABLE_KERNELS = {
    "julia": "julia is not installable from the registries bakery uses and tests with (Debian's "
    "and Ubuntu's packages, PyPI): no test could prove it. The default docker image "
    "(quay.io/jupyter/datascience-notebook) has Julia: use spawner.kind: docker without kernels",
}


def _kernel(value: str) -> str:
    if value in KERNELS:
        return value
    if value.lower() in _UNINSTALLABLE_KERNELS:
        raise ValueError(_UNINSTALLABLE_KERNELS[value.lower()])
    if value.lower() in KERNELS:
        raise ValueError(f"{value!r}: write it in lower case, {value.lower()!r}")
    if value.lower() in ("python", "python3", "ipykernel"):
        raise ValueError(f"{value!r}: Python is always there; list only other kernels (r)")
    raise ValueError(f"{value!r} is not a kernel bakery installs; use one of: {', '.join(KERNELS)}")


Kernel = Annotated[
    str, AfterValidator(_kernel), WithJsonSchema({"type": "string", "enum": list(KERNELS)})
]

# --- paths ---------------------------------------------------------------------------------------

_PATH_RE = re.compile(r"[A-Za-z0-9_./@+-]+")


def _abs_path(value: str) -> str:
    if not value.startswith("/") or "/../" in value + "/":
        raise ValueError(f"{value!r} must be an absolute path without '..'")
    if not _PATH_RE.fullmatch(value):
        raise ValueError(f"{value!r}: use only letters, digits and _ . / @ + - in paths")
    return value


AbsPath = Annotated[str, AfterValidator(_abs_path)]


def _archive_path(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_./@+~-]+", value):
        raise ValueError(
            f"{value!r}: use only letters, digits and _ . / @ + ~ - in the archive's path"
        )
    return value


# A path on the machine that bakes: absolute, ~/..., or relative to workshop.yaml's folder.
ArchivePath = Annotated[str, AfterValidator(_archive_path)]

# --- shared data and course material --------------------------------------------------------------

# Folders of the VM's system (or everyone's homes): a shared data folder there would change them.
_SYSTEM_DIRS = (
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/opt", "/proc",
    "/root", "/run", "/sbin", "/sys", "/tmp", "/usr", "/var",  # noqa: S108 (refused, not used)
)  # fmt: skip


def _shared_path(value: str) -> str:
    value = _abs_path(value)
    parts = value.split("/")[1:]
    if value == "/" or value.endswith("/") or any(p in ("", ".") for p in parts):
        raise ValueError(f"{value!r}: write a folder like /srv/shared (no '.', '//' or trailing /)")
    for top in _SYSTEM_DIRS:
        if value == top or value.startswith(top + "/"):
            raise ValueError(
                f"{value!r} is under {top}, a system folder (or the homes): use e.g. /srv/shared"
            )
    return value


# The shared data folder on the VM: absolute, not in a system folder or /home.
SharedPath = Annotated[str, AfterValidator(_shared_path)]
# A local folder to copy at bake: like an archive's path (absolute, ~/..., or relative).
FolderPath = Annotated[str, AfterValidator(_archive_path)]
_GIT_URL_RE = re.compile(r"(https?|git)://[A-Za-z0-9._~:@\[\]-]+(/[A-Za-z0-9._~%+-]+)*/?")


def address_str(regex: re.Pattern[str], with_user: str, rule: str) -> Any:
    """A URL type: ``regex`` as a whole, and never a user or token in it (``with_user`` says why;
    the address is not echoed then: it holds a secret). ``rule`` says what to write instead."""

    def check(value: str) -> str:
        if "@" in urlsplit(value).netloc:
            raise ValueError(with_user)
        if not regex.fullmatch(value):
            raise ValueError(f"{value[:100]!r}: {rule}")
        return value

    return Annotated[
        str,
        AfterValidator(check),
        WithJsonSchema({"type": "string", "pattern": anchored(regex.pattern)}),
    ]


GitUrl = address_str(
    _GIT_URL_RE,
    "a repository address with a user or token in it (https://USER:TOKEN@host/...) would reach "
    "every trainee's browser: use a public repository's address, and give private material "
    "through course.from instead",
    "write the repository's https://, http:// or git:// address, e.g. https://github.com/ORG/REPO "
    "(letters, digits and . _ ~ % + - in its path)",
)
_DATA_URL_RE = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%+=&?-]+)*/?")
DataUrl = address_str(
    _DATA_URL_RE,
    "an address with a user or token in it would sit in the VM's user-data: publish the archive "
    "at an address without one (the sha256 checks what arrives)",
    "write the https:// (or http://) address of a tar archive, e.g. "
    "https://data.example.org/course-data.tar.gz",
)
_INDEX_RE = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%+-]+)*/?")
IndexUrl = address_str(
    _INDEX_RE,
    "an index address with a user or token in it would sit in the VM's user-data and in the "
    "lock: use a mirror that needs none (the lock's hashes check every file)",
    "write the address of a PyPI-style simple index, e.g. https://pypi.example.org/simple",
)

_BRANCH_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")
BRANCH_RULE = (
    "write a branch name git takes: letters, digits, '.', '_', '-' and '/', each part starting "
    "with a letter, digit or '_', no '..', not ending in '.' or '.lock'"
)


def _git_branch(value: str) -> str:
    parts = value.split("/")
    if (
        not _BRANCH_RE.fullmatch(value)
        or ".." in value
        or any(part.endswith((".", ".lock")) for part in parts)
    ):
        raise ValueError(f"{value!r}: {BRANCH_RULE}")
    return value


GitBranch = Annotated[
    str,
    AfterValidator(_git_branch),
    WithJsonSchema({"type": "string", "pattern": anchored(_BRANCH_RE.pattern)}),
]

FileMode = pattern_str(
    r"0?[0-7]{3,4}",
    "write an octal mode in quotes, e.g. '0644' (unquoted, YAML reads 0644 as the number 420)",
)

# --- image settings restated for `docker import --change` ----------------------------------------

ImportWord = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_no_controls)]
EnvName = pattern_str(
    r"[A-Za-z_][A-Za-z0-9_]{0,127}",
    "write an environment variable name: letters, digits and '_', not starting with a digit",
)
EnvValue = pattern_str(
    r"[A-Za-z0-9_./:,+=@%-]{0,4000}",
    "use only letters, digits and _ . / : , + = @ % - (no spaces or quotes)",
)

# --- OpenStack and Packer ------------------------------------------------------------------------


# OpenStack resource names and IDs: letters, digits and a few separators, no shell or YAML syntax.
CloudName = pattern_str(
    r"[A-Za-z0-9][A-Za-z0-9 ._:/@+-]{0,254}",
    "use 1-255 letters, digits, spaces or . _ : / @ + -, starting with a letter or digit",
)
_SSH_KEY_RE = re.compile(r"(?:ssh|ecdsa|sk)-[A-Za-z0-9@._+/=: -]+")


def _ssh_key(value: str) -> str:
    if "PRIVATE KEY" in value or "BEGIN " in value:
        # Never echoed: it is a secret that should not be in the file at all.
        raise ValueError(
            "this is a private key: paste the public key instead (the one line of the .pub "
            "file), and take the private key out of the workshop file"
        )
    if not _SSH_KEY_RE.fullmatch(value):
        raise ValueError(
            f"{value!r}: paste one public key line, e.g. 'ssh-ed25519 AAAA... you@laptop' "
            "(no options before it)"
        )
    return value


SshKey = Annotated[
    str,
    AfterValidator(_ssh_key),
    WithJsonSchema({"type": "string", "pattern": anchored(_SSH_KEY_RE.pattern)}),
]


# Glance image names become file names for the qemu source too: a safe alphabet.
ImageName = pattern_str(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}",
    "use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit",
)


# Glance property keys (os_distro, hw_disk_bus, ...); bakery_* is bakery's own record.
PropertyKey = pattern_str(
    r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}",
    "use letters, digits, '_', '.', ':' or '-', starting with a letter or digit",
)


NetworkId = pattern_str(
    r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}",
    "write a network UUID (e.g. 0e8f5a4c-...; `openstack network list` shows them)",
)


MetadataKey = pattern_str(
    r"[A-Za-z0-9_.:-]{1,200}", "use 1-200 letters, digits, '_', '.', ':' or '-'"
)

# --- auth (bakery.config.auth) -------------------------------------------------------------------

# A provider's username or an e-mail address, as the allow and admin lists name people.
Identity = pattern_str(
    r"[A-Za-z0-9._%+@-]{1,254}",
    "write a username or an e-mail address (letters, digits and . _ % + @ -)",
)
# A group as a provider's claim names it (Keycloak's /staff, GitHub's org or org:team).
GroupName = pattern_str(
    r"[A-Za-z0-9._:/@+ -]{1,200}",
    "write a group name (letters, digits, spaces and . _ : / @ + -)",
)
ClaimName = pattern_str(
    r"[A-Za-z_][A-Za-z0-9_.:-]{0,99}", "write a claim's name, e.g. groups or preferred_username"
)
ClientId = pattern_str(
    r"[A-Za-z0-9._~:/@+=-]{1,200}", "write the client ID the provider gave (no spaces)"
)
ServiceLabel = pattern_str(r"[A-Za-z0-9 .,'()&_-]{1,60}", "at most 60 letters, digits, spaces")
