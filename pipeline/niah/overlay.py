"""Clue images: `Find a frame of <caption>` drawn on the needle image in white on a black box across the bottom, the
text height a fixed fraction of the frame height (Pillow's built-in scalable font, present on every machine)."""

from __future__ import annotations

import numpy as np

from schemas import niah as niah_schema

MIN_FONT_PX = 10


def clue_text(caption: str) -> str:
    return niah_schema.CLUE_TEMPLATE.format(caption=caption)


def _wrap(text: str, font, max_width: float) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if current and font.getlength(trial) > max_width:
            lines.append(current)
            current = word
        else:
            current = trial
    if current:
        lines.append(current)
    return lines


def box_height(frame_height: int, lines: int, text_height: float) -> int:
    size = max(MIN_FONT_PX, round(frame_height * text_height))
    pad = max(2, size // 2)
    return lines * round(size * 1.25) + 2 * pad


def render_clue(image: np.ndarray, caption: str, text_height: float) -> np.ndarray:
    """A copy of `image` (uint8 HxWx3) carrying the clue to the image captioned `caption`."""
    from PIL import Image, ImageDraw, ImageFont

    height, width = image.shape[:2]
    size = max(MIN_FONT_PX, round(height * text_height))
    font = ImageFont.load_default(size=size)
    pad = max(2, size // 2)
    lines = _wrap(clue_text(caption), font, width - 2 * pad)
    line_h = round(size * 1.25)
    box_h = box_height(height, len(lines), text_height)
    canvas = Image.fromarray(image).copy()
    draw = ImageDraw.Draw(canvas)
    top = height - box_h
    draw.rectangle([0, top, width, height], fill=(0, 0, 0))
    for i, line in enumerate(lines):
        draw.text((pad, top + pad + i * line_h), line, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)
