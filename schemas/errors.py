"""The base of every LongVid exception: how a known failure ends a command (one line, an exit code, no traceback).

Exit codes (docs/errors.md): 0 done, 1 the run failed (storage down, disk full, counts that do not reconcile, a
stage run before its input exists), 2 bad configuration, arguments or inputs (fix them and rerun).
"""

from __future__ import annotations

from typing import Optional

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class LongVidError(Exception):
    """A failure LongVid knows and explains. The entry points print `line()` to stderr and exit with `exit_code`.

    `label` leads the line (`error: <message>`); None when the message already is the whole line. `hint`, when set,
    says what to do and is appended in parentheses. `systemic` marks a failure of the system rather than of an input
    (storage, disk): committed work is kept and rerunning the same command resumes.
    """

    exit_code: int = EXIT_FAILED
    label: Optional[str] = "error"
    hint: Optional[str] = None
    systemic: bool = False

    def __init__(self, *args, hint: Optional[str] = None):
        super().__init__(*args)
        if hint is not None:
            self.hint = hint

    def line(self) -> str:
        text = f"{self.label}: {self}" if self.label else str(self)
        return f"{text} ({self.hint})" if self.hint else text


class UsageError(LongVidError):
    """Bad configuration, arguments or inputs: nothing is wrong with the system; the user fixes them (exit 2)."""

    exit_code = EXIT_USAGE


class ConfigProblem(UsageError):
    """Base of schemas.config.ConfigError, whose message is already the whole line:
    `config error: <key>: <problem> (<fix>)`."""

    label = None
