"""Run a list of stages on a validated config: start/connect Ray, run each stage, write and print the summary."""

from __future__ import annotations

import logging
import time

from pipeline import stages as registry
from pipeline.core import preflight, ray_runtime, summary, tempdirs
from pipeline.core.context import StageContext, configure_worker
from pipeline.ingest import manifest_refresh
from pipeline.io import storage
from schemas import layout
from schemas.config import BuildConfig, ConfigError

log = logging.getLogger(__name__)

# Stages that read the manifest and never change it: after them the build summary comes from the persisted tables.
MANIFEST_READERS = {"hico", "annotate", "mix", "stats", "report"}


def run_build(cfg: BuildConfig, stage_names: list[str] | None = None, quiet: bool = False) -> dict:
    start = time.monotonic()
    names = registry.resolve(stage_names or cfg.stages)
    if not storage.is_s3(cfg.out):
        cfg.out = storage.normalize_local(cfg.out)
    configure_worker(cfg)
    preflight.check_out(cfg.out)
    try:
        temp_folder = tempdirs.start_job(cfg.out, cfg.storage.tmp_dir)
    except tempdirs.JobFolderBusy as e:
        raise ConfigError("out", str(e), "wait for that build to finish, or stop it")
    log.debug(f"[build] stages {','.join(names)}; out {cfg.out}; temporary folder {temp_folder}")
    try:
        return _run_stages(cfg, names, start, quiet)
    finally:
        tempdirs.end_job(temp_folder)


def _run_stages(cfg: BuildConfig, names: list[str], start: float, quiet: bool) -> dict:
    ctx = StageContext(cfg)
    ray_runtime.init(cfg.ray.address, cfg.ray.num_cpus)
    results = {}
    for name in names:
        stage = registry.load(name)
        t0 = time.monotonic()
        log.info(f"[{name}] start: {stage.DESCRIPTION}")
        if name not in MANIFEST_READERS:
            ctx.manifest_summary = None  # a writer that leaves none set leaves the summary to be computed below
        results[name] = stage.run(ctx)
        log.info(f"[{name}] done in {time.monotonic() - t0:.1f} s: {results[name]}")
    result = {"stages": results}
    writers = [n for n in names if n not in MANIFEST_READERS]
    # after the `shard` stage, the last to write it, the persisted manifest is current
    stats = summary.summarize_persisted(cfg.out) if not writers or writers[-1] == "shard" else None
    if stats is not None:  # the stages run read the manifest the `shard` stage persisted and changed nothing in it
        summary.write(cfg.out, stats)
    elif ctx.manifest_summary is not None:  # `probe` or `scenes` rewrote the manifest and summarised it
        stats = ctx.manifest_summary
        summary.write(cfg.out, stats)
    elif storage.exists(ctx.uri(layout.MANIFEST_CRAWL)):
        stats, _ = manifest_refresh.refresh(ctx, "summary", write=False)
        if stats["pending_probe"] == 0:
            summary.write(cfg.out, stats)
    if stats is not None:
        result["summary"] = stats
        if not quiet:
            print(summary.table(stats, time.monotonic() - start, names, _stage_notes(cfg, results)), flush=True)
    return result


def _stage_notes(cfg: BuildConfig, results: dict) -> list[tuple[str, object]]:
    notes = []
    hico = results.get("hico")
    if hico:
        label = f"{hico['clips']} clips of {cfg.hico.stage} in {hico['shards']} files"
        if hico["random_init"]:
            label += " — RANDOM-WEIGHT encoder (demo/test only)"
        notes.append(("HiCo tokens", label))
    ann = results.get("annotate")
    if ann:
        label = (f"{ann['captions']} captions, {ann['qa']} QA, {ann['grounding']} grounding, "
                 f"{ann['rejects']} rejected outputs")
        if ann["random_init"]:
            label += " — RANDOM-WEIGHT model (demo/test only)"
        notes.append(("annotations", label))
    mix = results.get("mix")
    if mix:
        for stage, tasks in mix["records"].items():
            label = f"{sum(tasks.values())} records in {len(tasks)} task files"
            if mix["random_init"]:
                label += " — from RANDOM-WEIGHT models (demo/test only)"
            notes.append((f"mixture {stage}", label))
    st = results.get("stats")
    if st:
        notes.append(("stats", f"reconciled: {st['videos']} videos, {st['shards']} shards, "
                               f"{st['stage_tasks']} stage/task rows (mixtures {st['mixtures']})"))
    if results.get("report"):
        notes.append(("report", results["report"]["report"]))
    return notes
