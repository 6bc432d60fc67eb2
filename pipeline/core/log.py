"""Console logging, set up here only: by the entry points (--quiet / --verbose) and, with the driver's level, in Ray
workers.

One format: `[where] message` at INFO (progress, what a stage did), the level after the tag otherwise
(`[hico] WARNING: ...`, `[probe] DEBUG: ...`). INFO and DEBUG go to stdout, WARNING and above to stderr, always to the
streams current at the time of the record, so pytest's capture and `contextlib.redirect_stderr` see them. Modules
log with `logging.getLogger(__name__)`; only a command's own output (audit results, --json, the build summary
table) is printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

# Our loggers' level follows the flags; other libraries' loggers stay at WARNING (botocore's and urllib3's INFO
# lines would otherwise mix into a command's output).
PACKAGES = ("pipeline", "annotators", "compressors", "schemas", "jobs")
# The driver's level for Ray workers (set in their runtime environment by ray_runtime.init).
LEVEL_ENV = "LONGVID_LOG_LEVEL"
DEFAULT_LEVEL = logging.INFO


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno == logging.INFO:
            return text
        if text.startswith("[") and "] " in text:
            tag, rest = text.split("] ", 1)
            return f"{tag}] {record.levelname}: {rest}"
        return f"{record.levelname}: {text}"


class ConsoleHandler(logging.Handler):
    """INFO and below to sys.stdout, WARNING and above to sys.stderr, looked up per record."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def configure(level: int = DEFAULT_LEVEL) -> None:
    """Route our packages' records at `level` and above (and every library's warnings) to the console; replaces an
    earlier configure(). The level is also left in the environment for Ray workers started after this."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, ConsoleHandler)]:
        root.removeHandler(h)
    handler = ConsoleHandler()
    handler.setFormatter(ConsoleFormatter("%(message)s"))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level < logging.WARNING:
        root.setLevel(logging.WARNING)
    for name in PACKAGES:
        logging.getLogger(name).setLevel(level)
    os.environ[LEVEL_ENV] = logging.getLevelName(level)


def configure_worker() -> None:
    """In a Ray worker (each task calls this through context.configure_worker): the driver's level, once. A process
    already configured (the driver itself) is left as it is."""
    if any(isinstance(h, ConsoleHandler) for h in logging.getLogger().handlers):
        return
    configure(level_named(os.environ.get(LEVEL_ENV)))


def level_named(name: str | None) -> int:
    level = logging.getLevelName(name) if name else DEFAULT_LEVEL
    return level if isinstance(level, int) else DEFAULT_LEVEL


def current_level() -> int:
    return logging.getLogger(PACKAGES[0]).getEffectiveLevel()


def add_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="print warnings and errors only (no progress)")
    group.add_argument("-v", "--verbose", action="store_true", help="also print debug lines")


def level_of(args: argparse.Namespace) -> int:
    if getattr(args, "quiet", False):
        return logging.WARNING
    if getattr(args, "verbose", False):
        return logging.DEBUG
    return DEFAULT_LEVEL
