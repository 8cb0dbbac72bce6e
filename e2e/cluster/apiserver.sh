#!/usr/bin/env bash
# e2e/cluster/apiserver.sh restart: restarts the local cluster's
# kube-apiserver (the chaos run of issue 9 does this during churn).
#
# The recorded process ($PIDS/kube-apiserver.pid, checked with its start
# time and $STATE on its command line, as down.sh does) is stopped with
# SIGTERM (SIGKILL after APISERVER_STOP_GRACE s, default 30: v1.34 drains
# in about a second, then may linger) and started again with exactly the command
# line it had, read from /proc/PID/cmdline before it stops: whatever flags
# up.sh gave it, the restarted server has the same. Its output goes on to
# $LOGS/kube-apiserver.log, its pid is recorded again, and the script
# returns once /readyz answers (or fails after APISERVER_READY_TIMEOUT s,
# default 120). Prints "stopped in Xs, ready in Ys" on stdout.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

NAME=kube-apiserver
TIMEOUT=${APISERVER_READY_TIMEOUT:-120}
GRACE=${APISERVER_STOP_GRACE:-30}

usage() { echo "usage: $0 restart" >&2; exit 2; }
[[ ${1:-} == restart ]] || usage

f=$PIDS/$NAME.pid
[[ -s $f ]] || die "apiserver.sh: no $f: the cluster is not running (make cluster-up)"
pid=$(cat "$f")
proc_alive "$pid" || die "apiserver.sh: $NAME (pid $pid) is not running (make cluster-up)"
pid_is_ours "$NAME" "$pid" || die "apiserver.sh: pid $pid is not the $NAME this cluster started; leaving it"

# The command line, one argument per NUL-terminated field.
mapfile -d '' -t cmd < "/proc/$pid/cmdline"
((${#cmd[@]})) || die "apiserver.sh: cannot read the command line of pid $pid"

t0=$(date +%s.%N)
kill -TERM "$pid" 2>/dev/null || true
for ((i = 0; i < GRACE * 10; i++)); do proc_alive "$pid" || break; sleep 0.1; done
if proc_alive "$pid"; then
  log "apiserver.sh: $NAME (pid $pid) still running ${GRACE}s after SIGTERM; SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do proc_alive "$pid" || break; sleep 0.1; done
fi
proc_alive "$pid" && die "apiserver.sh: $NAME (pid $pid) still alive"
t1=$(date +%s.%N)

echo "=== $(date -u +%FT%TZ) restarting (apiserver.sh): ${cmd[*]}" >>"$LOGS/$NAME.log"
# The API server outlives this script: it must not inherit the caller's
# other open files (a run lock held on a descriptor, say): every
# descriptor above 2 is closed in the child before it becomes the server.
close=()
for fd in /proc/$$/fd/*; do
  fd=${fd##*/}
  [[ $fd =~ ^[0-9]+$ ]] && ((fd > 2)) && close+=("$fd")
done
(
  for fd in "${close[@]}"; do eval "exec $fd>&-" 2>/dev/null || true; done
  exec setsid "${cmd[@]}"
) >>"$LOGS/$NAME.log" 2>&1 </dev/null &
new=$!
record_pid "$NAME" "$new"

deadline=$(($(date +%s) + TIMEOUT))
until kubectl --kubeconfig "$STATE/admin.kubeconfig" get --raw /readyz >/dev/null 2>&1; do
  if ! proc_alive "$new"; then
    tail_log "$NAME"
    die "apiserver.sh: $NAME exited after the restart; log: $LOGS/$NAME.log"
  fi
  if (($(date +%s) > deadline)); then
    tail_log "$NAME"
    die "apiserver.sh: $NAME not ready ${TIMEOUT}s after the restart; log: $LOGS/$NAME.log"
  fi
  sleep 0.2
done
t2=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v c="$t2" -v old="$pid" -v new="$new" \
  'BEGIN { printf "kube-apiserver restarted (pid %s -> %s): stopped in %.1fs, ready in %.1fs\n", old, new, b - a, c - b }'
