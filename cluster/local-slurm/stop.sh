#!/usr/bin/env bash
# Stop the single-node SLURM started by start.sh: cancel the jobs still queued or running,
# then stop slurmd, slurmctld and munged by the PIDs in their PID files (never by name;
# a munged this script did not start has no PID file here and is left alone).
# Packages, /etc/slurm/slurm.conf and the logs under $SINOLC_SLURM_DIR stay.
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "stop.sh: must run as root" >&2; exit 1; }
DIR=${SINOLC_SLURM_DIR:-/tmp/sinolc-slurm}

# shellcheck source=../local-common.sh
. "$(dirname "$0")/../local-common.sh"

if [ -s "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
  if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
    squeue -h -o %i | xargs -r scancel >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi
stop_pid local-slurm slurmd "$DIR/slurmd.pid"
stop_pid local-slurm slurmctld "$DIR/slurmctld.pid"
stop_pid local-slurm munged "$DIR/munged.pid"
exit 0
