"""Near-duplicates of evaluation images in a pretraining manifest (WSL section 3), for jobs/dedup.py.

Plain Python, numpy, faiss and torch functions of plain values: pHash and its crop grid (phash),
faiss indexes (ann), R-MAC (rmac, torch, imported only by the trunk methods), describing images
(describe), the evaluation index and its queries (index), the pixel check of a pair (pair_check),
the counts and the report (report), the settings (config). Spark lives in one module, spark.py:
every DataFrame transform of the job. The package ships to executors (jobs/lib/session.py).
"""
