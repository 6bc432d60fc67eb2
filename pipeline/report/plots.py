"""The report's figures as PNG bytes: matplotlib's object API on the Agg canvas (no pyplot state, no display), with
no timestamp or version in the file, so an unchanged build renders byte-identical images."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

BAR = "#3b6ea8"
ACCENT = "#d9822b"
WARN = "#b3261e"
PALETTE = ["#3b6ea8", "#d9822b", "#4f9d69", "#b3261e", "#7a5ea8", "#8c6d46", "#c45c9b", "#6b7b8c", "#a3a13a"]
DPI = 100


def _figure(width: float = 8.0, height: float = 3.2, cols: int = 1, rows: int = 1):
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", alpha=0.3)
    return fig, axes


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _empty(ax, message: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666666", wrap=True)


MIN_SLOTS = 4  # a chart of one or two bars keeps the bar width of a four-bar chart


def _bars(ax, counts: dict, title: str, xlabel: str = "", horizontal: bool = False, color: str = BAR,
          empty: str = "none") -> None:
    ax.set_title(title, fontsize=10)
    if not counts:
        _empty(ax, empty)
        return
    labels = [str(k) for k in counts]
    values = list(counts.values())
    slots = max(len(labels), MIN_SLOTS)
    if horizontal:
        pos = np.arange(len(labels))[::-1] + (slots - len(labels))
        ax.barh(pos, values, height=0.7, color=color)
        ax.set_yticks(pos, labels, fontsize=8)
        ax.set_ylim(-0.6, slots - 0.4)
        ax.grid(axis="y", alpha=0)
        ax.grid(axis="x", alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        for p, v in zip(pos, values):
            ax.text(v, p, f" {v:,}", va="center", fontsize=8)
    else:
        pos = np.arange(len(labels))
        long_labels = max(len(x) for x in labels) > 6
        ax.bar(pos, values, width=0.7, color=color)
        ax.set_xticks(pos, labels, rotation=30 if long_labels else 0, ha="right" if long_labels else "center",
                      fontsize=8)
        ax.set_xlim(-0.6, slots - 0.4)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(xlabel)
        for p, v in zip(pos, values):
            ax.text(p, v, f"{v:,}", ha="center", va="bottom", fontsize=8)


def _top(counter: Counter, n: int) -> dict:
    items = counter.most_common()
    if len(items) <= n:
        return dict(items)
    return {**dict(items[:n - 1]), "other": sum(v for _, v in items[n - 1:])}


@dataclass
class Histogram:
    """Bin edges (none when there is no value) and the values counted in each bin by numpy's rule (a bin holds
    [its left edge, the next), the last one both edges), added a batch of values at a time."""

    edges: np.ndarray = field(default_factory=lambda: np.zeros(0))
    counts: np.ndarray | None = None

    def add(self, values: np.ndarray) -> None:
        counts, _ = np.histogram(values, bins=self.edges)
        self.counts = counts if self.counts is None else self.counts + counts

    def draw(self, ax, **style) -> None:
        """ax.hist of the counted values: each bin's left edge weighted by its count falls in that bin, so the bars
        are those of ax.hist over the values themselves."""
        ax.hist(self.edges[:-1], bins=self.edges, weights=self.counts, **style)


def log_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """Log-spaced bin edges with a margin around positive data (logspace's rounded end edges would otherwise drop
    the shortest and the longest value)."""
    lo, hi = values.min() / 1.05, values.max() * 1.05
    if hi / lo < 1.5:
        lo, hi = lo / 1.2, hi * 1.2
    return np.logspace(np.log10(lo), np.log10(hi), bins + 1)


def duration_histogram(durations: Histogram) -> bytes:
    """durations: the positive durations counted in the bins of log_bins."""
    fig, (ax,) = _figure()
    ax.set_title("Video duration (log scale)", fontsize=10)
    if durations.edges.size == 0:
        _empty(ax, "no accepted videos")
        return png(fig)
    edges = durations.edges
    durations.draw(ax, color=BAR, edgecolor="white")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("videos")
    for mark, label in ((60, "1 min"), (600, "10 min"), (3600, "1 h")):
        if edges[0] <= mark <= edges[-1]:
            ax.axvline(mark, color=ACCENT, ls="--", lw=1)
            ax.text(mark, ax.get_ylim()[1], label, color=ACCENT, fontsize=8, ha="left", va="top")
    return png(fig)


def _counter(counts: dict, label) -> Counter:
    """counts ({value: videos}, in first-seen order) regrouped by label(value), values whose label is None left out."""
    out = Counter()
    for value, n in counts.items():
        key = label(value)
        if key is not None:
            out[key] += n
    return out


def resolution_fps(sizes: dict[tuple[int, int], int], fps: dict[float, int]) -> bytes:
    """sizes: (width, height) -> videos; fps: frame rate -> videos (each in the order first seen)."""
    fig, (left, right) = _figure(10, 3.4, cols=2)
    res = _counter(sizes, lambda wh: f"{wh[0]}x{wh[1]}" if wh[0] and wh[1] else None)
    _bars(left, _top(res, 10), "Resolution (width x height)", "videos", horizontal=True, empty="no videos")
    rates = _counter(fps, lambda f: f"{f:.3g}" if f else None)
    _bars(right, dict(sorted(_top(rates, 10).items(), key=lambda kv: _as_float(kv[0]))), "Frame rate (fps)", "videos",
          color=ACCENT, empty="no videos")
    return png(fig)


def _as_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def codec_mix(codecs: dict[str, int], containers: dict[str, int]) -> bytes:
    """codecs, containers: name -> videos, in the order first seen."""
    fig, (left, right) = _figure(10, 3.0, cols=2)
    _bars(left, _top(_counter(codecs, lambda c: c or "unknown"), 8), "Video codec", "videos", horizontal=True,
          empty="no videos")
    _bars(right, _top(_counter(containers, lambda c: c or "unknown"), 8), "Container", "videos", horizontal=True,
          color=ACCENT, empty="no videos")
    return png(fig)


def scenes_per_minute(data: Histogram) -> bytes:
    """data: scenes per minute counted in numpy's equal-width bins over their range."""
    fig, (ax,) = _figure()
    ax.set_title("Scenes per minute", fontsize=10)
    if data.edges.size == 0:
        _empty(ax, "no scene detection yet (run the `scenes` stage)")
        return png(fig)
    data.draw(ax, color=BAR, edgecolor="white")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("scenes per minute of video")
    ax.set_ylabel("videos")
    return png(fig)


