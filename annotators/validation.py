"""Strict checks on model output. Nothing that fails here reaches the caption or QA tables."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Optional

from schemas.errors import LongVidError
from schemas.tables import QA_FORMS


class InvalidOutput(LongVidError, ValueError):
    """A model output that cannot be used; the message is the reason recorded in annotations/rejects."""


def _echoes(text: str, prompt: str, min_overlap: int = 40) -> bool:
    """True when the output repeats a long run of the prompt (a common failure of small models)."""
    t, p = " ".join(text.split()).lower(), " ".join(prompt.split()).lower()
    if len(t) < min_overlap or len(p) < min_overlap:
        return bool(t) and t in p and len(t) > len(p) // 2
    return any(t[i:i + min_overlap] in p for i in range(0, len(t) - min_overlap + 1, min_overlap // 2))


_ALLOWED_CONTROLS = frozenset("\t\n\r")
REPLACEMENT_CHAR = "\ufffd"


def check_characters(text: str) -> None:
    """Text a person can read: no control characters (other than tab and newlines), at least one letter or digit,
    and at most half of its non-space characters U+FFFD (what a tokenizer decodes broken bytes to)."""
    controls = sorted({c for c in text if unicodedata.category(c) == "Cc" and c not in _ALLOWED_CONTROLS})
    if controls:
        shown = ", ".join(f"U+{ord(c):04X}" for c in controls[:5])
        raise InvalidOutput(f"text contains control characters ({shown})")
    if not any(unicodedata.category(c)[0] in "LN" for c in text):
        raise InvalidOutput("text has no letter or digit")
    visible = [c for c in text if not c.isspace()]
    replaced = sum(c == REPLACEMENT_CHAR for c in visible)
    if replaced * 2 > len(visible):
        raise InvalidOutput(f"text is mostly replacement characters (U+FFFD: {replaced} of {len(visible)})")


def check_text(text: str, prompt: str, min_chars: int, max_chars: int) -> str:
    text = text.strip()
    if not text:
        raise InvalidOutput("empty text")
    check_characters(text)
    if len(text) < min_chars:
        raise InvalidOutput(f"text shorter than {min_chars} characters")
    if len(text) > max_chars:
        raise InvalidOutput(f"text longer than {max_chars} characters")
    if _echoes(text, prompt):
        raise InvalidOutput("output echoes the prompt")
    return text


def _time(value, name: str, duration_s: float) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOutput(f"{name} is not a number of seconds")
    if not 0.0 <= float(value) <= duration_s + 1e-6:
        raise InvalidOutput(f"{name} {value} is outside [0, {duration_s:.2f}]")
    return float(value)


def extract_json(raw: str) -> dict:
    """The single JSON object in `raw` (tolerating a code fence around it)."""
    text = raw.strip()
    fence = re.match(r"^```(?:json)?\s*(.*?)\s*```$", text, re.S)
    if fence:
        text = fence.group(1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidOutput(f"not valid JSON ({e.msg} at char {e.pos})")
    if not isinstance(value, dict):
        raise InvalidOutput("JSON is not an object")
    return value


def check_qa(raw: str, prompt: str, form: str, duration_s: float, time_bound: bool, min_chars: int = 2,
             max_chars: int = 1000) -> dict:
    """Parse and validate a QA JSON answer; returns {question, options, answer, start_s, end_s}."""
    if form not in QA_FORMS:
        raise ValueError(form)
    obj = extract_json(raw)
    question = obj.get("question")
    answer = obj.get("answer")
    options = obj.get("options", [])
    if not isinstance(question, str) or not isinstance(answer, str):
        raise InvalidOutput("question and answer must be strings")
    question = check_text(question, prompt, min_chars, max_chars)
    answer = check_text(answer, prompt, 1, max_chars)
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise InvalidOutput("options must be a list of strings")
    options = [o.strip() for o in options]
    for option in options:
        if option:
            check_characters(option)
    if form == "mc":
        if len(options) != 4:
            raise InvalidOutput(f"a multiple-choice question needs 4 options, got {len(options)}")
        if len(set(o.lower() for o in options)) != 4 or not all(options):
            raise InvalidOutput("options are not distinct and non-empty")
        if answer not in options:
            raise InvalidOutput("answer is not one of the options")
    elif options:
        raise InvalidOutput("an open question must have no options")
    start, end = _time(obj.get("start"), "start", duration_s), _time(obj.get("end"), "end", duration_s)
    if time_bound and (start is None or end is None):
        raise InvalidOutput("start and end are required for this family")
    if (start is None) != (end is None):
        raise InvalidOutput("start and end must both be given or both be null")
    if start is not None and not start < end:
        raise InvalidOutput(f"start {start} is not before end {end}")
    return {"question": question, "options": options if form == "mc" else [], "answer": answer,
            "start_s": start, "end_s": end}
