"""Grid Engine (Son of Grid Engine and kin): ``qsub`` worker jobs, ``qstat -j``/``qacct``, ``#$``.

Its own: the account is a ``project`` (``-P``), parallel environments (``-pe``)
and ``h_rt``/``h_vmem`` limits in the hints, a job held in error state at start
(``qstat -j``'s error reason), ``$JOB_ID``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from dask_jobqueue import SGECluster

from sinolc_dist.cluster.gpus import refuse_other_count
from sinolc_dist.cluster.scheduler import BatchScheduler, run_command
from sinolc_dist.rundir.layout import RunDir


class Sge(BatchScheduler):
    """Grid Engine through dask-jobqueue's ``SGECluster``."""

    kind = "sge"
    cluster_class = SGECluster
    directive_prefix = "#$"
    job_id_variable = "$JOB_ID"
    where_command = "qstat -s r | grep '^ *{id} '"
    account_key = "project"
    hints: ClassVar[dict[str, str]] = {
        "queue-or-pe": "'queue', 'resource_spec' or the -pe line of 'job_extra_directives'",
        "h_rt": "'walltime' (h_rt) or 'resource_spec' (h_vmem, h_cpu)",
        "pe": "'job_extra_directives' (the -pe line)",
        "gpu": "'gpus_per_job' or 'resource_spec' (gpu=)",
        "memory": "'resource_spec' (h_vmem=/mem_free=) and 'memory'",
        "cpus": "the -pe line of 'job_extra_directives'",
        "resource": "'resource_spec'",
    }

    def request_gpus(self, s: dict[str, Any], n: int) -> None:
        """``gpu=N`` in ``resource_spec`` (``-l``), most sites' GPU complex; one there must agree."""
        spec = s.get("resource_spec") or ""
        asked = re.search(r"(?:^|,)gpu=(\d+)", spec)
        if asked:
            refuse_other_count(s, "resource_spec", int(asked[1]), n, spec)
        else:
            s["resource_spec"] = f"{spec},gpu={n}" if spec else f"gpu={n}"

    def job_status(self, job_id: str) -> tuple[str, str]:
        """``qstat -j`` (the error reason of a job in state E) or, once it ended, ``qacct -j``."""
        rc, out = run_command("qstat", "-j", job_id)
        if rc == 0 and "do not exist" not in out:
            error = re.search(r"error reason\s+\d+:\s*(?:\S+ \S+ \[[^\]]*\]:\s*)?(.*)", out)
            return ("error", error[1].strip()) if error else ("alive", "")
        rc, acct = run_command("qacct", "-j", job_id)
        newest = acct.split("=" * 20)[-1] if rc == 0 else ""  # one record per run of this id
        words = "; ".join(" ".join(m[0].split())
                          for m in re.finditer(r"^(failed|exit_status) .*$", newest, re.M))
        return "ended", words or "no longer known to the Grid Engine qmaster"

    def driver_directives(self, queue: str | None, account: str | None, walltime: str, rundir: RunDir,
                          cpus: int, memory_gb: int) -> list[str]:
        """``-N``, ``-q``, ``-P``, ``h_rt``, the log folder and bash (Grid Engine asks no CPUs or memory)."""
        return ["-N sinolc-driver", f"-q {queue}" if queue else "", f"-P {account}" if account else "",
                f"-l h_rt={walltime}", "-j y", f"-o {rundir.logs}/", "-V", "-S /bin/bash"]


SGE = Sge()
