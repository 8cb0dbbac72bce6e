#!/usr/bin/env bash
# The local cluster's kubelet on its own, with the one command line up.sh uses
# (up.sh starts it through this script), so a restart is the same kubelet.
#
#   kubelet.sh start           start it (if not running), wait for /healthz
#   kubelet.sh stop            SIGTERM (SIGKILL after 15 s), remove its pid file
#   kubelet.sh restart         stop, then start
#   kubelet.sh status          "running PID" (exit 0) or "stopped" (exit 3)
#   kubelet.sh kill-pod UID    SIGKILL every containerd task of the pod with
#                              this uid, its sandbox included, and wait until
#                              none runs (containerd's own CLI, not the CRI)
#   kubelet.sh reboot-pod UID  stop, kill-pod UID, start: what a node reboot
#                              does to one pod (the kubelet comes back, finds
#                              the sandbox dead and recreates the pod's containers)
#
# The kubelet's config ($STATE/kubelet/config.yaml) and node IP
# ($STATE/NODE_IP, the bridge's address) are written by up.sh; run up.sh first.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

KUBELET_HEALTHZ=http://127.0.0.1:10248/healthz

kubelet_cmd() {
  local node_ip
  node_ip=$(cat "$STATE/NODE_IP" 2>/dev/null) || die "kubelet: $STATE/NODE_IP missing; run up.sh first"
  [[ -f $STATE/kubelet/config.yaml ]] || die "kubelet: $STATE/kubelet/config.yaml missing; run up.sh first"
  local bin=$KUBELET_BIN
  [[ -s $STATE/KUBELET_BIN ]] && bin=$(cat "$STATE/KUBELET_BIN")
  KUBELET_CMD=("$bin"
    --config "$STATE/kubelet/config.yaml" --kubeconfig "$STATE/kubelet.kubeconfig"
    --root-dir "$STATE/kubelet/root" --cert-dir "$STATE/kubelet/pki"
    --hostname-override "$NODE_NAME" --node-ip "$node_ip" --v=2)
}

do_start() {
  if pid_alive kubelet; then
    log "kubelet: already running (pid $(cat "$PIDS/kubelet.pid"))"
  else
    kubelet_cmd
    mkdir -p "$PIDS" "$LOGS"
    log "kubelet: starting (log: $LOGS/kubelet.log)"
    echo "=== $(date -u +%FT%TZ) starting: ${KUBELET_CMD[*]}" >>"$LOGS/kubelet.log"
    setsid "${KUBELET_CMD[@]}" >>"$LOGS/kubelet.log" 2>&1 </dev/null &
    record_pid kubelet $!
  fi
  local deadline=$(( $(date +%s) + ${KUBELET_START_TIMEOUT:-60} ))
  until curl -fsS "$KUBELET_HEALTHZ" >/dev/null 2>&1; do
    pid_alive kubelet || { tail_log kubelet; die "kubelet: exited during startup; log: $LOGS/kubelet.log"; }
    (( $(date +%s) > deadline )) && { tail_log kubelet; die "kubelet: not healthy after ${KUBELET_START_TIMEOUT:-60}s; log: $LOGS/kubelet.log"; }
    sleep 0.5
  done
  log "kubelet: healthy (pid $(cat "$PIDS/kubelet.pid"))"
}

do_stop() {
  if ! pid_alive kubelet; then
    log "kubelet: not running"
    rm -f "$PIDS/kubelet.pid" "$PIDS/kubelet.start"
    return 0
  fi
  local pid i
  pid=$(cat "$PIDS/kubelet.pid")
  # The pid must still be our kubelet (not a reused pid).
  pid_is_ours kubelet "$pid" ||
    die "kubelet: pid $pid in $PIDS/kubelet.pid is not our kubelet"
  log "kubelet: stopping (pid $pid)"
  echo "=== $(date -u +%FT%TZ) stopping (kubelet.sh stop)" >>"$LOGS/kubelet.log"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do proc_alive "$pid" || break; sleep 0.1; done
  if proc_alive "$pid"; then
    log "kubelet: ignored SIGTERM for 15 s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do proc_alive "$pid" || break; sleep 0.1; done
  fi
  proc_alive "$pid" && die "kubelet: pid $pid still alive after SIGKILL"
  rm -f "$PIDS/kubelet.pid" "$PIDS/kubelet.start"
  log "kubelet: stopped"
}

ctr_() { ctr -a "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# The ids of the pod's tasks that are still RUNNING (or PAUSED etc.: not STOPPED).
live_tasks() {
  local ids=$1
  ctr_ tasks ls 2>/dev/null | awk -v ids="$ids" '
    BEGIN { n = split(ids, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1 }
    NR > 1 && ($1 in want) && $3 != "STOPPED" { print $1 }'
}

do_kill_pod() {
  local uid=${1:?usage: kubelet.sh kill-pod POD_UID} ids id i left
  ids=$(ctr_ containers ls -q "labels.\"io.kubernetes.pod.uid\"==$uid" | tr '\n' ' ')
  [[ -n ${ids// /} ]] || die "kubelet: no containerd container has label io.kubernetes.pod.uid=$uid"
  log "kubelet: SIGKILL to the tasks of pod $uid: $ids"
  for id in $ids; do
    ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  for ((i = 0; i < 100; i++)); do
    left=$(live_tasks "$ids")
    [[ -z $left ]] && { log "kubelet: every task of pod $uid is stopped"; return 0; }
    sleep 0.1
  done
  die "kubelet: tasks of pod $uid still running 10 s after SIGKILL: $left"
}

case ${1:-} in
  start) do_start ;;
  stop) do_stop ;;
  restart) do_stop; do_start ;;
  status)
    if pid_alive kubelet; then echo "running $(cat "$PIDS/kubelet.pid")"; else echo stopped; exit 3; fi ;;
  kill-pod) do_kill_pod "${2:-}" ;;
  reboot-pod)
    [[ -n ${2:-} ]] || die "usage: kubelet.sh reboot-pod POD_UID"
    do_stop; do_kill_pod "$2"; do_start ;;
  *) echo "usage: $0 start|stop|restart|status|kill-pod UID|reboot-pod UID" >&2; exit 2 ;;
esac
