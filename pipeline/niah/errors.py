"""What stops a set from being built, said so a person can fix it."""

from schemas.errors import UsageError


class NiahInputError(UsageError, ValueError):
    """The sources or needles cannot make the requested set (too few videos or captions, a bad captions.jsonl)."""

    label = "config error: sources"
