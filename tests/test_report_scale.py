"""The report at full size: its figures are aggregates computed in tasks over groups of shards, equal to an
independent count of the annotation tables; the driver's storage requests do not grow with the shards; the gallery
shows the videos of the reference pick rule (sorted by video_id, sharded only, random.Random(seed).sample)."""

from __future__ import annotations

import random
import shutil
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_stats import mixed_build

from pipeline.core import ray_runtime
from pipeline.io import storage
from pipeline.report import gallery as report_gallery
from pipeline.report import plots as report_plots
from pipeline.report.data import collect
from pipeline.stats.sources import BuildOutput
from schemas import layout
from schemas import stats as stats_schema
from schemas.config import ReportConfig

TABLES = ("captions", "qa", "grounding", "rejects")
COUNTED = ("exists", "size", "read_bytes", "read_range", "open_read", "list_files", "read_parquet")


@pytest.fixture(scope="module")
def mixed(annotated_build, tmp_path_factory) -> Path:
    return mixed_build(annotated_build, tmp_path_factory)[0]


def expected_facts(out: Path) -> tuple[Counter, Counter, dict[str, list[int]]]:
    """(rows, random-weight rows, word counts per kind) of the annotation tables, counted row by row in Python."""
    rows, random_rows = Counter(), Counter()
    words: dict[str, list[int]] = {"clip captions": [], "video summaries": [], "QA questions": [], "QA answers": [],
                                   "grounding queries": []}
    for table in TABLES:
        for path in sorted((out / layout.annotation_dir(table)).glob("*.parquet")):
            for r in pq.read_table(path).to_pylist():
                rows[table] += 1
                random_rows[table] += bool(r["random_init"])
                if table == "captions":
                    kind = "clip captions" if r["level"] == "clip" else "video summaries"
                    words[kind].append(len((r["text"] or "").split()))
                elif table == "qa":
                    words["QA questions"].append(len((r["question"] or "").split()))
                    words["QA answers"].append(len((r["answer"] or "").split()))
                elif table == "grounding":
                    words["grounding queries"].append(len((r["query"] or "").split()))
    return rows, random_rows, words


@pytest.mark.parametrize("in_ray_tasks", [True, False])
def test_figures_equal_an_independent_count_of_the_annotation_tables(mixed, monkeypatch, in_ray_tasks):
    if not in_ray_tasks:  # the report made outside the job (`longvid report`): the same functions, in this process
        monkeypatch.setattr(ray_runtime, "ray_running", lambda: False)
    rows, random_rows, words = expected_facts(mixed)
    assert rows["captions"] and rows["qa"] and rows["grounding"]
    facts = collect(BuildOutput(str(mixed)), ReportConfig()).facts
    assert {t: facts.rows[t] for t in TABLES} == {t: rows[t] for t in TABLES}
    assert {t: facts.random_rows[t] for t in TABLES} == {t: random_rows[t] for t in TABLES}
    for kind, values in words.items():
        assert dict(facts.lengths[kind]) == dict(Counter(values)), kind
        if values:  # the median drawn on the plot and printed under n=
            assert report_plots.median_of_counts(facts.lengths[kind]) == statistics.median(values), kind
    html = (mixed / layout.REPORT_HTML).read_text(encoding="utf-8")
    assert f"{random_rows['captions']:,} of {rows['captions']:,} captions" in html
    assert f"{random_rows['qa']:,} of {rows['qa']:,} QA pairs" in html


@pytest.mark.parametrize("counts", [{1: 1}, {3: 2}, {1: 1, 4: 1}, {2: 3, 9: 1}, {5: 2, 1: 2, 7: 1}, {0: 4, 10: 4}])
def test_median_of_counts_is_the_median_of_the_values(counts):
    values = [v for v, n in counts.items() for _ in range(n)]
    assert report_plots.median_of_counts(counts) == statistics.median(values)


