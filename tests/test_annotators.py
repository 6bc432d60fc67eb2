"""Annotator logic with a scripted backend (a real implementation of the Backend interface that answers from a
script), so validation, repair and provenance are tested deterministically; the real model backends have their own
tests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from annotators import prompts, qa_templates
from annotators.backends.base import BackendInfo, GenerationParams, Request
from annotators.grounding import qvhighlights_record
from annotators.validation import InvalidOutput, check_qa, check_text
from annotators.video_annotator import AnnotateSettings, VideoAnnotator, VideoInput
from annotators.windows import Window, caption_windows, window_frames
from schemas.sampling import frame_indices
from schemas.tables import QA_FAMILIES


class ScriptedBackend:
    """Answers each request with the first scripted reply whose key occurs in the prompt (or a default)."""

    def __init__(self, script: dict[str, list[str]], default: str = "A person walks through a bright room."):
        self.script = {k: list(v) for k, v in script.items()}
        self.default = default
        self.info = BackendInfo("scripted", "/models/scripted", "ab" * 32, random_init=False)
        self.params = GenerationParams(max_new_tokens=32)
        self.seen: list[Request] = []

    def generate(self, requests):
        out = []
        for r in requests:
            self.seen.append(r)
            for key, replies in self.script.items():
                if key in r.prompt and replies:
                    out.append(replies.pop(0) if len(replies) > 1 else replies[0])
                    break
            else:
                out.append(self.default)
        return out


def _video(n_windows=4, duration=40.0):
    edges = np.linspace(0, duration, n_windows + 1)
    windows = [Window(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:])]
    frames = [np.zeros((2, 8, 8, 3), np.uint8) for _ in windows]
    scenes = [{"start_s": w.start_s, "end_s": w.end_s} for w in windows]
    return VideoInput("v" * 20, duration, scenes, windows, frames, [[w.start_s, w.end_s - 1] for w in windows])


def test_windows_merge_short_and_split_long_scenes():
    scenes = [{"start_s": 0, "end_s": 2}, {"start_s": 2, "end_s": 10}, {"start_s": 10, "end_s": 130},
              {"start_s": 130, "end_s": 131}]
    w = caption_windows(scenes, 131, min_s=4, max_s=50)
    # [0,2] joins [2,10]; the 1 s tail joins [10,130]; [10,131] is split into 3 equal windows of <= 50 s
    expected = [(0, 10), (10, 10 + 121 / 3), (10 + 121 / 3, 10 + 242 / 3), (10 + 242 / 3, 131)]
    assert [t for x in w for t in (x.start_s, x.end_s)] == pytest.approx([t for pair in expected for t in pair])
    assert caption_windows([], 12.0, 4, 60) == [Window(0.0, 12.0)]
    idx = window_frames(Window(10.0, 20.0), vlen=750, fps=25.0, num_frames=4)
    assert idx == [250 + i for i in frame_indices(250, 25.0, 4, 4, "middle")]


def test_text_and_qa_validation():
    assert check_text("  A dog runs. ", "Describe it", 3, 100) == "A dog runs."
    for bad, why in [("", "empty"), ("x" * 200, "longer"), ("ab", "shorter")]:
        with pytest.raises(InvalidOutput, match=why):
            check_text(bad, "Describe it", 3, 100)
    prompt = prompts.load("clip_caption").render()
    with pytest.raises(InvalidOutput, match="echo"):
        check_text(prompt[:120], prompt, 3, 600)
    ok = json.dumps({"question": "When does the dog run?", "options": [], "answer": "At the start.",
                     "start": 1.0, "end": 4.5})
    assert check_qa(ok, "p", "open", 10.0, time_bound=True)["start_s"] == 1.0
    cases = {
        "valid JSON": "When?",
        "outside": json.dumps({"question": "q?", "options": [], "answer": "a", "start": 1, "end": 11}),
        "not before": json.dumps({"question": "q?", "options": [], "answer": "a", "start": 5, "end": 5}),
        "4 options": json.dumps({"question": "q?", "options": ["a", "b"], "answer": "a", "start": None, "end": None}),
        "distinct": json.dumps({"question": "q?", "options": ["a", "A", "b", "c"], "answer": "a"}),
        "not one of": json.dumps({"question": "q?", "options": ["a", "b", "c", "d"], "answer": "e"}),
        "required": json.dumps({"question": "q?", "options": ["a", "b", "c", "d"], "answer": "a"}),
    }
    for why, raw in cases.items():
        form = "open" if why in ("valid JSON", "outside", "not before") else "mc"
        with pytest.raises(InvalidOutput, match=why):
            check_qa(raw, "p", form, 10.0, time_bound=(why == "required"))


def test_template_qa_covers_every_family_deterministically():
    events = [qa_templates.Event(i * 10.0, (i + 1) * 10.0, f"Event number {i} happens") for i in range(5)]
    scenes = [{"start_s": e.start_s, "end_s": e.end_s} for e in events]
    rows = {f: qa_templates.generate(f, "vid", events, scenes, 50.0) for f in QA_FAMILIES}
    again = {f: qa_templates.generate(f, "vid", events, scenes, 50.0) for f in QA_FAMILIES}
    assert rows == again
    for family, qa in rows.items():
        assert {r["form"] for r in qa} == {"open", "mc"}, family
        for r in qa:
            if r["form"] == "mc":
                assert len(r["options"]) == 4 == len(set(r["options"])) and r["answer"] in r["options"]
    grounding = rows["temporal_grounding"][0]
    assert grounding["answer"] == f"The event happens in the {grounding['start_s']:.1f} - {grounding['end_s']:.1f} seconds."
    assert rows["event_count"][0]["answer"] == "5"


def test_annotator_hierarchy_validation_repair_and_provenance():
    bad_then_good = ["{not json", json.dumps({"question": "What colour is the room?", "options": [],
                                              "answer": "It is bright.", "start": None, "end": None})]
    backend = ScriptedBackend({"open question about": bad_then_good, "Write one": ["never json"],
                               "Here are timestamped": ["The video shows a walk."]})
    settings = AnnotateSettings(qa_generators={"free_qa": "model", "event_count": "template",
                                               "event_understanding": "model"}, qa_forms=("open",),
                                repair_attempts=1)
    rows = VideoAnnotator(backend, settings).annotate([_video()])
    clip = [c for c in rows["captions"] if c["level"] == "clip"]
    video = [c for c in rows["captions"] if c["level"] == "video"]
    assert len(clip) == 4 and len(video) == 1
    assert video[0]["text"] == "The video shows a walk." and video[0]["end_s"] == 40.0
    summary_request = next(r for r in backend.seen if "Here are timestamped" in r.prompt)
    assert "[0.0-10.0 s] A person walks" in summary_request.prompt  # built from the clip captions
    by_family = {(q["family"], q["generator"]) for q in rows["qa"]}
    assert ("free_qa", "model") in by_family and ("event_count", "template") in by_family
    free = next(q for q in rows["qa"] if q["family"] == "free_qa")
    assert free["answer"] == "It is bright." and free["prompt_id"] == "qa_from_captions"
    assert free["backend"] == "scripted" and free["weights_sha256"] == "ab" * 32
    (rej,) = [r for r in rows["rejects"] if r["family"] == "event_understanding"]
    assert rej["raw_output"] == "never json" and rej["attempts"] == 2 and "JSON" in rej["reason"]
    assert len(rows["grounding"]) == 4
    template = next(q for q in rows["qa"] if q["generator"] == "template")
    assert template["backend"] == "template" and template["prompt_id"] == "qa_templates"
    # built from the scripted model's captions: it carries that model's identity
    assert (template["model"], template["weights_sha256"], template["random_init"]) == ("/models/scripted",
                                                                                        "ab" * 32, False)


def test_rows_built_from_a_random_weight_models_captions_say_so():
    backend = ScriptedBackend({})
    backend.info = BackendInfo("scripted", "tiny-demo", "cd" * 32, random_init=True)
    rows = VideoAnnotator(backend, AnnotateSettings()).annotate([_video()])
    derived = rows["qa"] + rows["grounding"]
    assert derived and all(r["random_init"] is True and r["model"] == "tiny-demo" and r["weights_sha256"] == "cd" * 32
                           for r in derived)


@pytest.mark.parametrize("raw, reason", [
    ("\x7f" * 24, "text contains control characters (U+007F)"),
    ("A man\x00 walks", "text contains control characters (U+0000)"),
    ("... !!! ???", "text has no letter or digit"),
    ("\ufffd\ufffd\ufffd\ufffd ab", "text is mostly replacement characters (U+FFFD: 4 of 6)"),
])
def test_unreadable_captions_become_rejects_with_a_reason(raw, reason):
    backend = ScriptedBackend({}, default=raw)
    rows = VideoAnnotator(backend, AnnotateSettings()).annotate([_video(3)])
    assert rows["captions"] == [] and rows["qa"] == []  # never a blank multiple-choice option
    assert [r["reason"] for r in rows["rejects"]] == [reason] * 3


@pytest.mark.parametrize("text", ["Ein Mann läuft über die Straße.", "一个男人在跑步",
                                  "Scene 2:\tthe cook\nfolds a map", "A sign reads \ufffd OPEN"])
def test_readable_text_passes(text):
    assert check_text(text, "prompt", 3, 600) == text.strip()


def test_invalid_captions_become_rejects_and_feed_nothing():
    backend = ScriptedBackend({}, default="")
    rows = VideoAnnotator(backend, AnnotateSettings()).annotate([_video(3)])
    assert rows["captions"] == [] and rows["qa"] == [] and rows["grounding"] == []
    assert [r["reason"] for r in rows["rejects"]] == ["empty text"] * 3


def test_qvhighlights_record():
    rec = qvhighlights_record(7, {"video_id": "v1", "query": "a dog", "start_s": 3.0, "end_s": 8.5,
                                  "duration_s": 30.0})
    assert rec == {"qid": 7, "query": "a dog", "duration": 30.0, "vid": "v1", "relevant_windows": [[3.0, 8.5]],
                   "relevant_clip_ids": [1, 2, 3, 4], "saliency_scores": [[4, 4, 4]] * 4}
