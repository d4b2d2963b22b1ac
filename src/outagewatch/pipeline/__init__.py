"""The pure pipeline core: dedup, minute buckets, ticks."""
