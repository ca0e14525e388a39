#!/usr/bin/env bash
# Stop the single-host Grid Engine started by start.sh: delete the jobs still queued or
# running, then stop sge_execd and sge_qmaster by the PIDs in their PID files (never by name),
# and undo the /etc/hosts line if start.sh had to add one. Packages and the cell stay; the
# next start.sh makes a fresh cell.
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "stop.sh: must run as root" >&2; exit 1; }
DIR=${SINOLC_SGE_DIR:-/tmp/sinolc-sge}
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
SPOOL=/var/spool/gridengine
QM_PID=$SPOOL/qmaster/qmaster.pid

# shellcheck source=../local-common.sh
. "$(dirname "$0")/../local-common.sh"

if [ -s "$QM_PID" ] && kill -0 "$(cat "$QM_PID")" 2>/dev/null && command -v qstat >/dev/null; then
  # every job (Dask workers included) goes while sge_execd is still there to kill it
  if [ -n "$(qstat -u '*' 2>/dev/null)" ]; then
    qdel -f -u '*' >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do [ -z "$(qstat -u '*' 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi
found=0
for pf in "$SPOOL"/execd/*/execd.pid; do
  [ -e "$pf" ] || continue
  found=1; stop_pid local-sge sge_execd "$pf"
done
[ "$found" = 1 ] || echo "local-sge: sge_execd: no PID file"
stop_pid local-sge sge_qmaster "$QM_PID"

if [ -e "$DIR/hosts.modified" ] && [ -e "$DIR/hosts.orig" ]; then
  cat "$DIR/hosts.orig" > /etc/hosts && rm -f "$DIR/hosts.modified"
  echo "local-sge: restored /etc/hosts"
fi
exit 0
