"""The layers point one way: roaming (the base) imports none of the apps standing on it; only the console, at the
site level, composes them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# app -> the apps it may not import (those standing on it, and the console composing them all)
FORBIDDEN = {
    "roaming": {"cards", "stations", "charging", "tariffs", "console"},
    "tariffs": {"console"},
    "cards": {"console"},
    "stations": {"console"},
    "charging": {"console"},
}


def imported_apps(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("app", sorted(FORBIDDEN))
def test_an_app_never_imports_the_layers_above_it(app):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_apps(path) & FORBIDDEN[app])
        for path in (ROOT / app).rglob("*.py")
        if "migrations" not in path.parts and imported_apps(path) & FORBIDDEN[app]
    }
    assert offenders == {}


def test_the_demo_loader_lives_at_the_site_level():
    assert not (ROOT / "roaming/management/commands/load_demo.py").exists()
    assert (ROOT / "console/management/commands/load_demo.py").exists()
