"""Reject reason codes: every input that is not in the videos manifest carries exactly one of these."""

UNREADABLE = "unreadable"
NO_VIDEO_STREAM = "no_video_stream"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
TOO_LARGE = "too_large"
DOWNLOAD_FAILED = "download_failed"
TIMEOUT = "timeout"
DUPLICATE = "duplicate"
SOURCE_CHANGED = "source_changed"  # the bytes read by a later stage no longer hash to what probe saw

ALL = (UNREADABLE, NO_VIDEO_STREAM, TOO_SHORT, TOO_LONG, TOO_LARGE, DOWNLOAD_FAILED, TIMEOUT, DUPLICATE,
       SOURCE_CHANGED)
