"""What a worker computes: a shard's inference (patches, blending) and a shard's ingest."""
