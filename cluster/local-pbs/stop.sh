#!/usr/bin/env bash
# The PBS wrappers run no daemon of their own: this only deletes (qdel) the jobs still queued or
# running in SLURM that came in through them (their scripts carry #PBS lines; SLURM's own jobs
# are left alone), while SLURM answers. cluster/local-slurm/stop.sh stops SLURM itself.
# --uninstall also removes the prefix start.sh unpacked the wrappers into.
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "stop.sh: must run as root" >&2; exit 1; }
PREFIX=${SINOLC_PBS_PREFIX:-/opt/pbs-on-slurm}
BIN=$PREFIX/usr/bin

if [ -x "$BIN/qdel" ] && sinfo -h >/dev/null 2>&1; then
  n=0
  for id in $(squeue -h -o %i 2>/dev/null); do
    if scontrol write batch_script "$id" - 2>/dev/null | grep -q '^#PBS '; then
      PATH=$BIN:$PATH qdel "$id" >/dev/null 2>&1 && n=$((n + 1))
    fi
  done
  echo "local-pbs: deleted $n job(s) submitted through the PBS wrappers"
else
  echo "local-pbs: nothing to stop (no wrappers under $PREFIX or no SLURM)"
fi
if [ "${1:-}" = --uninstall ] && [ -e "$PREFIX/.sinolc-pbs-on-slurm" ]; then
  rm -rf "$PREFIX"
  echo "local-pbs: removed $PREFIX"
fi
exit 0
