#!/usr/bin/env bash
# Stop the single-node SLURM started by start.sh: cancel the jobs still queued or running,
# then stop slurmd, slurmctld and munged by the PIDs in their PID files (never by name;
# a munged this script did not start has no PID file here and is left alone).
# Packages, /etc/slurm/slurm.conf and the logs under $SINOLC_SLURM_DIR stay.
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "stop.sh: must run as root" >&2; exit 1; }
DIR=${SINOLC_SLURM_DIR:-/tmp/sinolc-slurm}

stop_pid() {  # name pidfile
  local name=$1 pidfile=$2 pid
  [ -s "$pidfile" ] || { echo "local-slurm: $name: no PID file"; return 0; }
  pid=$(cat "$pidfile")
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "local-slurm: $name (pid $pid) not running"; rm -f "$pidfile"; return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "local-slurm: $name (pid $pid) ignored TERM, sending KILL"; kill -KILL "$pid"
  fi
  rm -f "$pidfile"
  echo "local-slurm: stopped $name (pid $pid)"
}

if [ -s "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
  if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
    squeue -h -o %i | xargs -r scancel >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi
stop_pid slurmd "$DIR/slurmd.pid"
stop_pid slurmctld "$DIR/slurmctld.pid"
stop_pid munged "$DIR/munged.pid"
exit 0
