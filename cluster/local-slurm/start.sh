#!/usr/bin/env bash
# Start a single-node SLURM on this machine, for the real-scheduler tests (tests/cluster/test_slurm.py)
# and for trying `sinolc-dist run/submit --cluster slurm` without a cluster.
#
#   sudo cluster/local-slurm/start.sh     # installs the packages if missing, starts, waits for "idle"
#   sinfo; sbatch --wrap true              # clients need no environment variables
#   sudo cluster/local-slurm/stop.sh      # stops what this script started, by PID file
#
# Idempotent: when the daemons it started are still running it only waits for the node.
# Everything SLURM writes (state, spool, logs, PID files) lives under $SINOLC_SLURM_DIR
# (default /tmp/sinolc-slurm). The configuration is written to /etc/slurm/slurm.conf, where
# sinfo/sbatch look by default; a slurm.conf this script did not write is never touched.
# Needs root and Debian/Ubuntu packages (apt-get update is run before an install).
# Jobs run as root; slurmctld/slurmd listen on their usual ports (6817/6818) on all
# interfaces; the node's address is 127.0.0.1.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "start.sh: must run as root (munged and slurmd need it)" >&2; exit 1; }
DIR=${SINOLC_SLURM_DIR:-/tmp/sinolc-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by sinolc-dist cluster/local-slurm/start.sh"
H=$(hostname)
log() { echo "local-slurm: $*"; }
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# ------------------------------------------------------------------ 1. packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null \
   || ! command -v munged >/dev/null; then
  log "installing slurmctld slurmd slurm-client munge"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

mkdir -p "$DIR"/{state,spool,log}
for i in 0 1; do [ -c "$DIR/fake-gpu$i" ] || mknod "$DIR/fake-gpu$i" c 1 3; done

# ------------------------------------------------------------------ 2. munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munge already answers"
else
  [ -s /etc/munge/munge.key ] || mungekey -c -f -k /etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 600 /etc/munge/munge.key
  install -d -o munge -g munge -m 755 /run/munge
  munged --force --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log"
  for _ in $(seq 1 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || { echo "local-slurm: munged does not answer" >&2; exit 1; }
  log "munged pid $(cat "$DIR/munged.pid")"
fi

# ------------------------------------------------------------------ 3. slurm.conf
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  echo "local-slurm: $CONF exists and was not written by this script; not touching it" >&2
  exit 1
fi
cpus=$(nproc)
mem_mb=$(awk '/^MemTotal:/{printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
conf=$(cat <<EOF
$MARK
ClusterName=sinolc-local
SlurmctldHost=$H(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
KillWait=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
GresTypes=gpu
NodeName=$H NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
)
if [ "$(cat "$CONF" 2>/dev/null)" != "$conf" ]; then
  if running "$DIR/slurmctld.pid" || running "$DIR/slurmd.pid"; then
    echo "local-slurm: the configuration changed while SLURM runs; run stop.sh first" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$CONF")"
  printf '%s\n' "$conf" > "$CONF"
  # Two GPUs that are not there: their "devices" are character nodes like /dev/null, so jobs may
  # ask --gres=gpu:1..2 and SLURM sets CUDA_VISIBLE_DEVICES for them (the multi-GPU worker jobs
  # are tested for real); more than two is refused as on a real node.
  printf '%s\nNodeName=%s Name=gpu File=%s/fake-gpu[0-1]\n' "$MARK" "$H" "$DIR" > "$(dirname "$CONF")/gres.conf"
  log "wrote $CONF (node $H, $cpus CPUs, $mem_mb MB, partition debug)"
fi

# ------------------------------------------------------------------ 4. daemons
if running "$DIR/slurmctld.pid"; then
  log "slurmctld already running (pid $(cat "$DIR/slurmctld.pid"))"
elif sinfo >/dev/null 2>&1; then
  echo "local-slurm: a slurmctld not started by this script answers; stop it first" >&2
  exit 1
else
  slurmctld
  log "slurmctld started"
fi
if running "$DIR/slurmd.pid"; then
  log "slurmd already running (pid $(cat "$DIR/slurmd.pid"))"
else
  slurmd
  log "slurmd started"
fi

# ------------------------------------------------------------------ 5. wait for the node
state=""
for _ in $(seq 1 150); do
  state=$(sinfo -h -N -n "$H" -o %T 2>/dev/null || true)
  case "$state" in idle|mixed|allocated) break ;; esac
  sleep 0.2
done
case "$state" in
  idle|mixed|allocated) log "ready: node $H is $state (slurmctld pid $(cat "$DIR/slurmctld.pid"), slurmd pid $(cat "$DIR/slurmd.pid"))" ;;
  *) echo "local-slurm: node $H is '${state:-unknown}' after 30 s; see $DIR/log/" >&2
     tail -n 5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
     exit 1 ;;
esac
