"""Every version bakery installs on a VM, pinned in one place: bump them here, together.

Distro packages (nginx, docker.io, nodejs, npm, python3-venv) follow the target OS release and are
not pinned further; everything fetched from PyPI, npm, conda-forge or a container registry is
pinned exactly.
"""

from __future__ import annotations

# The hub and the single-user server inside the user image must share a JupyterHub major version.
JUPYTERHUB = "5.2.1"
DOCKERSPAWNER = "14.0.0"
JUPYTERHUB_IDLE_CULLER = "1.4.0"
# Only for `spawner.kind: systemd` (servers run on the host, not in containers).
JUPYTERHUB_SYSTEMDSPAWNER = "1.0.2"
JUPYTERLAB = "4.3.5"

# configurable-http-proxy 5.x needs Node.js >= 20; Ubuntu 24.04 and Debian 12 ship Node.js 18 and
# Ubuntu 22.04 ships 12, so the 4.x line (Node.js >= 10) is the newest that runs on every target.
CONFIGURABLE_HTTP_PROXY = "4.6.3"

# Docker Hub's jupyter/* images stopped updating in 2023; quay.io carries the maintained ones.
# A date tag is immutable in practice; its JupyterHub is 5.x, matching JUPYTERHUB above.
USER_IMAGE = "quay.io/jupyter/datascience-notebook:2025-03-14"

# `hub.install: conda`: the Miniforge installer, checked against its published sha256.
MINIFORGE = "24.11.3-0"
MINIFORGE_SHA256 = {
    "x86_64": "2e1ad2188fe69fcdd522c2b20c08c800a5c7411b775eca768318b1540ed32e53",
}
# The Python the conda-installed hub environment gets.
CONDA_PYTHON = "3.12"
