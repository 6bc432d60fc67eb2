"""report.html markup: one self-contained page (inline CSS, images as base64 PNG data URIs, no script, no external
reference), every piece of build text HTML-escaped."""

from __future__ import annotations

import base64
import html
import re

CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 0; color: #1d1d1f; background: #ffffff; }
main { max-width: 1180px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 24px; margin: 8px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #d0d0d0; padding-bottom: 4px; }
.sub { color: #555555; font-size: 13px; margin-bottom: 12px; word-break: break-all; }
.banner { padding: 10px 14px; margin: 10px 0; border-radius: 4px; font-size: 14px; }
.warn { background: #fdecea; border: 2px solid #b3261e; color: #5f1410; }
.ok { background: #e8f3ec; border: 1px solid #4f9d69; }
.note { background: #fff5e5; border: 1px solid #d9822b; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { border: 1px solid #d8d8d8; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f4f7; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img.plot { display: block; max-width: 100%; margin: 6px 0; }
.card { border: 1px solid #d0d0d0; border-radius: 6px; padding: 10px 12px; margin: 12px 0; }
.frames { display: flex; gap: 6px; flex-wrap: wrap; }
.frames figure { margin: 0; font-size: 11px; color: #555555; text-align: center; }
.badge { display: inline-block; background: #b3261e; color: #ffffff; font-size: 11px; font-weight: bold;
         padding: 1px 6px; border-radius: 3px; margin-left: 6px; }
.t { color: #555555; font-variant-numeric: tabular-nums; }
.k { font-weight: bold; }
"""

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def esc(value) -> str:
    """HTML-escaped text without control characters (random-weight models emit them)."""
    return html.escape(_CONTROL.sub("", str(value)), quote=True)


def img(png: bytes, alt: str, css_class: str = "plot") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{css_class}" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(headers: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(f'<td class="n">{esc(c)}</td>' if i in numeric else f"<td>{c}</td>" if isinstance(c, Raw)
                        else f"<td>{esc(c)}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Raw(str):
    """Markup that is already escaped (a badge inside a table cell)."""


def badge(text: str = "RANDOM-WEIGHT MODEL") -> Raw:
    return Raw(f'<span class="badge">{esc(text)}</span>')


def banner(kind: str, inner_html: str) -> str:
    return f'<div class="banner {kind}">{inner_html}</div>'


def section(title: str, anchor: str, inner_html: str) -> str:
    return f'<h2 id="{esc(anchor)}">{esc(title)}</h2>\n{inner_html}'


def page(title: str, subtitle: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{esc(title)}</h1>\n<div class=\"sub\">{esc(subtitle)}</div>\n"
            + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


def seconds(t) -> str:
    return "–" if t is None else f"{t:.1f} s"
