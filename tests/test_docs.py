"""The documentation a new engineer reads points at things that exist: every relative link resolves, every file path
and module it names is in the checkout, and the README stays a front door (at most 20 KB)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "benchmarks").glob("*.md")])
PACKAGES = ("jobs", "pipeline", "annotators", "compressors", "schemas")

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# A path inside the checkout as docs write it: `pipeline/ingest/scenes.py`, benchmarks/ingest.py, configs/x.yaml
FILE_PATH = re.compile(r"(?<![\w./-])((?:jobs|pipeline|annotators|compressors|schemas|benchmarks|configs|scripts|tests|"
                       r"docs)/[\w./-]*\.(?:py|yaml|md|sh|json))\b")
# Paths written as examples, not as files of the checkout: configs/X.yaml, shards/<name>.tar, part-*.parquet
PLACEHOLDER = re.compile(r"[<*]|/(?:[A-Z]|my[\w-]*)\.\w+$")
# A dotted module in backticks: `pipeline.loader.dataset.LongVidDataset`, `compressors.encoder`
MODULE = re.compile(r"`((?:jobs|pipeline|annotators|compressors|schemas)(?:\.\w+)+)")


def _doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def relative_links(text: str) -> list[str]:
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def resolved_modules(dotted: str) -> int:
    """How many leading components of a dotted name are a package or module of the checkout."""
    n, here = 0, ROOT
    for part in dotted.split("."):
        if (here / part).is_dir() and (here / part / "__init__.py").exists():
            here, n = here / part, n + 1
        elif (here / f"{part}.py").exists():
            return n + 1
        else:
            break
    return n


def test_the_docs_exist():
    names = {_doc_id(p) for p in DOCS}
    for required in ("README.md", "docs/ARCHITECTURE.md", "docs/stages.md", "docs/outputs.md", "docs/config.md",
                     "benchmarks/RESULTS.md"):
        assert required in names


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_relative_links_resolve(doc):
    broken = []
    for target in relative_links(doc.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0]
        if path and not (doc.parent / path).exists():
            broken.append(target)
    assert not broken, f"{_doc_id(doc)} links to missing files: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_named_files_and_modules_exist(doc):
    text = doc.read_text(encoding="utf-8")
    missing = sorted({p for p in FILE_PATH.findall(text) if not PLACEHOLDER.search(p) and not (ROOT / p).exists()})
    assert not missing, f"{_doc_id(doc)} names files that do not exist: {missing}"
    stale = sorted({m for m in MODULE.findall(text) if resolved_modules(m) < 2})
    assert not stale, f"{_doc_id(doc)} names modules that do not exist: {stale}"


def test_readme_is_a_front_door():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 20 * 1024, f"README.md is {size} bytes; move reference material to docs/"


def test_the_checker_catches_what_it_is_for(tmp_path):
    assert relative_links("[a](docs/x.md) [b](https://e.org) [c](#here) ![d](img/p.png \"t\")") == \
        ["docs/x.md", "img/p.png"]
    assert FILE_PATH.findall("see pipeline/loader_dataset.py and `schemas/config.py`.") == \
        ["pipeline/loader_dataset.py", "schemas/config.py"]
    assert PLACEHOLDER.search("configs/X.yaml") and not PLACEHOLDER.search("configs/example.yaml")
    assert resolved_modules("pipeline.loader.dataset.LongVidDataset") == 3
    assert resolved_modules("pipeline.loader_dataset") == 1  # an old flat module name: stale
    assert resolved_modules("schemas.sampling") == 2
