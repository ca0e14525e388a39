"""Schedulers: a profile becomes a Dask cluster; job status, the watchdog and the job log.

A shared core (``scheduler``: what every scheduler is asked, what batch schedulers share)
and one module per scheduler (``local``, ``slurm``, ``pbs``, ``sge``), found by kind in
``registry``; ``core`` opens a profile's cluster, ``profiles`` checks a profile.

Imported by workers too (the local worker log plugin), so this file imports nothing.
"""
