#!/usr/bin/env bash
# Captures what the real kubelet does in five situations the engine must judge
# without false Errors, as test fixtures: for each, the pod's final object
# (`kubectl get pod -o json`) and its events (`kubectl get events -o json`,
# only this pod's, as a List) go to tests/fixtures/real-<name>/{pod.json,events.json}.
#
#   bash e2e/cluster/capture.sh                 # all five
#   bash e2e/cluster/capture.sh node-reboot ... # some of them
#
# Situations (see tests/fixtures/README.md for what a run recorded):
#   node-reboot                    init + 2 sidecars + app; once Ready the kubelet is
#                                  stopped, every task of the pod (sandbox included)
#                                  SIGKILLed, the kubelet started again (kubelet.sh);
#                                  captured Ready again. Also writes
#                                  real-node-reboot-no-events (same pod, no events).
#   sidecar-restart-startup-probe  a sidecar with a startupProbe exits 1 after ~23 s
#                                  and restarts while the app runs; captured once its
#                                  new run passed its startup probe.
#   grace-spent-two-sidecars       2 sidecars exit at once on SIGTERM, the app ignores
#                                  it; grace 5 s; deleted, final status kept by a finalizer.
#   delete-during-init             sidecar 1 runs, sidecar 2's startupProbe never
#                                  passes; deleted while initialising.
#   onfailure-app-retry            restartPolicy OnFailure; the app exits 1, then 0;
#                                  captured once the pod Succeeded.
#   bug-125880                     kubernetes#125880's pod (conformance's
#                                  deletion-during-init): 3 sidecars, the second's
#                                  startupProbe never passes, so the third never
#                                  starts; deleted while initialising. Saved as
#                                  real-kubelet-<node's kubelet version>-bug-125880
#                                  (not in the default set: a fixed kubelet shows
#                                  nothing new; run it on an affected one, e.g.
#                                  KUBELET_VERSION=v1.29.6 K8S_VERSION=v1.30.14).
#
# Needs the local cluster (make cluster-up). Uses its own namespace
# ($CAPTURE_NS, default sidecar-order-capture), recreated at the start and
# deleted at the end (CAPTURE_KEEP_NS=1 keeps it). CAPTURE_OUT=DIR writes the
# fixture directories under DIR instead of tests/fixtures. Working files:
# $STATE/capture/.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

NS=${CAPTURE_NS:-sidecar-order-capture}
OUT_ROOT=${CAPTURE_OUT:-$REPO_ROOT/tests/fixtures}
WORK=$STATE/capture
FINALIZER=sidecar-order.dev/capture-keep
IMAGE=$BUSYBOX_IMAGE
ALL=(node-reboot sidecar-restart-startup-probe grace-spent-two-sidecars delete-during-init onfailure-app-retry)

[[ -f $KUBECONFIG_OUT ]] || die "capture: $KUBECONFIG_OUT missing; run make cluster-up first"
command -v jq >/dev/null || die "capture: jq is needed"
kc get --raw /readyz >/dev/null 2>&1 || die "capture: the API server is not ready (log: $LOGS/kube-apiserver.log)"
mkdir -p "$WORK"

k() { kc -n "$NS" "$@"; }

fail() {
  local pod=${CURRENT_POD:-}
  echo "capture: FAILED: $*" >&2
  if [[ -n $pod ]]; then
    k describe pod "$pod" > "$WORK/$pod.describe.txt" 2>&1 || true
    tail -n 40 "$WORK/$pod.describe.txt" >&2 || true
    echo "capture: describe in $WORK/$pod.describe.txt; kubelet log: $LOGS/kubelet.log" >&2
  fi
  exit 1
}

# pod_jq NAME FILTER: jq FILTER over the pod's JSON (fails if the pod is missing).
pod_jq() { k get pod "$1" -o json | jq -r "$2"; }

