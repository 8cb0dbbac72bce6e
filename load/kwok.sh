#!/usr/bin/env bash
# load/kwok.sh start|restart: the kwok of a load or chaos run (load/run.sh
# sets the environment below and calls `start`; the chaos run calls
# `restart` after each API server restart).
#
# Why restart it: kwok retries a stage that failed while the API server was
# away with a backoff doubling from 1 s up to 32 min, behind every fresh
# stage; after a 53 s restart the chaos run of 03:07 saw 4,900 pods still
# Terminating 10 min later. A kubelet resyncs its pods once the API server
# is back; a restarted kwok does that (it lists its nodes' pods and plays
# each one's stage from what the pod shows).
#
# A new kwok plays a node's pods only once it holds the node's Lease
# (kube-node-lease), and it waits for its predecessor's to expire (40 s:
# kwok v0.8.0 pkg/kwok/controllers/node_lease_controller.go,
# tryAcquireOrRenew). The stopped kwok holds them no more, so `restart`
# deletes the fake nodes' Leases first and the new one creates its own.
set -euo pipefail
cd "$(dirname "$0")/.."
source e2e/cluster/lib.sh
: "${KWOK_BIN:?load/kwok.sh: KWOK_BIN is not set (load/run.sh sets it)}"
: "${KWOK_PID_FILE:?}" "${KWOK_LOG:?}" "${KWOK_CIDR:?}" "${KUBECONFIG:?}"

stop() {
  local pid want i
  [[ -f $KWOK_PID_FILE ]] || return 0
  pid=$(cat "$KWOK_PID_FILE" 2>/dev/null || true)
  want=$(cat "${KWOK_PID_FILE%.pid}.start" 2>/dev/null || true)
  if [[ -n $pid ]] && proc_alive "$pid" && [[ -z $want || $(proc_starttime "$pid") == "$want" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do proc_alive "$pid" || break; sleep 0.1; done
    proc_alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$KWOK_PID_FILE" "${KWOK_PID_FILE%.pid}.start"
}

# The Leases of the fake nodes (named after them), held by a kwok now stopped.
release_leases() {
  local nodes
  nodes=$(kubectl get nodes -l sidecar-order.dev/load=true -o jsonpath='{.items[*].metadata.name}' 2>/dev/null) || true
  [[ -n $nodes ]] || return 0
  # shellcheck disable=SC2086 # one name per word
  kubectl -n kube-node-lease delete lease $nodes --ignore-not-found >/dev/null 2>&1 ||
    log "kwok: could not delete the fake nodes' Leases; the new kwok waits for them to expire"
}

start() {
  "$KWOK_BIN" --kubeconfig "$KUBECONFIG" --config load/kwok/stages.yaml \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr "$KWOK_CIDR" --node-ip 10.239.0.1 </dev/null >>"$KWOK_LOG" 2>&1 &
  echo $! >"$KWOK_PID_FILE"
  proc_starttime "$(cat "$KWOK_PID_FILE")" >"${KWOK_PID_FILE%.pid}.start" 2>/dev/null || true
}

case ${1:-} in
  start) start ;;
  restart)
    old=$(cat "$KWOK_PID_FILE" 2>/dev/null || echo none)
    stop
    release_leases
    start
    echo "kwok restarted (pid $old -> $(cat "$KWOK_PID_FILE"))"
    ;;
  *) die "usage: load/kwok.sh start|restart" ;;
esac
