#!/usr/bin/env bash
# Shared variables and helpers for the local single-node cluster scripts.
# Sourced by deps.sh, build.sh, images.sh, image-binary.sh, up.sh, down.sh, smoke.sh.

CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$CLUSTER_DIR/../.." && pwd)

K8S_VERSION=${K8S_VERSION:-v1.34.4}
CACHE_ROOT=${SIDECAR_ORDER_CACHE:-$HOME/.cache/sidecar-order}
CACHE=$CACHE_ROOT/k8s-$K8S_VERSION
CACHE_BIN=$CACHE/bin
# The kubelet may be another (older) release than the control plane: the
# version-skew policy allows three minors. build-kubelet.sh builds it alone.
KUBELET_VERSION=${KUBELET_VERSION:-$K8S_VERSION}
if [[ $KUBELET_VERSION == "$K8S_VERSION" ]]; then
  KUBELET_BIN=$CACHE_BIN/kubelet
else
  KUBELET_BIN=$CACHE_ROOT/kubelet-$KUBELET_VERSION/bin/kubelet
fi
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
# Not 10.88.0.0/16: that is the default of containerd's and podman's own CNI
# bridges (cni0, cni-podman0), which may exist on the host; up.sh refuses a
# range another interface routes.
POD_CIDR=${SIDECAR_ORDER_POD_CIDR:-10.234.0.0/16}
SERVICE_CIDR=${SIDECAR_ORDER_SERVICE_CIDR:-10.96.0.0/16}
CNI_BRIDGE=${SIDECAR_ORDER_BRIDGE:-sco0}
CNI_BIN_DIR=/usr/lib/cni
BUSYBOX_IMAGE=localhost/busybox:1
PAUSE_IMAGE=localhost/pause:1
# The kubelet's cgroupRoot: this cluster's pods live under
# /sys/fs/cgroup/<hierarchy>/$CGROUP_PARENT/kubepods/..., and down.sh cleans
# only that parent (never a kubepods cgroup of another kubelet on the host).
# A cluster with another $STATE gets its own parent.
if [[ $STATE == /tmp/sidecar-order-cluster ]]; then
  CGROUP_PARENT=${SIDECAR_ORDER_CGROUP_PARENT:-sidecar-order}
else
  CGROUP_PARENT=${SIDECAR_ORDER_CGROUP_PARENT:-sidecar-order-$(printf %s "$STATE" | cksum | cut -d' ' -f1)}
fi

# The cluster's processes, in start order (up.sh starts them, down.sh stops them by PID).
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet)

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

# proc_starttime PID: the process's start time (clock ticks since boot,
# field 22 of /proc/PID/stat): with the pid it names one process for good.
proc_starttime() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }          # the fields after "(comm) "; comm may hold spaces
  set -- $st
  echo "${20}"
}

# record_pid NAME PID: $PIDS/NAME.pid and NAME.start (its start time).
record_pid() {
  echo "$2" > "$PIDS/$1.pid"
  proc_starttime "$2" > "$PIDS/$1.start" 2>/dev/null || rm -f "$PIDS/$1.start"
}

# pid_is_ours NAME PID: PID is still the process started as NAME: same start
# time as recorded (when recorded) and $STATE on its command line (every
# component's flags name a file under $STATE).
pid_is_ours() {
  local name=$1 pid=$2 want
  if [[ -s $PIDS/$name.start ]]; then
    want=$(cat "$PIDS/$name.start")
    [[ $(proc_starttime "$pid") == "$want" ]] || return 1
  fi
  # Read first, then searched (a pipe into grep -q can fail under pipefail).
  local cmd
  cmd=$(tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
  grep -qF -- "$STATE" <<<"$cmd"
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
