"""The layering: the algorithm, environments and replay never import Ray."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "distributed_sac"
PURE = sorted(p for p in PACKAGE.rglob("*.py") if "remote" not in p.relative_to(PACKAGE).parts)


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names, at any depth."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # A relative import inside the package is taken as one from its top.
            prefix = "distributed_sac." if node.level else ""
            names.add(prefix + (node.module or ""))
    return names


def test_the_pure_layer_is_found():
    names = {p.name for p in PURE}
    assert {"sac_ae.py", "replay.py", "envs.py", "rollout.py", "study.py", "sweep_plan.py"} <= names
    assert "driver.py" not in names


@pytest.mark.parametrize("path", PURE, ids=[str(p.relative_to(PACKAGE)) for p in PURE])
def test_no_ray_outside_remote(path: Path):
    bad = {
        name
        for name in imported_modules(path)
        if name == "ray" or name.startswith(("ray.", "distributed_sac.remote"))
    }
    assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {sorted(bad)}"
