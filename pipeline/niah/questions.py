"""The two questions of an item, each four options with one correct letter, made deterministically from a seeded
random.Random: which caption describes the final image, and one fact of the final image (a word of its caption
among words of other captions, or, when captions carry no usable word, its dominant colour)."""

from __future__ import annotations

import random
import re

import numpy as np

from schemas import niah as niah_schema

CAPTION_QUESTION = "Which caption describes the final image of the chain (the image without a clue)?"
WORD_QUESTION = "Which of these words describes something in the final image of the chain?"
COLOUR_QUESTION = "Which colour covers most of the final image of the chain?"

_STOPWORDS = frozenset(
    "a an and are as at be been being by for from has have in into is it its of on onto or over that the their there "
    "these this those through to under up was were which while with without video frame frames clip image scene "
    "shows showing shown appears camera".split())
_WORD = re.compile(r"[a-z]{4,}")

# Named colours for the colour question (RGB); every pixel votes for its nearest.
COLOURS = {
    "black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128), "red": (200, 30, 30),
    "orange": (240, 140, 20), "yellow": (240, 230, 40), "green": (40, 170, 60), "cyan": (40, 200, 220),
    "blue": (40, 60, 210), "purple": (140, 50, 170), "pink": (240, 130, 190), "brown": (130, 80, 40),
}


def content_words(caption: str) -> set[str]:
    return {w for w in _WORD.findall(caption.lower()) if w not in _STOPWORDS}


def shuffled_options(correct: str, wrong: list[str], rng: random.Random) -> tuple[list[str], str]:
    options = [correct, *wrong[:niah_schema.NUM_OPTIONS - 1]]
    rng.shuffle(options)
    return options, niah_schema.LETTERS[options.index(correct)]


def caption_question(final: str, hard_negatives: list[str], pool: list[str], rng: random.Random) -> dict:
    """Wrong options: the captions of the item's other needles first (the distractor chain's end, then clue images),
    then random captions of the pool."""
    wrong: list[str] = []
    for c in hard_negatives:
        if c != final and c not in wrong:
            wrong.append(c)
    wrong = wrong[:niah_schema.NUM_OPTIONS - 1]
    others = [c for c in pool if c != final and c not in wrong]
    wrong += rng.sample(others, niah_schema.NUM_OPTIONS - 1 - len(wrong))
    options, letter = shuffled_options(final, wrong, rng)
    return {"question": CAPTION_QUESTION, "options": options, "answer": letter, "kind": niah_schema.KIND_FINAL_CAPTION}


def word_question(final: str, item_captions: list[str], foreign_words: list[str], rng: random.Random) -> dict | None:
    """The correct word is in the final caption and in no other caption of the item; the wrong ones
    (`foreign_words`, sorted) are in none of the final caption. None when either side runs short."""
    others_in_item = set().union(*(content_words(c) for c in item_captions if c != final))
    own = sorted(content_words(final) - others_in_item)
    if not own or len(foreign_words) < niah_schema.NUM_OPTIONS - 1:
        return None
    correct = rng.choice(own)
    options, letter = shuffled_options(correct, rng.sample(foreign_words, niah_schema.NUM_OPTIONS - 1), rng)
    return {"question": WORD_QUESTION, "options": options, "answer": letter, "kind": niah_schema.KIND_CAPTION_WORD}


def dominant_colour(image: np.ndarray) -> str:
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], dtype=np.int32)
    pixels = image[::4, ::4].reshape(-1, 3).astype(np.int32)
    nearest = ((pixels[:, None, :] - palette[None, :, :]) ** 2).sum(-1).argmin(1)
    counts = np.bincount(nearest, minlength=len(names))
    return names[int(counts.argmax())]


def colour_question(final_image: np.ndarray, rng: random.Random) -> dict:
    correct = dominant_colour(final_image)
    wrong = rng.sample(sorted(c for c in COLOURS if c != correct), niah_schema.NUM_OPTIONS - 1)
    options, letter = shuffled_options(correct, wrong, rng)
    return {"question": COLOUR_QUESTION, "options": options, "answer": letter,
            "kind": niah_schema.KIND_DOMINANT_COLOUR}