def reference_pick(rows: list[dict], count: int, seed: int) -> list[dict]:
    """The gallery's pick rule as first written, over Python rows."""
    candidates = sorted((v for v in rows if v.get("shard")), key=lambda v: v["video_id"])
    chosen = random.Random(seed).sample(candidates, min(count, len(candidates)))
    return sorted(chosen, key=lambda v: v["video_id"])


@pytest.mark.parametrize("seed", [0, 1, 7, 12345])
@pytest.mark.parametrize("count", [0, 1, 6, 40, 500])
@pytest.mark.parametrize("in_id_order", [False, True])  # the shard stage writes the manifest in video_id order
def test_gallery_pick_matches_the_reference_rule(seed, count, in_id_order):
    rng = random.Random(seed + 99)
    ids = [f"v{rng.randrange(10 ** 6):07d}" for _ in range(300)]
    ids = sorted(dict.fromkeys(ids)) if in_id_order else list(dict.fromkeys(ids))
    if not in_id_order:
        rng.shuffle(ids)
    rows = [{"video_id": v, "shard": rng.choice([None, "", "longvid-000000.tar", "longvid-000001.tar"]),
             "duration_s": rng.uniform(1, 3600)} for v in ids]
    table = pa.Table.from_pylist(rows)
    expected = reference_pick(rows, count, seed)
    assert report_gallery.pick(table, count, seed) == expected
    for rows_per_batch in (1, 7, 64):  # read in batches, as the report reads the manifest
        def batches(columns, n=rows_per_batch):
            return iter(table.select(columns).slice(i, n) for i in range(0, table.num_rows, n))

        assert report_gallery.pick_from_batches(batches, count, seed, table.column_names) == expected


