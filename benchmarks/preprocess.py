"""Frame preprocessing throughput: the default (bit-identical to VideoChat-Flash's UMTImageProcessor) against the
processor's own steps run frame by frame (the baseline, measured in the same run) and the faster, not identical,
torch resize.

    python benchmarks/preprocess.py [--frames 64] [--repeats 3]

Prints a Markdown table: frames/s, ratio to the baseline and whether the output equals the baseline bit for bit.
"""

from __future__ import annotations

import argparse
import sys
import time

import bench_common
import numpy as np
from PIL import Image

from compressors.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess_frames


def processor_baseline(frames: np.ndarray, size: int) -> np.ndarray:
    """UMTImageProcessor's steps, one frame at a time: PIL resize, float64 rescale to float32, float32 normalise."""
    mean = np.array(IMAGENET_MEAN, dtype=np.float32)
    std = np.array(IMAGENET_STD, dtype=np.float32)
    out = []
    for frame in frames:
        x = np.array(Image.fromarray(frame).resize((size, size), Image.BICUBIC)).transpose(2, 0, 1)
        x = (x.astype(np.float64) * (1 / 255)).astype(np.float32)
        out.append(((x.T - mean) / std).T)
    return np.stack(out)


def _best(fn, repeats: int) -> tuple[float, np.ndarray]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| input | size | path | frames/s | vs baseline | identical to processor |")
    print("|---|---|---|---|---|---|")
    for (h, w), size in (((360, 640), 224), ((1080, 1920), 448)):
        frames = rng.integers(0, 256, size=(args.frames, h, w, 3), dtype=np.uint8)
        base_s, base = _best(lambda: processor_baseline(frames, size), args.repeats)
        rows = [("processor steps per frame (baseline)", base_s, True)]
        for name, resize in (("preprocess_frames resize=pil (default)", "pil"),
                             ("preprocess_frames resize=torch", "torch")):
            secs, out = _best(lambda: preprocess_frames(frames, size, resize=resize).numpy(), args.repeats)
            rows.append((name, secs, bool(np.array_equal(out, base))))
        for name, secs, same in rows:
            print(f"| {h}x{w} | {size} | {name} | {args.frames / secs:.1f} | {base_s / secs:.2f}x | "
                  f"{'yes' if same else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(bench_common.run_and_record("preprocess", main))
