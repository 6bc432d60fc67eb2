"""The one exception type for "this input is rejected": a reason code from schemas.reasons and a message."""

from schemas.errors import LongVidError


class Rejection(LongVidError):
    def __init__(self, reason: str, message: str):
        self.reason, self.message = reason, message
        super().__init__(f"{reason}: {message}")
