"""`bakery init`: a commented starter workshop.yaml that validates as written."""

from __future__ import annotations

import re
from pathlib import Path

from bakery import versions
from bakery.config.fields import WORKSHOP_NAME_RE
from bakery.errors import BakeryError
from bakery.files import check_target, write_private

STARTER = """\
# A bakery workshop: one hub for one class. Every key is optional except `name`;
# the values shown are the defaults. Check it with: bakery validate {path}
# Every key: docs/reference.md, or `bakery config show {path}` for the full effective config.
name: {name}                  # lower-case letters, digits, '-'; used for host name and cloud tags

os: ubuntu-24.04               # ubuntu-24.04 | ubuntu-22.04 | debian-12 (the VM's image)

users:
  prefix: training             # trainee accounts training01, training02, ...
  count: 30                    # 1-1000
  # names: [alice, bob]        # and/or explicit names
  admins: [instructor]         # hub admins (also log in with a password)
  password: random             # random (one each) | shared (trainees share one; admins do not)
  # Passwords are made once into {sheet} (mode 600);
  # print the sheet to hand out with: bakery credentials {path}

# auth:                        # or log in with the class's own accounts (docs/auth.md):
#   kind: oidc                 # oidc (a university's single sign-on) | github
#   issuer: https://login.example.edu/realms/main
#   client_id: bakery-hub
#   client_secret_file: client.secret   # chmod 600; never the secret itself here
#   allowed_groups: [course-101]
#   admin_users: [you@example.edu]      # (users: then only sets the class's size, count)

spawner:
  kind: docker                 # docker: one container per trainee | systemd: one unit per trainee
  image: {image}
  mem_limit: 2G                # per trainee
  cpu_limit: 1.0               # CPUs per trainee
  idle_cull_minutes: 60        # stop idle servers (files stay); 0 = never

# environment:                 # the course's packages (then: bakery lock {path})
#   from: ./binder             # requirements.txt, apt.txt, install.R, environment.yml
#   pip: [plotly==5.24.1]
#   apt: [graphviz]

tls:
  mode: self-signed            # self-signed (made on the VM) | letsencrypt
  # domain: hub.example.org    # letsencrypt: a DNS name pointing at the VM
  # email: you@example.org     # letsencrypt: expiry notices

ssh:
  # login_user: ubuntu         # the only ssh login (default: the image's user); trainees get none
  authorized_keys: []          # extra public keys for it (the cloud's key pair is added too)

hub:
  install: venv                # venv (python3-venv + pip) | conda (pinned Miniforge)

packages: []                   # extra apt packages on the VM
files: []                      # extra files: - {{path: /etc/motd, content: "Welcome!"}}

openstack:                     # for `bakery launch` (credentials stay in clouds.yaml)
  # cloud: mycloud             # a clouds.yaml entry (default: $OS_CLOUD)
  flavor: auto                 # or a flavor name; auto = smallest that fits `bakery size`
  # image: bakery-{name}       # or `bakery launch --image ...`
  # networks: [my-network]     # default: the project's own network
  # floating_ip_network: public
  # public_key: ~/.ssh/id_ed25519.pub   # key pair bakery-{name} is made from it
  admin_cidr: 0.0.0.0/0        # who may reach ssh (22); 80/443 are open to all
  count: 1                     # servers; trainees are split among them
"""


def write_starter(path: Path, *, name: str | None = None, force: bool = False) -> Path:
    """Write the starter to ``path`` (never over an existing file unless ``force``)."""
    if name is None:
        stem = re.sub(r"[^a-z0-9-]+", "-", path.stem.lower()).strip("-")
        name = stem if re.fullmatch(WORKSHOP_NAME_RE, stem) else "my-workshop"
    if not re.fullmatch(WORKSHOP_NAME_RE, name):
        raise BakeryError(f"--name {name!r}: use 2-40 lower-case letters, digits and '-'")
    # A link, device or folder is refused even with --force (never written through).
    if check_target(path) and not force:
        raise BakeryError(f"{path} already exists; use --force to replace it")
    sheet = path.with_name(path.stem + ".credentials.csv").name
    text = STARTER.format(name=name, path=path, sheet=sheet, image=versions.USER_IMAGE)
    write_private(path, text, mode=0o644)
    return path
