#!/usr/bin/env bash
# Start a single-host Son of Grid Engine on this machine, for the real-scheduler tests
# (tests/cluster/test_pbs.py, test_sge.py) and for trying `sinolc-dist run/submit --cluster sge` without a cluster.
#
#   sudo cluster/local-sge/start.sh      # installs the packages if missing, starts, waits for all.q
#   qsub -b y -sync y /usr/bin/true       # clients need no environment variables
#   sudo cluster/local-sge/stop.sh       # stops what this script started, by PID file
#
# Idempotent: when the daemons it started still run and answer, it only checks the queue.
# Otherwise it makes a fresh cell (Debian's fixed paths: $SGE_ROOT=/var/lib/gridengine, spool
# under /var/spool/gridengine, both wiped), with queue all.q (SINOLC_SGE_SLOTS slots, default 4),
# a parallel environment `smp`, jobs allowed for root (min_uid 0) and a scheduler that runs
# every second. Its own files (configuration it fed to qconf, logs) go to $SINOLC_SGE_DIR
# (default /tmp/sinolc-sge). Needs root and Debian 12's gridengine-* packages (apt-get update
# is run before an install). sge_qmaster (:6444) and sge_execd (:6445) bind all interfaces (SGE
# cannot be told otherwise); the host name is made to resolve to 127.x, so traffic stays on lo.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "start.sh: must run as root (sge_execd runs jobs as their owner)" >&2; exit 1; }
DIR=${SINOLC_SGE_DIR:-/tmp/sinolc-sge}
SLOTS=${SINOLC_SGE_SLOTS:-4}
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
SPOOL=/var/spool/gridengine
QM_PID=$SPOOL/qmaster/qmaster.pid
H=$(hostname)
log() { echo "local-sge: $*"; }
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
execd_pidfile() { local f; for f in "$SPOOL"/execd/*/execd.pid; do [ -e "$f" ] && { echo "$f"; return 0; }; done; return 0; }
queue_state() {  # "ok" once execd has reported load; otherwise the state letters (u, a, E…)
  qstat -f -q all.q 2>/dev/null | awk '/^all\.q@/{print ($6 == "" ? "ok" : $6)}'
}
wait_queue() {
  local st=""
  for _ in $(seq 1 150); do st=$(queue_state); [ "$st" = ok ] && return 0; sleep 0.2; done
  echo "local-sge: queue all.q is '${st:-missing}' after 30 s" >&2; qstat -f >&2 || true
  return 1
}
mkdir -p "$DIR"

# ------------------------------------------------------------------ 1. already running?
if running "$QM_PID" && [ -n "$(execd_pidfile)" ] && running "$(execd_pidfile)" && qconf -sq all.q >/dev/null 2>&1; then
  wait_queue
  log "already running (sge_qmaster pid $(cat "$QM_PID"), sge_execd pid $(cat "$(execd_pidfile)")); queue all.q is ok"
  exit 0
fi
if running "$QM_PID" || { [ -n "$(execd_pidfile)" ] && running "$(execd_pidfile)"; }; then
  echo "local-sge: SGE daemons run but the cell is not ours or incomplete; run stop.sh first" >&2
  exit 1
fi

# ------------------------------------------------------------------ 2. host name -> loopback
# sge_qmaster resolves a client's address back to a name and refuses clients whose name
# differs ("access denied (client IP resolved to host name "localhost" …)"): the host name
# must resolve to loopback, and host_aliases (step 4) maps the reverse name to it.
ip=$(getent ahostsv4 "$H" | awk 'NR == 1 {print $1}')
case "$ip" in
  127.*) ;;
  *)
    log "host name $H resolves to '${ip:-nothing}'; prepending '127.0.0.1 $H' to /etc/hosts (stop.sh restores it)"
    cp /etc/hosts "$DIR/hosts.orig"
    { echo "127.0.0.1 $H"; cat "$DIR/hosts.orig"; } > /etc/hosts   # in place: /etc/hosts may be a bind mount
    touch "$DIR/hosts.modified"
    ip=127.0.0.1 ;;
esac

# ------------------------------------------------------------------ 3. packages
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
if ! installed gridengine-master || ! installed gridengine-exec || ! installed gridengine-client; then
  if installed slurm-wlm-torque; then
    echo "local-sge: slurm-wlm-torque is installed and conflicts with gridengine-client (both own" \
         "/usr/bin/qsub); cluster/local-pbs/start.sh keeps the PBS wrappers in a private prefix instead" >&2
    exit 1
  fi
  log "installing gridengine-master gridengine-exec gridengine-client"
  for p in gridengine-common gridengine-client gridengine-master gridengine-exec; do
    printf '%s shared/gridengineconfig boolean true\n%s shared/gridenginecell string %s\n%s shared/gridenginemaster string %s\n' \
      "$p" "$p" "$SGE_CELL" "$p" "$H"
  done | debconf-set-selections
  # The maintainer scripts must not start the daemons (host_aliases does not exist yet):
  # an existing policy-rc.d (Docker has one) is kept, otherwise one is put there meanwhile.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  apt-get update -qq
  # mailutils satisfies "bsd-mailx | mailx" without an MTA daemon (bsd-mailx pulls in exim4).
  set +e
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    mailutils gridengine-master gridengine-exec gridengine-client >"$DIR/apt.log" 2>&1
  rc=$?
  set -e
  [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || { tail -20 "$DIR/apt.log" >&2; echo "local-sge: apt-get install failed ($rc)" >&2; exit "$rc"; }
fi

# ------------------------------------------------------------------ 4. a fresh cell
# Spool, job database and accounting file are wiped and Debian's init_cluster run again, so
# every start begins from the same state (job ids restart at 1: qacct must not find the
# previous cell's jobs under them, and a changed host name cannot bite).
rm -rf "$SPOOL/spooldb" "$SPOOL/qmaster" "$SPOOL/execd"
rm -f "$SGE_ROOT/$SGE_CELL/common/accounting"
install -d -o sgeadmin -g sgeadmin -m 755 "$SPOOL/spooldb" "$SPOOL/qmaster" "$SPOOL/qmaster/job_scripts" \
  "$SPOOL/execd" "$SGE_ROOT/$SGE_CELL/common"
[ -e "$SGE_ROOT/$SGE_CELL/common/bootstrap" ] || install -m 644 -o sgeadmin -g sgeadmin \
  /usr/share/gridengine/default-bootstrap "$SGE_ROOT/$SGE_CELL/common/bootstrap"
su -s /bin/sh -c "/usr/share/gridengine/scripts/init_cluster $SGE_ROOT $SGE_CELL $SPOOL/spooldb sgeadmin" \
  sgeadmin >"$DIR/init_cluster.log" 2>&1
echo "$H" > "$SGE_ROOT/$SGE_CELL/common/act_qmaster"
rev=$(/usr/lib/gridengine/gethostbyaddr "$ip" | awk '/^Hostname:/ {print $2}')
aliases=""
for n in "$rev" localhost; do
  [ -n "$n" ] && [ "$n" != "$H" ] && case " $aliases " in *" $n "*) ;; *) aliases="$aliases $n" ;; esac
done
echo "$H$aliases" > "$SGE_ROOT/$SGE_CELL/common/host_aliases"   # before sge_qmaster starts
chown sgeadmin:sgeadmin "$SGE_ROOT/$SGE_CELL/common/act_qmaster" "$SGE_ROOT/$SGE_CELL/common/host_aliases"
log "fresh cell: act_qmaster $H, host_aliases '$H$aliases'"

# From here on, a failure stops the daemons this run started.
on_exit() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    echo "local-sge: failed (rc=$rc); stopping the daemons it started" >&2
    for pf in "$(execd_pidfile)" "$QM_PID"; do
      [ -n "$pf" ] && running "$pf" && kill -TERM "$(cat "$pf")" 2>/dev/null
    done
  fi
  return 0
}
trap on_exit EXIT

# ------------------------------------------------------------------ 5. sge_qmaster
install -d -o sgeadmin -g sgeadmin /var/run/gridengine
/usr/sbin/sge_qmaster            # daemonises; its PID goes to $QM_PID
for _ in $(seq 1 100); do qconf -sh >/dev/null 2>&1 && break; sleep 0.2; done
qconf -sh >/dev/null || { echo "local-sge: sge_qmaster does not answer" >&2; tail -20 "$SPOOL/qmaster/messages" >&2; exit 1; }
log "sge_qmaster pid $(cat "$QM_PID")"

# ------------------------------------------------------------------ 6. configuration
qconf -as "$H" >/dev/null 2>&1   # a submit host
# Global: jobs of root and system users (default min_uid 1000), load reports every 5 s, the
# accounting file (qacct) written within a second of a job's end (default 15 s).
# qconf -Mconf takes the configuration's name from the file name: it must be "global".
qconf -sconf | sed -e 's/^min_uid .*/min_uid                      0/' \
                   -e 's/^min_gid .*/min_gid                      0/' \
                   -e 's/flush_time=[0-9:]*/flush_time=00:00:01/' \
                   -e 's/^load_report_time .*/load_report_time             00:00:05/' > "$DIR/global"
qconf -Mconf "$DIR/global" >>"$DIR/qconf.log" 2>&1
# Scheduler: every second and right after a submission or a job's end (default: every 15 s).
qconf -ssconf | sed -e 's/^schedule_interval .*/schedule_interval                 0:0:1/' \
                    -e 's/^flush_submit_sec .*/flush_submit_sec                  1/' \
                    -e 's/^flush_finish_sec .*/flush_finish_sec                  1/' \
                    -e 's/^job_load_adjustments .*/job_load_adjustments              NONE/' \
                    -e 's/^load_adjustment_decay_time .*/load_adjustment_decay_time        0:0:0/' > "$DIR/sched.conf"
qconf -Msconf "$DIR/sched.conf" >>"$DIR/qconf.log" 2>&1
printf 'hostname %s\nload_scaling NONE\ncomplex_values NONE\nuser_lists NONE\nxuser_lists NONE\nprojects NONE\nxprojects NONE\nusage_scaling NONE\nreport_variables NONE\n' \
  "$H" > "$DIR/exechost.conf"
qconf -Ae "$DIR/exechost.conf" >>"$DIR/qconf.log" 2>&1
printf 'group_name @allhosts\nhostlist %s\n' "$H" > "$DIR/allhosts.conf"
qconf -Ahgrp "$DIR/allhosts.conf" >>"$DIR/qconf.log" 2>&1
cat > "$DIR/smp" <<'EOF'
pe_name            smp
slots              9999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    $pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
qconf -Ap "$DIR/smp" >>"$DIR/qconf.log" 2>&1
# all.q: no load thresholds (2 busy cores would put it in alarm state), the #! line of a job
# script is honoured (unix_behavior), the PE smp.
qconf -sq | sed -e 's/^qname .*/qname                 all.q/' \
                -e 's/^hostlist .*/hostlist              @allhosts/' \
                -e 's/^load_thresholds .*/load_thresholds       NONE/' \
                -e 's/^pe_list .*/pe_list               smp/' \
                -e "s/^slots .*/slots                 $SLOTS/" \
                -e 's/^shell_start_mode .*/shell_start_mode      unix_behavior/' \
                -e 's|^shell .*|shell                 /bin/bash|' > "$DIR/all.q"
qconf -Aq "$DIR/all.q" >>"$DIR/qconf.log" 2>&1

# ------------------------------------------------------------------ 7. sge_execd
/usr/sbin/sge_execd              # daemonises; its PID goes to $SPOOL/execd/<host>/execd.pid
wait_queue
log "sge_execd pid $(cat "$(execd_pidfile)")"

# ------------------------------------------------------------------ 8. a job, end to end
out=$(cd "$DIR" && qsub -sync y -b y -j y -o /dev/null -N sinolc-sge-smoke /bin/true 2>&1) \
  || { echo "local-sge: the smoke job failed: $out" >&2; exit 1; }
log "ready: queue all.q, $SLOTS slots, PE smp (a job ran: $(echo "$out" | tail -1))"
