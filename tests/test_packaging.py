"""Installation: the pins live once, in requirements.txt (runtime) and requirements-dev.txt
(the ``dev`` extra); pyproject.toml (as setuptools resolves it), environment.yml's pip section
and ``make setup`` all install from those two files."""

from __future__ import annotations

import re

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from setuptools.config.pyprojecttoml import apply_configuration, read_configuration
from setuptools.dist import Distribution

from conftest import ROOT


def requirement_lines(name: str) -> list[str]:
    """The requirements of a requirements file: every line but blanks and comments."""
    lines = (line.split("#", 1)[0].strip() for line in (ROOT / name).read_text().splitlines())
    return [line for line in lines if line]


def test_pyproject_dependencies_are_the_requirements_files() -> None:
    dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    runtime, dev = requirement_lines("requirements.txt"), requirement_lines("requirements-dev.txt")
    assert runtime and dev
    assert dist.install_requires == runtime
    assert dist.extras_require == {"dev": dev}
    # every line is a plain pinned requirement (setuptools cannot read pip options) ...
    for line in runtime + dev:
        assert [spec.operator for spec in Requirement(line).specifier] == ["=="], line
    # ... and each package is pinned in one file only
    names = [Requirement(line).name.lower().replace("_", "-") for line in runtime + dev]
    assert len(names) == len(set(names))


def test_environment_yml_installs_the_same_files() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [dep for dep in env["dependencies"] if isinstance(dep, str)]
    pip = [dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict)]
    assert pip == [["-r requirements.txt", "-r requirements-dev.txt", "-e ."]]
    assert sorted(dep.split("=")[0] for dep in conda) == ["pip", "python"]
    python = next(dep for dep in conda if dep.startswith("python="))
    requires = read_configuration(ROOT / "pyproject.toml")["project"]["requires-python"]
    assert python.split("=", 1)[1] in SpecifierSet(requires)


def test_make_setup_installs_the_same_files() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^\.venv/done:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe is not None
    assert "install -q -r requirements.txt -r requirements-dev.txt\n" in recipe.group(1)
    assert "install -q --no-deps -e .\n" in recipe.group(1)
    # the lws oracle: the same command for `make setup` and `make lws` (what conda users run)
    assert "$(LWS_INSTALL)" in recipe.group(1)
    assert re.search(r"^lws:.*\n\t\$\(LWS_INSTALL\)\n", makefile, re.M)
