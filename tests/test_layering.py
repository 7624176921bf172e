"""The layering: folders by role, each importing only from the folders below it; Ray only in
``remote/`` (the algorithm, environments, replay and run records are testable without it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "distributed_sac"
LEVELS = {"config": 0, "agent": 1, "envs": 2, "replay": 3, "weights": 3, "run": 4, "remote": 5}
"""Each role folder's floor: a module imports from its own folder and from lower floors only."""
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)
IDS = [str(p.relative_to(PACKAGE)) for p in MODULES]


def folder_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0]


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names, at any depth
    (``from distributed_sac.envs import dmc`` names ``distributed_sac.envs.dmc``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import (the tree uses absolute ones)"
            module = node.module or ""
            names.add(module)
            if module.startswith("distributed_sac"):
                names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_every_module_lives_in_a_role_folder():
    flat = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert flat == []
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(LEVELS)
    assert {folder_of(p) for p in MODULES} == set(LEVELS)


def upward(own: str, names: set[str]) -> set[str]:
    """The names among ``names`` that a module in folder ``own`` may not import: modules of
    another folder on the same floor or a higher one."""
    bad = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != "distributed_sac" or len(parts) < 2 or parts[1] not in LEVELS:
            continue
        if parts[1] != own and LEVELS[parts[1]] >= LEVELS[own]:
            bad.add(name)
    return bad


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_imports_go_down_the_floors_only(path: Path):
    own = folder_of(path)
    bad = upward(own, imported_modules(path))
    assert not bad, f"{own}/{path.name} imports from {sorted(bad)} (floor {LEVELS[own]})"


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_no_ray_outside_remote(path: Path):
    if folder_of(path) == "remote":
        return
    bad = {name for name in imported_modules(path) if name == "ray" or name.startswith("ray.")}
    assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {sorted(bad)}"


def test_the_checks_catch_an_upward_import(tmp_path):
    """The floor check itself, on a module that breaks it three ways."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import ray\n"
        "from distributed_sac.replay.buffer import ReplayBuffer\n"
        "from distributed_sac.weights import board\n"
        "from distributed_sac.config.data import Chunk\n"
    )
    names = imported_modules(bad)
    assert "ray" in names
    assert upward("agent", names) == {
        "distributed_sac.replay.buffer",
        "distributed_sac.replay.buffer.ReplayBuffer",
        "distributed_sac.weights",
        "distributed_sac.weights.board",
    }
    assert upward("replay", names) == {"distributed_sac.weights", "distributed_sac.weights.board"}
    assert upward("run", names) == set()


MAX_LINES = 400
"""docs/design.md's module size: one concept per module, split before this many lines."""
SOURCES = sorted([*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "benchmarks").glob("*.py")])


def test_every_module_stays_below_the_split_size():
    root = PACKAGE.parent
    long = {
        str(p.relative_to(root)): n
        for p in SOURCES
        if (n := len(p.read_text().splitlines())) >= MAX_LINES
    }
    assert not long, f"modules of {MAX_LINES}+ lines (split them by concept): {long}"
