"""A fake OpenStack for tests: the real openstacksdk over registered HTTP answers (requests-mock).

``FakeCloud`` answers keystone, Nova, Neutron and Glance the way the services do (payload shapes
from the API references and openstacksdk's own fixtures) and keeps what was created, so a second
``launch`` sees the first one's resources. Every request stays in ``mock.request_history``
(``calls()`` filters it); ``fail()`` makes chosen requests fail, before or after the cloud acted.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests_mock as rm
import yaml

IDENTITY = "http://cloud.test:5000/v3"
COMPUTE = "http://cloud.test:8774/v2.1"
NETWORK = "http://cloud.test:9696"
IMAGE = "http://cloud.test:9292"
VOLUME_ROOT = "http://cloud.test:8776"
PROJECT = "8ba4f1b5f3b84a0e9f2f5a5c0c5c3f11"
USER = "5c6fd1a3d9f84b7c8e0cb7b0d4a33e2a"
PUBLIC_NET = "b1f1c0de-0000-4000-8000-00000000e7e1"
PRIVATE_NET = "b1f1c0de-0000-4000-8000-0000000000a1"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ada@laptop"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBxKQmVcQdBGm2sXvZbW1uGGYXy7u0G4hZ1WnDkLTSmE x@y"
STOCK_IMAGE = "0c2c6f4e-1f0b-4a57-9b0e-6b4f6a1d2e01"
BAKED_IMAGE = "0c2c6f4e-1f0b-4a57-9b0e-6b4f6a1d2e02"
NOW = "2024-05-02T10:00:00Z"
# The services say what they send; openstacksdk reads error messages only from JSON bodies.
JSON = {"Content-Type": "application/json"}

QUOTA_MESSAGE = "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"
FAULT_MESSAGE = "No valid host was found. There are not enough hosts available."


def write_workshop(tmp_path: Path, **openstack: Any) -> Path:
    """workshop.yaml for the fake cloud (5 trainees, one admin), with ``openstack`` overrides."""
    key = tmp_path / "id_ed25519.pub"
    key.write_text(KEY + "\n")
    settings = {
        "cloud": "fakecloud",
        "image": "ubuntu-24.04",
        "flavor": "m1.large",
        "networks": ["private"],
        "floating_ip_network": "public",
        "public_key": str(key),
        "admin_cidr": "192.0.2.0/24",
        "metadata": {"course": "intro-2024"},
        **openstack,
    }
    doc = {
        "name": "intro",
        "users": {"names": ["ada"], "count": 4, "admins": ["teacher"]},
        "openstack": settings,
    }
    path = tmp_path / "workshop.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_cluster_workshop(tmp_path: Path, workers: int = 2, **openstack: Any) -> Path:
    """workshop.yaml of `write_workshop` as a swarm cluster (docker spawner) of ``workers``."""
    path = write_workshop(tmp_path, **openstack)
    doc = yaml.safe_load(path.read_text())
    doc["spawner"] = {"kind": "docker"}
    doc["cluster"] = {"engine": "swarm", "workers": workers}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --- the fake cloud -------------------------------------------------------------------------------


def _id() -> str:
    return str(uuid.uuid4())


def _catalog_token() -> dict[str, Any]:
    """A keystone v3 project-scoped token with the service catalog of a small cloud."""
    catalog = []
    for kind, name, url in [
        ("identity", "keystone", IDENTITY),
        ("compute", "nova", COMPUTE),
        ("network", "neutron", NETWORK),
        ("image", "glance", IMAGE),
        ("block-storage", "cinder", f"{VOLUME_ROOT}/v3/{PROJECT}"),
    ]:
        catalog.append(
            {
                "id": uuid.uuid5(uuid.NAMESPACE_URL, url).hex,
                "type": kind,
                "name": name,
                "endpoints": [
                    {
                        "id": uuid.uuid5(uuid.NAMESPACE_URL, f"{url}#{interface}").hex,
                        "interface": interface,
                        "region": "RegionOne",
                        "region_id": "RegionOne",
                        "url": url,
                    }
                    for interface in ("public", "internal", "admin")
                ],
            }
        )
    return {
        "token": {
            "methods": ["password"],
            "user": {
                "id": USER,
                "name": "ada",
                "domain": {"id": "default", "name": "Default"},
                "password_expires_at": None,
            },
            "project": {
                "id": PROJECT,
                "name": "training",
                "domain": {"id": "default", "name": "Default"},
            },
            "roles": [{"id": "9fe2ff9ee4384b1894a90878d3e92bab", "name": "member"}],
            "audit_ids": ["3T2dc1CGQxyJsHdDu1xkcw"],
            "issued_at": "2024-05-02T10:00:00.000000Z",
            "expires_at": "2099-01-01T00:00:00.000000Z",
            "is_domain": False,
            "catalog": catalog,
        }
    }


def _discovery() -> list[tuple[str, str, dict[str, Any], int]]:
    """(method, url, body, status) of the version documents openstacksdk reads first."""
    identity = {
        "version": {
            "id": "v3.14",
            "status": "stable",
            "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{IDENTITY}/"}],
            "media-types": [
                {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
            ],
        }
    }
    compute_v21 = {
        "id": "v2.1",
        "status": "CURRENT",
        "version": "2.96",
        "min_version": "2.1",
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": f"{COMPUTE}/"}],
        "media-types": [
            {
                "base": "application/json",
                "type": "application/vnd.openstack.compute+json;version=2.1",
            }
        ],
    }
    network = {
        "versions": [
            {
                "id": "v2.0",
                "status": "CURRENT",
                "links": [{"rel": "self", "href": f"{NETWORK}/v2.0/"}],
            }
        ]
    }
    image = {
        "versions": [
            {
                "id": f"v2.{n}",
                "status": "CURRENT" if n == 16 else "SUPPORTED",
                "links": [{"rel": "self", "href": f"{IMAGE}/v2/"}],
            }
            for n in range(16, -1, -1)
        ]
    }
    volume = {
        "versions": [
            {
                "id": "v3.0",
                "status": "CURRENT",
                "version": "3.70",
                "min_version": "3.0",
                "links": [{"rel": "self", "href": f"{VOLUME_ROOT}/v3/"}],
            }
        ]
    }
    return [
        ("GET", f"{VOLUME_ROOT}/", volume, 300),
        ("GET", f"{VOLUME_ROOT}/v3/", {"version": volume["versions"][0]}, 200),
        ("GET", f"{VOLUME_ROOT}/v3/{PROJECT}", {"version": volume["versions"][0]}, 200),
        ("GET", f"{VOLUME_ROOT}/v3/{PROJECT}/", {"version": volume["versions"][0]}, 200),
        ("GET", IDENTITY, identity, 200),
        ("GET", f"{IDENTITY}/", identity, 200),
        ("GET", COMPUTE, {"version": compute_v21}, 200),
        ("GET", f"{COMPUTE}/", {"version": compute_v21}, 200),
        ("GET", "http://cloud.test:8774/", {"versions": [compute_v21]}, 200),
        ("GET", NETWORK, network, 200),
        ("GET", f"{NETWORK}/", network, 200),
        ("GET", IMAGE, image, 300),
        ("GET", f"{IMAGE}/", image, 300),
    ]


# Neutron wraps items as {"security_group": ...} and lists as {"security_groups": [...]};
# Glance answers an image bare and a list as {"images": [...], "first": ..., "schema": ...}.
NEUTRON_ONE = {"groups": "security_group", "fips": "floatingip", "networks": "network"}
NEUTRON_MANY = {"groups": "security_groups", "rules": "security_group_rules", "fips": "floatingips"}
PAGING = ("limit", "marker", "fields", "sort_key", "sort_dir")


@dataclass
class Failure:
    """Requests matching ``method`` and ``pattern`` get ``status`` (``exc``: no answer at all)."""

    method: str
    pattern: re.Pattern[str]
    status: int
    body: dict[str, Any]
    times: int | None  # None: every time
    after: bool = False  # the cloud acts on the request first, then the answer is lost
    exc: type[Exception] | None = None


@dataclass
class FakeCloud:
    """Nova, Neutron and Glance with in-memory state, answering through requests-mock."""

    mock: rm.Mocker
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    keypairs: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    ports: dict[str, dict[str, Any]] = field(default_factory=dict)
    fips: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    flavors: dict[str, dict[str, Any]] = field(default_factory=dict)
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)  # Cinder's
    boot_outcome: str = "ACTIVE"  # what a new server becomes after one BUILD poll
    console: str = "bakery: intro boot stage done after 61.2 seconds\n"
    failures: list[Failure] = field(default_factory=list)
    since: int = 0  # calls() looks at the requests from this one on
    uploaded: dict[str, bytes] = field(default_factory=dict)  # image ID -> the data Glance got
    corrupt_uploads: bool = False  # Glance stores other bytes than it was sent (checksum test)
    # Glance's image_format.disk_formats (its default list; a Ceph site may allow raw only).
    disk_formats: list[str] = field(
        default_factory=lambda: ["ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2"]
    )
    # Nova's absolute limits and Neutron's quota: (limit, used); -1 is no limit.
    limits: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {"instances": (10, 2), "cores": (20, 4), "ram": (51200, 8192)}
    )
    quotas: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {
            "floatingip": (2, 1),
            "security_group": (10, 1),
            "security_group_rule": (100, 4),
        }
    )
    # Cinder's absolute limits: (limit, used).
    volume_limits: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {"volumes": (10, 1), "gigabytes": (1000, 20)}
    )

    def __post_init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Callable[..., tuple[int, Any]]]] = [
            ("POST", re.compile(r"/v3/auth/tokens$"), self._token),
            # Nova
            ("GET", re.compile(r":8774/v2\.1/os-keypairs$"), self._list_keypairs),
            ("GET", re.compile(r":8774/v2\.1/os-keypairs/([^/]+)$"), self._get_keypair),
            ("POST", re.compile(r":8774/v2\.1/os-keypairs$"), self._create_keypair),
            ("DELETE", re.compile(r":8774/v2\.1/os-keypairs/([^/]+)$"), self._delete_keypair),
            ("GET", re.compile(r":8774/v2\.1/flavors/detail$"), self._list_flavors),
            ("GET", re.compile(r":8774/v2\.1/flavors/([^/]+)$"), self._get_flavor),
            ("GET", re.compile(r":8774/v2\.1/servers/detail$"), self._list_servers),
            ("GET", re.compile(r":8774/v2\.1/servers/([^/]+)$"), self._get_server),
            ("POST", re.compile(r":8774/v2\.1/servers$"), self._create_server),
            ("DELETE", re.compile(r":8774/v2\.1/servers/([^/]+)$"), self._delete_server),
            ("POST", re.compile(r":8774/v2\.1/servers/([^/]+)/action$"), self._server_action),
            ("GET", re.compile(r":8774/v2\.1/limits$"), self._limits),
            ("GET", re.compile(r":8776/v3/[^/]+/limits$"), self._volume_limits),
            ("GET", re.compile(r":8776/v3/[^/]+/volumes/detail$"), self._list_volumes),
            ("GET", re.compile(r":8776/v3/[^/]+/volumes/([^/]+)$"), self._get_volume),
            ("DELETE", re.compile(r":8776/v3/[^/]+/volumes/([^/]+)$"), self._delete_volume),
            # Neutron
            ("GET", re.compile(r":9696/v2\.0/security-groups$"), self._list("groups")),
            ("GET", re.compile(r":9696/v2\.0/security-groups/([^/]+)$"), self._get("groups")),
            ("POST", re.compile(r":9696/v2\.0/security-groups$"), self._create_group),
            ("DELETE", re.compile(r":9696/v2\.0/security-groups/([^/]+)$"), self._delete("groups")),
            ("GET", re.compile(r":9696/v2\.0/security-group-rules$"), self._list("rules")),
            ("POST", re.compile(r":9696/v2\.0/security-group-rules$"), self._create_rule),
            (
                "DELETE",
                re.compile(r":9696/v2\.0/security-group-rules/([^/]+)$"),
                self._delete_rule,
            ),
            ("GET", re.compile(r":9696/v2\.0/quotas/([^/]+)/details$"), self._quota_details),
            ("GET", re.compile(r":9696/v2\.0/networks$"), self._list("networks")),
            ("GET", re.compile(r":9696/v2\.0/networks/([^/]+)$"), self._get("networks")),
            ("GET", re.compile(r":9696/v2\.0/ports$"), self._list("ports")),
            ("GET", re.compile(r":9696/v2\.0/floatingips$"), self._list("fips")),
            ("POST", re.compile(r":9696/v2\.0/floatingips$"), self._create_fip),
            ("DELETE", re.compile(r":9696/v2\.0/floatingips/([^/]+)$"), self._delete("fips")),
            # Glance
            ("GET", re.compile(r":9292/v2/images$"), self._list("images")),
            ("GET", re.compile(r":9292/v2/images/([^/]+)$"), self._get("images")),
            ("POST", re.compile(r":9292/v2/images$"), self._create_image),
            ("PUT", re.compile(r":9292/v2/images/([^/]+)/file$"), self._upload_image),
            ("DELETE", re.compile(r":9292/v2/images/([^/]+)$"), self._delete_image),
            ("GET", re.compile(r":9292/v2/schemas/image$"), self._image_schema),
        ]
        for method, url, body, status in _discovery():
            self.mock.register_uri(method, url, json=body, status_code=status, headers=JSON)
        self.mock.add_matcher(self._route)
        self.add_network("public", PUBLIC_NET, external=True)
        self.add_network("private", PRIVATE_NET, router=True)
        for image_id, name, props in [
            (STOCK_IMAGE, "ubuntu-24.04", {"os_distro": "ubuntu"}),
            (
                BAKED_IMAGE,
                "bakery-intro-20240501-0900",
                {"bakery_workshop": "intro", "bakery_version": "0.1.0"},
            ),
        ]:
            self.images[image_id] = _image_doc(
                image_id,
                {
                    "name": name,
                    "status": "active",
                    "visibility": "private",
                    "disk_format": "qcow2",
                    "container_format": "bare",
                    "size": 3_221_225_472,
                    "checksum": "0f343b0931126a20f133d67c2b018a3b",
                    "os_hash_algo": "sha512",
                    "os_hash_value": "a" * 128,
                },
                props,
            )
        for name, ram, vcpus, disk in [
            ("m1.tiny", 512, 1, 1),
            ("m1.small", 2048, 1, 20),
            ("m1.medium", 4096, 2, 40),
            ("m1.large", 8192, 4, 80),
            ("m1.xlarge", 16384, 8, 160),
            ("v1.large", 8192, 4, 0),
        ]:
            self.add_flavor(name, ram, vcpus, disk)

    def server_ports(self) -> list[dict[str, Any]]:
        """The servers' ports (not the routers')."""
        return [p for p in self.ports.values() if p["device_owner"] == "compute:nova"]

    def add_network(
        self,
        name: str,
        net_id: str,
        *,
        external: bool = False,
        router: bool = False,
        shared: bool = False,
        project: str = PROJECT,
    ) -> None:
        """A network; with ``router``, a router's leg on it (a tenant network behind a router, as
        devstack's ``private``; a provider network has none)."""
        self.networks[net_id] = {
            "id": net_id,
            "name": name,
            "status": "ACTIVE",
            "admin_state_up": True,
            "router:external": external,
            "shared": shared,
            "mtu": 1450,
            "subnets": [_id()],
            "project_id": project,
            "tenant_id": project,
            "tags": [],
            "created_at": NOW,
            "updated_at": NOW,
            "revision_number": 1,
        }
        if router:
            port_id = _id()
            self.ports[port_id] = {
                "id": port_id,
                "name": "",
                "network_id": net_id,
                "device_id": _id(),
                "device_owner": "network:router_interface",
                "mac_address": "fa:16:3e:00:00:01",
                "fixed_ips": [
                    {"subnet_id": self.networks[net_id]["subnets"][0], "ip_address": "10.0.0.1"}
                ],
                "status": "ACTIVE",
                "admin_state_up": True,
                "project_id": PROJECT,
                "tenant_id": PROJECT,
            }

    def add_flavor(self, name: str, ram: int, vcpus: int, disk: int) -> None:
        """A public flavor as Nova (2.61+) lists it."""
        flavor_id = str(len(self.flavors) + 1)
        self.flavors[flavor_id] = {
            "id": flavor_id,
            "name": name,
            "ram": ram,
            "vcpus": vcpus,
            "disk": disk,
            "OS-FLV-EXT-DATA:ephemeral": 0,
            "swap": 0,
            "rxtx_factor": 1.0,
            "os-flavor-access:is_public": True,
            "OS-FLV-DISABLED:disabled": False,
            "description": None,
            "extra_specs": {},
            "links": [{"rel": "self", "href": f"{COMPUTE}/flavors/{flavor_id}"}],
        }

    # -- plumbing --

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        body: dict[str, Any],
        times: int | None = 1,
        *,
        after: bool = False,
        exc: type[Exception] | None = None,
    ) -> None:
        """The next ``times`` requests matching ``method`` and ``path`` (a regex) get an error.

        ``after``: the cloud does what was asked, then answers with the error (or ``exc``, a
        dropped connection): the ambiguous failure after which a create must not be repeated.
        """
        self.failures.append(Failure(method, re.compile(path), status, body, times, after, exc))

    def _failure(self, request: Any, url: str) -> Failure | None:
        for failure in self.failures:
            if (
                failure.method == request.method
                and failure.pattern.search(url)
                and failure.times != 0
            ):
                if failure.times is not None:
                    failure.times -= 1
                return failure
        return None

    def _route(self, request: Any) -> Any:
        url = request.url.split("?")[0]
        failure = self._failure(request, url)
        if failure is not None:
            if failure.after:
                self._answer(request, url)
            if failure.exc is not None:
                raise failure.exc(f"connection to {url} dropped")
            return rm.create_response(
                request, status_code=failure.status, json=failure.body, headers=JSON
            )
        return self._answer(request, url)

    def _answer(self, request: Any, url: str) -> Any:
        for method, pattern, handler in self.routes:
            match = pattern.search(url)
            if method == request.method and match:
                query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
                body = _body(request)
                status, payload = handler(*match.groups(), query=query, body=body)
                if payload is None:
                    return rm.create_response(request, status_code=status)
                headers = dict(JSON)
                if "auth/tokens" in url:
                    headers["X-Subject-Token"] = "gAAAAABfaketoken"
                return rm.create_response(
                    request, status_code=status, json=payload, headers=headers
                )
        return None

    def calls(self, method: str, path: str) -> list[Any]:
        """The requests made with ``method`` whose path matches the regex ``path``."""
        return [
            r
            for r in self.mock.request_history[self.since :]
            if r.method == method and re.search(path, r.url.split("?")[0])
        ]

    @staticmethod
    def _not_found(kind: str, ident: str) -> tuple[int, Any]:
        """Nova's 404."""
        return 404, {
            "itemNotFound": {"code": 404, "message": f"{kind} {ident} could not be found."}
        }

    @staticmethod
    def _neutron_not_found(ident: str) -> tuple[int, Any]:
        return 404, {
            "NeutronError": {"type": "NotFound", "message": f"{ident} not found", "detail": ""}
        }

    def _list(self, store: str) -> Callable[..., tuple[int, Any]]:
        def handler(*, query: dict[str, str], body: Any) -> tuple[int, Any]:
            items = [
                item
                for item in getattr(self, store).values()
                if all(str(item.get(k)) == v for k, v in query.items() if k not in PAGING)
            ]
            if store == "images":
                return 200, {"images": items, "first": "/v2/images", "schema": "/v2/schemas/images"}
            return 200, {NEUTRON_MANY.get(store, store): items}

        return handler

    def _get(self, store: str) -> Callable[..., tuple[int, Any]]:
        def handler(ident: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
            item = getattr(self, store).get(ident)
            if store == "images":
                if item is None:
                    return 404, {"code": 404, "title": "Not Found", "message": "404 Not Found"}
                return 200, item
            if item is None:
                return self._neutron_not_found(ident)
            return 200, {NEUTRON_ONE[store]: item}

        return handler

    def _delete(self, store: str) -> Callable[..., tuple[int, Any]]:
        def handler(ident: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
            if getattr(self, store).pop(ident, None) is None:
                return self._neutron_not_found(ident)
            return 204, None

        return handler

    # -- Cinder --

    def boot_volume(self, server_id: str, status: str = "in-use") -> str:
        """A boot volume of ``server_id`` (delete_on_termination) that Nova does not delete."""
        volume_id = _id()
        self.volumes[volume_id] = {
            "id": volume_id,
            "name": "",
            "status": status,
            "size": 20,
            "attachments": [{"server_id": server_id, "volume_id": volume_id}],
        }
        attached = {"id": volume_id, "delete_on_termination": True}
        self.servers[server_id]["os-extended-volumes:volumes_attached"] = [attached]
        return volume_id

    def _list_volumes(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, {"volumes": list(self.volumes.values())}

    def _get_volume(self, ident: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if ident not in self.volumes:
            return 404, {"itemNotFound": {"code": 404, "message": f"Volume {ident} not found."}}
        return 200, {"volume": self.volumes[ident]}

    def _delete_volume(self, ident: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if self.volumes.pop(ident, None) is None:
            return 404, {"itemNotFound": {"code": 404, "message": f"Volume {ident} not found."}}
        return 202, None

    # -- Glance --

    def _create_image(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        image_id = _id()
        self.images[image_id] = _image_doc(
            image_id,
            {
                "status": "queued",
                "visibility": "shared",
                "size": None,
                "checksum": None,
                "os_hash_algo": None,
                "os_hash_value": None,
            },
            body,
        )
        return 201, self.images[image_id]

    def _image_schema(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        # Glance lists its configured disk_formats (image_format.disk_formats) in the schema.
        prop = {"type": ["null", "string"], "enum": [None, *self.disk_formats]}
        return 200, {"name": "image", "properties": {"disk_format": prop}}

    def _upload_image(self, ident: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        image = self.images.get(ident)
        if image is None:
            return 404, {"code": 404, "title": "Not Found", "message": "404 Not Found"}
        data = bytes(body) + (b"x" if self.corrupt_uploads else b"")
        self.uploaded[ident] = data
        image.update(
            status="active",
            size=len(data),
            checksum=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            os_hash_algo="sha512",
            os_hash_value=hashlib.sha512(data).hexdigest(),
        )
        return 204, None

    def _delete_image(self, ident: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if self.images.pop(ident, None) is None:
            return 404, {"code": 404, "title": "Not Found", "message": "404 Not Found"}
        return 204, None

    # -- keystone --

    def _token(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 201, _catalog_token()

    # -- Nova --

    def _list_keypairs(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, {"keypairs": [{"keypair": k} for k in self.keypairs.values()]}

    def _get_keypair(self, name: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if name not in self.keypairs:
            return self._not_found("Keypair", name)
        return 200, {"keypair": self.keypairs[name]}

    def _create_keypair(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        data = body["keypair"]
        self.keypairs[data["name"]] = {
            "name": data["name"],
            "public_key": data["public_key"],
            "fingerprint": "1e:2c:9b:56:79:4b:45:77:f9:ca:7a:98:2c:b0:d5:3c",
            "type": data.get("type", "ssh"),
            "user_id": USER,
            "id": len(self.keypairs) + 1,
            "created_at": NOW,
            "deleted": False,
            "deleted_at": None,
            "updated_at": None,
        }
        return 200, {"keypair": self.keypairs[data["name"]]}

    def _delete_keypair(self, name: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if self.keypairs.pop(name, None) is None:
            return self._not_found("Keypair", name)
        return 202, None

    def _list_flavors(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, {"flavors": list(self.flavors.values())}

    def _get_flavor(self, ident: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if ident not in self.flavors:
            return self._not_found("Flavor", ident)
        return 200, {"flavor": self.flavors[ident]}

    def _list_servers(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        name = query.get("name", "")
        if "|" in name:
            # Seen on the test cloud's nova (Zed, MariaDB): a name filter with an alternation,
            # ^NAME-(manager|worker-[0-9]+)$, matched none of the servers it names.
            return 200, {"servers": []}
        pattern = re.compile(name)
        return 200, {"servers": [s for s in self.servers.values() if pattern.search(s["name"])]}

    def _get_server(self, ident: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        server = self.servers.get(ident)
        if server is None:
            return self._not_found("Instance", ident)
        reply = json.loads(json.dumps(server))
        if server["status"] == "BUILD":  # one poll in BUILD, then the outcome
            server["status"] = self.boot_outcome
            server["OS-EXT-STS:vm_state"] = self.boot_outcome.lower()
            if self.boot_outcome == "ERROR":
                server["fault"] = {
                    "code": 500,
                    "created": NOW,
                    "message": FAULT_MESSAGE,
                    "details": "Traceback (most recent call last): ...",
                }
            else:
                port = next(p for p in self.ports.values() if p["device_id"] == ident)
                server["addresses"] = {
                    "private": [
                        {
                            "version": 4,
                            "addr": port["fixed_ips"][0]["ip_address"],
                            "OS-EXT-IPS:type": "fixed",
                            "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
                        }
                    ]
                }
        return 200, {"server": reply}

    def _create_server(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        req = body["server"]
        if "networks" not in req:  # Nova since microversion 2.37, the whole request quoted
            message = (
                f"Invalid input for field/attribute server. Value: {req!r}. "
                "'networks' is a required property"
            )
            return 400, {"badRequest": {"code": 400, "message": message}}
        server_id = _id()
        n = len(self.servers) + 5
        self.servers[server_id] = {
            "id": server_id,
            "name": req["name"],
            "status": "BUILD",
            "tenant_id": PROJECT,
            "user_id": USER,
            "metadata": req.get("metadata", {}),
            "hostId": "",
            "image": {"id": req.get("imageRef", "")},
            "flavor": {"id": req["flavorRef"]},
            "created": NOW,
            "updated": NOW,
            "addresses": {},
            "accessIPv4": "",
            "accessIPv6": "",
            "key_name": req.get("key_name"),
            "progress": 0,
            "config_drive": "",
            "OS-DCF:diskConfig": "MANUAL",
            "OS-EXT-AZ:availability_zone": "nova",
            "OS-EXT-STS:task_state": "scheduling",
            "OS-EXT-STS:vm_state": "building",
            "OS-EXT-STS:power_state": 0,
            "OS-SRV-USG:launched_at": None,
            "OS-SRV-USG:terminated_at": None,
            "os-extended-volumes:volumes_attached": [],
            "security_groups": req.get("security_groups", []),
            "links": [{"rel": "self", "href": f"{COMPUTE}/servers/{server_id}"}],
        }
        port_id = _id()
        self.ports[port_id] = {
            "id": port_id,
            "name": "",
            "network_id": PRIVATE_NET,
            "device_id": server_id,
            "device_owner": "compute:nova",
            "mac_address": f"fa:16:3e:00:00:{n:02x}",
            "fixed_ips": [{"subnet_id": _id(), "ip_address": f"10.0.0.{n}"}],
            "status": "ACTIVE",
            "admin_state_up": True,
            "project_id": PROJECT,
            "tenant_id": PROJECT,
        }
        return 202, {
            "server": {
                "id": server_id,
                "adminPass": "wLYhm8VTbsJ6",
                "OS-DCF:diskConfig": "MANUAL",
                "security_groups": req.get("security_groups", []),
                "links": [{"rel": "self", "href": f"{COMPUTE}/servers/{server_id}"}],
            }
        }

    def _delete_server(self, ident: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if self.servers.pop(ident, None) is None:
            return self._not_found("Instance", ident)
        for port_id in [p for p, port in self.ports.items() if port["device_id"] == ident]:
            del self.ports[port_id]
        for fip in self.fips.values():
            if fip["port_id"] and fip["port_id"] not in self.ports:
                fip.update(port_id=None, fixed_ip_address=None, port_details=None, status="DOWN")
        return 204, None

    def _server_action(self, ident: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        assert "os-getConsoleOutput" in body, body
        return 200, {"output": self.console}

    # -- Neutron --

    def _create_group(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        data = body["security_group"]
        group_id = _id()
        self.groups[group_id] = {
            "id": group_id,
            "name": data["name"],
            "description": data.get("description", ""),
            "project_id": PROJECT,
            "tenant_id": PROJECT,
            "stateful": True,
            "shared": False,
            "tags": [],
            "created_at": NOW,
            "updated_at": NOW,
            "revision_number": 1,
            "security_group_rules": [],
        }
        for ethertype in ("IPv4", "IPv6"):  # Neutron's default egress rules
            self._add_rule(
                {"security_group_id": group_id, "direction": "egress", "ethertype": ethertype}
            )
        return 201, {"security_group": self.groups[group_id]}

    def _add_rule(self, data: dict[str, Any]) -> dict[str, Any]:
        rule = {
            "id": _id(),
            "protocol": None,
            "port_range_min": None,
            "port_range_max": None,
            "remote_ip_prefix": None,
            "remote_group_id": None,
            "remote_address_group_id": None,
            "description": "",
            "normalized_cidr": data.get("remote_ip_prefix"),
            "project_id": PROJECT,
            "tenant_id": PROJECT,
            "tags": [],
            "created_at": NOW,
            "updated_at": NOW,
            "revision_number": 0,
            **data,
        }
        self.rules[rule["id"]] = rule
        self.groups[data["security_group_id"]]["security_group_rules"].append(rule)
        return rule

    def _create_rule(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 201, {"security_group_rule": self._add_rule(body["security_group_rule"])}

    def _delete_rule(self, ident: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        rule = self.rules.pop(ident, None)
        if rule is None:
            return self._neutron_not_found(ident)
        group = self.groups[rule["security_group_id"]]
        group["security_group_rules"] = [
            r for r in group["security_group_rules"] if r["id"] != ident
        ]
        return 204, None

    def _volume_limits(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        (volumes, volumes_used), (gigabytes, gigabytes_used) = (
            self.volume_limits["volumes"],
            self.volume_limits["gigabytes"],
        )
        absolute = {
            "maxTotalVolumes": volumes,
            "totalVolumesUsed": volumes_used,
            "maxTotalVolumeGigabytes": gigabytes,
            "totalGigabytesUsed": gigabytes_used,
            "maxTotalSnapshots": 10,
            "totalSnapshotsUsed": 0,
            "maxTotalBackups": 10,
            "totalBackupsUsed": 0,
            "maxTotalBackupGigabytes": 1000,
            "totalBackupGigabytesUsed": 0,
        }
        return 200, {"limits": {"rate": [], "absolute": absolute}}

    def _limits(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        (instances, instances_used), (cores, cores_used), (ram, ram_used) = (
            self.limits["instances"],
            self.limits["cores"],
            self.limits["ram"],
        )
        return 200, {
            "limits": {
                "rate": [],
                "absolute": {
                    "maxTotalInstances": instances,
                    "totalInstancesUsed": instances_used,
                    "maxTotalCores": cores,
                    "totalCoresUsed": cores_used,
                    "maxTotalRAMSize": ram,
                    "totalRAMUsed": ram_used,
                    "maxServerMeta": 128,
                    "maxImageMeta": 128,
                    "maxPersonality": 5,
                    "maxPersonalitySize": 10240,
                    "maxTotalKeypairs": 100,
                    "maxServerGroups": 10,
                    "maxServerGroupMembers": 10,
                    "totalServerGroupsUsed": 0,
                },
            }
        }

    def _quota_details(self, project: str, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        assert project == PROJECT, project
        return 200, {
            "quota": {
                name: {"limit": limit, "used": used, "reserved": 0}
                for name, (limit, used) in self.quotas.items()
            }
        }

    def _create_fip(self, *, query: dict[str, str], body: Any) -> tuple[int, Any]:
        data = body["floatingip"]
        fip_id = _id()
        port = self.ports[data["port_id"]]
        self.fips[fip_id] = {
            "id": fip_id,
            "floating_ip_address": f"203.0.113.{len(self.fips) + 10}",
            "floating_network_id": data["floating_network_id"],
            "router_id": _id(),
            "port_id": port["id"],
            "fixed_ip_address": port["fixed_ips"][0]["ip_address"],
            "status": "DOWN",
            "description": data.get("description", ""),
            "dns_domain": "",
            "dns_name": "",
            "qos_policy_id": None,
            "port_forwardings": [],
            "port_details": {
                "name": "",
                "network_id": PRIVATE_NET,
                "mac_address": port["mac_address"],
                "admin_state_up": True,
                "status": "ACTIVE",
                "device_id": port["device_id"],
                "device_owner": "compute:nova",
            },
            "project_id": PROJECT,
            "tenant_id": PROJECT,
            "tags": [],
            "created_at": NOW,
            "updated_at": NOW,
            "revision_number": 0,
        }
        return 201, {"floatingip": self.fips[fip_id]}


def _body(request: Any) -> Any:
    """A request's body: JSON parsed, an image upload's bytes read (openstacksdk sends a file)."""
    raw = request.body
    if not raw:
        return None
    if request.headers.get("Content-Type") == "application/octet-stream":
        return raw.read() if hasattr(raw, "read") else raw
    return json.loads(raw)


def use_fake_cloud(
    requests_mock: rm.Mocker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> FakeCloud:
    """The fake cloud, named ``fakecloud`` in a clouds.yaml of the test's own."""
    clouds = {
        "clouds": {
            "fakecloud": {
                "auth": {
                    "auth_url": IDENTITY,
                    "username": "ada",
                    "password": "correct horse",
                    "project_name": "training",
                    "user_domain_name": "Default",
                    "project_domain_name": "Default",
                },
                "region_name": "RegionOne",
                "identity_api_version": 3,
                "interface": "public",
            }
        }
    }
    (tmp_path / "clouds.yaml").write_text(yaml.safe_dump(clouds))
    for var in [v for v in os.environ if v.startswith("OS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    return FakeCloud(requests_mock)


def user_data(request: Any) -> dict[str, Any]:
    """The cloud-config a POST /servers carried (base64, perhaps gzipped)."""
    raw = base64.b64decode(request.json()["server"]["user_data"])
    text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def _image_doc(image_id: str, *parts: dict[str, Any]) -> dict[str, Any]:
    """A Glance v2 image document: the fields every image has, then ``parts`` (later ones win)."""
    return {
        "id": image_id,
        "min_disk": 0,
        "min_ram": 0,
        "owner": PROJECT,
        "protected": False,
        "os_hidden": False,
        "tags": [],
        "created_at": NOW,
        "updated_at": NOW,
        "self": f"/v2/images/{image_id}",
        "file": f"/v2/images/{image_id}/file",
        "schema": "/v2/schemas/image",
        **{k: v for part in parts for k, v in part.items()},
    }