# wait_pod NAME TIMEOUT WHAT JQ_BOOLEAN: poll every 0.5 s until the filter is true.
wait_pod() {
  local name=$1 timeout=$2 what=$3 filter=$4 deadline
  deadline=$(( $(date +%s) + timeout ))
  log "capture: $name: waiting for: $what"
  until k get pod "$name" -o json 2>/dev/null | jq -e "$filter" >/dev/null 2>&1; do
    (( $(date +%s) > deadline )) && fail "$name: not '$what' after ${timeout}s"
    sleep 0.5
  done
}

# The container statuses of a pod, one line each (progress output).
summary() {
  pod_jq "$1" '
    def st(s): if s == null or s == {} then "-"
      elif s.running then "running(\(s.running.startedAt))"
      elif s.terminated then "terminated(\(s.terminated.startedAt)..\(s.terminated.finishedAt) exit=\(s.terminated.exitCode) \(s.terminated.reason))"
      else "waiting(\(s.waiting.reason))" end;
    "pod \(.metadata.name) phase=\(.status.phase) deletionTimestamp=\(.metadata.deletionTimestamp)",
    ((.status.initContainerStatuses // []) + (.status.containerStatuses // []) | .[] |
      "  \(.name): restarts=\(.restartCount) started=\(.started) ready=\(.ready) state=\(st(.state)) last=\(st(.lastState))")' >&2
}

# Terminal phase and no container running: the kubelet is done with the pod.
FINAL='(.status.phase == "Succeeded" or .status.phase == "Failed")
  and ([(.status.initContainerStatuses // []) + (.status.containerStatuses // []) | .[] | select(.state.running)] | length == 0)'

# save NAME FIXTURE: the pod's object and its events into $OUT_ROOT/real-FIXTURE/.
save() {
  local name=$1 dir=$OUT_ROOT/real-$2 uid
  sleep 3 # the kubelet's last events reach the API server
  mkdir -p "$dir"
  k get pod "$name" -o json > "$WORK/$name.pod.json" || fail "$name: kubectl get pod failed"
  uid=$(jq -r .metadata.uid "$WORK/$name.pod.json")
  k get events -o json --field-selector "involvedObject.name=$name" > "$WORK/$name.events-all.json" ||
    fail "$name: kubectl get events failed"
  jq --arg uid "$uid" '.items |= map(select(.involvedObject.uid == $uid))' "$WORK/$name.events-all.json" > "$WORK/$name.events.json"
  cp "$WORK/$name.pod.json" "$dir/pod.json"
  cp "$WORK/$name.events.json" "$dir/events.json"
  summary "$name"
  jq -r '.items | sort_by(.firstTimestamp // .eventTime) | .[] |
    "  event \(.firstTimestamp // .eventTime) .. \(.lastTimestamp) x\(.count // 1) \(.reason) \(.involvedObject.fieldPath // "") \(.metadata.name)"' \
    "$dir/events.json" >&2
  log "capture: saved $dir/{pod.json,events.json} ($(jq '.items | length' "$dir/events.json") events)"
}

# release NAME: drop the finalizer, delete the pod and wait until it is gone.
release() {
  k patch pod "$1" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
  k delete pod "$1" --ignore-not-found --grace-period=1 --wait=true --timeout=60s >/dev/null 2>&1 || true
}

create() {
  CURRENT_POD=$1
  log "capture: creating pod $1"
  k create -f - >/dev/null || fail "$1: kubectl create failed"
}

# ---------------------------------------------------------------- namespace
if kc get namespace "$NS" >/dev/null 2>&1; then
  log "capture: removing the leftover namespace $NS"
  for p in $(k get pods -o name 2>/dev/null); do
    k patch "$p" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
  done
  kc delete namespace "$NS" --wait=true --timeout=120s >/dev/null || die "capture: could not delete namespace $NS"
fi
kc create namespace "$NS" >/dev/null
deadline=$(( $(date +%s) + 60 ))
until k get serviceaccount default >/dev/null 2>&1; do
  (( $(date +%s) > deadline )) && die "capture: no default ServiceAccount in $NS after 60s"
  sleep 0.5
done
cleanup() {
  [[ ${CAPTURE_KEEP_NS:-0} == 1 ]] && { log "capture: keeping namespace $NS (CAPTURE_KEEP_NS=1)"; return; }
  for p in $(k get pods -o name 2>/dev/null); do
    k patch "$p" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
  done
  kc delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

# ---------------------------------------------------------------- a. node reboot
# Both sidecars hold the next container back for 2 s with a postStart hook (as
# istio-proxy's does), so every start lands in its own second.
cap_node_reboot() {
  local name=real-node-reboot uid reboot_at
  create $name <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $name
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: init
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo init done"]
  - name: first-sidecar
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'exit 0' TERM; echo started; sleep infinity & wait"]
    lifecycle:
      postStart:
        exec:
          command: ["sleep", "2"]
  - name: second-sidecar
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'exit 0' TERM; echo started; sleep infinity & wait"]
    lifecycle:
      postStart:
        exec:
          command: ["sleep", "2"]
  containers:
  - name: app
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; echo started; sleep infinity & wait"]
YAML
  wait_pod $name 120 "Ready" '.status.conditions[]? | select(.type == "Ready") | .status == "True"'
  summary $name
  sleep 3
  uid=$(pod_jq $name .metadata.uid)
  reboot_at=$(date -u +%FT%TZ)
  log "capture: $name: node reboot at $reboot_at: kubelet stop, SIGKILL every task of pod $uid, kubelet start"
  bash "$CLUSTER_DIR/kubelet.sh" stop || fail "kubelet.sh stop failed"
  bash "$CLUSTER_DIR/kubelet.sh" kill-pod "$uid" || { bash "$CLUSTER_DIR/kubelet.sh" start || true; fail "kubelet.sh kill-pod failed"; }
  sleep 1
  bash "$CLUSTER_DIR/kubelet.sh" start || fail "kubelet.sh start failed"
  wait_pod $name 180 "Ready again with new runs of every container (started at or after $reboot_at)" "
    (.status.conditions[]? | select(.type == \"Ready\") | .status == \"True\")
    and ([(.status.initContainerStatuses // [])[] | select(.name != \"init\")] + (.status.containerStatuses // [])
         | all(.state.running.startedAt != null and .state.running.startedAt >= \"$reboot_at\" and .ready))
    and ((.status.containerStatuses // [])[0].restartCount >= 1)"
  save $name node-reboot
  local dir=$OUT_ROOT/real-node-reboot-no-events
  mkdir -p "$dir"
  cp "$OUT_ROOT/real-node-reboot/pod.json" "$dir/pod.json"
  jq '.items = []' "$OUT_ROOT/real-node-reboot/events.json" > "$dir/events.json"
  log "capture: saved $dir (the same pod, an empty event List)"
  release $name
}

# ---------------------------------------------------------------- b. sidecar restart with a startupProbe
cap_sidecar_restart_startup_probe() {
  local name=real-sidecar-restart-startup-probe
  create $name <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $name
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: sidecar
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "echo started; sleep 3; touch /tmp/ready; echo ready; sleep 20; echo exiting 1; exit 1"]
    startupProbe:
      exec:
        command: ["cat", "/tmp/ready"]
      periodSeconds: 1
      failureThreshold: 30
  containers:
  - name: app
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; echo started; sleep infinity & wait"]
YAML
  wait_pod $name 120 "Ready" '.status.conditions[]? | select(.type == "Ready") | .status == "True"'
  summary $name
  wait_pod $name 150 "sidecar restarted and its new run passed its startup probe" '
    .status.initContainerStatuses[0] | .restartCount >= 1 and .started == true and .state.running != null'
  save $name sidecar-restart-startup-probe
  release $name
}

# ---------------------------------------------------------------- c. grace period spent, two sidecars
cap_grace_spent_two_sidecars() {
  local name=real-grace-spent-two-sidecars
  create $name <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $name
  finalizers: ["$FINALIZER"]
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: first-sidecar
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'echo bye; exit 0' TERM; echo started; sleep infinity & wait"]
  - name: second-sidecar
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'echo bye; exit 0' TERM; echo started; sleep infinity & wait"]
  containers:
  - name: slow-app
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap '' TERM; echo started; while true; do sleep 1; done"]
YAML
  wait_pod $name 120 "Ready" '.status.conditions[]? | select(.type == "Ready") | .status == "True"'
  summary $name
  sleep 2
  log "capture: $name: deleting (grace 5 s; the app ignores SIGTERM)"
  k delete pod $name --wait=false >/dev/null
  wait_pod $name 90 "every container terminated (final status)" "$FINAL"
  save $name grace-spent-two-sidecars
  release $name
}

# ---------------------------------------------------------------- d. delete during init
# delete_during_init NAME FIXTURE [EXTRA_SIDECAR]: first-sidecar runs,
# second-sidecar's startupProbe never passes, EXTRA_SIDECAR (when given) after
# it never starts; deleted while initialising.
delete_during_init() {
  local name=$1 fixture=$2 extra=${3:-}
  local sidecar_cmd='["sh", "-c", "trap '"'"'echo bye; sleep 2; exit 0'"'"' TERM; echo started; sleep infinity & wait"]'
  local third=""
  [[ -z $extra ]] || third="  - name: $extra
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: $sidecar_cmd"
  create $name <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $name
  finalizers: ["$FINALIZER"]
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 30
  initContainers:
  - name: first-sidecar
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: $sidecar_cmd
  - name: second-sidecar
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: $sidecar_cmd
    startupProbe:
      exec:
        command: ["cat", "/tmp/never"]
      periodSeconds: 1
      failureThreshold: 600
$third
  containers:
  - name: app
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; echo started; sleep infinity & wait"]
YAML
  wait_pod $name 120 "second-sidecar running (its startup probe failing)" '
    .status.initContainerStatuses[1].state.running != null'
  sleep 5
  summary $name
  log "capture: $name: deleting while it initialises"
  k delete pod $name --wait=false >/dev/null
  wait_pod $name 90 "every container terminated (final status)" "$FINAL"
  save $name "$fixture"
  release $name
}

cap_delete_during_init() { delete_during_init real-delete-during-init delete-during-init; }

# d2. kubernetes#125880's pod: the same with a third sidecar that never
# starts, saved under the node's kubelet version.
cap_bug_125880() {
  local kv
  kv=$(kc get nodes -o jsonpath='{.items[0].status.nodeInfo.kubeletVersion}') || fail "reading the node's kubelet version"
  delete_during_init real-bug-125880 "kubelet-$kv-bug-125880" third-sidecar
}

# ---------------------------------------------------------------- e. OnFailure, the app retried
cap_onfailure_app_retry() {
  local name=real-onfailure-app-retry
  create $name <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $name
spec:
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 10
  volumes:
  - name: runs
    emptyDir: {}
  initContainers:
  - name: sidecar
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'echo bye; sleep 2; exit 0' TERM; echo started; sleep infinity & wait"]
  containers:
  - name: app
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    volumeMounts:
    - name: runs
      mountPath: /runs
    command: ["sh", "-c", "n=\$(( \$(cat /runs/count 2>/dev/null || echo 0) + 1 )); echo \$n > /runs/count; echo run \$n; sleep 2; if [ \$n -ge 2 ]; then exit 0; fi; exit 1"]
YAML
  wait_pod $name 180 "phase Succeeded, the sidecar stopped" "$FINAL"
  save $name onfailure-app-retry
  release $name
}

# ---------------------------------------------------------------- run
todo=("$@")
((${#todo[@]})) || todo=("${ALL[@]}")
for s in "${todo[@]}"; do
  case $s in
    node-reboot) cap_node_reboot ;;
    sidecar-restart-startup-probe) cap_sidecar_restart_startup_probe ;;
    grace-spent-two-sidecars) cap_grace_spent_two_sidecars ;;
    delete-during-init) cap_delete_during_init ;;
    onfailure-app-retry) cap_onfailure_app_retry ;;
    bug-125880) cap_bug_125880 ;;
    *) die "capture: unknown situation $s (one of: ${ALL[*]} bug-125880)" ;;
  esac
done
log "capture: done: ${todo[*]}"
