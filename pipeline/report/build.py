"""report.html: what an auditor looks at before training on a build — the summary, plots of the corpus and its
annotations, the curriculum mixtures and a sample gallery, in one self-contained file (no network, images inline).

Rows made by random-weight models (`random_init`, tests and demos) are called out at the top, in the curriculum
table and on every gallery caption or QA they produced.
"""

from __future__ import annotations

from collections import defaultdict

from pipeline.io import storage
from pipeline.report import html as h
from pipeline.report import plots as report_plots
from pipeline.report.data import ReportData, collect
from pipeline.stats.sources import BuildOutput
from schemas import layout
from schemas.config import BuildConfig, ReportConfig
from schemas.tables import QA_FAMILIES

CLIP_CAPTIONS_SHOWN = 3
TOP_REJECTS = 12


def _random_banner(d: ReportData) -> str | None:
    f = d.facts
    parts = [f"{f.random_rows[t]:,} of {f.rows[t]:,} {label}" for t, label in
             (("captions", "captions"), ("qa", "QA pairs"), ("grounding", "grounding labels"),
              ("rejects", "rejected outputs")) if f.random_rows[t]]
    if d.hico_random:
        parts.append(f"the HiCo tokens of {', '.join(d.hico_random)}")
    if not parts:
        return None
    return h.banner("warn", "<b>RANDOM-WEIGHT MODELS.</b> Rows marked <code>random_init = true</code> were made by "
                    "tiny random-weight models (tests and demos): " + h.esc("; ".join(parts)) +
                    ". Their text is gibberish and their tokens meaningless: do not train on them. They are marked "
                    + h.badge() + " below.")


def _status(d: ReportData) -> list[str]:
    s = d.summary
    blocks = []
    if d.mismatches:
        items = "".join(f"<li>{h.esc(m)}</li>" for m in d.mismatches)
        blocks.append(h.banner("warn", f"<b>The build's counts do not reconcile.</b><ul>{items}</ul>"))
    elif s["inputs"] == s["accepted"] + s["rejected"]:
        blocks.append(h.banner("ok", f"Counts reconcile: {s['inputs']:,} inputs = {s['accepted']:,} accepted + "
                                     f"{s['rejected']:,} rejected."))
    if d.stats_note:
        blocks.append(h.banner("note", h.esc(d.stats_note)))
    return blocks


def _summary_table(d: ReportData) -> str:
    s, v = d.summary, d.videos
    rows = [["inputs", f"{s['inputs']:,}"], ["accepted videos", f"{s['accepted']:,}"],
            ["rejected inputs", f"{s['rejected']:,}"], ["hours of video", f"{s['hours']:.3f}"]]
    if "shards" in s:
        rows.append(["shards", f"{s['shards']:,} ({_bytes(s['shard_bytes'])})"])
    total = v.totals
    rows += [["captions / QA / grounding", f"{total['captions']:,} / {total['qa']:,} / {total['grounding']:,}"],
             ["rejected model outputs", f"{total['annotation_rejects']:,}"]]
    clips = v.maps["hico_clips"]
    if clips:
        rows.append(["HiCo clips", ", ".join(f"{k}: {v:,}" for k, v in sorted(clips.items()))])
    return h.table(["", "value"], rows)


def _bytes(n: int) -> str:
    from pipeline.core.summary import human_bytes

    return human_bytes(n)


