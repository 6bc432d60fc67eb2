"""HiCo compression on the CPU: token merging, the video encoder, the token store's size on disk and its reader.

    .venv/bin/python benchmarks/hico.py [--quick] [--work DIR] [--profile]

Four measurement groups, each printed as a Markdown table (stdout); `[bench]` progress notes go to stderr.

1. Merge throughput (clips/s) of `compressors.merge_clip_tokens(features, 64, num_heads=16)` on 224 px clips
   ([B, 784, 1024]) and 448 px clips ([B, 3136, 1024]), float32 and bfloat16 input, beside `baseline_merge` below:
   a plain batched PyTorch ToMe transcription in float32 (the baseline, timed in the same run, interleaved with
   the library call). Outputs are compared: torch.equal, max |diff|, and per clip whether they are bit-identical,
   differ at rounding level only, or differ because the matching differs (near-ties decided by rounding: both
   rank with a float32 metric, so this happens only if their arithmetic differs).
2. Encoder throughput (clips/s) of `VideoEncoderConfig.tiny()` and the full `umt_large_videochat_flash()` (random
   init), one 4x224x224 clip per forward (batch 4 too for tiny), float32 and bfloat16. Reported only, no baseline.
3. Bytes on disk per clip: `token_store.tokens_table` + `write_tokens` of merged (structured) features cast to
   float16, file bytes against the raw float16 token bytes (n_clips * 64 * 1024 * 2).
4. Reader GB/s: `HicoReader(dir).read(vid)` for every video in index order against `pq.read_table(file)` plus
   `.to_numpy_ndarray()` on the token column's chunks, same file, same run; a random-order pass for information.

Features: "gaussian" = i.i.d. N(0, 1); "structured" = a smooth low-rank field over the (frame, row, column) token
grid times random channel directions, plus a shared offset and noise, so neighbouring tokens are similar, as in
real ViT features; "near-static" = one structured frame repeated over the clip plus 1e-3 noise (a static shot; a
padded clip repeats its last frame exactly), where the best scores bunch up just below 1 and near-ties are common.
All inputs come from fixed seeds.

Timings: warm-up first, then the median of several repeats. `--quick` shrinks batches, repeats and file sizes.
Files go to a temporary folder under `--work` (default ./bench-out, git-ignored) and are removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import bench_common
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from compressors import merge_clip_tokens, token_store
from compressors.encoder import (
    VideoEncoderConfig,
    count_parameters,
    encoder_id,
    load_encoder,
)
from compressors.token_store import HicoReader
from schemas import layout, tables

TARGET_TOKENS = tables.HICO_TOKENS_PER_CLIP  # 64
WIDTH = 1024
NUM_HEADS = 16
FRAMES = 4
PATCH = 16


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


@dataclass
class Plan:
    """Sizes and repeat counts of one run (full or --quick)."""

    batch_224: int
    batch_448: int
    merge_reps: int
    encoder_reps_full: int
    videos: int
    clips_per_video: int
    reader_reps: int
    min_time_s: float

    @classmethod
    def make(cls, quick: bool) -> "Plan":
        if quick:
            return cls(batch_224=2, batch_448=1, merge_reps=2, encoder_reps_full=1, videos=16, clips_per_video=8,
                       reader_reps=2, min_time_s=0.3)
        return cls(batch_224=8, batch_448=4, merge_reps=7, encoder_reps_full=2, videos=64, clips_per_video=8,
                   reader_reps=5, min_time_s=1.0)


# ---------------------------------------------------------------------------------------------------------------
# Timing helpers


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def measure(fn, reps: int, warmup: int = 1, min_time_s: float = 0.0, max_reps: int = 200) -> float:
    """Median seconds of `fn()` over at least `reps` calls (and at least `min_time_s` in total), after warm-up."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < reps or (sum(times) < min_time_s and len(times) < max_reps):
        times.append(timed(fn)[0])
    return statistics.median(times)


