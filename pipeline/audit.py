"""`longvid audit OUT`: the build summary and top reject reasons, and DuckDB SQL over the output's Parquet tables.

Every table is registered as a lazy pyarrow dataset (local files, or S3 through pyarrow's client with the standard
AWS credential chain), so DuckDB reads only the columns and row groups a query needs and no DuckDB extension is
downloaded. The connection is locked before the query runs: no file or network access from SQL, so a query can
only read the registered views, never change the build.
"""

from __future__ import annotations

import io
import json
import sys
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable

import pyarrow as pa
import pyarrow.dataset as ds

from pipeline.core import summary as build_summary
from pipeline.stats import summary as stats_summary
from pipeline.stats import tables as stats
from pipeline.stats.sources import BuildOutput
from schemas import layout, tables
from schemas import stats as stats_schema
from schemas.errors import LongVidError
from schemas.mixture import MIX_MEMBERS

TOP_REASONS = 10


class NotABuild(LongVidError, RuntimeError):
    pass


class QueryError(LongVidError, RuntimeError):
    """DuckDB refused or failed the query (the message is DuckDB's)."""

    label = "error: SQL"


@dataclass(frozen=True)
class View:
    name: str
    describes: str
    files: Callable[[BuildOutput], list[str]]  # relative paths of the Parquet files behind it
    schema: pa.Schema  # used when there are no files yet, so the view exists with its columns in every build


def _one(relative: str) -> Callable[[BuildOutput], list[str]]:
    return lambda out: [relative] if out.exists(relative) else []


def _annotation(table: str) -> Callable[[BuildOutput], list[str]]:
    return lambda out: out.parquet_parts(layout.annotation_dir(table))


def _hico_files(out: BuildOutput) -> list[str]:
    return [p for stage in out.hico_stages()
            for p in out.parquet_parts(layout.hico_dir(stage), exclude=(layout.HICO_INDEX_NAME,))]


def _members_files(out: BuildOutput) -> list[str]:
    return [layout.mixture_members_path(stage) for stage in out.mixture_stages()]


def _without_tokens(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f for f in schema if f.name != tables.HICO_TOKEN_COLUMN])


VIEWS = (
    View("videos", "accepted videos (manifest/videos.parquet)", _one(layout.MANIFEST_VIDEOS), tables.VIDEOS),
    View("rejects", "rejected inputs with reason and message (manifest/rejects.parquet)",
         _one(layout.MANIFEST_REJECTS), tables.REJECTS),
    View("crawl", "every input the crawl listed (manifest/crawl.parquet)", _one(layout.MANIFEST_CRAWL), tables.CRAWL),
    View("captions", "clip and video captions (annotations/captions)", _annotation("captions"), tables.CAPTIONS),
    View("qa", "question-answer pairs (annotations/qa)", _annotation("qa"), tables.QA),
    View("grounding", "temporal grounding labels (annotations/grounding)", _annotation("grounding"), tables.GROUNDING),
    View("annotation_rejects", "model outputs that failed validation (annotations/rejects)", _annotation("rejects"),
         tables.ANNOTATION_REJECTS),
    View("hico", "HiCo clips of every encoded stage, without the token tensors (read those with HicoReader)",
         _hico_files, _without_tokens(tables.hico_schema(1))),
    View("members", "which annotation feeds which curriculum stage, task and training record "
         "(mixtures/<stage>/members.parquet)", _members_files, MIX_MEMBERS),
    View("shards", "per shard: samples, bytes, sha256, hours (stats/shards.parquet)",
         _one(layout.stats_table_path("shards")), stats_schema.SHARDS),
    View("stats_videos", "per video: probe fields, scenes, frames per stage, annotations per task, stage_tags, "
         "HiCo clips (stats/videos.parquet)", _one(layout.stats_table_path("videos")), stats_schema.VIDEOS),
    View("stats_rejects", "per reject reason, inputs and model outputs (stats/rejects.parquet)",
         _one(layout.stats_table_path("rejects")), stats_schema.REJECTS),
    View("stats_stages", "per curriculum stage and task: samples, hours, visual and text tokens "
         "(stats/stages.parquet)", _one(layout.stats_table_path("stages")), stats_schema.STAGES),
)


