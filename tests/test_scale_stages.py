"""benchmarks/scale.py `--stages`: it removes the outputs of the measured stages and of those after them, never an
input a measured stage needs; a list that would lack one is refused (exit 2) before anything is removed, naming the
input and the stage to add. On a fabricated F = 0.002 build (228 inputs)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import scale  # noqa: E402
from conftest import make_config  # noqa: E402

from pipeline.core import runner  # noqa: E402
from schemas import layout  # noqa: E402

FRACTION = "0.002"


def _hashes(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def _scale(work: Path, *args: str) -> int:
    return scale.main(["--fraction", FRACTION, "--work", str(work), "--reuse", *args])


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("scale-stages")
    assert _scale(work, "--stages", "") == 0  # fabricates, measures nothing
    return work


@pytest.mark.parametrize("stages, named", [
    ("report", "reads manifest/videos.parquet, which is missing from the build; add `shard` (the stage that writes "
               "it) and the stages after it: --stages shard,annotate,mix,stats,report"),
    ("hico,mix", "add `shard` (the stage that writes it) and the stages after it: --stages shard,hico,mix"),
    ("shard,stats", "reads annotations/grounding_qvhighlights.jsonl, which is removed before measuring; add "
                    "`annotate` (the stage that writes it) and the stages after it: --stages shard,annotate,mix,stats"),
    ("stats,mix", "in pipeline order (mix,stats)"),
    ("shard,mixx", "unknown stage 'mixx'"),
])
def test_a_list_lacking_an_input_is_refused_before_anything_is_removed(fabricated, capsys, stages, named):
    out = fabricated / f"scale-{FRACTION}"
    before = _hashes(out)
    assert _scale(fabricated, "--stages", stages) == 2
    assert named in capsys.readouterr().err
    assert _hashes(out) == before


def _scale_command(work: Path, *args: str) -> subprocess.CompletedProcess:
    """scale.py as a user runs it (its stage children write to its stderr)."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, scale.__file__, "--fraction", FRACTION, "--work", str(work), "--reuse",
                           *args], env=env, capture_output=True, text=True, timeout=600)


def test_report_alone_on_a_complete_build_keeps_every_other_output(fabricated, ray_local, tmp_path):
    out = fabricated / f"scale-{FRACTION}"
    stages = ["shard", "annotate", "mix", "stats"]
    runner.run_build(make_config([fabricated], out, scale.OVERRIDES, stages=stages), quiet=True)
    (out / layout.REPORT_HTML).write_text("a report of an older build")
    before = _hashes(out)

    run = _scale_command(fabricated, "--stages", "report", "--json", str(tmp_path / "r.json"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert list(json.loads((tmp_path / "r.json").read_text())["stages"]) == ["report"]
    after = _hashes(out)
    assert after.pop(layout.REPORT_HTML) != before.pop(layout.REPORT_HTML)  # rendered again
    kept = {rel: h for rel, h in before.items() if not rel.startswith("work/")}
    assert kept and {rel: after.get(rel) for rel in kept} == kept
    assert {layout.MANIFEST_VIDEOS, layout.SHARD_INDEX, layout.STATS_SUMMARY} <= set(kept)

    shutil.rmtree(out / "stats")
    before = _hashes(out)
    run = _scale_command(fabricated, "--stages", "report")
    assert run.returncode == 2
    assert "`report` reads stats, which is missing from the build; add `stats` (the stage that writes it) and the " \
           "stages after it: --stages stats,report" in run.stderr
    assert _hashes(out) == before


def test_set_overrides_the_fabricated_build_and_lives_beside_the_default(fabricated, capsys):
    default = json.loads((fabricated / f"scale-{FRACTION}" / "work/scale-counts.json").read_text())
    assert _scale(fabricated, "--set", "shard.max_samples=4", "--stages", "") == 0
    small = fabricated / f"scale-{FRACTION}-shard.max_samples=4"
    counts = json.loads((small / "work/scale-counts.json").read_text())
    assert counts["videos"] == default["videos"]
    assert counts["shards"] == -(-counts["videos"] // 4) > default["shards"]
    records = [json.loads((small / layout.shard_record_path(i)).read_text()) for i in range(counts["shards"])]
    assert sum(r["nsamples"] for r in records) == counts["videos"] and max(r["nsamples"] for r in records) == 4
    assert json.loads((fabricated / f"scale-{FRACTION}" / "work/scale-counts.json").read_text()) == default

    assert _scale(fabricated, "--set", "shard.max_sample=4", "--stages", "") == 2
    assert "shard.max_sample: unknown key" in capsys.readouterr().err
