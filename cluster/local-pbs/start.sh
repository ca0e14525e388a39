#!/usr/bin/env bash
# PBS-style qsub/qdel/qstat on this machine, for the real-scheduler tests (tests/cluster/test_pbs.py, test_sge.py)
# and for trying `sinolc-dist run/submit --cluster pbs` without a PBS cluster: SLURM's
# Torque/PBS wrappers (Debian's slurm-wlm-torque), which hand every job to the local SLURM.
#
#   sudo cluster/local-slurm/start.sh     # first: the wrappers submit to this SLURM
#   sudo cluster/local-pbs/start.sh       # unpacks the wrappers, submits a job, prints the PATH
#   PATH=/opt/pbs-on-slurm/usr/bin:$PATH qsub job.sh
#   sudo cluster/local-pbs/stop.sh        # deletes the jobs submitted through the wrappers
#
# slurm-wlm-torque's qsub conflicts with Grid Engine's (both want /usr/bin/qsub), so the
# package is not installed: it is unpacked (dpkg -x) into a private prefix, $SINOLC_PBS_PREFIX
# (default /opt/pbs-on-slurm), whose usr/bin goes first on PATH only where PBS is meant. The
# wrappers run sbatch/scancel/squeue… from their own folder, so those are linked there from
# /usr/bin. Their Perl modules (libslurm-perl, libslurmdb-perl, libswitch-perl) are installed
# as packages. Idempotent; needs root. What the wrappers honour: `#PBS -N`, `-q` (the SLURM
# partition), `-l walltime=`, `-l select=1:ncpus=N:mem=…` and `nodes=1:ppn=N` (sbatch reads the
# #PBS lines itself); `ngpus=` is ignored and Torque's `gpus=N` becomes `--gres=gpu:N`. Job logs
# go to <script name>.o<id>/.e<id> in the directory qsub runs in (the #PBS -o/-e lines lose to
# the wrapper's own); PBS_JOBID is not set in the job, SLURM_JOB_ID is.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "start.sh: must run as root (it installs into $(dirname "$0"))" >&2; exit 1; }
PREFIX=${SINOLC_PBS_PREFIX:-/opt/pbs-on-slurm}
BIN=$PREFIX/usr/bin
DIR=${SINOLC_PBS_DIR:-/tmp/sinolc-pbs}
MARK=$PREFIX/.sinolc-pbs-on-slurm
log() { echo "local-pbs: $*"; }
mkdir -p "$DIR"

# ------------------------------------------------------------------ 1. SLURM answers?
if ! command -v sinfo >/dev/null || ! sinfo -h >/dev/null 2>&1; then
  echo "local-pbs: no SLURM answers here; start one first: sudo cluster/local-slurm/start.sh" >&2
  exit 1
fi

# ------------------------------------------------------------------ 2. Perl modules
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing=()
for p in libslurm-perl libslurmdb-perl libswitch-perl; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# ------------------------------------------------------------------ 3. the wrappers, unpacked
want=$(dpkg-query -W -f='${Version}' slurm-client)
have=$(cat "$MARK" 2>/dev/null || true)
if [ "$have" != "$want" ] || [ ! -x "$BIN/qsub" ]; then
  if [ -e "$PREFIX" ] && [ ! -e "$MARK" ]; then
    echo "local-pbs: $PREFIX exists and was not made by this script; not touching it" >&2
    exit 1
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # apt-get download writes into the current directory; _apt must be able to write there.
  chmod 755 "$tmp"
  if ! (cd "$tmp" && apt-get download -qq "slurm-wlm-torque=$want" >/dev/null 2>&1); then
    apt-get update -qq
    (cd "$tmp" && apt-get download -qq "slurm-wlm-torque=$want" >/dev/null)
  fi
  rm -rf "$PREFIX"
  dpkg -x "$tmp"/slurm-wlm-torque_*.deb "$PREFIX"
  echo "$want" > "$MARK"
  log "unpacked slurm-wlm-torque $want into $PREFIX"
fi
for c in sbatch scancel squeue scontrol sinfo srun salloc; do
  ln -sfn "/usr/bin/$c" "$BIN/$c"
done

# ------------------------------------------------------------------ 4. a job, end to end
export PATH=$BIN:$PATH
script=$DIR/smoke.sh
printf '#!/bin/sh\n#PBS -N sinolc-pbs-smoke\n#PBS -l select=1:ncpus=1:mem=100MB\n#PBS -l walltime=00:01:00\necho ok\n' > "$script"
rm -f "$DIR"/smoke.sh.[oe]*
out=$(cd "$DIR" && qsub "$script" 2>&1) || { echo "local-pbs: qsub failed: $out" >&2; exit 1; }
id=$(echo "$out" | tail -1)
[[ "$id" =~ ^[0-9]+$ ]] || { echo "local-pbs: qsub printed no job id: $out" >&2; exit 1; }
for _ in $(seq 1 150); do [ "$(cat "$DIR/smoke.sh.o$id" 2>/dev/null)" = ok ] && break; sleep 0.2; done
if [ "$(cat "$DIR/smoke.sh.o$id" 2>/dev/null)" != ok ]; then
  echo "local-pbs: smoke job $id gave no output after 30 s:" >&2; qstat -f "$id" >&2 || true; qdel "$id" || true
  exit 1
fi
log "ready: a job went through qsub (job $id, qstat: $(qstat "$id" 2>/dev/null | awk 'NR == 3 {print $5}'))"
log "PBS commands: PATH=$BIN:\$PATH"
