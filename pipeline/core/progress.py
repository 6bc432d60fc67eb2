"""Progress lines for long stages: counts, rate and ETA, logged at INFO at most every few seconds, and a final
line."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    def __init__(self, stage: str, total: int, unit: str, every_s: float = 2.0):
        self.stage, self.total, self.unit, self.every_s = stage, total, unit, every_s
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        line = f"[{self.stage}] {self.done}/{self.total} {self.unit} {rate:.2f}/s elapsed {format_duration(elapsed)}"
        if 0 < self.done < self.total and rate > 0:
            line += f" eta {format_duration((self.total - self.done) / rate)}"
        return line

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.done < self.total and now - self._last >= self.every_s:
            self._last = now
            log.info(self._line())

    def finish(self, note: str = "") -> None:
        log.info(self._line() + (f" — {note}" if note else ""))
