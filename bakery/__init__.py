"""bakery: one YAML file describes a workshop; bakery turns it into a running JupyterHub."""

__version__ = "0.1.0"
