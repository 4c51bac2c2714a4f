"""`bakery bake --builder openstacksdk` on the test cloud: a real cloud-init guest (the Debian 12
image of ../shared/vmimage) bakes, seals itself and is snapshotted into a golden image.

The bake document is cut down (a marker file instead of the hub's installs, which take far longer
under TCG); the builder, the seal, the clean-for-reuse script and the snapshot are the real ones.
"""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cloudcount import ensure_flavor

from bakery.bake import sdk as bake_openstack
from bakery.config.workshop import load_config
from bakery.vm import image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
import baseimage

# About 4 min (a guest boots under nested TCG): with the full bakes in `make test-cloud-bake`, not
# in CI, whose test-cloud tier keeps the golden image's upload, launch and login.
pytestmark = [pytest.mark.testcloud, pytest.mark.slow]

NAME = "bakery-sdk-bake"


@pytest.fixture(scope="module")
def clouds(cloud_connect: Callable[[str], Any]) -> tuple[Any, Any]:
    return cloud_connect("testcloud"), cloud_connect("testcloud-admin")


@pytest.fixture(scope="module")
def debian_image(clouds: tuple[Any, Any]) -> Iterator[Any]:
    demo, admin = clouds
    ensure_flavor(admin, ("bakery.builder", 2048, 2, 8))
    path = baseimage.ensure_base_image()
    start = time.monotonic()
    with path.open("rb") as fh:
        image = demo.image.create_image(
            name=f"{NAME}-base", data=fh, disk_format="qcow2", container_format="bare"
        )
    print(f"uploaded {path.name} in {time.monotonic() - start:.0f} s")
    yield image
    demo.image.delete_image(image, ignore_missing=True)


def test_bake_with_openstacksdk(clouds: tuple[Any, Any], debian_image: Any, tmp_path: Path) -> None:
    demo, _ = clouds
    private = demo.network.find_network("private")
    config = tmp_path / "workshop.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            name: {NAME}
            os: debian-12
            openstack: {{cloud: testcloud}}
            bake:
              source_image: {debian_image.id}
              flavor: bakery.builder
              networks: [{private.id}]
              image_suffix: none
            """
        )
    )
    record = image.record(load_config(config))
    doc = {
        "write_files": [
            {"path": "/etc/bakery/marker", "content": "baked by the sdk test\n"},
            # The real bake stage writes the record; the seal's clean.sh refuses an image without.
            {"path": image.RECORD_PATH, "content": image.record_json(record)},
        ],
        "runcmd": [["sh", "-c", "echo bake-ran > /etc/bakery/ran"]],
        "final_message": f"bakery: {NAME} bake stage done after $UPTIME seconds",
    }
    start = time.monotonic()
    (result,) = bake_openstack.bake(
        config_path=config,
        bake_doc=doc,
        timeout_minutes=25,
        progress=lambda m, *, transient=False: print(m),
    )
    image_id = result.image_id
    print(f"baked in {time.monotonic() - start:.0f} s: {result.timings}")
    try:
        baked = demo.image.get_image(image_id)
        assert baked.name == result.image_name == f"bakery-{NAME}"
        assert baked.status == "active"
        props = {**(baked.properties or {}), **baked.to_dict()}
        assert props.get("bakery_workshop") == NAME
        assert image.record_from_properties(props) == record == result.record
        assert image.image_stage(baked) == "boot"
        # The builder is gone.
        assert not [s for s in demo.compute.servers() if s.name == f"{NAME}-builder"]
    finally:
        demo.image.delete_image(image_id, ignore_missing=True)
