"""Deterministic QA from timestamped clip captions and scene boundaries: no model, same input → same questions.

Distractor options come from other events of the same video, chosen by a seeded RNG keyed on the video id.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from schemas.sampling import GROUNDING_ANSWER

TEMPLATE_ID = "qa_templates"
TEMPLATE_VERSION = 1


@dataclass(frozen=True)
class Event:
    start_s: float
    end_s: float
    text: str


def _rng(video_id: str, family: str) -> random.Random:
    return random.Random(int(hashlib.sha256(f"{video_id}:{family}".encode()).hexdigest()[:16], 16))


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].lower() + text[1:] if text else text


def _options(correct: str, pool: list[str], rng: random.Random) -> list[str] | None:
    distractors = sorted({p for p in pool if p and p.lower() != correct.lower()})
    if len(distractors) < 3:
        return None
    options = rng.sample(distractors, 3) + [correct]
    rng.shuffle(options)
    return options


def _row(family, form, question, answer, options=(), start=None, end=None) -> dict:
    return {"family": family, "form": form, "question": question, "options": list(options), "answer": answer,
            "start_s": start, "end_s": end}


def event_understanding(video_id: str, events: list[Event]) -> list[dict]:
    rows = []
    dense = " ".join(f"From {e.start_s:.1f} to {e.end_s:.1f} seconds, {_sentence(e.text)}." for e in events)
    rows.append(_row("event_understanding", "open",
                     "Describe the video in detail, in order, saying when each event happens.", dense))
    rng = _rng(video_id, "event_understanding")
    target = events[rng.randrange(len(events))]
    opts = _options(target.text, [e.text for e in events], rng)
    if opts:
        rows.append(_row("event_understanding", "mc",
                         f"What happens between {target.start_s:.1f} and {target.end_s:.1f} seconds?",
                         target.text, opts, target.start_s, target.end_s))
    return rows


def event_count(video_id: str, events: list[Event], scenes: list[dict]) -> list[dict]:
    n = max(1, len(scenes))
    rows = [_row("event_count", "open", "How many distinct shots does the video consist of?", str(n))]
    rng = _rng(video_id, "event_count")
    pool = [str(k) for k in (n - 2, n - 1, n + 1, n + 2, n + 3) if k >= 1]
    opts = _options(str(n), pool, rng)
    if opts:
        rows.append(_row("event_count", "mc", "How many distinct shots does the video consist of?", str(n), opts))
    return rows


def event_relationship(video_id: str, events: list[Event]) -> list[dict]:
    if len(events) < 2:
        return []
    rng = _rng(video_id, "event_relationship")
    i = rng.randrange(len(events) - 1)
    first, second = events[i], events[i + 1]
    a, b = (first, second) if rng.random() < 0.5 else (second, first)
    rows = [_row("event_relationship", "open",
                 f"Which happens first in the video: \"{_sentence(a.text)}\" or \"{_sentence(b.text)}\"?",
                 first.text)]
    opts = _options(second.text, [e.text for e in events if e is not first], rng)
    if opts:
        rows.append(_row("event_relationship", "mc",
                         f"What happens right after \"{_sentence(first.text)}\"?", second.text, opts,
                         first.start_s, second.end_s))
    return rows


def temporal_grounding(video_id: str, events: list[Event], duration_s: float) -> list[dict]:
    rng = _rng(video_id, "temporal_grounding")
    target = events[rng.randrange(len(events))]
    question = f"During which seconds does the following happen: {_sentence(target.text)}?"
    answer = GROUNDING_ANSWER.format(s=target.start_s, e=target.end_s)
    rows = [_row("temporal_grounding", "open", question, answer, (), target.start_s, target.end_s)]
    others = [GROUNDING_ANSWER.format(s=e.start_s, e=e.end_s) for e in events if e is not target]
    opts = _options(answer, others, rng)
    if opts:
        rows.append(_row("temporal_grounding", "mc", question, answer, opts, target.start_s, target.end_s))
    return rows


def free_qa(video_id: str, events: list[Event]) -> list[dict]:
    rng = _rng(video_id, "free_qa")
    target = events[rng.randrange(len(events))]
    t = (target.start_s + target.end_s) / 2
    question = f"What is shown at around {t:.1f} seconds into the video?"
    rows = [_row("free_qa", "open", question, target.text, (), target.start_s, target.end_s)]
    opts = _options(target.text, [e.text for e in events], rng)
    if opts:
        rows.append(_row("free_qa", "mc", question, target.text, opts, target.start_s, target.end_s))
    return rows


def generate(family: str, video_id: str, events: list[Event], scenes: list[dict], duration_s: float) -> list[dict]:
    if not events:
        return []
    if family == "event_understanding":
        return event_understanding(video_id, events)
    if family == "event_count":
        return event_count(video_id, events, scenes)
    if family == "event_relationship":
        return event_relationship(video_id, events)
    if family == "temporal_grounding":
        return temporal_grounding(video_id, events, duration_s)
    if family == "free_qa":
        return free_qa(video_id, events)
    raise ValueError(f"unknown QA family {family!r}")
