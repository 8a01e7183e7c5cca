"""Jobs that move data, one subpackage each (ingest, transform, clips, mine, train,
curate, stream), on one shard-task skeleton (``task``, ``commit``), the executor adapter
(``executor``: the only module that imports Ray) and the result convention (``result``).
See docs/architecture.md.
"""
