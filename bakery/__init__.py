"""bakery: one YAML file describes a workshop; bakery turns it into a running JupyterHub.

The library is usable without the CLI; these are its entry points (each raises
:class:`BakeryError` subclasses; long ones take a ``progress`` reporter). The flow is config ->
topology -> provider: :mod:`bakery.topology` computes the machines a workshop needs, and the
providers realise them: :mod:`bakery.providers.local.trial` (``up``, ``status``, ``down``: `bakery
try`) and :mod:`bakery.providers.openstack` (``launch``, ``status``, ``scale``, ``destroy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bakery.version import __version__

__all__ = [
    "BakeryError",
    "Workshop",
    "__version__",
    "bake",
    "destroy",
    "launch",
    "load_config",
    "render_user_data",
    "validate_workshop",
]

# Imported on first use: `bakery render` must not pay for openstacksdk and friends.
_WHERE = {
    "BakeryError": "bakery.errors",
    "Workshop": "bakery.config.workshop",
    "load_config": "bakery.config.workshop",
    "render_user_data": "bakery.vm.userdata",
    "validate_workshop": "bakery.vm.validate",
    "bake": "bakery.bake.builders",
    "launch": "bakery.providers.openstack.launch",
    "destroy": "bakery.providers.openstack.destroy",
}

if TYPE_CHECKING:
    from bakery.bake.builders import bake
    from bakery.config.workshop import Workshop, load_config
    from bakery.errors import BakeryError
    from bakery.providers.openstack.destroy import destroy
    from bakery.providers.openstack.launch import launch
    from bakery.vm.userdata import render_user_data
    from bakery.vm.validate import validate_workshop


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'bakery' has no attribute {name!r}")
