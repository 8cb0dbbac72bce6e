#!/usr/bin/env bash
# Stops the local cluster started by up.sh and removes $STATE. Idempotent.
# Only touches what this cluster made: processes from $PIDS (checked by their
# recorded start time and $STATE on their command line), containerd shims
# whose -address is our socket (and their children), the processes and
# cgroups under our kubelet's cgroupRoot ($CGROUP_PARENT in each hierarchy),
# the network namespaces our containerd's pod sandboxes use (read from their
# OCI specs under $STATE), mounts under $STATE, the bridge $CNI_BRIDGE and the
# iptables chain SIDECAR-ORDER. e2e/cluster/teardown-test.sh checks that a
# process in another kubepods cgroup survives it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

if [[ ! -d $STATE ]]; then
  log "down: $STATE does not exist; nothing to do"
  # still remove a leftover bridge/chain from an earlier run
fi

# stop_pid NAME PID: TERM, wait up to 10 s, then KILL.
stop_pid() {
  local name=$1 pid=$2 i
  proc_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do proc_alive "$pid" || return 0; sleep 0.1; done
  log "down: $name (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do proc_alive "$pid" || return 0; sleep 0.1; done
  log "down: WARNING: $name (pid $pid) still alive after SIGKILL"
}

stop_component() {
  local name=$1 f=$PIDS/$1.pid pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f" 2>/dev/null || true)
  if [[ -n $pid ]] && proc_alive "$pid"; then
    # make sure the pid was not reused by an unrelated process
    if pid_is_ours "$name" "$pid"; then
      log "down: stopping $name (pid $pid)"
      stop_pid "$name" "$pid"
    else
      log "down: pid $pid of $name is not ours any more; leaving it"
    fi
  fi
  rm -f "$f" "$PIDS/$name.start"
}

# descendants PID: all pids below PID (children first order reversed later).
descendants() {
  local p=$1 c
  for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do echo "$c"; descendants "$c"; done
}

# The network namespaces of our pod sandboxes, from the OCI specs of their
# tasks (bundles under $STATE), read before anything is stopped.
our_netns=()
if [[ -d $STATE/containerd/state ]]; then
  mapfile -t our_netns < <(python3 - "$STATE/containerd/state/io.containerd.runtime.v2.task" <<'PY'
import glob, json, os, sys
seen = set()
for f in glob.glob(os.path.join(sys.argv[1], "*", "*", "config.json")):
    try:
        spec = json.load(open(f))
    except (OSError, ValueError):
        continue
    for ns in spec.get("linux", {}).get("namespaces", []):
        p = ns.get("path", "")
        if ns.get("type") == "network" and p.startswith(("/run/netns/", "/var/run/netns/")) and p not in seen:
            seen.add(p)
            print(p)
PY
  )
fi

# Kill the kubelet first so it does not restart containers, then the workloads.
stop_component kubelet

# Container tasks: ask containerd to kill them while it is still up.
if [[ -S $CONTAINERD_SOCK ]] && pid_alive containerd; then
  for t in $(timeout 10 ctr -a "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null || true); do
    timeout 5 ctr -a "$CONTAINERD_SOCK" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
  done
fi

# Shims of our containerd (their command line names our socket), with their containers.
shims=$(pgrep -f -- "containerd-shim.*-address $CONTAINERD_SOCK( |\$)" 2>/dev/null || true)
for s in $shims; do
  kids=$(descendants "$s")
  log "down: killing containerd shim $s and its processes $(echo $kids)"
  for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
  stop_pid containerd-shim "$s"
done

stop_component containerd
stop_component kube-scheduler
stop_component kube-controller-manager
stop_component kube-apiserver
stop_component etcd

# Processes left under our kubelet's cgroupRoot, then its cgroups (the
# parent $CGROUP_PARENT included). Other kubepods cgroups are not ours.
for hier in /sys/fs/cgroup/*/; do
  [[ -d ${hier}$CGROUP_PARENT ]] || continue
  find "${hier}$CGROUP_PARENT" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r p; do
    kill -KILL "$p" 2>/dev/null || true
  done
done
sleep 0.2
for hier in /sys/fs/cgroup/*/; do
  [[ -d ${hier}$CGROUP_PARENT ]] || continue
  find "${hier}$CGROUP_PARENT" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  [[ -d ${hier}$CGROUP_PARENT ]] && log "down: WARNING: ${hier}$CGROUP_PARENT remains (busy?)"
done

# The network namespaces of our sandboxes (CNI teardown did not run: the
# kubelet and containerd are gone).
for ns in "${our_netns[@]}"; do
  [[ -e $ns ]] || continue
  n=$(basename "$ns")
  log "down: removing network namespace $n"
  ip netns delete "$n" 2>/dev/null || { umount -l "$ns" 2>/dev/null || true; rm -f "$ns" 2>/dev/null; } ||
    # Still mounted beneath a bind mount of /run/netns made while it existed
    # (`ip netns add` makes one the first time): unreachable from here.
    log "down: network namespace $n is still mounted beneath a later bind mount of /run/netns; left in place"
done

# Per-container leftovers outside $STATE: runc state dirs and libcni result caches.
if [[ -d $STATE/containerd ]]; then
  ids=$( { ls "$STATE/containerd/state/io.containerd.runtime.v2.task/k8s.io" \
              "$STATE/containerd/root/io.containerd.grpc.v1.cri/sandboxes" \
              "$STATE/containerd/root/io.containerd.grpc.v1.cri/containers"; } 2>/dev/null | grep -E '^[0-9a-f]{64}$' | sort -u || true)
  for id in $ids; do
    rm -rf "/run/containerd/runc/k8s.io/$id" "/run/containerd/s/$id" 2>/dev/null || true
    rm -f /var/lib/cni/results/*-"$id"-* 2>/dev/null || true
  done
fi
rm -f /var/lib/cni/results/sidecar-order-* 2>/dev/null || true

# Every mount under $STATE, deepest (last mounted) first.
if [[ -d $STATE ]]; then
  for i in 1 2 3; do
    mapfile -t mnts < <(awk -v s="$STATE" '{ m=$2; gsub(/\\040/, " ", m); if (m == s || index(m, s "/") == 1) print m }' /proc/self/mounts | tac)
    ((${#mnts[@]})) || break
    for m in "${mnts[@]}"; do umount -l "$m" 2>/dev/null || true; done
  done
  left=$(awk -v s="$STATE" 'index($2, s "/") == 1' /proc/self/mounts | wc -l)
  ((left == 0)) || log "down: WARNING: $left mounts under $STATE remain"
fi

# The CNI bridge and the DNAT chain.
if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then
  log "down: deleting bridge $CNI_BRIDGE"
  ip link delete "$CNI_BRIDGE" 2>/dev/null || log "down: WARNING: could not delete bridge $CNI_BRIDGE"
fi
if command -v iptables >/dev/null && iptables -t nat -S SIDECAR-ORDER >/dev/null 2>&1; then
  iptables -t nat -D PREROUTING -j SIDECAR-ORDER 2>/dev/null || true
  iptables -t nat -D OUTPUT -j SIDECAR-ORDER 2>/dev/null || true
  iptables -t nat -F SIDECAR-ORDER 2>/dev/null || true
  iptables -t nat -X SIDECAR-ORDER 2>/dev/null || true
fi

if [[ -d $STATE ]]; then
  rm -rf "$STATE" 2>/dev/null || { sleep 1; rm -rf "$STATE"; } || die "down: could not remove $STATE (busy mounts?: findmnt | grep $STATE)"
  log "down: removed $STATE"
fi
log "down: done"
