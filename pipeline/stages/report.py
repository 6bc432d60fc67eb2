"""report: one self-contained report.html (plots, tables, a sample gallery) at the output root."""

from __future__ import annotations

from pipeline.core.context import StageContext
from pipeline.report import build as report

NAME = "report"
DESCRIPTION = "self-contained report.html: corpus and annotation plots, curriculum mixtures, sample gallery"


def run(ctx: StageContext) -> dict:
    target = report.write(ctx.out, ctx.cfg)
    return {"report": target}
