"""The streaming pipeline: read, chunk, key, cache, batch, embed, check, write."""