# Views defined in SQL over the ones above: (name, what it holds, query).
DERIVED_VIEWS = (
    ("annotation_stage_tags", "per annotation row: the curriculum stages it feeds (from members)",
     "SELECT source_table, source_key, video_id, list(DISTINCT stage ORDER BY stage) AS stage_tags "
     "FROM members GROUP BY source_table, source_key, video_id"),
)


def open_build(out_uri: str) -> BuildOutput:
    out = BuildOutput(out_uri)
    if not out.exists(layout.MANIFEST_CRAWL):
        raise NotABuild(f"{out_uri} holds no {layout.MANIFEST_CRAWL}: not a LongVid build output, or its ingest "
                        "stages have not run yet")
    return out


def datasets(out: BuildOutput) -> dict[str, ds.Dataset | pa.Table]:
    """view name -> a lazy dataset over its files (an empty table of its schema when it has none)."""
    filesystem, path_of = out.arrow_filesystem()
    found = {}
    for view in VIEWS:
        files = [path_of(p) for p in view.files(out)]
        if not files:
            found[view.name] = view.schema.empty_table()
            continue
        schema = ds.dataset(files[:1], filesystem=filesystem, format="parquet").schema
        found[view.name] = ds.dataset(files, filesystem=filesystem, format="parquet",
                                      schema=_without_tokens(schema))
    return found


def connect(sources: dict):
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    for name, source in sources.items():
        con.register(name, source)
    for name, _, sql in DERIVED_VIEWS:
        con.execute(f"CREATE VIEW {name} AS {sql}")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def query(out_uri: str, sql: str) -> pa.Table:
    import duckdb

    con = connect(datasets(open_build(out_uri)))
    try:
        result = con.sql(sql)
        return result.to_arrow_table() if result is not None else pa.table({})
    except duckdb.Error as e:
        raise QueryError(str(e)) from None


def _rows(table: pa.Table) -> list[dict]:
    """Python rows with map columns as dicts (pyarrow gives a map as a list of key-value pairs)."""
    maps = [f.name for f in table.schema if pa.types.is_map(f.type)]
    rows = table.to_pylist()
    for row in rows:
        for name in maps:
            if row[name] is not None:
                row[name] = dict(row[name])
    return rows


