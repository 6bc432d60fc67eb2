"""Bytes in and out: storage (local and S3), fetching inputs, ffmpeg, frame decoding."""
