"""The layout rules a new engineer relies on: imports point one way, pipeline/ stays grouped, the entry points run
without sys.path edits."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from conftest import ROOT

# Each package may import itself and the packages after it, never one before it.
LAYERS = ["jobs", "pipeline", "annotators", "compressors", "schemas"]


def _imported_packages(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def test_imports_point_one_way():
    upward = []
    for rank, package in enumerate(LAYERS):
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, imported in _imported_packages(path):
                if imported in LAYERS and LAYERS.index(imported) < rank:
                    upward.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert upward == []


def test_pipeline_top_level_stays_small():
    modules = sorted(p.name for p in (ROOT / "pipeline").glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= 12, modules


def test_packages_have_no_module_named_like_a_package_prefix():
    """Flat `loader_*` / `mix_*` / `report_*` / `stats_*` files belong in their package."""
    flat = [p.name for p in (ROOT / "pipeline").glob("*_*.py")
            if p.name.split("_")[0] in {"loader", "mix", "report", "stats", "shot"}]
    assert flat == []


@pytest.mark.parametrize("command", [["-m", "jobs.build_longvid"], [str(ROOT / "jobs" / "build_longvid.py")]],
                         ids=["module", "script"])
def test_entry_points_run_from_any_folder(command, tmp_path):
    """Both forms start from a folder that is not the checkout: the installed project is importable as is."""
    proc = subprocess.run([sys.executable, *command, "--stages", "no_such_stage", "--source", str(tmp_path),
                           "--out", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "no_such_stage" in proc.stderr
    assert "Traceback" not in proc.stderr