def _json_value(value):
    """DuckDB sums integers into HUGEINT (a decimal in Arrow): write numbers as numbers, anything else as text."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def format_table(table: pa.Table, fmt: str, max_rows: int) -> str:
    if fmt == "csv":
        import pyarrow.csv as pacsv

        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        return buf.getvalue().decode()
    if fmt == "json":
        return "".join(json.dumps(row, default=_json_value, ensure_ascii=False) + "\n" for row in _rows(table))
    return _text_table(table, max_rows)


def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = json.dumps(value, default=str, ensure_ascii=False) if isinstance(value, (list, dict, tuple)) else str(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _text_table(table: pa.Table, max_rows: int) -> str:
    rows = _rows(table.slice(0, max_rows))
    cells = [[_cell(r[c]) for c in table.column_names] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(table.column_names)]
    numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
               for t in table.schema.types]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(table.column_names), line(["-" * w for w in widths])] + [line(c) for c in cells]
    if table.num_rows > max_rows:
        out.append(f"... {table.num_rows - max_rows} more rows (use --max-rows or --format csv)")
    out.append(f"({table.num_rows} rows)")
    return "\n".join(out)


def _reject_reasons(out: BuildOutput, con) -> list[dict]:
    """stats/rejects.parquet's rows, or the same rows counted from the manifest and annotation rejects when the
    `stats` stage has not run."""
    written = layout.stats_table_path("rejects")
    if out.exists(written):
        return out.read_table(written).to_pylist()
    inputs = con.sql("SELECT stage, reason, count(*), coalesce(sum(bytes), 0) FROM rejects GROUP BY stage, reason "
                     "ORDER BY stage, reason").fetchall()
    outputs = Counter()
    for r in con.sql("SELECT task, reason, count(*) AS n FROM annotation_rejects GROUP BY ALL").to_arrow_table() \
            .to_pylist():
        outputs[(r["task"], stats_schema.reason_group(r["reason"]))] += r["n"]
    return stats.reject_rows(inputs, sum(n for _, _, n, _ in inputs), outputs)


def overview(out_uri: str) -> str:
    """What `longvid audit OUT` prints: the summary, top reject reasons and the tables --sql can query."""
    out = open_build(out_uri)
    sources = datasets(out)
    con = connect(sources)
    s = stats_summary.read(out)
    lines = [f"LongVid build {out.root}", ""]
    rows = [("inputs", s["inputs"]), ("accepted", s["accepted"]), ("rejected", s["rejected"])]
    if s["inputs"] != s["accepted"] + s["rejected"]:
        rows.append(("DOES NOT RECONCILE", "inputs != accepted + rejected"))
    rows.append(("hours of video", f"{s['hours']:.3f}"))
    if "shards" in s:
        rows.append(("shards", f"{s['shards']} ({build_summary.human_bytes(s['shard_bytes'])})"))
    rows += _stats_rows(s.get("stats"))
    width = max(len(k) for k, _ in rows)
    lines += [f"{k:<{width}}  {v}" for k, v in rows]

    reasons = _reject_reasons(out, con)
    lines += ["", f"Top reject reasons ({min(len(reasons), TOP_REASONS)} of {len(reasons)})"]
    if reasons:
        top = [{"scope": r["scope"], "stage": r["stage"], "task": r["task"] or "", "reason": r["reason"],
                "count": r["count"], "share": f"{100 * r['share']:.1f} %"} for r in reasons[:TOP_REASONS]]
        lines.append(_text_table(pa.Table.from_pylist(top), TOP_REASONS))
    else:
        lines.append("none")

    lines += ["", "Tables for --sql (DuckDB):"]
    name_width = max(len(name) for name in [v.name for v in VIEWS] + [d[0] for d in DERIVED_VIEWS])
    for view in VIEWS:
        source = sources[view.name]
        n = source.num_rows if isinstance(source, pa.Table) else source.count_rows()
        lines.append(f"  {view.name:<{name_width}}  {n:>9,} rows  {view.describes}")
    for name, describes, _ in DERIVED_VIEWS:
        n = con.sql(f"SELECT count(*) FROM {name}").fetchall()[0][0]
        lines.append(f"  {name:<{name_width}}  {n:>9,} rows  {describes}")
    return "\n".join(lines)


def _stats_rows(section: dict | None) -> list[tuple[str, object]]:
    if section is None:
        return [("stats tables", "not built (run the `stats` stage)")]
    a = section["annotations"]
    rows = [("annotations", f"{a['captions']} captions, {a['qa']} QA, {a['grounding']} grounding, "
                            f"{a['rejected_outputs']} rejected model outputs")]
    if section["hico_clips"]:
        rows.append(("HiCo clips", ", ".join(f"{k}: {v}" for k, v in section["hico_clips"].items())))
    curriculum = section["curriculum"]
    if isinstance(curriculum, str):
        rows.append(("curriculum", f"mixtures {curriculum}"))
    else:
        rows.append(("curriculum", f"{len(curriculum)} stages (mixtures/<stage>/<task>.jsonl)"))
        for stage, c in curriculum.items():
            rows.append((f"  {stage}", f"{c['samples']} samples, {c['videos']} videos, {c['hours']:.3f} h, "
                                       f"{c['visual_tokens']:,} visual / {c['text_tokens']:,} text tokens"))
    if section["random_init_videos"]:
        rows.append(("RANDOM WEIGHTS", f"{section['random_init_videos']} videos have rows made by random-weight "
                                       "models (random_init): demo/test data, not for training"))
    rows.append(("stats tables", "up to date" if section["up_to_date"] else section.get("note", "stale")))
    return rows


def print_query(out_uri: str, sql: str, fmt: str = "table", max_rows: int = 100, stream=None) -> None:
    stream = stream or sys.stdout
    stream.write(format_table(query(out_uri, sql), fmt, max_rows))
    if fmt == "table":
        stream.write("\n")
