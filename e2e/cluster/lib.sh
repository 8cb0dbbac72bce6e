#!/usr/bin/env bash
# Shared variables and helpers for the local single-node cluster scripts.
# Sourced by deps.sh, build.sh, images.sh, image-binary.sh, up.sh, down.sh, smoke.sh.

CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$CLUSTER_DIR/../.." && pwd)

K8S_VERSION=${K8S_VERSION:-v1.34.4}
CACHE_ROOT=${SIDECAR_ORDER_CACHE:-$HOME/.cache/sidecar-order}
CACHE=$CACHE_ROOT/k8s-$K8S_VERSION
CACHE_BIN=$CACHE/bin
STATE=${SIDECAR_ORDER_STATE:-/tmp/sidecar-order-cluster}
KUBECONFIG_OUT=$STATE/kubeconfig
LOGS=$STATE/logs
PIDS=$STATE/pids
CERTS=$STATE/pki
CONTAINERD_SOCK=$STATE/containerd.sock
API_PORT=${SIDECAR_ORDER_API_PORT:-6443}
API_SERVER=https://127.0.0.1:$API_PORT
ETCD_CLIENT_PORT=${SIDECAR_ORDER_ETCD_PORT:-23790}
ETCD_PEER_PORT=$((ETCD_CLIENT_PORT + 1))
NODE_NAME=${SIDECAR_ORDER_NODE:-$(hostname | tr '[:upper:]' '[:lower:]')}
POD_CIDR=${SIDECAR_ORDER_POD_CIDR:-10.88.0.0/16}
SERVICE_CIDR=${SIDECAR_ORDER_SERVICE_CIDR:-10.96.0.0/16}
CNI_BRIDGE=${SIDECAR_ORDER_BRIDGE:-sco0}
CNI_BIN_DIR=/usr/lib/cni
BUSYBOX_IMAGE=localhost/busybox:1
PAUSE_IMAGE=localhost/pause:1

export PATH="$CACHE_BIN:$PATH"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

# pid_alive NAME: true if $PIDS/NAME.pid holds a live process.
pid_alive() {
  local f=$PIDS/$1.pid pid
  [[ -f $f ]] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [[ -n $pid ]] && proc_alive "$pid"
}

# proc_alive PID: true if PID exists and is not a zombie.
proc_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ $st != Z && $st != X ]]
}

# tail_log NAME [LINES]: show the end of a component's log.
tail_log() {
  local f=$LOGS/$1.log
  if [[ -f $f ]]; then
    echo "----- last ${2:-40} lines of $f -----" >&2
    tail -n "${2:-40}" "$f" >&2
    echo "----- end of $f -----" >&2
  else
    echo "(no log at $f)" >&2
  fi
}

kc() { kubectl --kubeconfig "$KUBECONFIG_OUT" "$@"; }
