"""Shot-boundary detection: frame scoring, parallel segments, TransNetV2, joined clips."""
