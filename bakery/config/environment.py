"""`environment:`, the course's software, and the Binder-style folder it can be read from.

One concept for both spawners: Python packages from PyPI (locked, see bakery.config.lockfile),
Debian/Ubuntu packages, R packages (Debian's ``r-cran-*``: CRAN itself is not reachable from where
bakery is tested) and, for docker images, conda-forge packages. ``from: DIR`` reads the files an
instructor already keeps for Binder/repo2docker: ``requirements.txt``, ``apt.txt``, ``install.R``
(its ``install.packages(...)`` calls) and ``environment.yml`` (its dependencies and their pip
list). A file of a kind bakery does not run (``postBuild``, a ``Dockerfile``, ...) is refused, not
skipped: the class would miss what it does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from pydantic import AfterValidator, Field, WithJsonSchema

from bakery.config.fields import (
    AptPackage,
    FolderPath,
    IndexUrl,
    PackageSpec,
    RPackage,
    StrictModel,
)
from bakery.errors import ConfigError

# Files of a Binder repository that bakery reads; the ones it refuses (code it would not run).
READ = ("requirements.txt", "apt.txt", "install.R", "environment.yml")
NOT_RUN = {
    "postBuild": "bakery does not run a postBuild script: put its packages in requirements.txt "
    "or apt.txt and its files in course: or files:",
    "start": "bakery does not run a start script: the hub starts each server itself",
    "Dockerfile": "bakery does not build a Binder Dockerfile: use spawner.image (docker) and "
    "list packages here",
    "runtime.txt": "the Python is the VM's (or the image's, environment.python): remove it",
    "Project.toml": "Julia packages are not installable from where bakery is tested",
    "setup.py": "bakery does not install the repository itself: list its requirements",
    "pyproject.toml": "bakery does not install the repository itself: list its requirements",
}


def _pip(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{value!r}: a requirement has no control characters or line breaks")
    try:
        req = Requirement(value)
    except InvalidRequirement as exc:
        raise ValueError(f"{value!r} is not a requirement ({exc})") from None
    if req.url:
        raise ValueError(
            f"{value!r}: a URL or a path cannot be locked from the package index; publish it on "
            "an index (environment.index_url) or ship it with files:"
        )
    return str(req)


PipRequirement = Annotated[
    str,
    AfterValidator(_pip),
    WithJsonSchema({"type": "string", "examples": ["pandas==2.2.3", "scikit-learn>=1.5,<2"]}),
]


class Environment(StrictModel):
    """The trainees' software, the same words for both spawners.

    systemd: a Python environment of the trainees' own (not the hub's), its kernel the default
    one; apt and R packages on the VM. docker: layered onto spawner.image at bake. Every PyPI
    package is locked (`bakery lock`: versions and sha256 of every file) and installed with
    hash checking.
    """

    from_: FolderPath | None = Field(
        None,
        alias="from",
        description="A Binder-style folder (absolute, ~/..., or relative to workshop.yaml's "
        "folder): requirements.txt, apt.txt, install.R (install.packages calls) and "
        "environment.yml (dependencies and their pip list) are read; postBuild, start, "
        "Dockerfile and runtime.txt are refused.",
    )
    pip: list[PipRequirement] = Field([], description="PyPI packages, e.g. pandas==2.2.3.")
    conda: list[PackageSpec] = Field(
        [], description="conda-forge packages, spawner.kind docker only (the image's mamba)."
    )
    apt: list[AptPackage] = Field([], description="Debian/Ubuntu packages.")
    r: list[RPackage] = Field(
        [],
        description="R packages by their CRAN name (ggplot2), installed as Debian's r-cran-NAME "
        "(systemd: with kernels: [r]; docker: into an image whose R is the distro's).",
    )
    python: Literal["3.10", "3.11", "3.12", "3.13"] | None = Field(
        None,
        description="spawner.kind docker: the image's Python, which the lock is made for "
        "(default 3.12, the default image's). systemd: the VM's, not set here.",
    )
    index_url: IndexUrl | None = Field(
        None,
        description="A PyPI mirror (a simple index) for `bakery lock` and the VM; default "
        "https://pypi.org/simple. Plain http is fine: the lock's hashes check every file.",
    )

    def source(self, config_dir: Path) -> Path | None:
        """The local folder of ``from`` (``~`` expanded, relative to ``config_dir``), if set."""
        return config_dir / Path(self.from_).expanduser() if self.from_ else None


@dataclass(frozen=True)
class Packages:
    """What an environment installs, in order, each once."""

    pip: tuple[str, ...] = ()
    conda: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()
    r: tuple[str, ...] = ()
    files: tuple[str, ...] = field(default=(), compare=False)  # the folder's files read

    def __bool__(self) -> bool:
        return bool(self.pip or self.conda or self.apt or self.r)

    def r_debs(self) -> tuple[str, ...]:
        """Debian's packages of the R packages: r-cran-NAME, lower case."""
        return tuple(f"r-cran-{name.lower()}" for name in self.r)


def _fail(path: Path, line: int | None, problem: str) -> ConfigError:
    return ConfigError(f"{path}{f':{line}' if line else ''}: {problem}")


