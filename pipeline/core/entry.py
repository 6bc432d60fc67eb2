"""What every command line shares: its logging set-up and the one handler that turns a known failure into one line
on stderr and an exit code (schemas/errors.py), while anything unexpected keeps its traceback."""

from __future__ import annotations

import importlib
import logging
import re
import sys
import traceback
from typing import Callable, Optional

from pipeline.core import log
from pipeline.io.fetch import LOCAL_DISK_ERRNOS
from schemas.errors import LongVidError

RESUME_NOTE = "committed work is kept: rerun the same command to resume"
# The last line of a formatted traceback: `package.module.ClassName: message`.
_ERROR_LINE = re.compile(r"^(?P<module>(?:pipeline|annotators|compressors|schemas)(?:\.\w+)+)\.(?P<cls>\w+): "
                         r"(?P<message>.+)$")


class LocalDiskFailure(LongVidError):
    """Local disk full or read-only (the job's temporary folder, a local output): the machine's problem."""

    label = "error: disk"
    hint = "free space, or point storage.tmp_dir at a larger disk"
    systemic = True


def run(body: Callable[[], int], level: int, resumable: bool = False) -> int:
    """Configure logging at `level`, run `body` and return its exit code; a known failure prints its line (plus
    RESUME_NOTE for a systemic failure of a `resumable` command) and returns its code. With --verbose its
    traceback precedes the line."""
    log.configure(level)
    try:
        return body()
    except Exception as e:
        failure = known_failure(e)
        if failure is None:
            raise
        line = failure.line()
        if resumable and failure.systemic:
            line += f"; {RESUME_NOTE}"
        if log.current_level() <= logging.DEBUG:
            traceback.print_exception(e, file=sys.stderr)
        print(line, file=sys.stderr, flush=True)
        return failure.exit_code


def known_failure(e: BaseException) -> Optional[LongVidError]:
    """The LongVidError behind `e`: `e` itself or what it wraps (Ray keeps a task's exception as `cause`, other
    wrappers chain it with `raise ... from`). An OSError for a full or read-only local disk counts too. A failure
    that is only the context of a later exception (raised while handling it) counts when systemic: a bug in an
    `except Rejection` block keeps its traceback. None for anything else."""
    seen = set()
    ray_wrappers = []
    current: Optional[BaseException] = e
    implicit = False
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        for err in (cause, current):
            if isinstance(err, LongVidError) and (err.systemic or not implicit):
                return err
            if isinstance(err, OSError) and not isinstance(err, ConnectionError) and err.errno in LOCAL_DISK_ERRNOS:
                where = f": {err.filename}" if err.filename else ""
                return LocalDiskFailure(f"{err.strerror}{where}")
        if not implicit and type(current).__module__.startswith("ray."):
            ray_wrappers.append(current)
        explicit = cause if isinstance(cause, BaseException) else current.__cause__
        implicit = implicit or explicit is None
        current = explicit or current.__context__
    for wrapper in ray_wrappers:
        failure = _named_in_text(str(wrapper))
        if failure is not None:
            return failure
    return None


def _named_in_text(text: str) -> Optional[LongVidError]:
    """A LongVidError that Ray kept only as traceback text: Ray Data wraps a map function's exception in a
    UserCodeException, and an actor whose `__init__` failed (a checkpoint that does not load) surfaces as an
    ActorDiedError; both carry the original only in their message. The last `module.Class: message` line naming one
    of our LongVidError classes is rebuilt (class and first line of the message)."""
    for line in reversed(text.splitlines()):
        m = _ERROR_LINE.match(line)
        if not m:
            continue
        try:
            cls = getattr(importlib.import_module(m["module"]), m["cls"], None)
        except ImportError:
            continue
        if isinstance(cls, type) and issubclass(cls, LongVidError):
            failure = cls.__new__(cls)
            Exception.__init__(failure, m["message"])
            return failure
    return None


def systemic_failure(e: BaseException) -> Optional[str]:
    """The line for a failure of the system rather than of an input (S3 endpoint not answering, local disk full or
    read-only), without its `error: ` lead; None for anything else."""
    failure = known_failure(e)
    if failure is None or not failure.systemic:
        return None
    return failure.line().removeprefix("error: ")
