"""bakery: one YAML file describes a workshop; bakery turns it into a running JupyterHub.

The library is usable without the CLI; these are its entry points (each raises
:class:`BakeryError` subclasses; long ones take a ``progress`` reporter). The cloud operations
live in :mod:`bakery.launch` (``launch``, ``status``, ``destroy``): a package attribute of that
name would be shadowed by the submodule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "BakeryError",
    "Workshop",
    "__version__",
    "bake",
    "load_config",
    "render_user_data",
    "validate_workshop",
]

# Imported on first use: `bakery render` must not pay for openstacksdk and friends.
_WHERE = {
    "BakeryError": "bakery.errors",
    "Workshop": "bakery.config",
    "load_config": "bakery.config",
    "render_user_data": "bakery.render",
    "validate_workshop": "bakery.checks",
    "bake": "bakery.builders",
}

if TYPE_CHECKING:
    from bakery.builders import bake
    from bakery.checks import validate_workshop
    from bakery.config import Workshop, load_config
    from bakery.errors import BakeryError
    from bakery.render import render_user_data


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'bakery' has no attribute {name!r}")
