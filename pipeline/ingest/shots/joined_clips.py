"""Real footage joined by hard cuts, cross-dissolves and fades through black at known times.

Single shots are cut out of the sample clips in tests/data/media (see its README for the source and licence), each
played forward then backward (one continuous shot of twice the length, no boundary inside), scaled and padded to one
size at 25 fps, and joined in one ffmpeg filter graph: `concat` for a hard cut, `xfade=transition=fade` for a cross-dissolve (the shots overlap), `fade` out to black
and in again (half the length each, no overlap) for a fade through black. The truth is exact to the frame: a cut at
the first frame of the next shot, a gradual transition at the middle of its span (a fade's black frame). Used by the tests and
benchmarks/ingest.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.core.project import PROJECT_ROOT
from pipeline.io import ffmpeg

FPS = 25
MEDIA_DIR = os.path.join(PROJECT_ROOT, "tests", "data", "media")


@dataclass(frozen=True)
class Shot:
    clip: str  # file name in MEDIA_DIR
    start_s: float
    end_s: float  # inside one shot of the clip


@dataclass(frozen=True)
class Transition:
    kind: str  # cut | dissolve | fade
    start_s: float
    end_s: float  # == start_s for a cut

    @property
    def time_s(self) -> float:
        return (self.start_s + self.end_s) / 2

    @property
    def gradual(self) -> bool:
        return self.kind != "cut"


# Shots inside the clips, clear of their own boundaries (bikes.mp4 changes shot at 1.20, 3.04, 5.48, 7.48, 9.68 s).
SHOTS = {
    "phone": Shot("carphone_pristine.mp4", 0.0, 3.9),
    "bunny": Shot("bigbuckbunny.mp4", 0.0, 5.2),
    "bikes2": Shot("bikes.mp4", 1.3, 2.96),
    "bikes3": Shot("bikes.mp4", 3.12, 5.4),
    "bikes4": Shot("bikes.mp4", 5.56, 7.4),
    "bikes5": Shot("bikes.mp4", 7.56, 9.6),
}

# One cycle: (shot, transition into the next shot, its seconds). Every gradual length of 0.5-2 s, both kinds. The
# transition after the last shot is where a repeat of the cycle joins (`repeat`): a cut.
CYCLE = (
    ("phone", "dissolve", 1.0),
    ("bunny", "fade", 2.0),
    ("bikes3", "cut", 0.0),
    ("bikes5", "dissolve", 2.0),
    ("bikes4", "fade", 0.5),
    ("bikes2", "dissolve", 1.5),
    ("bunny", "cut", 0.0),
    ("bikes5", "fade", 1.0),
    ("phone", "dissolve", 0.5),
    ("bikes3", "fade", 1.5),
    ("bikes2", "cut", 0.0),
    ("bikes4", "cut", 0.0),
)

# A short cycle (about 10 s) for a slow detector: one dissolve and one cut.
SHORT_CYCLE = (
    ("bikes4", "dissolve", 1.0),
    ("bikes2", "cut", 0.0),
    ("bikes5", "cut", 0.0),
)


def _frames(seconds: float) -> int:
    return int(round(seconds * FPS))


def plan(cycles: int = 1, cycle: tuple = CYCLE) -> tuple[list[tuple[str, str, float]], list[Transition], float]:
    """The joined sequence, its transitions and its length in seconds (the last transition of the last cycle dropped)."""
    seq = list(cycle) * cycles
    seq[-1] = (seq[-1][0], "end", 0.0)
    transitions, length = [], 0
    for name, kind, seconds in seq:
        shot = SHOTS[name]
        length += 2 * _frames(shot.end_s - shot.start_s)
        if kind == "end":
            break
        d = _frames(seconds)
        if kind == "cut":
            transitions.append(Transition("cut", length / FPS, length / FPS))
        elif kind == "fade":
            transitions.append(Transition("fade", (length - d // 2) / FPS, (length + d // 2) / FPS))
        else:
            transitions.append(Transition(kind, (length - d) / FPS, length / FPS))
            length -= d
    return seq, transitions, length / FPS


def write(path: str, width: int = 320, height: int = 180, crf: int = 23, cycle: tuple = CYCLE,
          media_dir: str = MEDIA_DIR) -> tuple[list[Transition], float]:
    """Encode one cycle to `path` (H.264); returns its transitions and length in seconds."""
    seq, transitions, total_s = plan(1, cycle)
    names = sorted({name for name, _, _ in seq})
    args, graph = [], []
    for i, name in enumerate(names):
        shot = SHOTS[name]
        args += ["-ss", f"{shot.start_s}", "-t", f"{shot.end_s - shot.start_s + 0.5}",
                 "-i", os.path.join(media_dir, shot.clip)]
        n = _frames(shot.end_s - shot.start_s)
        uses = sum(1 for s, _, _ in seq if s == name)
        graph.append(f"[{i}:v]fps={FPS},trim=end_frame={n},setpts=PTS-STARTPTS,"
                     f"scale={width}:{height}:force_original_aspect_ratio=decrease,"
                     f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,format=yuv420p,split[f{i}][b{i}];"
                     f"[b{i}]reverse[r{i}];[f{i}][r{i}]concat=n=2:v=1:a=0,settb=AVTB,"
                     f"split={uses}" + "".join(f"[{name}{k}]" for k in range(uses)))
    used = {name: 0 for name in names}
    current, length = None, 0
    for j, (name, kind, seconds) in enumerate(seq):
        label = f"[{name}{used[name]}]"
        used[name] += 1
        if current is None:
            current = label
        else:
            prev_kind, prev_s = seq[j - 1][1], seq[j - 1][2]
            half = _frames(prev_s) // 2
            if prev_kind == "cut":
                graph.append(f"{current}{label}concat=n=2:v=1:a=0[j{j}]")
            elif prev_kind == "fade":
                graph.append(f"{current}fade=t=out:st={(length - half) / FPS}:d={half / FPS}[o{j}];"
                             f"{label}fade=t=in:st=0:d={half / FPS}[i{j}];[o{j}][i{j}]concat=n=2:v=1:a=0[j{j}]")
            else:
                graph.append(f"{current}{label}xfade=transition=fade:duration={prev_s}:"
                             f"offset={(length - _frames(prev_s)) / FPS}[j{j}]")
                length -= _frames(prev_s)
            current = f"[j{j}]"
        length += 2 * _frames(SHOTS[name].end_s - SHOTS[name].start_s)
    args += ["-filter_complex", ";".join(graph), "-map", current, "-an", "-c:v", "libx264", "-preset", "veryfast",
             "-crf", str(crf), "-g", str(2 * FPS), "-r", str(FPS), path]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ffmpeg.run(args)
    return transitions, total_s


def repeat(cycle_path: str, times: int, path: str) -> tuple[list[Transition], float]:
    """`times` copies of a cycle written by `write`, joined without re-encoding; the joins are hard cuts."""
    listing = f"{path}.txt"
    with open(listing, "w", encoding="utf-8") as f:
        f.writelines(f"file '{os.path.abspath(cycle_path)}'\n" for _ in range(times))
    try:
        ffmpeg.run(["-f", "concat", "-safe", "0", "-i", listing, "-c", "copy", path])
    finally:
        os.remove(listing)
    _, transitions, total_s = plan(times)
    return transitions, total_s


def score(found_s: list[float], transitions: list[Transition], tolerance_s: float = 0.5) -> dict:
    """Recall of hard cuts and of gradual transitions, and precision, matching each found time to at most one
    transition whose time (a gradual one's middle) is within `tolerance_s`, nearest first."""
    pairs = sorted((abs(f - t.time_s), fi, ti) for fi, f in enumerate(found_s)
                   for ti, t in enumerate(transitions) if abs(f - t.time_s) <= tolerance_s)
    used_f, used_t = set(), set()
    for _, fi, ti in pairs:
        if fi not in used_f and ti not in used_t:
            used_f.add(fi)
            used_t.add(ti)
    cuts = [i for i, t in enumerate(transitions) if not t.gradual]
    gradual = [i for i, t in enumerate(transitions) if t.gradual]
    return {
        "cuts_found": sum(i in used_t for i in cuts), "cuts": len(cuts),
        "gradual_found": sum(i in used_t for i in gradual), "gradual": len(gradual),
        "true_positives": len(used_f), "found": len(found_s),
        "cut_recall": sum(i in used_t for i in cuts) / len(cuts) if cuts else 1.0,
        "gradual_recall": sum(i in used_t for i in gradual) / len(gradual) if gradual else 1.0,
        "precision": len(used_f) / len(found_s) if found_s else 1.0,
    }
