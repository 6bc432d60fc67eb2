"""The LongVid pipeline: crawl, probe, dedup, scenes, sampling plans, sharding, and the Ray plumbing around them."""
