#!/usr/bin/env bash
# e2e/cluster/schedulable.sh: waits until the local cluster's node can take a
# pod (Ready, no NoSchedule/NoExecute taint such as disk-pressure), for at most
# SCHEDULABLE_TIMEOUT seconds (default 120). On timeout it prints the node's
# conditions, taints and the free space of the cluster's state directory, and
# exits 1 with one line saying what blocks scheduling. A cluster process that
# died (the scheduler, the kubelet, ...) is named at once.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
TIMEOUT=${SCHEDULABLE_TIMEOUT:-120}
deadline=$(( $(date +%s) + TIMEOUT ))
blocker=""
while :; do
  dead=""
  for c in "${COMPONENTS[@]}"; do pid_alive "$c" || dead+="$c "; done
  if [[ -n $dead ]]; then
    blocker="not running: $dead(logs: $LOGS)"
    break
  fi
  ready=$(kc get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
  taints=$(kc get node "$NODE_NAME" -o 'jsonpath={range .spec.taints[*]}{.key}:{.effect} {end}' 2>/dev/null || true)
  blocking=$(tr ' ' '\n' <<<"$taints" | grep -E ':(NoSchedule|NoExecute)$' | tr '\n' ' ' || true)
  if [[ $ready == True && -z $blocking ]]; then
    exit 0
  fi
  blocker="node $NODE_NAME: Ready=${ready:-unknown}${blocking:+, taints $blocking}"
  (( $(date +%s) > deadline )) && break
  sleep 2
done
{
  echo "schedulable: the node cannot take pods after ${TIMEOUT}s: $blocker"
  kc get node "$NODE_NAME" -o 'jsonpath={range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' || true
  echo "free space of the cluster's state directory ($STATE; the kubelet evicts below 256Mi):"
  df -h "$STATE" || true
} >&2
exit 1
