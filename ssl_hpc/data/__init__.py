"""The survey data layer: shard format, manifest, writers, readers, synthesis and ingest."""
