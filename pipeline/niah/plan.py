"""Seeded plans of items: which needles form the chain and the distractor chain, where their clips go, which videos
fill the haystack, and the questions. Plans are small and made in the driver; rendering them is the tasks' work."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from pipeline.core.parts import settings_digest
from pipeline.niah import questions
from pipeline.niah.errors import NiahInputError
from pipeline.niah.needles import Needle
from pipeline.niah.sources import VideoRef
from schemas import niah as niah_schema
from schemas.config import NiahConfig

MAX_HAYSTACK_VIDEOS = 256  # per item, when the videos' durations are unknown (the renderer cycles if short)


@dataclass
class ItemPlan:
    id: str
    seed: int  # the set's --seed
    rng_key: str  # seeds every random choice of this item
    hops: int
    num_frames: int
    chain: list[Needle]  # chain[0] is named by the prompt; chain[-1] is the plain final image
    distractors: list[Needle]  # distractors[i] points to distractors[i + 1]; the last one is plain
    clip_starts: list[int]  # first frame of the clip of chain + distractors, in that order
    haystack_videos: list[VideoRef]  # in the order their 1 fps frames fill the haystack (cycled if short)
    prompt: str
    caption_question: dict
    fact_question: dict | None  # None: asked about the final image's dominant colour, computed when rendered
    settings: dict = field(default_factory=dict)  # rendering settings, part of the digest

    @property
    def needles(self) -> list[Needle]:
        return self.chain + self.distractors

    def digest(self) -> str:
        return settings_digest(asdict(self))


def prompt_text(first_caption: str, hops: int) -> str:
    if hops == 1:
        return (f"Images have been inserted into this video. Find a frame of {first_caption}. "
                "That image is the final image: answer the questions about it.")
    return (f"Images have been inserted into this video; some carry a clue naming the next image to look for. "
            f"Find a frame of {first_caption}. Follow the clues from image to image until you reach an image "
            "without a clue: that is the final image. Answer the questions about it.")


def _haystack_order(videos: list[VideoRef], frames_needed: int, rng: random.Random) -> list[VideoRef]:
    order = list(videos)
    rng.shuffle(order)
    chosen, covered = [], 0.0
    for ref in order:
        chosen.append(ref)
        covered += ref.duration_s or 0.0
        if covered >= frames_needed + len(chosen) or len(chosen) >= MAX_HAYSTACK_VIDEOS:
            break
    return chosen


class Planner:
    def __init__(self, cfg: NiahConfig, haystack: list[VideoRef], needles: list[Needle], settings: dict):
        if not haystack:
            raise NiahInputError("no haystack videos: give at least one --source holding videos")
        self.cfg, self.haystack, self.settings = cfg, haystack, settings
        self.by_caption: dict[str, list[Needle]] = {}
        for n in needles:
            self.by_caption.setdefault(n.caption, []).append(n)
        self.captions = sorted(self.by_caption)
        wanted = max(max(cfg.hops) + cfg.distractor_hops, niah_schema.NUM_OPTIONS)
        if len(self.captions) < wanted:
            raise NiahInputError(
                f"{len(self.captions)} distinct needle caption(s) found, {wanted} needed "
                f"(max hops {max(cfg.hops)} + distractor hops {cfg.distractor_hops}, and {niah_schema.NUM_OPTIONS} "
                "answer options): give --needles with more captioned images, or more (annotated) source videos")
        self.vocabulary = sorted(set().union(*(questions.content_words(c) for c in self.captions)))

    def plan(self, hops: int, num_frames: int, index: int) -> ItemPlan:
        cfg = self.cfg
        rng_key = f"{cfg.seed}:{hops}:{num_frames}:{index}"
        rng = random.Random(rng_key)
        count = hops + cfg.distractor_hops
        picked = rng.sample(self.captions, count)
        needles = [rng.choice(self.by_caption[c]) for c in picked]
        chain, distractors = needles[:hops], needles[hops:]
        slots = niah_schema.clip_starts(num_frames, count, cfg.depths)
        rng.shuffle(slots)
        final = chain[-1].caption
        hard = ([distractors[-1].caption] if distractors else []) + [n.caption for n in reversed(chain[:-1])]
        caption_q = questions.caption_question(final, hard, self.captions, rng)
        fact_q = None
        if chain[-1].from_annotations:
            foreign = [w for w in self.vocabulary if w not in questions.content_words(final)]
            fact_q = questions.word_question(final, [n.caption for n in needles], foreign, rng)
        background = num_frames - count * niah_schema.NEEDLE_CLIP_FRAMES
        return ItemPlan(
            id=niah_schema.item_id(hops, num_frames, index), seed=cfg.seed, rng_key=rng_key, hops=hops,
            num_frames=num_frames, chain=chain, distractors=distractors, clip_starts=slots,
            haystack_videos=_haystack_order(self.haystack, background, rng),
            prompt=prompt_text(chain[0].caption, hops), caption_question=caption_q, fact_question=fact_q,
            settings=self.settings)

    def all(self) -> list[ItemPlan]:
        return [self.plan(h, length, i) for h in self.cfg.hops for length in self.cfg.haystack_frames
                for i in range(self.cfg.items)]
