"""From source folders to shards: crawl, probe (isolated), scenes, manifest, sharding."""
