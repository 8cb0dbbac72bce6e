#!/usr/bin/env bash
# Proves the node is real: a pod with two native sidecars and one app container
# runs, and on deletion the kubelet stops app, then second-sidecar, then
# first-sidecar (each traps SIGTERM and takes 2 s to exit).
# Saves the final pod JSON and its events under $STATE/smoke/; with
# SMOKE_SAVE_FIXTURES=1 also copies them to
# e2e/cluster/fixtures-captured/{smoke-pod.json,smoke-events.json}.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

POD=smoke-sidecars
NS=default
FINALIZER=sidecar-order.dev/smoke-keep
OUT=$STATE/smoke
FIX=$CLUSTER_DIR/fixtures-captured
SMOKE_LOG=$OUT/smoke.log
[[ -f $KUBECONFIG_OUT ]] || die "smoke: $KUBECONFIG_OUT missing; run up.sh first"
mkdir -p "$OUT"
: > "$SMOKE_LOG"
fail() { echo "smoke: FAILED: $*" >&2; echo "smoke: details in $OUT (log: $SMOKE_LOG; kubelet log: $LOGS/kubelet.log)" >&2; exit 1; }

kc get --raw /readyz >/dev/null 2>&1 || fail "API server not ready (log: $LOGS/kube-apiserver.log)"

# Leftover from an earlier run: drop its finalizer and delete it.
if kc -n $NS get pod $POD >/dev/null 2>&1; then
  log "smoke: removing leftover pod $POD"
  kc -n $NS patch pod $POD --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
  kc -n $NS delete pod $POD --grace-period=1 --wait=true --timeout=60s >/dev/null 2>&1 || true
fi

# Each container logs its name, traps SIGTERM, sleeps 2 s, then exits 0.
python3 - "$POD" "$NS" "$FINALIZER" "$BUSYBOX_IMAGE" > "$OUT/pod.json" <<'PY'
import json, sys
pod, ns, fin, image = sys.argv[1:]
def c(name, sidecar):
    script = (f"trap 'echo \"$(date +%T) {name}: SIGTERM\"; sleep 2; echo \"$(date +%T) {name}: exit\"; exit 0' TERM; "
              f"echo \"$(date +%T) {name}: started\"; while true; do sleep 1 & wait $!; done")
    d = {"name": name, "image": image, "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", script]}
    if sidecar:
        d["restartPolicy"] = "Always"
    return d
print(json.dumps({
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": pod, "namespace": ns, "finalizers": [fin], "labels": {"app": "sidecar-order-smoke"}},
    "spec": {"terminationGracePeriodSeconds": 30, "restartPolicy": "Always",
             "initContainers": [c("first-sidecar", True), c("second-sidecar", True)],
             "containers": [c("app", False)]}}, indent=2))
PY
log "smoke: creating pod $POD"
kc apply -f "$OUT/pod.json" >>"$SMOKE_LOG" 2>&1 || fail "kubectl apply failed (see $SMOKE_LOG)"
if ! kc -n $NS wait --for=condition=Ready pod/$POD --timeout=120s >>"$SMOKE_LOG" 2>&1; then
  kc -n $NS describe pod $POD > "$OUT/describe.txt" 2>&1 || true
  tail -n 25 "$OUT/describe.txt" >&2
  fail "pod $POD not Ready within 120s (describe: $OUT/describe.txt)"
fi
ip=$(kc -n $NS get pod $POD -o jsonpath='{.status.podIP}')
[[ -n $ip ]] || fail "pod $POD has no IP (CNI; containerd log: $LOGS/containerd.log)"
log "smoke: pod Running with IP $ip"
for c in first-sidecar second-sidecar app; do
  kc -n $NS logs $POD -c $c > "$OUT/log-$c-running.txt" 2>>"$SMOKE_LOG" || fail "kubectl logs $POD -c $c failed (apiserver->kubelet; see $SMOKE_LOG)"
  grep -q "$c: started" "$OUT/log-$c-running.txt" || fail "log of $c lacks '$c: started'"