def measure_pair(fn_a, fn_b, reps: int, min_time_s: float = 0.0, max_reps: int = 50) -> dict:
    """Two functions timed alternately (a, b, a, b, ...) so load from other work hits both alike, over at least
    `reps` pairs and at least `min_time_s` of `fn_a`: median wall seconds (`wall_a`, `wall_b`) and median process
    CPU seconds (`cpu_a`, `cpu_b`); `out_a`, `out_b` are the warm-up calls' results."""
    _, out_a = timed(fn_a)
    _, out_b = timed(fn_b)
    wall: dict[str, list[float]] = {"a": [], "b": []}
    cpu: dict[str, list[float]] = {"a": [], "b": []}
    while len(wall["a"]) < reps or (sum(wall["a"]) < min_time_s and len(wall["a"]) < max_reps):
        for key, fn in (("a", fn_a), ("b", fn_b)):
            c0 = time.process_time()
            wall[key].append(timed(fn)[0])
            cpu[key].append(time.process_time() - c0)
    med = statistics.median
    return {"wall_a": med(wall["a"]), "wall_b": med(wall["b"]), "cpu_a": med(cpu["a"]), "cpu_b": med(cpu["b"]),
            "out_a": out_a, "out_b": out_b}


# ---------------------------------------------------------------------------------------------------------------
# 1. Token merging: the baseline and the inputs


