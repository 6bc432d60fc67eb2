"""`longvid audit`: the overview and DuckDB SQL over a real build's tables, on a local folder and on S3 (a real
moto_server), through the installed console entry; queries cannot touch files; credentials never show."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs import cli
from schemas import layout
from conftest import s3_client
from test_stats import mixed_build

LONGVID = Path(sys.executable).with_name("longvid")
ACCESS_KEY = "AKIAAUDITTESTKEY0042"
SECRET_KEY = "audit-secret-2f9c1e7b-never-print-me"

# The three example queries of the README's "Auditing a build" section.
QUERY_REJECTS = "SELECT reason, count(*) AS n FROM rejects GROUP BY reason ORDER BY n DESC, reason"
QUERY_STAGES = ("SELECT stage, sum(samples) AS samples, round(sum(hours), 4) AS hours, sum(visual_tokens) AS "
                "visual_tokens, sum(text_tokens) AS text_tokens FROM stats_stages GROUP BY stage ORDER BY stage")
QUERY_STAGE3 = ("SELECT v.video_id, v.duration_s, count(c.text) AS captions FROM videos v "
                "JOIN stats_videos s USING (video_id) LEFT JOIN captions c USING (video_id) "
                "WHERE list_contains(s.stage_tags, 'stage3') GROUP BY ALL ORDER BY v.duration_s DESC, v.video_id")


@pytest.fixture(scope="module")
def mixed(annotated_build, tmp_path_factory):
    return mixed_build(annotated_build, tmp_path_factory)[0]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sql_json(capsys, out, sql: str) -> list[dict]:
    code, stdout, stderr = run_cli(capsys, "audit", out, "--sql", sql, "--format", "json")
    assert code == 0, stderr
    return [json.loads(line) for line in stdout.splitlines()]


def test_overview_prints_summary_top_reasons_and_tables(mixed, capsys):
    code, stdout, _ = run_cli(capsys, "audit", mixed)
    assert code == 0
    lines = stdout.splitlines()
    for key, value in (("inputs", "11"), ("accepted", "4"), ("rejected", "7")):
        assert any(line.split() == [key, value] for line in lines), (key, stdout)
    top = lines[lines.index(next(line for line in lines if line.startswith("Top reject reasons"))) + 3]
    assert top.split() == ["input", "probe", "unreadable", "4", "57.1", "%"]
    assert any(line.startswith("annotation") and "not valid JSON" in line for line in lines)
    assert any(line.startswith("RANDOM WEIGHTS") for line in lines)
    stage3 = next(line for line in lines if line.startswith("  stage3"))
    stage3_lines = sum(1 for f in (mixed / layout.mixture_dir("stage3")).glob("*.jsonl")
                       for line in f.read_text().splitlines() if line.strip())
    assert stage3.split()[1:4] == [str(stage3_lines), "samples,", "4"]
    # every view, with the row count of the files behind it
    counts = {"videos": pq.read_metadata(mixed / layout.MANIFEST_VIDEOS).num_rows,
              "qa": sum(pq.read_metadata(p).num_rows for p in (mixed / "annotations/qa").glob("*.parquet")),
              "members": sum(pq.read_metadata(p).num_rows for p in (mixed / "mixtures").glob("*/members.parquet"))}
    for view, n in counts.items():
        assert any(line.split()[:3] == [view, f"{n:,}", "rows"] for line in lines), (view, n, stdout)
    for view in ("rejects", "crawl", "captions", "grounding", "annotation_rejects", "hico", "shards",
                 "stats_videos", "stats_rejects", "stats_stages"):
        assert any(line.split()[:1] == [view] for line in lines), view


def test_annotation_stage_tags_list_the_stages_each_annotation_feeds(mixed, capsys):
    expected: dict[tuple[str, str], set[str]] = {}
    for path in (mixed / "mixtures").glob("*/members.parquet"):
        for r in pq.read_table(path).to_pylist():
            expected.setdefault((r["source_table"], r["source_key"]), set()).add(r["stage"])
    got = sql_json(capsys, mixed, "SELECT source_table, source_key, stage_tags FROM annotation_stage_tags")
    assert {(r["source_table"], r["source_key"]): r["stage_tags"] for r in got} == \
        {k: sorted(v) for k, v in expected.items()}
    assert any(len(v) > 1 for v in expected.values())  # an annotation may feed several stages


def test_example_queries_agree_with_the_tables(mixed, capsys):
    rejects = Counter(r["reason"] for r in pq.read_table(mixed / layout.MANIFEST_REJECTS).to_pylist())
    got = sql_json(capsys, mixed, QUERY_REJECTS)
    assert {r["reason"]: r["n"] for r in got} == dict(rejects) and got[0] == {"reason": "unreadable", "n": 4}

    stages = pq.read_table(mixed / layout.stats_table_path("stages")).to_pylist()
    got = {r["stage"]: r for r in sql_json(capsys, mixed, QUERY_STAGES)}
    assert set(got) == {"stage1", "stage2", "stage3", "stage4"}
    for stage, r in got.items():
        lines = sum(1 for f in (mixed / layout.mixture_dir(stage)).glob("*.jsonl")
                    for line in f.read_text().splitlines() if line.strip())
        assert r["samples"] == lines
        assert r["text_tokens"] == sum(s["text_tokens"] for s in stages if s["stage"] == stage)

    captions = Counter(r["video_id"] for p in (mixed / "annotations/captions").glob("*.parquet")
                       for r in pq.read_table(p, columns=["video_id"]).to_pylist())
    got = sql_json(capsys, mixed, QUERY_STAGE3)
    assert [r["video_id"] for r in got] and {r["video_id"]: r["captions"] for r in got} == dict(captions)
    assert [r["duration_s"] for r in got] == sorted((r["duration_s"] for r in got), reverse=True)


def test_hico_view_has_clips_without_token_tensors(mixed, capsys):
    got = sql_json(capsys, mixed, "SELECT * FROM hico ORDER BY video_id, clip_index")
    assert len(got) == 4 and "tokens" not in got[0] and got[0]["stage"] == "stage2" and got[0]["random_init"]


def test_sql_cannot_touch_files(mixed, capsys, tmp_path):
    target = tmp_path / "dump.csv"
    code, _, stderr = run_cli(capsys, "audit", mixed, "--sql", f"COPY videos TO '{target}'")
    assert code == 1 and stderr.startswith("error: SQL:") and "disabled" in stderr
    assert not target.exists()
    code, _, stderr = run_cli(capsys, "audit", mixed, "--sql",
                              f"SELECT * FROM read_parquet('{mixed / layout.MANIFEST_VIDEOS}')")
    assert code == 1 and "disabled" in stderr
    code, _, stderr = run_cli(capsys, "audit", mixed, "--sql", "SELECT * FROM vidoes")
    assert code == 1 and "vidoes" in stderr and "Traceback" not in stderr


def test_not_a_build_is_a_clear_error(tmp_path, capsys):
    code, _, stderr = run_cli(capsys, "audit", tmp_path)
    assert code == 1 and "not a LongVid build output" in stderr


def _console(*args, env=None) -> subprocess.CompletedProcess:
    assert LONGVID.exists(), f"console entry {LONGVID} missing: run `make setup` (pip install -e .)"
    return subprocess.run([str(LONGVID), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def test_console_entry_runs_a_query(mixed):
    done = _console("audit", mixed, "--sql", "SELECT count(*) AS n FROM videos", "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ['"n"', "4"]


# ---------------------------------------------------------------------------------------------------------------
# S3


@pytest.fixture(scope="module")
def s3_mixed(mixed, moto_endpoint):
    """The mixed build uploaded to s3://audit/build on a real moto_server."""
    client = s3_client(moto_endpoint)
    client.create_bucket(Bucket="audit")
    for path in sorted(mixed.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), "audit", f"build/{path.relative_to(mixed).as_posix()}")
    return moto_endpoint, client, "s3://audit/build"


