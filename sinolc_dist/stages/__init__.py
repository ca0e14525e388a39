"""The driver's stages, infer (``run``) and ingest on one skeleton (``stage.Stage``).

Also the mosaic stage, verify and submit; the ``Dispatcher``, workflows, status
and progress reports.
"""
