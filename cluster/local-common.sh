# Shell helpers shared by cluster/local-*/stop.sh (sourced, not run).

# stop_pid TAG NAME PIDFILE: stop the daemon whose PID is in PIDFILE (TERM, then KILL after
# about 15 s), never by name; remove the PID file. TAG prefixes the messages (local-slurm…).
stop_pid() {
  local tag=$1 name=$2 pidfile=$3 pid
  [ -s "$pidfile" ] || { echo "$tag: $name: no PID file"; return 0; }
  pid=$(cat "$pidfile")
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "$tag: $name (pid $pid) not running"; rm -f "$pidfile"; return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$tag: $name (pid $pid) ignored TERM, sending KILL"; kill -KILL "$pid"
  fi
  rm -f "$pidfile"
  echo "$tag: stopped $name (pid $pid)"
}
