"""OpenStack operations against a fake cloud: the real openstacksdk over registered HTTP answers.

``FakeCloud`` answers keystone, Nova, Neutron and Glance the way the services do (payload shapes
from the API references and openstacksdk's own fixtures) and keeps what was created, so a second
``launch`` sees the first one's resources. Nothing of bakery is mocked except ``time.sleep`` (the
backoff and polling would otherwise take minutes) and, where a test is not about it, the hub's
health check.
"""

from __future__ import annotations

import base64
import gzip
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
import requests
import requests_mock as rm
import yaml
from typer.testing import CliRunner

from bakery import cloud
from bakery.cli import app
from bakery.config import load_config
from bakery.errors import BakeryError, RenderError
from bakery.sizing import Estimate, estimate_workshop

IDENTITY = "http://cloud.test:5000/v3"
COMPUTE = "http://cloud.test:8774/v2.1"
NETWORK = "http://cloud.test:9696"
IMAGE = "http://cloud.test:9292"
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
    return [
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
    method: str
    pattern: re.Pattern[str]
    status: int
    body: dict[str, Any]
    times: int | None  # None: every time


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
    boot_outcome: str = "ACTIVE"  # what a new server becomes after one BUILD poll
    console: str = "bakery: intro boot stage done after 61.2 seconds\n"
    failures: list[Failure] = field(default_factory=list)
    since: int = 0  # calls() looks at the requests from this one on

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
            # Neutron
            ("GET", re.compile(r":9696/v2\.0/security-groups$"), self._list("groups")),
            ("GET", re.compile(r":9696/v2\.0/security-groups/([^/]+)$"), self._get("groups")),
            ("POST", re.compile(r":9696/v2\.0/security-groups$"), self._create_group),
            ("DELETE", re.compile(r":9696/v2\.0/security-groups/([^/]+)$"), self._delete("groups")),
            ("GET", re.compile(r":9696/v2\.0/security-group-rules$"), self._list("rules")),
            ("POST", re.compile(r":9696/v2\.0/security-group-rules$"), self._create_rule),
            ("GET", re.compile(r":9696/v2\.0/networks$"), self._list("networks")),
            ("GET", re.compile(r":9696/v2\.0/networks/([^/]+)$"), self._get("networks")),
            ("GET", re.compile(r":9696/v2\.0/ports$"), self._list("ports")),
            ("GET", re.compile(r":9696/v2\.0/floatingips$"), self._list("fips")),
            ("POST", re.compile(r":9696/v2\.0/floatingips$"), self._create_fip),
            ("DELETE", re.compile(r":9696/v2\.0/floatingips/([^/]+)$"), self._delete("fips")),
            # Glance
            ("GET", re.compile(r":9292/v2/images$"), self._list("images")),
            ("GET", re.compile(r":9292/v2/images/([^/]+)$"), self._get("images")),
        ]
        for method, url, body, status in _discovery():
            self.mock.register_uri(method, url, json=body, status_code=status, headers=JSON)
        self.mock.add_matcher(self._route)
        for name, net_id, external in [
            ("public", PUBLIC_NET, True),
            ("private", PRIVATE_NET, False),
        ]:
            self.networks[net_id] = {
                "id": net_id,
                "name": name,
                "status": "ACTIVE",
                "admin_state_up": True,
                "router:external": external,
                "shared": False,
                "mtu": 1450,
                "subnets": [_id()],
                "project_id": PROJECT,
                "tenant_id": PROJECT,
                "tags": [],
                "created_at": NOW,
                "updated_at": NOW,
                "revision_number": 1,
            }
        for image_id, name, props in [
            (STOCK_IMAGE, "ubuntu-24.04", {"os_distro": "ubuntu"}),
            (
                BAKED_IMAGE,
                "bakery-intro-20240501-0900",
                {"bakery_workshop": "intro", "bakery_version": "0.1.0"},
            ),
        ]:
            self.images[image_id] = {
                "id": image_id,
                "name": name,
                "status": "active",
                "visibility": "private",
                "disk_format": "qcow2",
                "container_format": "bare",
                "min_disk": 0,
                "min_ram": 0,
                "size": 3_221_225_472,
                "checksum": "0f343b0931126a20f133d67c2b018a3b",
                "os_hash_algo": "sha512",
                "os_hash_value": "a" * 128,
                "owner": PROJECT,
                "protected": False,
                "os_hidden": False,
                "tags": [],
                "created_at": NOW,
                "updated_at": NOW,
                "self": f"/v2/images/{image_id}",
                "file": f"/v2/images/{image_id}/file",
                "schema": "/v2/schemas/image",
                **props,
            }
        for name, ram, vcpus, disk in [
            ("m1.tiny", 512, 1, 1),
            ("m1.small", 2048, 1, 20),
            ("m1.medium", 4096, 2, 40),
            ("m1.large", 8192, 4, 80),
            ("m1.xlarge", 16384, 8, 160),
            ("v1.large", 8192, 4, 0),
        ]:
            self.add_flavor(name, ram, vcpus, disk)

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
        self, method: str, path: str, status: int, body: dict[str, Any], times: int | None = 1
    ) -> None:
        """The next ``times`` requests matching ``method`` and ``path`` (a regex) get an error."""
        self.failures.append(Failure(method, re.compile(path), status, body, times))

    def _route(self, request: Any) -> Any:
        url = request.url.split("?")[0]
        for failure in self.failures:
            if (
                failure.method == request.method
                and failure.pattern.search(url)
                and failure.times != 0
            ):
                if failure.times is not None:
                    failure.times -= 1
                return rm.create_response(
                    request, status_code=failure.status, json=failure.body, headers=JSON
                )
        for method, pattern, handler in self.routes:
            match = pattern.search(url)
            if method == request.method and match:
                query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
                body = json.loads(request.body) if request.body else None
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
        pattern = re.compile(query.get("name", ""))
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


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def fake(requests_mock: rm.Mocker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCloud:
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


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """time.sleep made instant; the delays asked for, in order."""
    asked: list[float] = []
    monkeypatch.setattr(cloud.time, "sleep", asked.append)
    return asked


@pytest.fixture
def hub_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every hub answers (for tests about something else)."""
    monkeypatch.setattr(cloud, "hub_health", lambda ip, timeout=5: "ok")


def user_data(request: Any) -> dict[str, Any]:
    """The cloud-config a POST /servers carried (base64, perhaps gzipped)."""
    raw = base64.b64decode(request.json()["server"]["user_data"])
    text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


WRITES = r"/(servers|os-keypairs|security-groups|security-group-rules|floatingips)$"


def launch(path: Path, **kwargs: Any) -> cloud.LaunchResult:
    kwargs.setdefault("wait", False)
    return cloud.launch(config_path=path, **kwargs)


def only(items: list[Any]) -> Any:
    assert len(items) == 1, items
    return items[0]


# --- launch ---------------------------------------------------------------------------------------


def test_first_launch_creates_everything_and_prints_the_url(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    fake.mock.get("https://203.0.113.10/hub/health", json={})  # the hub answers at once
    result = CliRunner().invoke(app, ["launch", str(path)])
    assert result.exit_code == 0, result.output

    assert "intro-1: https://203.0.113.10/  (hub: ok)" in result.stdout
    assert "workshop.credentials.csv" in result.stdout

    group = only(fake.calls("POST", r"/security-groups$")).json()["security_group"]
    assert group["name"] == "bakery-intro"
    assert "bakery:workshop=intro" in group["description"]
    rules = [r.json()["security_group_rule"] for r in fake.calls("POST", "/security-group-rules$")]
    assert sorted(
        (r["port_range_min"], r["port_range_max"], r["remote_ip_prefix"]) for r in rules
    ) == [
        (22, 22, "192.0.2.0/24"),
        (80, 80, "0.0.0.0/0"),
        (443, 443, "0.0.0.0/0"),
    ]
    assert {(r["direction"], r["protocol"], r["ethertype"]) for r in rules} == {
        ("ingress", "tcp", "IPv4")
    }
    group_id = only(list(fake.groups))
    assert {r["security_group_id"] for r in rules} == {group_id}

    keypair = only(fake.calls("POST", r"/os-keypairs$")).json()["keypair"]
    assert (keypair["name"], keypair["public_key"]) == ("bakery-intro", KEY)
    assert json.loads(cloud.state_path(path).read_text()) == {"keypair": "bakery-intro"}

    post = only(fake.calls("POST", r"/servers$"))
    server = post.json()["server"]
    assert server["name"] == "intro-1"
    assert server["imageRef"] == STOCK_IMAGE
    assert server["flavorRef"] == "4"  # m1.large
    assert server["key_name"] == "bakery-intro"
    assert server["security_groups"] == [{"name": "bakery-intro"}]
    assert server["networks"] == [{"uuid": PRIVATE_NET}]
    assert server["metadata"] == {
        "course": "intro-2024",
        "bakery_workshop": "intro",
        "bakery_stage": "full",
    }
    doc = user_data(post)
    assert doc["final_message"].startswith("bakery: intro full stage done")
    names = [u["name"] for u in doc["users"] if isinstance(u, dict)]
    assert names == ["ada", "training01", "training02", "training03", "training04", "teacher"]

    fip = only(fake.calls("POST", r"/floatingips$")).json()["floatingip"]
    port = only(list(fake.ports.values()))
    assert fip == {
        "floating_network_id": PUBLIC_NET,
        "port_id": port["id"],
        "description": "bakery:workshop=intro server=intro-1",
    }
    assert fake.calls("GET", r"^https://203\.0\.113\.10/hub/health$")


def test_relaunch_creates_nothing(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float], hub_ok: None
) -> None:
    path = write_workshop(tmp_path)
    first = launch(path, wait=True)
    assert first.created == [
        "key pair bakery-intro",
        "security group bakery-intro",
        "server intro-1",
        "floating IP 203.0.113.10",
    ]
    assert fake.calls("POST", WRITES)
    sheet = (tmp_path / "workshop.credentials.csv").read_text()
    fake.since = fake.mock.call_count

    again = launch(path, wait=True)

    assert again.created == []
    assert fake.calls("GET", r"/servers/detail$")  # it did look
    assert fake.calls("POST", WRITES) == []
    assert fake.calls("DELETE", ".") == []
    assert [(s.name, s.url, s.hub) for s in again.servers] == [
        ("intro-1", "https://203.0.113.10/", "ok")
    ]
    assert (len(fake.servers), len(fake.fips), len(fake.groups), len(fake.keypairs)) == (1, 1, 1, 1)
    assert len(fake.rules) == 5  # 2 default egress + 3 ingress, none added twice
    assert (tmp_path / "workshop.credentials.csv").read_text() == sheet


def test_error_state_reports_the_fault_and_removes_what_this_run_made(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    # The key pair was there before (same key): it is used, and left alone by the cleanup.
    fake._create_keypair(query={}, body={"keypair": {"name": "bakery-intro", "public_key": KEY}})
    fake.boot_outcome = "ERROR"

    with pytest.raises(cloud.CloudError, match="intro-1 failed to build: No valid host was found"):
        launch(path)

    only(fake.calls("POST", r"/servers$"))
    assert len(fake.calls("DELETE", r"/servers/[^/]+$")) == 1
    assert len(fake.calls("DELETE", r"/security-groups/[^/]+$")) == 1
    assert fake.calls("DELETE", r"/os-keypairs/") == []
    assert fake.calls("POST", r"/floatingips$") == []
    assert fake.servers == {} and fake.groups == {} and fake.fips == {}
    assert list(fake.keypairs) == ["bakery-intro"]


def test_cloud_init_failure_on_the_console_fails_the_launch(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    fake.mock.get("https://203.0.113.10/hub/health", exc=requests.exceptions.ConnectTimeout)
    fake.console = (
        "[   42.1] cloud-init[812]: 2024-05-02 10:01:02,345 - util.py[WARNING]: "
        "Failed to run module scripts-user (scripts in /var/lib/cloud/instance/scripts)\n"
    )

    with pytest.raises(cloud.CloudError, match="cloud-init failed on intro-1") as info:
        launch(path, wait=True)

    assert "Failed to run module scripts-user" in str(info.value)
    assert fake.calls("GET", r"/hub/health$")
    assert fake.servers == fake.fips == fake.groups == fake.keypairs == {}


def test_quota_error_is_reported_plainly(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    fake.fail(
        "POST", r"/servers$", 403, {"forbidden": {"code": 403, "message": QUOTA_MESSAGE}}, None
    )

    with pytest.raises(cloud.QuotaError) as info:
        launch(path)

    message = str(info.value)
    assert "create server intro-1: quota exceeded" in message
    assert "Requested 1, but already used 10 of 10 instances" in message
    assert len(fake.calls("POST", r"/servers$")) == 1  # not retried
    # The group and key pair this run made are gone again.
    assert fake.groups == {} and fake.keypairs == {} and fake.servers == {}


def test_transient_503_is_retried_with_backoff(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    unavailable = {"computeFault": {"code": 503, "message": "Service Unavailable"}}
    fake.fail("POST", r"/servers$", 503, unavailable, times=2)
    fake.fail("GET", r"/v2\.0/floatingips$", 502, {"message": "Bad Gateway"}, times=1)

    result = launch(path)

    assert len(fake.calls("POST", r"/servers$")) == 3
    assert len(fake.servers) == 1
    assert [s.floating_ip for s in result.servers] == ["203.0.113.10"]
    assert sleeps[:2] == list(cloud.RETRY_DELAYS[:2])  # backoff before the 2nd and 3rd try
    assert cloud.RETRY_DELAYS[0] in sleeps[2:]  # and once for the 502


def test_a_cloud_that_stays_down_gives_up_and_cleans_up(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    fake.fail("GET", r"/v2\.0/networks/", 503, {"message": "Service Unavailable"}, times=None)

    with pytest.raises(cloud.CloudError, match="find network private: HTTP 503"):
        launch(path)

    assert len(fake.calls("GET", r"/v2\.0/networks/private$")) == 1 + len(cloud.RETRY_DELAYS)
    assert sleeps == list(cloud.RETRY_DELAYS)
    # The network is looked up before anything is made: nothing was created, nothing is left.
    assert fake.calls("POST", r"/os-keypairs$") == []
    assert fake.calls("POST", r"/security-groups$") == []
    assert fake.keypairs == {} and fake.groups == {}


def test_refused_credentials_are_an_auth_error(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    refused = {
        "error": {
            "code": 401,
            "title": "Unauthorized",
            "message": "The request you have made requires authentication.",
        }
    }
    fake.fail("POST", r"/v3/auth/tokens$", 401, refused, times=None)

    with pytest.raises(cloud.AuthError, match="refused the credentials") as info:
        launch(path)
    assert info.value.exit_code == 2


def test_keypair_with_another_key_is_refused_before_anything_is_made(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    fake._create_keypair(
        query={}, body={"keypair": {"name": "bakery-intro", "public_key": OTHER_KEY}}
    )

    with pytest.raises(BakeryError, match="'bakery-intro' exists with a different key") as info:
        launch(path)

    assert "openstack.key_name" in str(info.value)
    assert [r.url for r in fake.mock.request_history if r.method in ("POST", "PUT", "DELETE")] == [
        f"{IDENTITY}/auth/tokens"
    ]
    assert fake.keypairs["bakery-intro"]["public_key"] == OTHER_KEY
    assert not cloud.state_path(path).exists()


def test_user_data_over_novas_limit_fails_before_any_write(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1001 real SHA-512-crypt hashes take seconds; random strings of the same shape do not
    # compress either, which is all that matters for the size.
    monkeypatch.setattr(
        "bakery.credentials.sha512crypt.hash_password",
        lambda password: (
            "$6$"
            + os.urandom(12).hex()[:16]
            + "$"
            + base64.b64encode(os.urandom(64)).decode().rstrip("=").replace("+", ".")[:86]
        ),
    )
    path = write_workshop(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["users"] = {"count": 1000, "admins": ["teacher"]}
    path.write_text(yaml.safe_dump(doc))

    with pytest.raises(RenderError, match="over Nova's limit of 65,535 even gzipped"):
        launch(path)

    assert [r.url for r in fake.mock.request_history if r.method != "GET"] == [
        f"{IDENTITY}/auth/tokens"
    ]


@pytest.mark.parametrize(
    ("image", "stage"),
    [("bakery-intro-20240501-0900", "boot"), ("ubuntu-24.04", "full"), (STOCK_IMAGE, "full")],
)
def test_image_metadata_picks_the_stage(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float], image: str, stage: str
) -> None:
    path = write_workshop(tmp_path)

    launch(path, image=image)

    post = only(fake.calls("POST", r"/servers$"))
    assert post.json()["server"]["metadata"]["bakery_stage"] == stage
    assert post.json()["server"]["imageRef"] == (BAKED_IMAGE if stage == "boot" else STOCK_IMAGE)
    assert user_data(post)["final_message"].startswith(f"bakery: intro {stage} stage done")


def test_launch_count_2_splits_the_trainees(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)

    result = launch(path, count=2)

    posts = fake.calls("POST", r"/servers$")
    users = {
        p.json()["server"]["name"]: [
            u["name"] for u in user_data(p)["users"] if isinstance(u, dict)
        ]
        for p in posts
    }
    assert users == {
        "intro-1": ["ada", "training01", "training02", "teacher"],
        "intro-2": ["training03", "training04", "teacher"],
    }
    assert [s.floating_ip for s in result.servers] == ["203.0.113.10", "203.0.113.11"]
    assert len(fake.calls("POST", r"/security-groups$")) == 1


# --- pure helpers with a real connection ----------------------------------------------------------


def test_split_users_in_two(tmp_path: Path) -> None:
    cfg = load_config(write_workshop(tmp_path, count=2))

    parts = cloud.split_users(cfg)

    assert [p.hostname for p in parts] == ["intro-1", "intro-2"]
    assert [p.users.trainees() for p in parts] == [
        ["ada", "training01", "training02"],
        ["training03", "training04"],
    ]
    assert all(p.users.admins == ["teacher"] for p in parts)
    with pytest.raises(BakeryError, match="count 6 is more than the 5 trainees"):
        cloud.split_users(load_config(write_workshop(tmp_path, count=6)))


def flavors_around(fake: FakeCloud, need: Estimate) -> None:
    """Flavors just short of ``need`` in each dimension, one exact fit, a roomy one, a disk-less."""
    m, c, d = need.memory_mib, need.vcpus, need.disk_gb
    fake.flavors.clear()
    for name, ram, vcpus, disk in [
        ("roomy", 2 * m, 2 * c, 2 * d),
        ("short-ram", m - 1, c, d),
        ("short-cpu", 2 * m, c - 1, 2 * d),
        ("short-disk", m, c, d - 1),
        ("exact", m, c, d),
        ("diskless", m, c, 0),
    ]:
        fake.add_flavor(name, ram, vcpus, disk)


@pytest.mark.parametrize(
    ("trainees", "boot_volume", "expected"),
    [
        (4, False, "exact"),
        (40, False, "exact"),
        (4, True, "diskless"),  # booting from a volume, a flavor without disk fits
    ],
)
def test_auto_flavor_is_the_smallest_that_fits(
    fake: FakeCloud, tmp_path: Path, trainees: int, boot_volume: bool, expected: str
) -> None:
    path = write_workshop(tmp_path, flavor="auto", boot_volume=boot_volume)
    doc = yaml.safe_load(path.read_text())
    doc["users"] = {"count": trainees, "admins": ["teacher"]}
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    need = estimate_workshop(cfg)
    assert need.users == trainees + 1
    flavors_around(fake, need)

    assert cloud.choose_flavor(cloud.connect(cfg), cfg).name == expected


def test_auto_flavor_from_a_real_flavor_list(fake: FakeCloud, tmp_path: Path) -> None:
    cfg = load_config(write_workshop(tmp_path, flavor="auto"))
    need = estimate_workshop(cfg)
    fits = [
        f
        for f in fake.flavors.values()
        if f["ram"] >= need.memory_mib and f["vcpus"] >= need.vcpus and f["disk"] >= need.disk_gb
    ]
    smallest = min(fits, key=lambda f: f["ram"])  # the m1.* sizes grow in every dimension

    chosen = cloud.choose_flavor(cloud.connect(cfg), cfg)

    assert chosen.name == smallest["name"] and chosen.id == smallest["id"]
    assert chosen.name not in ("m1.xlarge", "v1.large")


def test_auto_flavor_says_when_nothing_fits(fake: FakeCloud, tmp_path: Path) -> None:
    path = write_workshop(tmp_path, flavor="auto")
    doc = yaml.safe_load(path.read_text())
    doc["users"] = {"count": 100}
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)

    with pytest.raises(BakeryError, match=r"no flavor fits .* raise openstack\.count"):
        cloud.choose_flavor(cloud.connect(cfg), cfg)


# --- status ---------------------------------------------------------------------------------------


def test_status_json(fake: FakeCloud, tmp_path: Path, sleeps: list[float]) -> None:
    path = write_workshop(tmp_path)
    launch(path)
    fake.mock.get("https://203.0.113.10/hub/health", status_code=502)
    # A second server of the workshop that failed, and a stranger's server bakery must not list.
    fake.boot_outcome = "ERROR"
    for name, meta in [("intro-2", {"bakery_workshop": "intro"}), ("intro-3", {})]:
        fake._create_server(
            query={}, body={"server": {"name": name, "flavorRef": "4", "metadata": meta}}
        )
    for server_id in list(fake.servers)[1:]:
        fake._get_server(server_id, query={}, body=None)  # BUILD -> ERROR

    result = CliRunner().invoke(app, ["status", str(path), "--json"])

    assert result.exit_code == 0, result.output
    first_id = next(iter(fake.servers))
    assert json.loads(result.stdout) == [
        {
            "name": "intro-1",
            "id": first_id,
            "status": "ACTIVE",
            "addresses": ["10.0.0.5"],
            "floating_ip": "203.0.113.10",
            "url": "https://203.0.113.10/",
            "hub": "HTTP 502",
            "cloud_init": "done",
            "fault": None,
        },
        {
            "name": "intro-2",
            "id": list(fake.servers)[1],
            "status": "ERROR",
            "addresses": [],
            "floating_ip": None,
            "url": None,
            "hub": "unknown",
            "cloud_init": "unknown",
            "fault": FAULT_MESSAGE,
        },
    ]


# --- destroy --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failing", "label"),
    [
        (r"/floatingips/[^/]+$", "floating IP 203.0.113.10"),
        (r"/security-groups/[^/]+$", "security group bakery-intro"),
        (r"/servers/[^/]+$", "server intro-1"),
    ],
)
def test_destroy_goes_on_past_a_failure_and_can_be_rerun(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float], failing: str, label: str
) -> None:
    path = write_workshop(tmp_path)
    launch(path)
    fake.fail("DELETE", failing, 500, {"message": "Internal Server Error"}, times=None)

    result = CliRunner().invoke(app, ["destroy", str(path), "--yes"])

    assert result.exit_code == 1, result.output
    assert "1 of 4 deletions failed" in result.stderr
    assert f"delete {label}: HTTP 500" in result.stderr
    assert len(fake.calls("DELETE", failing)) == 1 + len(cloud.RETRY_DELAYS)
    left = {
        "floating IP": len(fake.fips),
        "security group": len(fake.groups),
        "server": len(fake.servers),
        "key pair": len(fake.keypairs),
    }
    assert left == {kind: int(label.startswith(kind)) for kind in left}
    assert cloud.state_path(path).exists()  # still knows the key pair was bakery's

    fake.failures.clear()
    again = CliRunner().invoke(app, ["destroy", str(path), "--yes"])

    assert again.exit_code == 0, again.output
    assert fake.servers == fake.fips == fake.groups == fake.keypairs == {}
    assert not cloud.state_path(path).exists()
    third = CliRunner().invoke(app, ["destroy", str(path), "--yes"])
    assert third.exit_code == 0 and "nothing of workshop intro left" in third.stderr


def test_destroy_spares_what_bakery_did_not_make(
    fake: FakeCloud, tmp_path: Path, sleeps: list[float]
) -> None:
    path = write_workshop(tmp_path)
    fake._create_keypair(query={}, body={"keypair": {"name": "bakery-intro", "public_key": KEY}})
    fake._create_group(query={}, body={"security_group": {"name": "bakery-intro"}})
    launch(path)
    stranger = fake._create_fip(
        query={},
        body={"floatingip": {"floating_network_id": PUBLIC_NET, "port_id": next(iter(fake.ports))}},
    )[1]["floatingip"]

    plan = cloud.destroy(config_path=path)

    assert plan.lines() == ["server intro-1", "floating IP 203.0.113.10"]
    assert list(fake.fips) == [stranger["id"]]
    assert len(fake.groups) == 1 and list(fake.keypairs) == ["bakery-intro"]
