"""Annotate a batch of videos with one backend: clip captions per window → video summary (hierarchical) → QA per
family (template or model generator) → grounding labels. Every model output is validated; failures get repair
attempts (QA) and end as reject rows with the raw output. Returns rows for schemas.tables CAPTIONS, QA,
GROUNDING and ANNOTATION_REJECTS."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from annotators import prompts, qa_templates
from annotators.backends.base import Backend, Request
from annotators.grounding import grounding_rows
from annotators.validation import InvalidOutput, check_qa, check_text
from annotators.windows import Window
from schemas.tables import QA_FAMILIES

FAMILY_TEXT = {
    "event_understanding": ("event-understanding (what happens, in order, with times)", False),
    "event_count": ("event-counting (how many times something happens or how many distinct events)", False),
    "event_relationship": ("event-relationship (order, before/after or cause of events)", False),
    "temporal_grounding": ("temporal-grounding (when a described event happens; give start and end)", True),
    "free_qa": ("open question about the content", False),
}
FORM_TEXT = {"open": "open-ended (options = [])", "mc": "multiple choice with exactly 4 options"}


@dataclass
class AnnotateSettings:
    caption_min_chars: int = 3
    caption_max_chars: int = 600
    summary_max_chars: int = 2000
    qa_generators: dict = field(default_factory=lambda: {f: "template" for f in QA_FAMILIES})
    qa_forms: Sequence[str] = ("open", "mc")
    repair_attempts: int = 2
    frames_stage: str = "stage2"


@dataclass
class VideoInput:
    video_id: str
    duration_s: float
    scenes: list[dict]
    windows: list[Window]
    window_frames: list[Optional[np.ndarray]]  # uint8 [T, H, W, 3] per window
    window_timestamps: list[list[float]]
    window_tokens: list[Optional[np.ndarray]] = field(default_factory=list)  # precomputed HiCo clips per window


def _timeline(captions: list[dict]) -> str:
    return "\n".join(f"[{c['start_s']:.1f}-{c['end_s']:.1f} s] {c['text']}" for c in captions)


class VideoAnnotator:
    def __init__(self, backend: Backend, settings: AnnotateSettings):
        self.backend, self.settings = backend, settings
        self.params_json = json.dumps(backend.params.as_dict(), sort_keys=True)

    def _provenance(self, prompt: Optional[prompts.Prompt], num_frames: Optional[int], model: bool = True) -> dict:
        info = self.backend.info
        if not model:
            # Built by templates from this backend's captions: the rows inherit the caption model's identity, so
            # filtering on `model` or `random_init` catches every row a model's text reached.
            return {"backend": "template", "model": info.model, "weights_sha256": info.weights_sha256,
                    "random_init": info.random_init, "prompt_id": qa_templates.TEMPLATE_ID,
                    "prompt_version": qa_templates.TEMPLATE_VERSION, "generation_params": "{}", "num_frames": None,
                    "frames_stage": self.settings.frames_stage}
        return {"backend": info.backend, "model": info.model, "weights_sha256": info.weights_sha256,
                "random_init": info.random_init, "prompt_id": prompt.id if prompt else None,
                "prompt_version": prompt.version if prompt else None, "generation_params": self.params_json,
                "num_frames": num_frames, "frames_stage": self.settings.frames_stage}

    def _reject(self, video_id, task, family, reason, raw, attempts, prompt, num_frames) -> dict:
        return {"video_id": video_id, "task": task, "family": family, "reason": reason, "raw_output": raw,
                "attempts": attempts, **self._provenance(prompt, num_frames)}

    def annotate(self, videos: Sequence[VideoInput]) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {"captions": [], "qa": [], "grounding": [], "rejects": []}
        s = self.settings
        cap_prompt = prompts.load("clip_caption")
        requests, owners = [], []
        for v in videos:
            for k, w in enumerate(v.windows):
                tokens = v.window_tokens[k] if k < len(v.window_tokens) else None
                requests.append(Request(cap_prompt.render(), v.window_frames[k], v.window_timestamps[k],
                                        w.duration_s, v.video_id, tokens, cap_prompt.system))
                owners.append((v, w))
        clip_captions: dict[str, list[dict]] = {v.video_id: [] for v in videos}
        for (v, w), req, raw in zip(owners, requests, self.backend.generate(requests)):
            n = len(req.timestamps_s)
            try:
                text = check_text(raw, req.prompt, s.caption_min_chars, s.caption_max_chars)
            except InvalidOutput as e:
                out["rejects"].append(self._reject(v.video_id, "caption", None, str(e), raw, 1, cap_prompt, n))
                continue
            row = {"video_id": v.video_id, "level": "clip", "start_s": w.start_s, "end_s": w.end_s, "text": text,
                   **self._provenance(cap_prompt, n)}
            clip_captions[v.video_id].append(row)
            out["captions"].append(row)

        summary_prompt = prompts.load("video_summary")
        with_captions = [v for v in videos if clip_captions[v.video_id]]
        summary_requests = [Request(summary_prompt.render(duration=v.duration_s,
                                                          timeline=_timeline(clip_captions[v.video_id])),
                                    duration_s=v.duration_s, video_id=v.video_id, system=summary_prompt.system)
                            for v in with_captions]
        for v, req, raw in zip(with_captions, summary_requests, self.backend.generate(summary_requests)):
            try:
                text = check_text(raw, req.prompt, s.caption_min_chars, s.summary_max_chars)
            except InvalidOutput as e:
                out["rejects"].append(self._reject(v.video_id, "caption", None, str(e), raw, 1, summary_prompt, 0))
                continue
            out["captions"].append({"video_id": v.video_id, "level": "video", "start_s": 0.0,
                                    "end_s": v.duration_s, "text": text, **self._provenance(summary_prompt, 0)})

        for v in videos:
            events = [qa_templates.Event(c["start_s"], c["end_s"], c["text"]) for c in clip_captions[v.video_id]]
            for family, generator in s.qa_generators.items():
                if generator != "template":
                    continue
                for row in qa_templates.generate(family, v.video_id, events, v.scenes, v.duration_s):
                    if row["form"] in s.qa_forms:
                        out["qa"].append({"video_id": v.video_id, **row, "generator": "template",
                                          **self._provenance(None, None, model=False)})
            out["grounding"] += [{**g, **self._provenance(cap_prompt, None)}
                                 for g in grounding_rows(v.video_id, clip_captions[v.video_id], v.scenes, v.duration_s)]
        self._model_qa(with_captions, clip_captions, out)
        return out

    def _model_qa(self, videos, clip_captions, out) -> None:
        s = self.settings
        qa_prompt, repair_prompt = prompts.load("qa_from_captions"), prompts.load("qa_repair")
        pending = []  # (video, family, form, request, attempts)
        for v in videos:
            for family, generator in s.qa_generators.items():
                if generator != "model":
                    continue
                for form in s.qa_forms:
                    text = qa_prompt.render(duration=v.duration_s, timeline=_timeline(clip_captions[v.video_id]),
                                            family_description=FAMILY_TEXT[family][0], form_description=FORM_TEXT[form])
                    pending.append((v, family, form, Request(text, duration_s=v.duration_s, video_id=v.video_id,
                                                             system=qa_prompt.system), 1))
        while pending:
            answers = self.backend.generate([p[3] for p in pending])
            retry = []
            for (v, family, form, req, attempts), raw in zip(pending, answers):
                try:
                    qa = check_qa(raw, req.prompt, form, v.duration_s, time_bound=FAMILY_TEXT[family][1])
                except InvalidOutput as e:
                    if attempts <= s.repair_attempts:
                        fix = Request(repair_prompt.render(error=str(e), raw=raw[:2000]) + "\n\n" + req.prompt,
                                      duration_s=v.duration_s, video_id=v.video_id, system=repair_prompt.system)
                        retry.append((v, family, form, fix, attempts + 1))
                    else:
                        out["rejects"].append(self._reject(v.video_id, "qa", family, str(e), raw, attempts,
                                                           qa_prompt, 0))
                    continue
                out["qa"].append({"video_id": v.video_id, "family": family, "form": form, **qa, "generator": "model",
                                  **self._provenance(qa_prompt, 0)})
            pending = retry
