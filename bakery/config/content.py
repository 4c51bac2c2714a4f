"""Shared data and course material: the folders and repositories every trainee's server sees."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from bakery import layout
from bakery.config.fields import (
    DataUrl,
    FolderPath,
    GitBranch,
    GitUrl,
    Sha256,
    SharedPath,
    StrictModel,
)
from bakery.errors import FieldError


class SharedData(StrictModel):
    """A shared data folder on the VM: read-only for trainees, read-write for admins.

    Its presence turns it on. With ``from``, a local folder is copied into the golden image at
    bake. Trainees' servers see it read-only at the same path (a read-only bind mount with the
    docker spawner); admins may add, change and delete files (an ACL per admin).
    """

    path: SharedPath = Field(
        layout.SHARED_DATA_DIR,
        description="The folder on the VM (and in every trainee's server): absolute, not in "
        "/home or a system folder.",
    )
    from_: FolderPath | None = Field(
        None,
        alias="from",
        description="A local folder (absolute, ~/..., or relative to workshop.yaml's folder) "
        "copied into the golden image at bake; needs `bakery bake`.",
    )
    url: DataUrl | None = Field(
        None,
        description="A tar archive (.tar, .tar.gz, .tar.xz) the VM downloads at first boot and "
        "unpacks into path, for data too large for the image or user-data; with sha256.",
    )
    sha256: Sha256 | None = Field(
        None, description="The archive's sha256: the VM refuses any other bytes (boots failed)."
    )

    @model_validator(mode="after")
    def _check(self) -> SharedData:
        if self.url is not None and self.from_ is not None:
            raise FieldError(("url",), "give from (a local folder) or url (an archive), not both")
        if (self.url is None) != (self.sha256 is None):
            raise FieldError(
                ("sha256",) if self.url else ("url",),
                "url and sha256 go together: the VM checks what it downloads against the sha256",
            )
        for owned in sorted({*layout.MANAGED_DIRS, layout.COURSE_DIR}):
            if (
                self.path == owned
                or self.path.startswith(owned + "/")
                or owned.startswith(self.path + "/")
            ):
                raise FieldError(
                    ("path",), f"{self.path} overlaps {owned}, which bakery manages; use another"
                )
        return self

    def source(self, config_dir: Path) -> Path | None:
        """The local folder of ``from`` (``~`` expanded, relative to ``config_dir``), if set."""
        return config_dir / Path(self.from_).expanduser() if self.from_ else None


class Course(StrictModel):
    """Course material every trainee finds in ~/course: a folder copied at bake, or a git repo.

    ``from``: copied into the golden image; each server start copies what a trainee lacks into
    ~/course (never overwriting a trainee's file). ``git``: nbgitpuller clones the repository
    into ~/course on first visit and merges new commits later (nbgitpuller's rules). Either way
    trainees land on the course folder.
    """

    from_: FolderPath | None = Field(
        None,
        alias="from",
        description="A local folder (absolute, ~/..., or relative to workshop.yaml's folder) "
        "copied into the golden image; needs `bakery bake`.",
    )
    git: GitUrl | None = Field(
        None,
        description="A git repository pulled by nbgitpuller into ~/course (a custom docker image "
        "needs nbgitpuller and git).",
    )
    branch: GitBranch = Field("main", description="The branch of git to pull.")

    @model_validator(mode="after")
    def _check(self) -> Course:
        if (self.from_ is None) == (self.git is None):
            raise FieldError(
                ("from",) if self.from_ else ("git",),
                "give exactly one of from (a local folder) and git (a repository address)",
            )
        # (The default is let through: `bakery config show` prints it.)
        if self.from_ is not None and self.branch != "main":
            raise FieldError(("branch",), "branch: only with git")
        return self

    def source(self, config_dir: Path) -> Path | None:
        """The local folder of ``from`` (``~`` expanded, relative to ``config_dir``), if set."""
        return config_dir / Path(self.from_).expanduser() if self.from_ else None