def count_driver_requests(monkeypatch) -> Counter:
    """Counts this process's calls into pipeline.io.storage (Ray workers are other processes)."""
    calls: Counter = Counter()
    for name in COUNTED:
        real = getattr(storage, name)

        def counted(*a, _name=name, _real=real, **k):
            calls[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(storage, name, counted)
    return calls


def add_shards(out: Path, copies: int) -> int:
    """Copies of every annotation part and HiCo record under new shard names (as if the build had more shards);
    returns the parts and records added."""
    added = 0
    for folder in [layout.annotation_dir(t) for t in TABLES] + [
            str(p.relative_to(out)) for p in (out / layout.HICO_RECORDS_DIR).iterdir() if p.is_dir()]:
        files = sorted(f for f in (out / folder).iterdir() if f.is_file())
        for i in range(copies):
            for f in files:
                shutil.copy(f, f.with_name(f"copy{i}-{f.name}"))
                added += 1
    return added


def test_driver_storage_requests_do_not_grow_with_shards(mixed, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(mixed, out)
    cfg = ReportConfig(gallery_videos=2)

    def report_requests(in_ray_tasks: bool) -> tuple[int, dict]:
        with monkeypatch.context() as m:
            if not in_ray_tasks:
                m.setattr(ray_runtime, "ray_running", lambda: False)
            calls = count_driver_requests(m)
            facts = collect(BuildOutput(str(out)), cfg).facts
        return sum(calls.values()), dict(facts.rows)

    before, rows_before = report_requests(True)
    added = add_shards(out, 3)
    after, rows_after = report_requests(True)
    in_driver, rows_in_driver = report_requests(False)
    assert added >= 4 * 3
    assert rows_after == rows_in_driver == {t: 4 * n for t, n in rows_before.items()}  # the tasks read the copies
    assert after == before
    # the same report without Ray reads every part in this process: the counter sees per-shard reads
    assert in_driver >= after + added


def test_videos_table_read_in_small_batches_gives_the_same_report(mixed, monkeypatch):
    """The stats videos table and the manifest are read a batch at a time: batches of one row give the same figures
    as an independent count over the whole table, and the same report bytes."""
    from pipeline.report.build import build

    cfg = ReportConfig(gallery_videos=2)
    whole = build(str(mixed), cfg)
    monkeypatch.setattr(stats_schema, "TABLE_BATCH_ROWS", 1)
    assert build(str(mixed), cfg) == whole
    facts = collect(BuildOutput(str(mixed)), cfg).videos

    rows = pq.read_table(mixed / layout.stats_table_path("videos")).to_pylist()
    assert len(rows) > 1
    assert facts.totals == {k: sum(r[k] or 0 for r in rows) for k in ("captions", "qa", "grounding",
                                                                      "annotation_rejects")}
    assert facts.counts["sizes"] == dict(Counter((r["width"], r["height"]) for r in rows))
    assert facts.counts["codecs"] == dict(Counter(r["codec"] for r in rows))
    clips: Counter = Counter()
    for r in rows:
        clips.update(dict(r["hico_clips"] or []))
    assert facts.maps["hico_clips"] == dict(sorted(clips.items()))
    durations = np.array([r["duration_s"] for r in rows if r["duration_s"]])
    edges = report_plots.log_bins(durations, cfg.histogram_bins)
    assert np.array_equal(facts.duration.edges, edges)
    assert facts.duration.counts.tolist() == np.histogram(durations, edges)[0].tolist()
    scenes = np.array([r["scenes_per_minute"] for r in rows if r["scenes_per_minute"] is not None])
    counts, edges = np.histogram(scenes, cfg.histogram_bins)
    assert np.array_equal(facts.scenes_per_minute.edges, edges)
    assert facts.scenes_per_minute.counts.tolist() == counts.tolist()


@pytest.mark.parametrize("bins", ["log", 7, 30])
def test_counted_histogram_draws_the_bars_of_ax_hist_over_the_values(bins):
    """The report draws histograms from counts added a batch at a time: the image is the one ax.hist gives over
    all the values, also when values fall on the bin edges."""
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(5, 1.5, 5000), [1.0, 1.0, 60.0, 600.0]])
    edges = report_plots.log_bins(values, 30) if bins == "log" else np.histogram_bin_edges(
        np.array([values.min(), values.max()]), bins)
    values = np.concatenate([values, edges[1:-1]])  # values exactly on inner edges
    counted = report_plots.Histogram(edges)
    for chunk in np.array_split(values, 7):
        counted.add(chunk)

    images = []
    for draw in (lambda ax: ax.hist(values, bins=edges if bins == "log" else bins, color="#3b6ea8"),
                 lambda ax: counted.draw(ax, color="#3b6ea8")):
        fig, (ax,) = report_plots._figure()
        draw(ax)
        images.append(report_plots.png(fig))
    assert images[0] == images[1]


def test_report_is_the_same_whatever_the_shards_per_task(mixed, tmp_path, monkeypatch):
    """A task counts its group's parts of each table together: one task for every shard, or one for all of them,
    gives the same figures (equal to an independent count, an empty part among them) and the same report bytes."""
    from pipeline.report import annotations
    from pipeline.report.build import build

    out = tmp_path / "out"
    shutil.copytree(mixed, out)
    qa = min((out / layout.annotation_dir("qa")).glob("*.parquet"))
    pq.write_table(pq.read_table(qa).slice(0, 0), qa.with_name("longvid-999999.parquet"))  # a shard with no QA
    cfg = ReportConfig(gallery_videos=2)
    rows, random_rows, words = expected_facts(out)
    reports = []
    for per_task in (1, 64):
        monkeypatch.setattr(annotations, "SHARDS_PER_TASK", per_task)
        facts = collect(BuildOutput(str(out)), cfg).facts
        assert {t: facts.rows[t] for t in TABLES} == {t: rows[t] for t in TABLES}
        assert {t: facts.random_rows[t] for t in TABLES} == {t: random_rows[t] for t in TABLES}
        assert {k: dict(c) for k, c in facts.lengths.items()} == {k: dict(Counter(v)) for k, v in words.items()}
        assert facts.qa and facts.captions  # the gallery videos' rows came back
        reports.append(build(str(out), cfg))
    assert reports[0] == reports[1]
