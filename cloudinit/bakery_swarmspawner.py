"""JupyterHub spawner of a bakery cluster: each trainee's server is a Docker swarm service.

Installed on the cluster's manager beside jupyterhub_config.py (issue 12). It keeps the contract of
the single-VM docker spawner (dockerspawner's SystemUserSpawner): the server starts as root in the
docker-stacks start script, which becomes the trainee's own UID and GID (``NB_UID``/``NB_GID``),
in the trainee's home (``/home/NAME``, the cluster's shared filesystem, bind-mounted), under memory,
CPU and process limits.

Why a subclass: SystemUserSpawner passes ``user`` and ``working_dir`` as container-create
arguments, which a swarm service rejects (dockerspawner issues #497 and #276), and its home volume
has no ``mode`` key, which SwarmSpawner's mounts expect. Here the user goes into the service's
ContainerSpec (the working directory too, only if asked: the container starts as root, and a
root-squashed NFS home is closed to root, so it starts in / and the server is told its folder), every bind (home, extra volumes) becomes a swarm Mount with its
read-only flag, the process limit goes into the task's resource limits (Docker API >= 1.41), and
servers are placed on worker nodes only unless the manager is allowed to run them.
"""

from __future__ import annotations

from typing import Any

from docker.types import Mount
from dockerspawner import SwarmSpawner, SystemUserSpawner
from traitlets import Bool, Int

# What SystemUserSpawner.start puts into the create kwargs, and the ContainerSpec field it is.
_CONTAINER_SPEC_FIELDS = {"user": "user", "working_dir": "workdir"}


class BakerySwarmSpawner(SystemUserSpawner, SwarmSpawner):  # type: ignore[misc]
    """A trainee's server as a swarm service on a worker, as the trainee's own UID."""

    pids_limit = Int(
        1024,
        config=True,
        help="Processes a server may have (a fork bomb stays inside its own service); 0: none.",
    )
    home_workdir = Bool(
        False,
        config=True,
        help="Start the container in the trainee's home. Off for an NFS home with root squashed: "
        "root (the start script, before it becomes the trainee) may not enter it; set "
        "notebook_dir instead.",
    )
    workers_only = Bool(
        True,
        config=True,
        help="Place servers on worker nodes only (the manager runs the hub, the proxy, NFS).",
    )

    def container_spec_overrides(self) -> dict[str, Any]:
        """``user`` (and ``workdir``) for the ContainerSpec, taken out of the create kwargs."""
        moved = {}
        for create_key, spec_key in _CONTAINER_SPEC_FIELDS.items():
            if create_key in self.extra_create_kwargs:
                moved[spec_key] = self.extra_create_kwargs.pop(create_key)
        if not self.home_workdir:
            # "/", not the image's own WORKDIR: docker-stacks' start script, still root, would
            # cd from /home/jovyan into /home/NAME, which a root-squashed NFS home refuses.
            moved["workdir"] = "/"
        return moved

    @property
    def mounts(self) -> list[Mount]:
        """Every bind as a swarm Mount, read-only where the volume says so, in a stable order."""
        mounts = []
        for source, vol in sorted(self.volume_binds.items()):
            # DockerSpawner's volumes carry "mode"; SystemUserSpawner's home carries "ro".
            read_only = vol.get("mode") == "ro" or vol.get("ro") is True
            mounts.append(
                Mount(target=vol["bind"], source=source, type="bind", read_only=read_only)
            )
        return mounts

    async def create_object(self) -> dict[str, Any]:
        spec = {**self.extra_container_spec, **self.container_spec_overrides()}
        self.extra_container_spec = spec
        if self.workers_only:
            constraints = list(self.extra_placement_spec.get("constraints") or [])
            if "node.role == worker" not in constraints:
                constraints.append("node.role == worker")
            self.extra_placement_spec = {**self.extra_placement_spec, "constraints": constraints}
        return await super().create_object()  # type: ignore[no-any-return]

    def docker(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "create_service" and self.pids_limit:
            template = kwargs["task_template"]
            resources = template.setdefault("Resources", {})
            resources.setdefault("Limits", {})["Pids"] = self.pids_limit
        return super().docker(method, *args, **kwargs)
