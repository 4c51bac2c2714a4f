"""``auth:`` in workshop.yaml: who logs in to the hub, and how.

``accounts`` (the default) is bakery's own: Linux accounts made before the class, with generated
passwords on the slips. ``oidc`` (any OpenID Connect provider: Keycloak, a university's single
sign-on) and ``github`` hand the login to the provider through OAuthenticator: nobody has an
account before they log in, the hub makes each allowed person's Linux account at their first
login (named from the provider's username or e-mail, made safe on the VM), and the provider owns
passwords. The client secret is never in this file: it lives in a file beside it (mode 600) and
travels to the VM in the server's metadata, read as root there, never in user-data or the image.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from bakery.config.fields import (
    ArchivePath,
    ClaimName,
    ClientId,
    GroupName,
    HttpsUrl,
    Identity,
    ServiceLabel,
    StrictModel,
)
from bakery.errors import FieldError

AuthKind = Literal["accounts", "oidc", "github"]


def _issuer(value: str) -> str:
    if value.endswith("/.well-known/openid-configuration"):
        raise ValueError(
            f"{value!r}: write the issuer itself, without /.well-known/openid-configuration"
        )
    return value.rstrip("/")


Issuer = Annotated[HttpsUrl, AfterValidator(_issuer)]

# What each kind's "Sign in with ..." button says unless login_service is set.
DEFAULT_SERVICE = {"oidc": "your institution's account", "github": "GitHub"}
# The claim a person's Linux name is made from unless username_claim is set.
DEFAULT_USERNAME_CLAIM = {"oidc": "preferred_username", "github": "login"}
# OpenStack server metadata: the key carrying the client secret (a value of at most 255 bytes).
SECRET_LIMIT = 255


class Auth(StrictModel):
    """Who logs in: bakery's own accounts, an OpenID Connect provider, or GitHub."""

    kind: AuthKind = Field(
        "accounts",
        description="accounts: Linux accounts with generated passwords (the slips); oidc: an "
        "OpenID Connect provider (Keycloak, a university's single sign-on); github: GitHub.",
    )
    issuer: Issuer | None = Field(
        None,
        description="oidc: the provider's issuer URL (https); its "
        "/.well-known/openid-configuration names the endpoints.",
    )
    client_id: ClientId | None = Field(
        None, description="oidc, github: the client ID the provider registered for this hub."
    )
    client_secret_file: ArchivePath | None = Field(
        None,
        description="oidc, github: a file holding the client secret (one line, mode 600), "
        "relative to workshop.yaml's folder. The secret itself is never written here.",
    )
    allowed_users: list[Identity] = Field(
        [],
        description="Who may log in: the provider's usernames (GitHub logins) or e-mail "
        "addresses. Everyone else gets the hub's refusal page.",
    )
    allowed_groups: list[GroupName] = Field(
        [],
        description="Who may log in, by group: oidc, the values of groups_claim; github, "
        "organizations or org:team.",
    )
    admin_users: list[Identity] = Field(
        [], description="Hub admins by username or e-mail (they may always log in)."
    )
    admin_groups: list[GroupName] = Field(
        [], description="oidc: hub admins by group (groups_claim)."
    )
    groups_claim: ClaimName = Field(
        "groups", description="oidc: the claim listing a person's groups."
    )
    username_claim: ClaimName | None = Field(
        None,
        description="The claim a person's Linux name is made from (default: preferred_username "
        "for oidc, login for github); made safe on the VM.",
    )
    login_service: ServiceLabel | None = Field(
        None,
        description="The login button's 'Sign in with ...' text (default: your institution's "
        "account, or GitHub).",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, dict) and "client_secret" in data:
            raise FieldError(
                ("client_secret",),
                "a secret written into workshop.yaml ends up in version control, backups and "
                "logs: put it alone in a file beside the workshop (chmod 600 FILE) and name it "
                "in client_secret_file",
            )
        return data

    @model_validator(mode="after")
    def _check(self) -> Auth:
        if self.kind == "accounts":
            # (`bakery config show` writes every field, the defaults too.)
            set_fields = sorted(
                f
                for f in self.model_fields_set - {"kind"}
                if getattr(self, f) != type(self).model_fields[f].default
            )
            if set_fields:
                raise FieldError(
                    (set_fields[0],),
                    f"{set_fields[0]} is for auth.kind oidc or github; bakery's own accounts "
                    "are configured under users:",
                )
            return self
        self._check_provider()
        if not (self.allowed_users or self.allowed_groups):
            raise FieldError(
                ("allowed_users",),
                "no trainee could log in: list allowed_users (usernames or e-mails) or "
                "allowed_groups",
            )
        if not (self.admin_users or self.admin_groups):
            raise FieldError(
                ("admin_users",),
                "the class needs at least one hub admin: list admin_users (your own username "
                "or e-mail at the provider)" + (" or admin_groups" if self.kind == "oidc" else ""),
            )
        return self

    def _check_provider(self) -> None:
        for field in ("client_id", "client_secret_file"):
            if getattr(self, field) is None:
                raise FieldError(
                    (field,),
                    f"auth.kind {self.kind} needs {field} (from the provider's registration of "
                    "this hub; see docs/auth.md)",
                )
        if self.kind == "oidc" and self.issuer is None:
            raise FieldError(
                ("issuer",),
                "auth.kind oidc needs the provider's issuer, e.g. "
                "https://login.example.edu/realms/main",
            )
        if self.kind == "github":
            for field in ("issuer", "admin_groups"):
                if getattr(self, field):
                    raise FieldError(
                        (field,),
                        f"{field} is for auth.kind oidc; GitHub's logins need only client_id and "
                        "client_secret_file (admins by admin_users)",
                    )
            for field in ("allowed_users", "admin_users"):
                emails = [u for u in getattr(self, field) if "@" in u]
                if emails:
                    raise FieldError(
                        (field,),
                        f"{emails[0]}: with auth.kind github list GitHub logins (GitHub does not "
                        "vouch for e-mail addresses here)",
                    )
            if "groups_claim" in self.model_fields_set:
                raise FieldError(
                    ("groups_claim",),
                    "groups_claim is for auth.kind oidc; with github, allowed_groups names "
                    "organizations or org:team",
                )

    @property
    def oauth(self) -> bool:
        """Whether a provider logs people in (no accounts are made before the class)."""
        return self.kind != "accounts"

    @property
    def service(self) -> str:
        """The login button's "Sign in with ..." text."""
        return self.login_service or DEFAULT_SERVICE.get(self.kind, "")

    @property
    def claim(self) -> str:
        """The claim a person's Linux name is made from."""
        return self.username_claim or DEFAULT_USERNAME_CLAIM.get(self.kind, "")