def _plots(d: ReportData) -> list[str]:
    t, v = d.tables, d.videos
    rejects = t["rejects"].to_pylist()
    stages = t["stages"].to_pylist()
    mix_note = None if d.mixtures_built else "mixtures not built (run the `mix` stage)"
    qa_family = {k: n for k, n in v.maps["annotations_per_task"].items() if k in QA_FAMILIES}
    per_stage_family: dict[str, dict[str, int]] = defaultdict(dict)
    hours: dict[str, dict[str, float]] = defaultdict(dict)
    for r in stages:
        if r["task"] in QA_FAMILIES:
            per_stage_family[r["stage"]][r["task"]] = r["samples"]
        hours[r["stage"]][r["task"]] = r["hours"] or 0.0
    input_reasons = {r["reason"]: r["count"] for r in rejects if r["scope"] == "input"}
    output_reasons = {f"{r['task']}: {r['reason']}": r["count"] for r in rejects if r["scope"] == "annotation"}
    figures = [
        ("Duration", "duration", report_plots.duration_histogram(v.duration),
         "Accepted videos by duration; dashed lines mark 1 min, 10 min and 1 h where in range."),
        ("Resolution and frame rate", "resolution",
         report_plots.resolution_fps(v.counts["sizes"], v.counts["fps"]),
         "Display size after rotation, and the container's frame rate."),
        ("Codec mix", "codecs", report_plots.codec_mix(v.counts["codecs"], v.counts["containers"]),
         "Video codec and container."),
        ("Scenes per minute", "scenes", report_plots.scenes_per_minute(v.scenes_per_minute),
         "Shot changes per minute of video (PySceneDetect)."),
        ("Rejects by reason", "rejects", report_plots.rejects_by_reason(input_reasons, output_reasons),
         "Inputs that were not accepted, and model outputs that failed validation (grouped reasons)."),
        ("QA per family and per stage", "qa", report_plots.qa_per_family_and_stage(
            dict(sorted(qa_family.items())), per_stage_family, mix_note),
         "All validated QA pairs by family; the curriculum mixtures' QA samples by stage and family."),
        ("Hours per curriculum stage", "hours", report_plots.hours_per_stage(hours, mix_note),
         "Duration of the training samples (clips for clipped samples), each sample counted once."),
        ("Annotation lengths", "lengths", report_plots.annotation_lengths(d.facts.lengths, d.cfg.histogram_bins),
         "Words per caption, summary, question, answer and grounding query; dotted line: median."),
    ]
    return [h.section(title, anchor, h.img(png, title) + f"<div class=\"sub\">{h.esc(text)}</div>")
            for title, anchor, png, text in figures]


def _rejects_table(d: ReportData) -> str:
    rows = [[r["scope"], r["stage"], r["task"] or "", r["reason"], f"{r['count']:,}", f"{100 * r['share']:.1f} %"]
            for r in d.tables["rejects"].to_pylist()[:TOP_REJECTS]]
    if not rows:
        return "<p>Nothing was rejected.</p>"
    return h.table(["scope", "stage", "task", "reason", "count", "share"], rows, numeric={4, 5})


def _curriculum_table(d: ReportData) -> str:
    if not d.mixtures_built:
        return "<p>Mixtures not built: run the <code>mix</code> stage.</p>"
    rows = [[r["stage"], h.Raw(h.esc(r["task"]) + (h.badge() if r["random_init"] else "")), f"{r['samples']:,}",
             f"{r['annotations']:,}", f"{r['videos']:,}", f"{r['hours']:.3f}", f"{r['visual_tokens']:,}",
             f"{r['text_tokens']:,}"] for r in d.tables["stages"].to_pylist()]
    note = ("<div class=\"sub\">Samples are lines of <code>mixtures/&lt;stage&gt;/&lt;task&gt;.jsonl</code>; text "
            "tokens are words and punctuation marks of the conversation turns (a tokenizer-independent count).</div>")
    return h.table(["stage", "task", "samples", "annotations", "videos", "hours", "visual tokens", "text tokens"],
                   rows, numeric={2, 3, 4, 5, 6, 7}) + note


def _gallery(d: ReportData) -> str:
    if not d.gallery:
        return "<p>No sharded videos to show (run the <code>shard</code> stage).</p>"
    cards = []
    for entry in d.gallery:
        v = entry.video
        vid = v["video_id"]
        name = storage.path_part(v["source_uri"] or "").rsplit("/", 1)[-1]
        head = (f"<div><span class=\"k\">{h.esc(vid)}</span> <span class=\"t\">{h.esc(name)} · "
                f"{v['duration_s']:.1f} s · {h.esc(v['shard'])}</span></div>")
        if entry.error:
            frames = f"<p class=\"t\">frames unavailable: {h.esc(entry.error)}</p>"
        else:
            frames = "<div class=\"frames\">" + "".join(
                f"<figure>{h.img(png, f'{vid} at {t:.2f} s', 'thumb')}<figcaption>{t:.2f} s</figcaption></figure>"
                for png, t in zip(entry.frames_png, entry.timestamps_s)) + "</div>"
        cards.append(f"<div class=\"card\">{head}{frames}{_captions_html(d, vid)}{_qa_html(d, vid)}</div>")
    return "\n".join(cards)


