"""Programs that measure the product: the live budget, RTMP ingest, soak, face models, raters, GPU paths.

Run each as `python -m benchmarks.NAME --help`. Nothing in the product imports this package.
"""
