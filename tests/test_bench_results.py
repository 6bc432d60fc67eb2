"""`make bench` writes its tables into benchmarks/RESULTS.md: each benchmark replaces its own marked section and
leaves the hand-written text around it alone."""

from __future__ import annotations

import datetime
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_common", ROOT / "benchmarks" / "bench_common.py")
bench_common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_common)

NOW = datetime.datetime(2026, 12, 1, 17, 5, tzinfo=datetime.timezone.utc)

DOC = """# Benchmark results

Intro written by hand.

## Ingest

Discussion above the table.

<!-- bench:ingest -->
| old | table |
|---|---|
| 1 | 2 |
<!-- /bench:ingest -->

Discussion below the table, also by hand.

## Loader

<!-- bench:loader -->
| loader | old |
<!-- /bench:loader -->
trailing text
"""


def test_replaces_only_the_named_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(DOC)
    table = "| new | table |\n|---|---|\n| 3 | 4 |\n"
    bench_common.write_results_section("ingest", table, command="python benchmarks/ingest.py --quick",
                                       load_start=1.5, path=path, now=NOW)
    text = path.read_text()
    before, rest = DOC.split("<!-- bench:ingest -->")
    after = rest.split("<!-- /bench:ingest -->")[1]
    assert text.startswith(before) and text.endswith(after)  # hand-written text byte for byte
    section = text[len(before):len(text) - len(after)]
    assert section.startswith("<!-- bench:ingest -->\n_Written by `python benchmarks/ingest.py --quick` on "
                              "2026-12-01 17:05 UTC; ")
    assert "load average 1.50 at start" in section
    assert section.endswith("| new | table |\n|---|---|\n| 3 | 4 |\n<!-- /bench:ingest -->")
    assert "| old | table |" not in text
    assert "| loader | old |" in text

    # A second run replaces the section again instead of adding one.
    bench_common.write_results_section("ingest", "| newer |", command="c", path=path, now=NOW)
    text = path.read_text()
    assert text.count("<!-- bench:ingest -->") == 1 and "| new | table |" not in text and "| newer |" in text
    assert text.startswith(before) and text.endswith(after)


def test_missing_section_is_appended_under_its_own_heading(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(DOC)
    bench_common.write_results_section("hico", "| hico |", command="python benchmarks/hico.py", path=path, now=NOW)
    text = path.read_text()
    assert text.startswith(DOC.rstrip("\n"))
    assert ("\n\n## `hico` (written by `make bench`)\n\n<!-- bench:hico -->\n_Written by `python benchmarks/hico.py` "
            "on 2026-12-01 17:05 UTC; ") in text
    assert text.endswith("._\n\n| hico |\n<!-- /bench:hico -->\n")


@pytest.mark.parametrize("broken", [
    "<!-- bench:ingest -->\n| a |\n",                                       # no end marker
    "<!-- /bench:ingest -->\n| a |\n<!-- bench:ingest -->\n",              # reversed
    "<!-- bench:ingest -->\n<!-- /bench:ingest -->\n" * 2,                 # twice
])
def test_broken_markers_are_refused_and_the_file_is_left_alone(tmp_path, broken):
    path = tmp_path / "RESULTS.md"
    path.write_text(broken)
    with pytest.raises(ValueError, match="ingest"):
        bench_common.write_results_section("ingest", "| x |", command="c", path=path)
    assert path.read_text() == broken


def test_run_and_record_writes_what_the_benchmark_printed(tmp_path, capsys):
    path = tmp_path / "RESULTS.md"
    path.write_text(DOC)
    seen = []

    def main(argv):
        seen.append(argv)
        print("| fresh | loader |")
        return 0

    assert bench_common.run_and_record("loader", main, ["--quick", "--results", str(path)]) == 0
    assert seen == [["--quick"]]  # the results options are not passed on
    assert capsys.readouterr().out == "| fresh | loader |\n"  # still printed
    text = path.read_text()
    assert re.search(r"<!-- bench:loader -->\n_Written by `python benchmarks/\S+ --quick` on .*\n\n"
                     r"\| fresh \| loader \|\n<!-- /bench:loader -->", text)

    def failing(argv):
        print("| half | table |")
        return 1

    assert bench_common.run_and_record("loader", failing, ["--results", str(path)]) == 1
    assert bench_common.run_and_record("loader", main, ["--no-results", "--results", str(path)]) == 0
    assert path.read_text() == text  # a failed run or --no-results leaves the file as it was


def test_every_make_bench_script_has_its_section_in_results_md():
    makefile = (ROOT / "Makefile").read_text()
    bench_recipe = makefile.split("\nbench:", 1)[1].split("\n\n", 1)[0]
    scripts = re.findall(r"benchmarks/(\w+)\.py", bench_recipe)
    assert {"ingest", "hico", "annotate", "loader", "preprocess"} <= set(scripts)
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    for name in scripts:
        source = (ROOT / "benchmarks" / f"{name}.py").read_text()
        assert f'run_and_record("{name}", main)' in source, name
        assert results.count(f"<!-- bench:{name} -->") == 1, name
        assert results.count(f"<!-- /bench:{name} -->") == 1, name
        assert results.index(f"<!-- bench:{name} -->") < results.index(f"<!-- /bench:{name} -->")


def test_benchmarks_import_the_project_without_editing_sys_path():
    for name in ("ingest", "hico", "annotate", "loader", "preprocess", "bench_common"):
        assert not re.search(r"sys\.path\.(insert|append)", (ROOT / "benchmarks" / f"{name}.py").read_text()), name
