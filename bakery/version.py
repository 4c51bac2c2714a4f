"""bakery's own version (hatch reads it from here; the bake record and generated files carry it)."""

__version__ = "0.1.0"
