"""The project installs as a package: [project] table, one version, a console script."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import distributed_sac

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def requirement_lines(text: str) -> list[str]:
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def test_project_table_names_the_package_version_and_python():
    project = PYPROJECT["project"]
    assert project["name"] == "distributed-sac-ae"
    assert "version" in project["dynamic"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    module, _, name = attr.rpartition(".")
    assert getattr(importlib.import_module(module), name) == distributed_sac.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", distributed_sac.__version__)
    assert project["requires-python"] == ">=3.11"


def test_dependencies_are_the_runtime_pins_of_requirements_txt():
    project = PYPROJECT["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    pinned = requirement_lines((REPO / "requirements.txt").read_text())
    assert sorted(project["dependencies"] + extras) == sorted(pinned)


def test_console_script_is_launch_console(capsys):
    target = PYPROJECT["project"]["scripts"]["distributed-sac"]
    module, _, name = target.partition(":")
    main = getattr(importlib.import_module(module), name)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"distributed-sac {distributed_sac.__version__}"
    assert PYPROJECT["tool"]["setuptools"]["py-modules"] == [module]