def baseline_schedule(p: int, target: int) -> list[int]:
    steps = []
    while p - target > p // 2:
        steps.append(p // 2)
        p -= p // 2
    if p > target:
        steps.append(p - target)
    return steps


def baseline_merge(features: torch.Tensor, target: int, num_heads: int = NUM_HEADS) -> torch.Tensor:
    """ToMe bipartite soft matching, batched, float32 throughout (the way ToMe's `bipartite_soft_matching` +
    `merge_wavg` are usually written): head-averaged L2-normalised metric, even/odd split, best partner by
    `max`, stable descending sort, size-weighted average via `x * size` summed with `scatter_reduce` then divided
    by the summed sizes. Output: [unmerged A in descending score order, then B]."""
    x = features.to(torch.float32)
    batch, p, channels = x.shape
    size = torch.ones(batch, p, 1, dtype=torch.float32, device=x.device)
    for r in baseline_schedule(p, target):
        p = x.shape[1]
        metric = x.reshape(batch, p, num_heads, channels // num_heads).mean(dim=2)
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[:, ::2], metric[:, 1::2]
        scores = a @ b.transpose(-1, -2)
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True, stable=True).unsqueeze(-1)
        unm_idx, src_idx = edge_idx[:, r:], edge_idx[:, :r]
        dst_idx = node_idx.unsqueeze(-1).gather(1, src_idx)

        def merge(t: torch.Tensor) -> torch.Tensor:
            src, dst = t[:, ::2], t[:, 1::2]
            c = t.shape[-1]
            unm = src.gather(1, unm_idx.expand(-1, -1, c))
            src = src.gather(1, src_idx.expand(-1, -1, c))
            dst = dst.scatter_reduce(1, dst_idx.expand(-1, -1, c), src, reduce="sum")
            return torch.cat([unm, dst], dim=1)

        x = merge(x * size)
        size = merge(size)
        x = x / size
    return x.to(features.dtype)


def gaussian_features(batch: int, tokens: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(batch, tokens, WIDTH, generator=gen)


def structured_features(batch: int, size_px: int, gen: torch.Generator, rank: int = 32,
                        noise: float = 0.5) -> torch.Tensor:
    """[batch, FRAMES * g * g, WIDTH] tokens (time-major, row-major like the encoder): a smooth rank-`rank` field
    over the token grid (a coarse 2x4x4 random grid upsampled trilinearly) along random channel directions, plus a
    shared per-channel offset and i.i.d. noise. Neighbouring tokens are strongly correlated."""
    g = size_px // PATCH
    coarse = torch.randn(batch, rank, 2, 4, 4, generator=gen)
    field = F.interpolate(coarse, size=(FRAMES, g, g), mode="trilinear", align_corners=True)
    field = field.flatten(2).transpose(1, 2)  # [B, T*g*g, rank]
    basis = torch.randn(rank, WIDTH, generator=gen) * (2.0 / math.sqrt(rank))
    offset = torch.randn(WIDTH, generator=gen) * 0.5
    noise_t = torch.randn(batch, FRAMES * g * g, WIDTH, generator=gen) * noise
    return (field @ basis + offset + noise_t).contiguous()


def static_features(batch: int, size_px: int, gen: torch.Generator, eps: float = 1e-3) -> torch.Tensor:
    """A near-static shot: the first frame of `structured_features` repeated over the clip's frames, plus noise of
    std `eps` (a padded clip, which repeats its last frame, is the eps = 0 case). Many tokens have a near-copy in
    the other frames, so the best scores bunch up just below 1 and the ranking is decided by tiny differences."""
    g2 = (size_px // PATCH) ** 2
    first = structured_features(batch, size_px, gen)[:, :g2]
    repeated = first.repeat(1, FRAMES, 1)
    return (repeated + eps * torch.randn(repeated.shape, generator=gen)).contiguous()


def compare_outputs(lib: torch.Tensor, base: torch.Tensor) -> dict:
    """Per clip: bit-identical, rounding-level difference only, or a different matching (a different token set)."""
    lib32, base32 = lib.float(), base.float()
    diff = (lib32 - base32).abs().flatten(1).amax(dim=1)  # [B]
    scale = base32.abs().flatten(1).amax(dim=1).clamp_min(1e-30)
    # Rounding tolerance, relative to the clip's largest value: float32 sums of up to a few hundred tokens differ
    # by far less than 1e-4; bfloat16 outputs may land one ulp (2^-8 relative) apart after rounding.
    tol = 1e-4 if lib.dtype == torch.float32 else 2.0 ** -6
    identical = diff == 0
    rounding = (~identical) & (diff <= tol * scale)
    return {
        "equal": bool(torch.equal(lib, base)),
        "max_abs": float(diff.max()),
        "clips": lib.shape[0],
        "identical": int(identical.sum()),
        "rounding": int(rounding.sum()),
        "matching": int((~identical & ~rounding).sum()),
    }


def bench_merge(plan: Plan) -> tuple[list[list[str]], dict]:
    gen = torch.Generator().manual_seed(0)
    cases = []
    for size_px, batch in ((224, plan.batch_224), (448, plan.batch_448)):
        tokens = FRAMES * (size_px // PATCH) ** 2
        gauss = gaussian_features(batch, tokens, gen)
        struct = structured_features(batch, size_px, gen)
        static = static_features(batch, size_px, gen)
        cases += [(size_px, "gaussian", torch.float32, gauss), (size_px, "structured", torch.float32, struct),
                  (size_px, "near-static", torch.float32, static),
                  (size_px, "structured", torch.bfloat16, struct.to(torch.bfloat16))]
    rows, per_clip_s = [], {}
    for size_px, kind, dtype, feats in cases:
        def lib(f=feats):
            return merge_clip_tokens(f, TARGET_TOKENS, num_heads=NUM_HEADS)

        def base(f=feats):
            return baseline_merge(f, TARGET_TOKENS, num_heads=NUM_HEADS)

        m = measure_pair(lib, base, plan.merge_reps, plan.min_time_s)
        t_lib, t_base, out_lib, out_base = m["wall_a"], m["wall_b"], m["out_a"], m["out_b"]
        assert out_lib.shape == out_base.shape == (feats.shape[0], TARGET_TOKENS, WIDTH)
        cmp = compare_outputs(out_lib, out_base)
        b = feats.shape[0]
        per_clip_s[(size_px, kind, dtype)] = t_lib / b
        ratio = t_base / t_lib
        dname = str(dtype).replace("torch.", "")
        log(f"merge {size_px} px {kind} {dname} x{b}: library {t_lib:.3f} s (CPU {m['cpu_a']:.3f} s), baseline "
            f"{t_base:.3f} s (CPU {m['cpu_b']:.3f} s), {cmp}")
        rows.append([
            f"{size_px} px [{b}, {feats.shape[1]}, {WIDTH}]", kind, dname,
            f"{b / t_lib:.2f}", f"{b / t_base:.2f}", f"{ratio:.2f}×", f"{m['cpu_b'] / m['cpu_a']:.2f}×",
            "yes" if ratio >= 1.0 else "**no**",
            "yes" if cmp["equal"] else "no", f"{cmp['max_abs']:.3g}",
            f"{cmp['identical']} / {cmp['rounding']} / {cmp['matching']}",
        ])
    return rows, per_clip_s


MERGE_COLUMNS = ["clips", "features", "input dtype", "library clips/s", "baseline clips/s",
                 "ratio library/baseline (wall)", "same, by CPU time", "≥ 1.0× (wall)", "torch.equal",
                 "max abs diff", "clips identical / rounding-only / other matching"]


def profile_merge(plan: Plan) -> str:
    """torch.profiler op table of one library call and one baseline call (224 px structured float32)."""
    from torch.profiler import ProfilerActivity, profile

    gen = torch.Generator().manual_seed(1)
    feats = structured_features(plan.batch_224, 224, gen)
    merge_clip_tokens(feats, TARGET_TOKENS, NUM_HEADS)
    baseline_merge(feats, TARGET_TOKENS, NUM_HEADS)
    parts = []
    for name, fn in (("library merge_clip_tokens", merge_clip_tokens), ("baseline_merge", baseline_merge)):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn(feats, TARGET_TOKENS, NUM_HEADS)
        parts.append(f"{name} (224 px structured float32, batch {plan.batch_224}):\n"
                     + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# 2. Encoder


def bench_encoder(plan: Plan) -> list[list[str]]:
    rows = []
    presets = [("tiny", VideoEncoderConfig.tiny(), (1, 4)),
               ("umt_large_videochat_flash", VideoEncoderConfig.umt_large_videochat_flash(), (1,))]
    for name, cfg, batches in presets:
        t_load, (model, report) = timed(lambda c=cfg: load_encoder(None, c, allow_random_init=True))
        assert report.random_init
        params = count_parameters(model)
        log(f"encoder {name}: built with random init in {t_load:.1f} s ({params / 1e6:.1f} M parameters, "
            f"{cfg.num_blocks_run} blocks run)")
        full = name != "tiny"
        for dtype in (torch.float32, torch.bfloat16):
            model = model.to(dtype)  # what load_encoder(..., dtype=dtype) does after building the weights
            for batch in batches:
                clips = torch.randn(batch, cfg.num_frames, 3, 224, 224, generator=torch.Generator().manual_seed(2))
                clips = clips.to(dtype)

                def forward(m=model, x=clips):
                    with torch.inference_mode():
                        return m(x)

                if full:
                    seconds = measure(forward, reps=plan.encoder_reps_full, warmup=1)
                else:
                    seconds = measure(forward, reps=3, warmup=2, min_time_s=plan.min_time_s)
                dname = str(dtype).replace("torch.", "")
                log(f"encoder {name} {dname} batch {batch}: {seconds:.3f} s per forward")
                rows.append([name, encoder_id(cfg), f"{params / 1e6:.1f} M", dname, str(batch),
                             f"{seconds:.3f}", f"{batch / seconds:.3f}"])
        del model
    return rows


ENCODER_COLUMNS = ["config", "encoder_id", "parameters", "dtype", "clips per forward", "s / forward", "clips/s"]


# ---------------------------------------------------------------------------------------------------------------
# 3 and 4. Token store


def merged_token_pool(n_clips: int, batch: int = 16) -> np.ndarray:
    """[n_clips, 64, 1024] float16: the library's merge of structured 224 px features (seeded)."""
    gen = torch.Generator().manual_seed(3)
    out = []
    for start in range(0, n_clips, batch):
        feats = structured_features(min(batch, n_clips - start), 224, gen)
        out.append(merge_clip_tokens(feats, TARGET_TOKENS, NUM_HEADS).to(torch.float16).numpy())
    return np.concatenate(out)


def clip_rows(n_videos: int, clips_per_video: int) -> list[dict]:
    """HICO rows (all columns but tokens) of `n_videos` videos of `clips_per_video` 4-frame clips at 1 fps."""
    enc = encoder_id(VideoEncoderConfig.umt_large_videochat_flash())
    sha = "5f" * 32
    rows = []
    for v in range(n_videos):
        for k in range(clips_per_video):
            frames = [int((4 * k + j) * 25) for j in range(FRAMES)]
            rows.append({"video_id": f"video-{v:04d}", "stage": "stage3", "clip_index": k, "frame_indices": frames,
                         "t_start_s": 4.0 * k, "t_end_s": 4.0 * k + 4.0, "padded": False, "encoder_id": enc,
                         "weights_sha256": sha, "random_init": False, "merge_dtype": "float32", "resize": "pil"})
    return rows


def write_stage_dir(folder: str, rows: list[dict], tokens: np.ndarray, row_group_bytes: int) -> tuple[str, int]:
    """Write one token file plus index.parquet the way pipeline/stages/hico.py does; (file path, row groups)."""
    os.makedirs(folder, exist_ok=True)
    table = token_store.tokens_table(rows, tokens)
    file_name = "shard-000000.parquet"
    path = os.path.join(folder, file_name)
    segments = token_store.write_tokens(path, table, row_group_bytes)
    for s in segments:
        s["file"] = file_name
    with open(os.path.join(folder, layout.HICO_INDEX_NAME), "wb") as f:
        f.write(token_store.index_bytes(segments))
    return path, pq.ParquetFile(path).metadata.num_row_groups


def read_all(folder: str, order: list[str]) -> int:
    """A fresh HicoReader (its index read included) reading every video of `order` once."""
    reader = HicoReader(folder)
    return sum(reader.read(vid).tokens.nbytes for vid in order)


def read_table_numpy(path: str) -> int:
    table = pq.read_table(path)
    arrays = [c.to_numpy_ndarray() for c in table.column(tables.HICO_TOKEN_COLUMN).chunks]
    return sum(a.nbytes for a in arrays)


def bench_store(plan: Plan, work: str) -> tuple[list[list[str]], list[list[str]]]:
    n_clips = plan.videos * plan.clips_per_video
    log(f"merging {n_clips} structured 224 px clips for the token files (not timed)")
    t0 = time.perf_counter()
    pool = merged_token_pool(n_clips)
    log(f"made them in {time.perf_counter() - t0:.1f} s")
    gaussian = np.random.default_rng(4).standard_normal((n_clips, TARGET_TOKENS, WIDTH)).astype(np.float16)
    rows = clip_rows(plan.videos, plan.clips_per_video)
    raw = n_clips * TARGET_TOKENS * WIDTH * 2
    # A second layout with ~8 row groups per file shows what row-group granularity costs a random-order reader
    # (at the default 256 MiB a file of this size has a single row group).
    small_rg = max(1, raw // 8)

    size_rows, read_rows = [], []
    with tempfile.TemporaryDirectory(prefix="hico-bench-", dir=work) as tmp:
        layouts = {}
        for label, tokens, rg_bytes in (("merged structured", pool, token_store.ROW_GROUP_BYTES),
                                        ("merged structured", pool, small_rg),
                                        ("gaussian N(0,1)", gaussian, token_store.ROW_GROUP_BYTES)):
            folder = os.path.join(tmp, f"{label.split()[0]}-{rg_bytes}")
            path, groups = write_stage_dir(folder, rows, tokens, rg_bytes)
            nbytes = os.path.getsize(path)
            ratio = nbytes / raw
            rg_label = f"{rg_bytes / 2**20:g} MiB ({groups} group{'s' if groups != 1 else ''})"
            size_rows.append([label, str(n_clips), rg_label, f"{nbytes:,}", f"{raw:,}", f"{nbytes / n_clips:,.0f}",
                              f"{ratio:.3f}×", "yes" if ratio <= 1.02 else "**no**"])
            log(f"{label}, row groups {rg_label}: {nbytes:,} bytes on disk for {raw:,} raw float16 token bytes")
            if label.startswith("merged"):
                layouts[rg_label] = (folder, path)

        # Correctness of what the reader hands back, once per layout.
        expected = {}
        for i, r in enumerate(rows):
            expected.setdefault(r["video_id"], []).append(i)
        video_order = HicoReader(next(iter(layouts.values()))[0]).video_ids()
        shuffled = list(video_order)
        random.Random(5).shuffle(shuffled)
        for rg_label, (folder, path) in layouts.items():
            reader = HicoReader(folder)
            ok = all(np.array_equal(reader.read(v).tokens, pool[expected[v]]) for v in video_order)
            index_order = [s["video_id"] for s in pq.read_table(os.path.join(folder, layout.HICO_INDEX_NAME))
                           .to_pylist()]
            index_order = list(dict.fromkeys(index_order))
            for order_name, order in (("index order", index_order), ("random order", shuffled)):
                m = measure_pair(lambda f=folder, o=order: read_all(f, o), lambda p=path: read_table_numpy(p),
                                 plan.reader_reps, plan.min_time_s)
                t_read, c_read, t_base, c_base = m["wall_a"], m["cpu_a"], m["wall_b"], m["cpu_b"]
                gbs, base_gbs = raw / t_read / 1e9, raw / t_base / 1e9
                ratio = t_base / t_read
                informational = order_name == "random order"
                log(f"reader {order_name}, row groups {rg_label}: {t_read:.4f} s ({gbs:.2f} GB/s); "
                    f"read_table + numpy {t_base:.4f} s ({base_gbs:.2f} GB/s)")
                read_rows.append([
                    f"HicoReader.read, {order_name}" + (" (info)" if informational else ""), rg_label,
                    str(len(order)), f"{raw / 1e6:.1f}", f"{t_read * 1e3:.1f}", f"{gbs:.2f}",
                    f"{base_gbs:.2f}", f"{ratio:.2f}×", f"{c_read / t_read:.2f} / {c_base / t_base:.2f}",
                    "—" if informational else ("yes" if ratio >= 0.9 else "**no**"),
                    "yes" if ok else "**NO**",
                ])
    return size_rows, read_rows


SIZE_COLUMNS = ["tokens", "clips", "row group target", "file bytes", "raw float16 token bytes", "bytes / clip",
                "file / raw", "≤ 1.02×"]
READ_COLUMNS = ["read", "row group target", "videos", "token MB", "ms (median)", "reader GB/s",
                "read_table + numpy GB/s", "ratio reader/read_table", "cores busy reader / read_table", "≥ 0.9×",
                "tokens match"]


# ---------------------------------------------------------------------------------------------------------------
# Report


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment() -> str:
    load = bench_common.load_average()
    return (f"Environment: {os.cpu_count()} cores visible ({cpu_model()}), torch {torch.__version__} "
            f"({torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} inter-op threads), pyarrow "
            f"{pa.__version__}, numpy {np.__version__}, Python {platform.python_version()}; load average "
            f"{load:.2f} at start.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller batches, fewer repeats, smaller files")
    p.add_argument("--work", default=os.path.join(os.getcwd(), "bench-out"),
                   help="parent of the temporary folder the token files go to (default ./bench-out)")
    p.add_argument("--profile", action="store_true",
                   help="also print a torch.profiler op table of one library and one baseline merge call")
    args = p.parse_args(argv)
    plan = Plan.make(args.quick)
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    logging.getLogger("compressors.encoder").setLevel(logging.ERROR)  # the random-init warning, once per build

    print(environment())
    print()
    t_start = time.perf_counter()

    log("1/4 token merging")
    merge_rows, per_clip_s = bench_merge(plan)
    print("### 1. Token merging: `merge_clip_tokens(features, 64, num_heads=16)` vs a float32 ToMe baseline\n")
    print(bench_common.markdown(MERGE_COLUMNS, merge_rows))
    print(f"\nMedian of ≥ {plan.merge_reps} interleaved repeats (and ≥ {plan.min_time_s:g} s of library calls) "
          "after one warm-up call each; 'by CPU time' = the ratio of median process CPU seconds, less sensitive to "
          "other work on the cores than wall time. Baseline = `baseline_merge` "
          "in this file: batched ToMe bipartite soft matching in float32 (`x * size` summed, divided by the summed "
          "sizes). The library also works in float32. 'rounding-only' clips differ by "
          "≤ 1e-4 (float32) / 2^-6 (bfloat16) of the clip's largest value: same matching, different "
          "arithmetic (the baseline's `x * size / size` and float32 sums are not exact). 'other matching' clips "
          "hold a different token set: near-tied scores ranked differently because the two compute the scores "
          "in a different order (neither ranking is more 'right').\n")
    if args.profile:
        print("```\n" + profile_merge(plan) + "\n```\n")

    log("2/4 encoder")
    enc_rows = bench_encoder(plan)
    print("### 2. Encoder throughput on the CPU (random init, 4×224×224 clips)\n")
    print(bench_common.markdown(ENCODER_COLUMNS, enc_rows))
    full_f32 = next(float(r[5]) for r in enc_rows if r[0] != "tiny" and r[3] == "float32")
    merge_224 = per_clip_s[(224, "structured", torch.float32)]
    print(f"\nNo baseline for this group (reported only). Full config: {plan.encoder_reps_full} timed forward(s) "
          f"after one warm-up; tiny: median over ≥ {plan.min_time_s:g} s. Merging one 224 px clip (structured, "
          f"float32, table 1) costs {merge_224 * 1e3:.0f} ms, {100 * merge_224 / full_f32:.1f}% of a float32 "
          f"full-encoder forward.\n")

    log("3-4/4 token store")
    size_rows, read_rows = bench_store(plan, work)
    print("### 3. Bytes on disk per clip vs raw float16 tokens\n")
    print(bench_common.markdown(SIZE_COLUMNS, size_rows))
    print(f"\n`token_store.tokens_table` + `write_tokens` ({plan.videos} videos × {plan.clips_per_video} clips, "
          f"C={WIDTH}, all HICO columns; the file size includes metadata columns and the Parquet footer). Raw = "
          f"clips × {TARGET_TOKENS} × {WIDTH} × 2 bytes. 'merged structured' = the library's merge of structured "
          "224 px features cast to float16; 'gaussian' is i.i.d. noise, for comparison.\n")
    print("### 4. Reader throughput: `HicoReader(dir).read(vid)` for every video vs `pq.read_table` + numpy\n")
    print(bench_common.markdown(READ_COLUMNS, read_rows))
    print("\nGB/s = raw float16 token bytes / seconds (1 GB = 1e9 bytes), files in the page cache. Reader: a fresh "
          "`HicoReader` per repeat (its index read included), every video once. Baseline: "
          "`pq.read_table(file)` (all columns) and `.to_numpy_ndarray()` on each chunk of the token column. "
          "The two are timed alternately (reader, baseline, reader, …) so other load on the machine hits both alike; "
          "medians. "
          "'cores busy' = process CPU seconds / wall seconds. The default 256 MiB target gives this file a single "
          "row group; the second layout (about 8 groups) stands for a real multi-GB shard, which holds many "
          "256 MiB groups. Random order is informational: the reader decodes whole row groups and keeps only the "
          "last one, so when consecutive reads fall in different row groups each read decodes a full group for "
          "one video's rows (with one row group per file, random order costs nothing extra).\n")
    print(f"Total run time {time.perf_counter() - t_start:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(bench_common.run_and_record("hico", main))