def _lines(path: Path) -> list[tuple[int, str]]:
    """The file's lines without comments and blanks, numbered from 1."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(path, None, f"cannot read it: {exc}") from None
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*", "", raw).strip()
        if line:
            out.append((number, line))
    return out


def _checked(path: Path, number: int | None, value: str, check: Any, what: str) -> str:
    try:
        return str(check(value))
    except ValueError as exc:
        raise _fail(path, number, f"{what}: {exc}") from None


def _pattern(kind: Any) -> Any:
    # The AfterValidator of a pattern_str type, as a plain function.
    return kind.__metadata__[0].func


def read_requirements(path: Path) -> list[str]:
    reqs = []
    for number, line in _lines(path):
        if line.startswith("-") or line.endswith("\\"):
            raise _fail(
                path,
                number,
                f"{line.split()[0]!r}: bakery reads requirements only, one per line (no options "
                "or -r/-e lines; environment.index_url sets a mirror)",
            )
        reqs.append(_checked(path, number, line, _pip, "a requirement"))
    return reqs


def read_apt(path: Path) -> list[str]:
    return [_checked(path, n, line, _pattern(AptPackage), "a package") for n, line in _lines(path)]


_INSTALL_RE = re.compile(r"install\.packages\s*\((.*)\)\s*;?")
_QUOTED_RE = re.compile(r"""["']([^"']*)["']""")


def read_install_r(path: Path) -> list[str]:
    """The names in ``install.packages("a")`` / ``install.packages(c("a", "b"), ...)`` lines."""
    names = []
    for number, line in _lines(path):
        if line.startswith(("library(", "require(", "options(")):
            continue
        match = _INSTALL_RE.fullmatch(line)
        if not match:
            raise _fail(
                path,
                number,
                "bakery reads install.packages(...) lines only (the packages are installed from "
                "Debian's r-cran-*); run other R code in the notebooks",
            )
        first = re.split(r",\s*(?:repos|dependencies|lib|type)\s*=", match.group(1))[0]
        for name in _QUOTED_RE.findall(first):
            names.append(_checked(path, number, name, _pattern(RPackage), "an R package"))
    return names


def _conda_entry(path: Path, dep: Any, out: dict[str, list[str]]) -> None:
    if isinstance(dep, dict) and set(dep) == {"pip"} and isinstance(dep["pip"], list):
        for req in dep["pip"]:
            if not isinstance(req, str) or req.startswith("-"):
                raise _fail(path, None, f"pip: {str(req)[:60]!r}: write requirements only")
            out["pip"].append(_checked(path, None, req, _pip, "pip"))
        return
    if not isinstance(dep, str):
        raise _fail(path, None, f"dependencies: {str(dep)[:60]!r} is neither a package nor pip:")
    name = re.split(r"[=<>!~ ]", dep, maxsplit=1)[0]
    if name in ("python", "pip"):
        return  # the Python is the VM's or the image's
    spec = dep.replace(" ", "")
    out["conda"].append(_checked(path, None, spec, _pattern(PackageSpec), "a conda package"))


def read_environment_yml(path: Path) -> dict[str, list[str]]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _fail(path, None, f"cannot read it: {exc}") from None
    if not isinstance(doc, dict):
        raise _fail(path, None, "not a conda environment file (a mapping with dependencies:)")
    channels = doc.get("channels") or []
    if not isinstance(channels, list) or any(
        c not in ("conda-forge", "defaults") for c in channels
    ):
        raise _fail(path, None, f"channels {channels!r}: bakery installs from conda-forge only")
    out: dict[str, list[str]] = {"pip": [], "conda": []}
    deps = doc.get("dependencies") or []
    if not isinstance(deps, list):
        raise _fail(path, None, "dependencies: not a list")
    for dep in deps:
        _conda_entry(path, dep, out)
    return out


def read_folder(folder: Path) -> Packages:
    """The packages a Binder-style folder asks for.

    Raises:
        ConfigError: a missing folder, a line bakery cannot read (file and line), or a file of a
            kind bakery does not run.
    """
    if not folder.is_dir():
        raise ConfigError(f"environment.from: {folder} is not a folder")
    for name, why in NOT_RUN.items():
        if (folder / name).exists():
            raise _fail(folder / name, None, why)
    found = {name: folder / name for name in READ if (folder / name).is_file()}
    if not found:
        raise ConfigError(
            f"environment.from: {folder} holds none of {', '.join(READ)}: nothing to install"
        )
    pip: list[str] = []
    conda: list[str] = []
    if "environment.yml" in found:
        read = read_environment_yml(found["environment.yml"])
        pip += read["pip"]
        conda += read["conda"]
    if "requirements.txt" in found:
        pip += read_requirements(found["requirements.txt"])
    apt = read_apt(found["apt.txt"]) if "apt.txt" in found else []
    r = read_install_r(found["install.R"]) if "install.R" in found else []
    return Packages(tuple(pip), tuple(conda), tuple(apt), tuple(r), tuple(sorted(found)))


def _once(*groups: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for group in groups for item in group))


def packages(env: Environment | None, config_dir: Path) -> Packages:
    """Everything ``env`` installs: its folder's files, then its lists (each package once)."""
    if env is None:
        return Packages()
    source = env.source(config_dir)
    folder = read_folder(source) if source is not None else Packages()
    return Packages(
        pip=_once(folder.pip, env.pip),
        conda=_once(folder.conda, env.conda),
        apt=_once(folder.apt, env.apt),
        r=_once(folder.r, env.r),
        files=folder.files,
    )
