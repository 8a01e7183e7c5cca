"""Jobs that move data (ingest, transform, mine, stream) and the executor adapter."""
