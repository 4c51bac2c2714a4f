"""environment: the Binder-style folder bakery reads, and what each spawner gets from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import fake_lock

from bakery.config.environment import packages, read_folder
from bakery.config.workshop import load_config
from bakery.errors import ConfigError
from bakery.vm.userdata import build_cloud_config
from bakery.workshop import software


def folder(tmp_path: Path, files: dict[str, str]) -> Path:
    env = tmp_path / "env"
    env.mkdir(exist_ok=True)
    for name, text in files.items():
        (env / name).write_text(text)
    return env


def test_the_binder_files_are_read_in_order_each_package_once(tmp_path: Path) -> None:
    env = folder(
        tmp_path,
        {
            "requirements.txt": "# the course\npandas==2.2.3  # pinned\n\nscikit-learn>=1.5,<2\n",
            "apt.txt": "graphviz\n# a comment\nlibgdal-dev\n",
            "install.R": (
                "# R packages\n"
                'install.packages("ggplot2")\n'
                "install.packages(c('dplyr', \"data.table\"), repos = 'https://cran.r-project.org')\n"
                "library(ggplot2)\n"
            ),
            "environment.yml": (
                "name: course\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n"
                "  - numpy>=2\n  - pip\n  - pip:\n      - plotly==5.24.1\n      - pandas==2.2.3\n"
            ),
            "README.md": "not read\n",
        },
    )
    found = read_folder(env)
    assert found.pip == ("plotly==5.24.1", "pandas==2.2.3", "pandas==2.2.3", "scikit-learn<2,>=1.5")
    assert found.conda == ("numpy>=2",)
    assert found.apt == ("graphviz", "libgdal-dev")
    assert found.r == ("ggplot2", "dplyr", "data.table")
    assert found.r_debs() == ("r-cran-ggplot2", "r-cran-dplyr", "r-cran-data.table")
    assert found.files == ("apt.txt", "environment.yml", "install.R", "requirements.txt")
    from bakery.config.environment import Environment

    merged = packages(Environment.model_validate({"from": "./env", "pip": ["tabulate"]}), tmp_path)
    assert merged.pip == ("plotly==5.24.1", "pandas==2.2.3", "scikit-learn<2,>=1.5", "tabulate")


@pytest.mark.parametrize(
    ("files", "words"),
    [
        (
            {"requirements.txt": "pandas\n-r other.txt\n"},
            ["requirements.txt:2", "requirements only"],
        ),
        ({"requirements.txt": "pandas\n--index-url http://x\n"}, ["requirements.txt:2"]),
        (
            {"requirements.txt": "git+https://github.com/x/y\n"},
            ["requirements.txt:1", "requirement"],
        ),
        ({"requirements.txt": "x @ https://example.org/x.whl\n"}, ["requirements.txt:1", "URL"]),
        ({"apt.txt": "graphviz\nrm -rf /\n"}, ["apt.txt:2", "Debian package name"]),
        ({"install.R": "source('setup.R')\n"}, ["install.R:1", "install.packages"]),
        ({"install.R": 'install.packages("bad name")\n'}, ["install.R:1", "CRAN"]),
        ({"environment.yml": "dependencies:\n  - numpy\nchannels: [bioconda]\n"}, ["conda-forge"]),
        ({"environment.yml": "- just a list\n"}, ["environment.yml", "mapping"]),
        ({"environment.yml": "dependencies:\n  - pip:\n      - -e .\n"}, ["requirements only"]),
        (
            {"postBuild": "pip install x\n", "requirements.txt": "x\n"},
            ["postBuild", "does not run"],
        ),
        ({"Dockerfile": "FROM x\n"}, ["Dockerfile", "spawner.image"]),
        ({"runtime.txt": "python-3.12\n"}, ["runtime.txt", "remove it"]),
        ({"README.md": "hello\n"}, ["holds none of"]),
        ({"requirements.txt": b"\xff\xfe".decode("latin-1")}, ["requirements.txt", "requirement"]),
    ],
)
def test_what_bakery_cannot_read_is_refused_with_the_file_and_line(
    tmp_path: Path, files: dict[str, str], words: list[str]
) -> None:
    env = folder(tmp_path, files)
    with pytest.raises(ConfigError) as info:
        read_folder(env)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder"):
        read_folder(tmp_path / "nope")


def _config(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "workshop.yaml"
    config.write_text(text)
    return config


def test_systemd_gets_its_own_environment_and_the_vm_the_apt_and_r_packages(
    tmp_path: Path,
) -> None:
    folder(
        tmp_path,
        {"requirements.txt": "tabulate==0.9.0\n", "install.R": 'install.packages("jsonlite")\n'},
    )
    config = _config(
        tmp_path,
        "name: envs\nos: debian-12\nspawner: {kind: systemd}\nkernels: [r]\n"
        "environment: {from: ./env, apt: [graphviz]}\n",
    )
    fake_lock(config)
    cfg = load_config(config)
    assert software.trainee_requested(cfg)[0].startswith("ipykernel==")  # its own kernel
    doc = build_cloud_config(cfg, stage="bake")
    assert {"graphviz", "r-cran-jsonlite", "r-cran-irkernel"} <= set(doc["packages"])
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    reqs = files["/usr/local/lib/bakery/workshop-requirements.txt"]
    assert reqs.startswith("ipykernel==") and "tabulate==0.9.0 --hash=sha256:" in reqs
    script = files["/usr/local/lib/bakery/workshop-env.sh"]
    assert "/usr/bin/python3 -m venv" in script and "--require-hashes" in script
    assert "ipykernel install --prefix /opt/jupyterhub --name python3" in script
    # It runs after the hub's install (the kernel goes into the hub's environment).
    runcmd = [" ".join(c) for c in doc["runcmd"]]
    assert runcmd.index("/usr/local/lib/bakery/install-hub.sh") < runcmd.index(
        "/usr/local/lib/bakery/workshop-env.sh"
    )


def test_without_python_packages_no_environment_of_their_own(tmp_path: Path) -> None:
    config = _config(
        tmp_path, "name: envs\nspawner: {kind: systemd}\nenvironment: {apt: [graphviz]}\n"
    )
    doc = build_cloud_config(load_config(config), stage="bake")
    assert "graphviz" in doc["packages"]
    assert not any("workshop-env" in f["path"] for f in doc["write_files"])  # no lock needed
