"""schemas.stats.count_text_tokens summed over many texts at once, with numpy instead of a Python regex call per
conversation turn. Under the rule `\\w+|[^\\w\\s]` a text's tokens are its maximal runs of word characters plus its
characters that are neither word nor space; which class each code point is in is read once per process from
Python's own `re` (run over every code point), so the sum is the per-text rule's for any text, Unicode included.
Texts are joined by a space (a space ends a run and holds no token; `<image>` has no space, so removing it before or
after joining is the same)."""

from __future__ import annotations

import functools
import re

import numpy as np

from schemas import stats as stats_schema
from schemas.sampling import IMAGE_TOKEN

_RULE = r"\w+|[^\w\s]"  # the TEXT_TOKEN_PATTERN this module transcribes; any other rule counts text by text
_SPACE, _WORD, _OTHER = 0, 1, 2


@functools.cache
def code_point_classes() -> np.ndarray | None:
    """The class (_SPACE, _WORD, _OTHER) of every code point under Python's `re`; None when the rule is not `_RULE`."""
    if stats_schema.TEXT_TOKEN_PATTERN.pattern != _RULE or stats_schema.TEXT_TOKEN_PATTERN.flags != re.UNICODE:
        return None
    chars = np.arange(0x110000, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
    classes = np.full(0x110000, _OTHER, np.uint8)
    for pattern, value in ((r"\s+", _SPACE), (r"\w+", _WORD)):
        for run in re.finditer(pattern, chars):  # a run of matches is a range of consecutive code points
            classes[ord(run.group()[0]):ord(run.group()[-1]) + 1] = value
    return classes


def count(texts: list[str]) -> int:
    """sum(count_text_tokens(t) for t in texts)."""
    classes = code_point_classes()
    if classes is None:
        return sum(stats_schema.count_text_tokens(t) for t in texts)
    if not texts:
        return 0
    joined = " ".join(texts).replace(IMAGE_TOKEN, " ")
    points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), np.uint32)
    of_points = classes[points]
    word = of_points == _WORD
    starts = int(np.count_nonzero(word[:1])) + int(np.count_nonzero(word[1:] & ~word[:-1]))
    return starts + int(np.count_nonzero(of_points == _OTHER))
