#!/usr/bin/env bash
# teardown-test.sh: `make cluster-down` (down.sh) leaves alone what this
# cluster did not create. Run by e2e/run.sh at the end, with the cluster up;
# it takes the cluster down itself.
#
# Before down.sh it makes what another kubelet or container runtime on the
# host could own, named the way down.sh used to match:
#   - a `sleep` in a cgroup named like another kubelet's pods, outside our
#     cgroupRoot: /sys/fs/cgroup/cpu/kubepods/dummy-<pid>/ (cgroup v1; on v2
#     /sys/fs/cgroup/kubepods/dummy-<pid>/);
#   - a network namespace named like a CNI one, cni-teardown-test-<pid>,
#     holding an address of our pod range on its loopback.
# After down.sh both must still be there (and the cluster's own state, cgroup
# parent and bridge gone); then it removes them.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $(id -u) == 0 ]] || die "teardown-test: must run as root"
[[ -d $STATE ]] || die "teardown-test: no cluster at $STATE (make cluster-up first)"

if [[ -d /sys/fs/cgroup/cpu ]]; then base=/sys/fs/cgroup/cpu/kubepods; else base=/sys/fs/cgroup/kubepods; fi
cg=$base/dummy-$$
netns=cni-teardown-test-$$
made_base=false
[[ -d $base ]] || made_base=true
pid=""

cleanup() {
  [[ -n $pid ]] && { kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  [[ -d $cg ]] && rmdir "$cg" 2>/dev/null || true
  $made_base && rmdir "$base" 2>/dev/null || true
  umount -l "/run/netns/$netns" 2>/dev/null || true
  rm -f "/run/netns/$netns" 2>/dev/null || true
}
trap cleanup EXIT

mkdir -p "$cg"
sleep 600 &
pid=$!
echo "$pid" > "$cg/cgroup.procs"
grep -qx "$pid" "$cg/cgroup.procs" || die "teardown-test: could not move pid $pid into $cg"
# Made with unshare, not `ip netns add`: on a machine where /run/netns is
# not a mount yet, `ip netns add` first bind-mounts /run/netns onto itself
# with everything mounted in it, so each of our sandboxes' namespaces is
# then mounted twice, one beneath the other, and down.sh can only remove
# the top one (found by a CI run on a fresh machine, 2026-11-28).
mkdir -p /run/netns
: > "/run/netns/$netns"
unshare --net="/run/netns/$netns" true
ip -n "$netns" link set lo up
addr=${POD_CIDR%.*.*}.254.254
ip -n "$netns" addr add "$addr/32" dev lo
log "teardown-test: dummy sleep $pid in $cg, netns $netns with $addr; running down.sh"

bash "$CLUSTER_DIR/down.sh"

fail=()
proc_alive "$pid" || fail+=("the dummy sleep $pid (cgroup $cg) was killed")
[[ -d $cg ]] || fail+=("cgroup $cg was removed")
grep -qx "$pid" "$cg/cgroup.procs" 2>/dev/null || fail+=("pid $pid is no longer in $cg")
[[ -e /run/netns/$netns ]] || fail+=("network namespace $netns was deleted")
[[ ! -d $STATE ]] || fail+=("$STATE still exists")
for hier in /sys/fs/cgroup/*/; do
  [[ ! -d ${hier}$CGROUP_PARENT ]] || fail+=("our cgroup parent ${hier}$CGROUP_PARENT still exists")
done
! ip link show "$CNI_BRIDGE" >/dev/null 2>&1 || fail+=("bridge $CNI_BRIDGE still exists")
if ((${#fail[@]})); then
  printf 'teardown-test: FAILED: %s\n' "${fail[@]}" >&2
  exit 1
fi
log "teardown-test: ok (down.sh left the dummy process, its kubepods cgroup and the netns alone, and removed the cluster)"