def _mark(row: dict) -> str:
    return h.badge() if row.get("random_init") else ""


def _captions_html(d: ReportData, vid: str) -> str:
    rows = d.facts.captions.get(vid, [])
    summary = next((r for r in rows if r["level"] == "video"), None)
    clips = sorted((r for r in rows if r["level"] == "clip"), key=lambda r: (r["start_s"], r["end_s"]))
    parts = []
    if summary:
        parts.append(f"<p><span class=\"k\">Summary</span>{_mark(summary)}: {h.esc(summary['text'])}</p>")
    for r in clips[:CLIP_CAPTIONS_SHOWN]:
        parts.append(f"<p><span class=\"t\">[{h.seconds(r['start_s'])} – {h.seconds(r['end_s'])}]</span> "
                     f"{h.esc(r['text'])}{_mark(r)}</p>")
    if len(clips) > CLIP_CAPTIONS_SHOWN:
        parts.append(f"<p class=\"t\">… {len(clips) - CLIP_CAPTIONS_SHOWN} more clip captions</p>")
    return "".join(parts) or "<p class=\"t\">no captions</p>"


def _qa_html(d: ReportData, vid: str) -> str:
    rows = d.facts.qa.get(vid, [])
    if not rows:
        return "<p class=\"t\">no QA</p>"
    # A QA tied to a time span shows what the timestamps mean; otherwise the first by family.
    q = sorted(rows, key=lambda r: (r["start_s"] is None, r["family"], r["question"]))[0]
    span = (f" <span class=\"t\">[{h.seconds(q['start_s'])} – {h.seconds(q['end_s'])}]</span>"
            if q["start_s"] is not None else "")
    options = "".join(f"<li>{h.esc(o)}</li>" for o in q["options"] or [])
    return (f"<p><span class=\"k\">QA · {h.esc(q['family'])} ({h.esc(q['form'])})</span>{span}{_mark(q)}<br>"
            f"Q: {h.esc(q['question'])}</p>" + (f"<ol type=\"A\">{options}</ol>" if options else "")
            + f"<p>A: {h.esc(q['answer'])}</p>")


def render(d: ReportData) -> str:
    body = []
    warning = _random_banner(d)
    if warning:
        body.append(warning)
    body += _status(d)
    body.append(h.section("Summary", "summary", _summary_table(d)))
    body += _plots(d)
    body.append(h.section("Top reject reasons", "reject-table", _rejects_table(d)))
    body.append(h.section("Curriculum mixtures", "curriculum", _curriculum_table(d)))
    body.append(h.section("Sample gallery", "gallery", f"<div class=\"sub\">{len(d.gallery)} videos picked with "
                          f"seed {d.cfg.seed}; frames decoded from the shards at their timestamps.</div>"
                          + _gallery(d)))
    return h.page("LongVid build report", d.out.root, body)


def build(out_uri: str, cfg: ReportConfig) -> bytes:
    out = BuildOutput(out_uri)
    if not out.exists(layout.MANIFEST_VIDEOS):
        from pipeline.core.context import StageInputMissing

        raise StageInputMissing(f"{layout.MANIFEST_VIDEOS} is missing under {out.root}: run the ingest stages first")
    return render(collect(out, cfg)).encode("utf-8")


def write(out_uri: str, cfg: BuildConfig, destination: str | None = None) -> str:
    """Build the report and write it to `destination` (default OUT/report.html); returns where it went."""
    data = build(out_uri, cfg.report)
    target = destination or BuildOutput(out_uri).uri(layout.REPORT_HTML)
    storage.write_bytes_if_changed(target, data)
    return target
