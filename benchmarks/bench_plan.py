"""`sinolc-dist plan --region CN` at the default grid: wall time and peak memory.

Runs the real command in a child process (so the figure includes imports, boundary
reading, chunk selection for ~574,000 chunks, the state database and plan.json), and
reads its peak resident memory from the kernel.  Targets: under 60 s, under 2 GiB.

    python benchmarks/bench_plan.py [--region CN] [--workflow cn]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import save


def main() -> None:
    """Run the plan once and write ``benchmarks/results/plan-<region>.json``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--region", default="CN")
    ap.add_argument("--workflow", default="cn")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", "from sinolc_dist.cli import main; main()", "plan",
               "--region", args.region, "--workflow", args.workflow, "--json", "--run-dir", tmp]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - t0
        state_mb = (Path(tmp) / "state.sqlite").stat().st_size / 1e6
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    plan = json.loads(proc.stdout)
    result = {
        "benchmark": "plan", "region": args.region, "workflow": args.workflow,
        "chunks": plan["total"]["chunks"], "land_km2": plan["total"]["land_km2"],
        "seconds": seconds, "peak_rss_mib": peak_mib, "state_mb": state_mb,
        "targets": {"seconds": 60, "peak_rss_mib": 2048},
    }
    print(f"plan {args.region}: {result['chunks']:,} chunks, {result['land_km2']:,.0f} km², "
          f"{seconds:.1f} s, peak {peak_mib:,.0f} MiB, state {state_mb:.1f} MB")
    save(result, args.out, f"plan-{args.region.lower()}.json")


if __name__ == "__main__":
    main()
