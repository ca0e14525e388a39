"""The driver's stages: infer (run), ingest, deliver, verify, submit; dispatch, workflows, status."""
