"""Similarity search over an embedding set: exact (blocked), approximate (IVF-PQ / HNSW),
all-vs-all neighbour tables, and query resolution (object id, sky position, FITS file)."""