def _secret_env() -> dict:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    env.pop("AWS_ENDPOINT_URL", None)
    return env


def _no_secrets(*texts: str) -> None:
    for text in texts:
        assert ACCESS_KEY not in text and SECRET_KEY not in text


def test_s3_output_audits_like_the_local_one(mixed, s3_mixed, capsys):
    endpoint, _, uri = s3_mixed
    env = _secret_env()
    remote = _console("audit", uri, "--s3-endpoint-url", endpoint, env=env)
    local = _console("audit", mixed)
    assert remote.returncode == 0, remote.stderr
    _no_secrets(remote.stdout, remote.stderr)
    assert remote.stdout.splitlines()[0] == f"LongVid build {uri}"
    assert remote.stdout.splitlines()[1:] == local.stdout.splitlines()[1:]
    for sql in (QUERY_REJECTS, QUERY_STAGES, QUERY_STAGE3, "SELECT video_id, clip_index FROM hico ORDER BY 1"):
        got = _console("audit", uri, "--s3-endpoint-url", endpoint, "--sql", sql, "--format", "json", env=env)
        assert got.returncode == 0, got.stderr
        _no_secrets(got.stdout, got.stderr)
        assert got.stdout == _console("audit", mixed, "--sql", sql, "--format", "json").stdout
    missing = _console("audit", "s3://no-such-bucket/build", "--s3-endpoint-url", endpoint, env=env)
    assert missing.returncode == 1 and missing.stderr.startswith("error:") and "Traceback" not in missing.stderr
    _no_secrets(missing.stdout, missing.stderr)


def test_s3_report_is_written_to_the_bucket(s3_mixed):
    endpoint, client, uri = s3_mixed
    done = _console("report", uri, "--s3-endpoint-url", endpoint, "--set", "report.gallery_videos=2", env=_secret_env())
    assert done.returncode == 0, done.stderr
    _no_secrets(done.stdout, done.stderr)
    html = client.get_object(Bucket="audit", Key=f"build/{layout.REPORT_HTML}")["Body"].read().decode()
    _no_secrets(html)
    assert html.count('class="card"') == 2 and html.count('class="thumb"') == 2 * 4  # frames streamed from S3 tars


def test_top_reasons_before_the_stats_stage_match_the_stats_table(mixed, capsys, tmp_path):
    """A build the `stats` stage has not run on counts its reject reasons from the manifest and annotation rejects:
    the overview prints the same top reasons as from stats/rejects.parquet."""
    def top_reasons(out) -> list[str]:
        code, stdout, stderr = run_cli(capsys, "audit", out)
        assert code == 0, stderr
        lines = stdout.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("Top reject reasons"))
        return lines[start:lines.index("", start)]

    before_stats = tmp_path / "build"
    shutil.copytree(mixed, before_stats)
    for name in layout.STATS_TABLES:
        (before_stats / layout.stats_table_path(name)).unlink()
    assert top_reasons(before_stats) == top_reasons(mixed)