done

log "smoke: deleting pod $POD and polling container states"
kc -n $NS delete pod $POD --wait=false >>"$SMOKE_LOG" 2>&1 || fail "kubectl delete failed"
# The finalizer keeps the object after the kubelet is done, so its final status can be read.
deadline=$(( $(date +%s) + 90 ))
: > "$OUT/poll.txt"
while :; do
  kc -n $NS get pod $POD -o json > "$OUT/poll-last.json" 2>>"$SMOKE_LOG" || fail "pod vanished while polling"
  states=$(python3 - "$OUT/poll-last.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
st = p.get("status", {})
out = []
for s in st.get("initContainerStatuses", []) + st.get("containerStatuses", []):
    t = s.get("state", {}).get("terminated")
    out.append(f"{s['name']}={t['finishedAt'] if t else '-'}")
print(" ".join(out))
PY
)
  echo "$(date +%T.%N) $states" >> "$OUT/poll.txt"
  [[ $states != *=-* ]] && break
  (( $(date +%s) > deadline )) && fail "containers not all terminated 90s after delete: $states"
  sleep 0.3
done
sleep 2  # let the kubelet's last events reach the API server
cp "$OUT/poll-last.json" "$OUT/smoke-pod.json"
uid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metadata"]["uid"])' "$OUT/smoke-pod.json")
kc -n $NS get events -o json --field-selector "involvedObject.name=$POD" > "$OUT/events-all.json" 2>>"$SMOKE_LOG" || fail "kubectl get events failed"
python3 - "$OUT/events-all.json" "$uid" > "$OUT/smoke-events.json" <<'PY'
import json, sys
ev = json.load(open(sys.argv[1]))
ev["items"] = [e for e in ev["items"] if e.get("involvedObject", {}).get("uid") == sys.argv[2]]
json.dump(ev, sys.stdout, indent=2)
PY
kc -n $NS patch pod $POD --type=merge -p '{"metadata":{"finalizers":null}}' >>"$SMOKE_LOG" 2>&1 || fail "could not remove finalizer from $POD"
if [[ ${SMOKE_SAVE_FIXTURES:-0} == 1 ]]; then
  mkdir -p "$FIX"
  cp "$OUT/smoke-pod.json" "$FIX/smoke-pod.json"
  cp "$OUT/smoke-events.json" "$FIX/smoke-events.json"
fi

# The order: app, then second-sidecar, then first-sidecar, each ≥1 s apart (2 s trap sleeps).
python3 - "$OUT/smoke-pod.json" "$OUT/smoke-events.json" <<'PY' || fail "termination order wrong (pod JSON: $OUT/smoke-pod.json, polls: $OUT/poll.txt)"
import json, sys
from datetime import datetime
p = json.load(open(sys.argv[1]))
st = p["status"]
fin = {}
for s in st.get("initContainerStatuses", []) + st.get("containerStatuses", []):
    t = s["state"]["terminated"]
    fin[s["name"]] = datetime.strptime(t["finishedAt"], "%Y-%m-%dT%H:%M:%SZ")
    print(f"smoke: {s['name']:15s} finishedAt={t['finishedAt']} exitCode={t['exitCode']} reason={t.get('reason')}")
a, s2, s1 = fin["app"], fin["second-sidecar"], fin["first-sidecar"]
ok = a < s2 < s1
print(f"smoke: gaps app->second-sidecar={(s2-a).total_seconds():.0f}s second->first-sidecar={(s1-s2).total_seconds():.0f}s")
ev = json.load(open(sys.argv[2]))["items"]
reasons = sorted({(e["reason"], e["involvedObject"].get("fieldPath", "")) for e in ev})
print("smoke: events: " + ", ".join(f"{r}:{f}" for r, f in reasons))
if not ok:
    print("smoke: expected app < second-sidecar < first-sidecar", file=sys.stderr)
    sys.exit(1)
PY
log "smoke: PASSED: app stopped before second-sidecar before first-sidecar; pod and events in $OUT"