def rejects_by_reason(input_counts: dict, annotation_counts: dict) -> bytes:
    fig, (left, right) = _figure(11, 3.4, cols=2)
    _bars(left, input_counts, "Rejected inputs by reason", "inputs", horizontal=True, color=WARN,
          empty="no input was rejected")
    _bars(right, annotation_counts, "Rejected model outputs by task: reason", "outputs", horizontal=True,
          color=WARN, empty="no model output was rejected")
    return png(fig)


def qa_per_family_and_stage(per_family: dict, per_stage_family: dict[str, dict[str, int]],
                            mixtures_note: str | None) -> bytes:
    fig, (left, right) = _figure(11, 3.6, cols=2)
    _bars(left, per_family, "QA pairs per family (all annotations)", "QA pairs", horizontal=True,
          empty="no QA pairs (run the `annotate` stage)")
    right.set_title("QA samples per curriculum stage and family", fontsize=10)
    families = sorted({f for per in per_stage_family.values() for f in per})
    if mixtures_note or not families:
        _empty(right, mixtures_note or "no QA in the mixtures")
        return png(fig)
    stages = sorted(per_stage_family)
    width = 0.8 / len(families)
    pos = np.arange(len(stages))
    for i, family in enumerate(families):
        right.bar(pos + i * width - 0.4 + width / 2, [per_stage_family[s].get(family, 0) for s in stages], width,
                  label=family, color=PALETTE[i % len(PALETTE)])
    right.set_xticks(pos, stages)
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_ylabel("samples")
    right.legend(fontsize=7, frameon=False)
    return png(fig)


def hours_per_stage(hours: dict[str, dict[str, float]], mixtures_note: str | None) -> bytes:
    fig, (ax,) = _figure(10, 3.4)
    ax.set_title("Hours of training samples per curriculum stage (stacked by task)", fontsize=10)
    if mixtures_note or not hours:
        _empty(ax, mixtures_note or "the mixtures hold no samples")
        return png(fig)
    stages = sorted(hours)
    tasks = sorted({t for per in hours.values() for t in per})
    bottom = np.zeros(len(stages))
    for i, task in enumerate(tasks):
        values = np.array([hours[s].get(task, 0.0) for s in stages])
        ax.bar(stages, values, bottom=bottom, label=task, color=PALETTE[i % len(PALETTE)])
        bottom += values
    for x, total in zip(stages, bottom):
        ax.text(x, total, f"{total:.3g} h", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("hours")
    ax.legend(fontsize=7, frameon=False, ncols=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png(fig)


def median_of_counts(counts: dict[int, int]) -> float:
    """The median of the values a {value: occurrences} histogram stands for (numpy's: the mean of the two middle
    values when there is an even number of them)."""
    values = np.array(sorted(counts), dtype=np.int64)
    cumulative = np.cumsum([counts[v] for v in values])
    n = int(cumulative[-1])

    def kth(k: int) -> int:  # the k-th smallest value, 0-based
        return int(values[np.searchsorted(cumulative, k, side="right")])

    return float(np.mean([kth((n - 1) // 2), kth(n // 2)]))


def annotation_lengths(lengths: dict[str, dict[int, int]], bins: int) -> bytes:
    """lengths: kind (e.g. 'clip captions') -> {words: rows with that many words}; drawn as the histogram of the
    rows' word counts (weights), with its exact median."""
    kinds = list(lengths)
    cols = 3
    rows = max(1, -(-len(kinds) // cols))
    fig, axes = _figure(11, 2.6 * rows, cols=cols, rows=rows)
    for ax, kind, color in zip(axes, kinds, PALETTE * 3):
        ax.set_title(f"{kind} (words)", fontsize=10)
        counts = {words: n for words, n in lengths[kind].items() if n}
        if not counts:
            _empty(ax, "none")
            continue
        words = np.array(sorted(counts), dtype=np.int64)
        ax.hist(words, bins=min(bins, len(words)), weights=np.array([counts[w] for w in words], dtype=np.int64),
                color=color, edgecolor="white")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        median = median_of_counts(counts)
        ax.axvline(median, color="black", ls=":", lw=1)
        ax.text(0.98, 0.95, f"n={sum(counts.values()):,}\nmedian {median:.0f}", transform=ax.transAxes, ha="right",
                va="top", fontsize=8)
    for ax in axes[len(kinds):]:
        ax.set_visible(False)
    return png(fig)
