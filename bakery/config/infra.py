"""The `bake:` and `openstack:` sections: where the golden image is built and the VMs run."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    model_validator,
)

from bakery.config.fields import (
    USERNAME_RE,
    AbsPath,
    CloudName,
    ImageName,
    MetadataKey,
    NetworkId,
    PropertyKey,
    StrictModel,
    _no_controls,
)
from bakery.config.units import Duration
from bakery.errors import FieldError

# Nova rejects a server's user_data above this many characters of base64 (its API schema's
# maxLength): render gzips to fit, the config refuses a file that cannot, the plan shows each
# server's share.
NOVA_USER_DATA_LIMIT = 65535


# --- the values these sections take ---------------------------------------------------------


def _build_user(value: str) -> str:
    if not USERNAME_RE.fullmatch(value) or value == "root":
        raise ValueError(
            f"{value!r} is not the image's default login user (a Linux user name, not root); "
            "bakery deletes this user from the image after the bake"
        )
    return value


BuildUser = Annotated[str, AfterValidator(_build_user)]


def _packer_text(value: str) -> str:
    # Packer escapes nothing for us: bakery writes these as escaped HCL strings, but Packer then
    # reads "{{" in builder settings as a Go template, so such values are refused outright.
    if not value or len(value) > 255:
        raise ValueError("use 1-255 characters")
    _no_controls(value)
    if "{{" in value or "}}" in value:
        raise ValueError(f"{value!r}: '{{{{' and '}}}}' are not allowed (Packer templates)")
    return value


# An OpenStack name or ID (image, flavor, network, security group) or a property value.
PackerText = Annotated[str, AfterValidator(_packer_text)]


MetadataValue = Annotated[str, Field(max_length=255), AfterValidator(_no_controls)]


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not a network such as 203.0.113.0/24") from None


Cidr = Annotated[str, AfterValidator(_cidr)]


# --- the sections ---------------------------------------------------------------------------------


class OpenStack(StrictModel):
    """Where `bakery launch` puts the workshop: an OpenStack cloud from clouds.yaml."""

    cloud: CloudName | None = Field(None, description="A clouds.yaml entry; default: $OS_CLOUD.")
    flavor: CloudName = Field(
        "auto", description="A flavor name or ID; auto: the smallest that fits `bakery size`."
    )
    image: CloudName | None = Field(
        None, description="Image name or ID to launch (`launch --image` overrides)."
    )
    networks: list[CloudName] = Field(
        [],
        description=(
            "Network names or IDs; empty: the project's own network (of those not external, the "
            "one it owns, else the only one it sees; several: refused, named)."
        ),
    )
    floating_ip_network: CloudName | None = Field(
        None,
        description="External network for a floating IP; unset or `none`: no floating IP (the "
        "URL is the server's own address, as on a provider network).",
    )
    key_name: CloudName | None = Field(
        None, description="Key pair; default bakery-NAME, made from public_key if missing."
    )
    public_key: str | None = Field(
        None, description="Path to an ssh public key for the key pair (~ allowed)."
    )
    security_group: CloudName | None = Field(
        None, description="Security group; default bakery-NAME (22, 80, 443 open)."
    )
    admin_cidr: Cidr = Field("0.0.0.0/0", description="Who may reach ssh (port 22).")
    count: Annotated[int, Field(ge=1, le=50)] = Field(
        1, description="Servers (1-50); trainees are split among them, admins are on each."
    )
    boot_volume: bool = Field(
        False,
        description="Boot from a new Cinder volume (deleted with the server); a flavor with no "
        "root disk (disk 0) always does.",
    )
    volume_size: Annotated[int, Field(ge=10, le=16384)] | None = Field(
        None, description="GB of a boot volume; default: `bakery size`'s disk estimate."
    )
    metadata: dict[MetadataKey, MetadataValue] = Field(
        {}, description="Extra server metadata (bakery* keys are bakery's own)."
    )
    config_drive: bool | None = Field(
        None,
        description="Give the servers a config drive (true) or not (false); default: what the "
        "cloud does. Either way cloud-init reads the user-data (metadata service otherwise).",
    )
    active_timeout: Duration = Field(
        "15m",
        validate_default=True,
        description="How long `launch` waits for a server to be ACTIVE: seconds or 90s, 15m, 1h.",
    )
    hub_timeout: Duration = Field(
        "45m",
        validate_default=True,
        description="How long `launch` waits for https://IP/hub/health to answer, and then for a "
        "cluster's workers to be Ready (a cloud under software emulation needs longer): seconds "
        "or 90s, 15m, 1h.",
    )
    data_gb_per_user: Annotated[float, Field(ge=0, le=1000)] = Field(
        0.05, description="Sizing: GB of data each trainee loads (see `bakery size`)."
    )
    concurrency: Annotated[float, Field(gt=0, le=1)] = Field(
        1.0, description="Sizing: share of trainees active at once (0-1]."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_floating_ip(cls, data: object) -> object:
        # `floating_ip_network: none` reads as no floating IP (YAML's null is `null` or `~`;
        # a network called "none" is not a thing to expect).
        if isinstance(data, dict) and str(data.get("floating_ip_network", "")).lower() == "none":
            return {**data, "floating_ip_network": None}
        return data

    @model_validator(mode="after")
    def _check(self) -> OpenStack:
        reserved = sorted(k for k in self.metadata if k.startswith("bakery"))
        if reserved:
            raise FieldError(
                ("metadata", reserved[0]),
                f"metadata: {', '.join(reserved)}: bakery* keys are bakery's own",
            )
        return self


class Bake(StrictModel):
    """The golden image `bakery bake` builds with Packer: on OpenStack, or locally with qemu."""

    image_name: ImageName | None = Field(
        None, description="The image's name (before the suffix); default: bakery-NAME."
    )
    image_suffix: Literal["date", "version", "none"] = Field(
        "date",
        description="date: NAME-YYYYMMDD-hhmm (UTC); version: NAME-VERSION-CONFIGHASH; none.",
    )
    image_visibility: Literal["private", "shared", "community", "public"] = Field(
        "private", description="Glance visibility of the image."
    )
    image_properties: dict[PropertyKey, PackerText] = Field(
        {}, description="Extra Glance properties (e.g. os_distro: ubuntu); not bakery_*."
    )
    source_image: PackerText | None = Field(
        None, description="OpenStack: the stock image to start from; default: a guess from os."
    )
    flavor: PackerText = Field("m1.medium", description="OpenStack: the builder's flavor.")
    networks: list[NetworkId] = Field(
        [],
        description=(
            "OpenStack: network UUIDs; empty: the project's own network (the openstacksdk "
            "builder finds it as launch does; Packer leaves it to Nova, which needs exactly one)."
        ),
    )
    floating_ip_network: PackerText | None = Field(
        None, description="OpenStack: external network for the builder's floating IP."
    )
    security_groups: list[PackerText] = Field(
        [], description="OpenStack: groups that allow ssh (22) from where Packer runs."
    )
    ssh_user: BuildUser | None = Field(
        None, description="The source image's default user; default: from os."
    )
    volume_backed: bool = Field(False, description="OpenStack: boot the builder from a volume.")
    volume_size: Annotated[int, Field(ge=1, le=16384)] | None = Field(
        None, description="OpenStack: GB of that volume (needs volume_backed)."
    )
    qemu_base_image: AbsPath | None = Field(
        None, description="qemu: the stock qcow2 cloud image to start from."
    )
    qemu_disk_size: Annotated[int, Field(ge=2, le=2048)] = Field(
        20, description="qemu: disk size of the golden image, GB."
    )
    qemu_memory: Annotated[int, Field(ge=512, le=262144)] = Field(
        2048, description="qemu: builder memory, MiB."
    )
    qemu_cpus: Annotated[int, Field(ge=1, le=64)] = Field(2, description="qemu: builder CPUs.")
    qemu_accelerator: Literal["kvm", "tcg", "hvf", "whpx"] = Field(
        "kvm", description="qemu: accelerator (tcg: software, slow but works anywhere)."
    )

    @model_validator(mode="after")
    def _check(self) -> Bake:
        if self.volume_size is not None and not self.volume_backed:
            raise FieldError(("volume_size",), "volume_size needs volume_backed: true")
        reserved = sorted(k for k in self.image_properties if k.startswith("bakery_"))
        if reserved:
            raise FieldError(
                ("image_properties", reserved[0]),
                f"image_properties: {', '.join(reserved)}: bakery_* keys are bakery's",
            )
        return self
