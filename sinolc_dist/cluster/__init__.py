"""Schedulers: a profile becomes a Dask cluster; job status, the watchdog and the job log.

Imported by workers too (the local worker log plugin), so this file imports nothing.
"""
