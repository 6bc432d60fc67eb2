"""The layout rules a new engineer relies on: imports point one way, pipeline/ stays grouped, the entry points run
without sys.path edits."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from conftest import ROOT

# Each package may import itself and the packages after it, never one before it.
LAYERS = ["jobs", "pipeline", "annotators", "compressors", "schemas"]


def upward_imports() -> list[str]:
    upward = []
    for rank, package in enumerate(LAYERS):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for imported in {name.split(".")[0] for name in names} & set(LAYERS):
                    if LAYERS.index(imported) < rank:
                        upward.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {imported}")
    return upward


def test_imports_point_one_way():
    # In a fresh interpreter: CPython 3.11's AST conversion keeps global state that other threads of a busy test
    # process (Ray, servers) can leave inconsistent ("SystemError: AST constructor recursion depth mismatch").
    script = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_layout; "
              "print(json.dumps(test_layout.upward_imports()))")
    proc = subprocess.run([sys.executable, "-c", script, str(ROOT / "tests")], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


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


def test_stages_without_a_model_import_no_torch():
    """Every module the ingest, shard, mix, stats and report drivers and tasks import leaves torch unloaded: torch
    costs a driver ~0.5 GB of RSS and seconds of start-up (the `compressors` package resolves its public names
    lazily, so `compressors.arrow_fs` does not pull in token merging)."""
    packages = ["core", "io", "ingest", "mix", "stats", "report", "stages", "niah"]
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for package in packages for p in sorted((ROOT / "pipeline" / package).rglob("*.py"))]
    modules += ["pipeline.audit", "pipeline.sampling", "compressors.arrow_fs", "compressors.dtypes",
                "compressors.token_store", "compressors.weights_hash"]
    script = ("import importlib, json, sys\n"
              "for name in sys.argv[1:]: importlib.import_module(name)\n"
              "print(json.dumps(sorted(m for m in ('torch', 'transformers') if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [], f"imported by one of {len(modules)} modules"
    # the public API still resolves
    proc = subprocess.run([sys.executable, "-c", "from compressors import HicoReader, merge_clip_tokens, VideoTokens"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
