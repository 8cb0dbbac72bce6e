#!/usr/bin/env bash
# make load: the load harness of issue 12 against the local cluster.
#
#   driver build (cargo test --features e2e --test load --no-run)
#   -> cluster (make cluster-up when it is not running; stopped again at the
#      end only when this script started it)
#   -> kwok v0.8.0 (scripts/kwok.sh builds it once) managing LOAD_NODES
#      fake nodes selected by annotation, playing load/kwok/stages.yaml
#   -> the SidecarOrderReport CRD, namespace $LOAD_NAMESPACE
#   -> the driver (load/main.rs): starts the controller as a plain process
#      here, creates, churns, idles, restarts it, checks every verdict
#      against the pod's labels and prints one table.
# On exit, also on failure or Ctrl-C: the controller and kwok are stopped by
# PID, the load pods force-deleted, the namespace and the fake nodes deleted.
#
# Environment (defaults for make load; make e2e runs a short pass):
#   LOAD_PODS=10000 LOAD_RATE=50 LOAD_CHURN=20 LOAD_SECONDS=300
#   LOAD_IDLE_SECONDS=60 LOAD_NODES=10 LOAD_NAMESPACE=sidecar-order-load
#   LOAD_CONTROLLER_BIN  the controller binary (default: the static image
#                        binary make image builds, $STATIC_BIN below)
#   LOAD_CONTROLLER_ARGS extra flags for `sidecar-order run`
#   LOAD_METRICS_PORT=18080  LOAD_DIR=/tmp/sidecar-order-load (logs)
#   LOAD_OUT=FILE        also write the driver's output (the table) there
#   LOAD_TARGET=chaos    the chaos run of issue 9 instead (make chaos; its
#                        driver is load/chaos/main.rs, CHAOS_* settings)
#   LOAD_KEEP=1          leave the pods, reports, Events, fake nodes and kwok
#                        (its pid is printed) for experiments on that state,
#                        e.g. timing controller restarts; the next run
#                        removes them (stop that kwok first)
# Exits with the driver's status: 0 only when every verdict matches.
set -euo pipefail
cd "$(dirname "$0")/.."
# STATE, PIDS, KUBECONFIG_OUT, log, die, proc_alive, proc_starttime, record_pid
source e2e/cluster/lib.sh

STATIC_BIN=target/static/x86_64-unknown-linux-gnu/image/sidecar-order
export KUBECONFIG=${KUBECONFIG:-$KUBECONFIG_OUT}
export LOAD_PODS=${LOAD_PODS:-10000} LOAD_RATE=${LOAD_RATE:-50} LOAD_CHURN=${LOAD_CHURN:-20}
export LOAD_SECONDS=${LOAD_SECONDS:-300} LOAD_IDLE_SECONDS=${LOAD_IDLE_SECONDS:-60}
export LOAD_NODES=${LOAD_NODES:-10} LOAD_NAMESPACE=${LOAD_NAMESPACE:-sidecar-order-load}
export LOAD_DIR=${LOAD_DIR:-/tmp/sidecar-order-load}
export LOAD_CONTROLLER_BIN=${LOAD_CONTROLLER_BIN:-$STATIC_BIN}
NS=$LOAD_NAMESPACE
TARGET=${LOAD_TARGET:-load}
[[ $TARGET == load || $TARGET == chaos ]] || die "load: LOAD_TARGET=$TARGET: load or chaos"
KWOK_CIDR=${LOAD_KWOK_CIDR:-10.240.0.0/16}
CARGO=${CARGO:-cargo}
START=$(date +%s)
mkdir -p "$LOAD_DIR"
step() { log "load [$(( $(date +%s) - START ))s]: $*"; }

# One load or chaos run at a time per cluster: they share kwok, its pid
# file and the fake nodes (a second run would stop the first one's kwok).
# The script runs again under `flock -o`: the lock is held by flock itself,
# so nothing this run starts (kwok, the controller, an API server restarted
# by the chaos run) inherits it and outlives the run holding it.
LOCK=${LOAD_LOCK:-/tmp/sidecar-order-load.flock}
if [[ ${LOAD_LOCK_HELD:-} != "$LOCK" ]]; then
  flock -n "$LOCK" true || step "another load or chaos run holds $LOCK; waiting for it (up to 30 min)"
  LOAD_LOCK_HELD=$LOCK exec flock -o -w 1800 -E 75 "$LOCK" bash "$PWD/load/run.sh" "$@"
fi

[[ -x $LOAD_CONTROLLER_BIN ]] ||
  die "load: no controller binary at $LOAD_CONTROLLER_BIN (make image builds it; or set LOAD_CONTROLLER_BIN, e.g. target/release/sidecar-order after make build)"
LOAD_CONTROLLER_BIN=$(realpath "$LOAD_CONTROLLER_BIN")

step "building the driver (cargo test --features e2e --test $TARGET --no-run)"
nice -n 10 "$CARGO" test --locked --features e2e --test "$TARGET" --no-run 2>&1 | tail -n 3

# stop_recorded NAME PIDFILE: TERM (KILL after 15 s) the process recorded
# there, if it is still the one started (same start time); removes the file.
stop_recorded() {
  local name=$1 f=$2 pid want i
  [[ -f $f ]] || return 0
  pid=$(cat "$f" 2>/dev/null || true)
  want=$(cat "${f%.pid}.start" 2>/dev/null || true)
  if [[ -n $pid ]] && proc_alive "$pid" && [[ -z $want || $(proc_starttime "$pid") == "$want" ]]; then
    step "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do proc_alive "$pid" || break; sleep 0.1; done
    proc_alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f" "${f%.pid}.start"
}

STARTED_CLUSTER=0
PID_DIR=$PIDS
KWOK_PID_FILE=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop_recorded controller "$PID_DIR/load-controller.pid"
  # The chaos run's replicas (load/chaos/replicas.rs names them so).
  for f in "$PID_DIR"/chaos-replica-*.pid; do
    [[ -e $f ]] && stop_recorded "chaos replica" "$f"
  done
  if [[ ${LOAD_KEEP:-0} == 1 && -n $KWOK_PID_FILE ]]; then
    step "LOAD_KEEP=1: namespace $NS, the fake nodes and kwok (pid $(cat "$KWOK_PID_FILE" 2>/dev/null)) are left running"
    KWOK_PID_FILE=
    STARTED_CLUSTER=0
  fi
  if [[ -n $KWOK_PID_FILE ]] && kubectl get --raw /readyz >/dev/null 2>&1; then
    step "cleanup: force-deleting the load pods, then namespace $NS and the fake nodes"
    # One deletecollection with grace 0: no kwok needed to finish them.
    kubectl delete --raw "/api/v1/namespaces/$NS/pods?gracePeriodSeconds=0" >/dev/null 2>&1
    # The namespace controller removes the reports and events meanwhile
    # (a next run waits for it); nothing in it needs kwok any more.
    kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1
    kubectl delete nodes -l sidecar-order.dev/load=true --ignore-not-found >/dev/null 2>&1
  fi
  [[ -n $KWOK_PID_FILE ]] && stop_recorded kwok "$KWOK_PID_FILE"
  if ((STARTED_CLUSTER)); then
    step "cluster down (this script started it)"
    make --no-print-directory cluster-down >"$LOAD_DIR/cluster-down.log" 2>&1 ||
      echo "load: make cluster-down failed (see $LOAD_DIR/cluster-down.log)" >&2
  fi
  step "finished: exit $rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! kubectl get --raw /readyz >/dev/null 2>&1; then
  step "the cluster is not running: make cluster-up"
  make --no-print-directory cluster-up >"$LOAD_DIR/cluster-up.log" 2>&1 ||
    { tail -n 30 "$LOAD_DIR/cluster-up.log" >&2; die "load: make cluster-up failed (log: $LOAD_DIR/cluster-up.log)"; }
  STARTED_CLUSTER=1
fi
mkdir -p "$PID_DIR"
export LOAD_PID_DIR=$PID_DIR

if kubectl get deployment -n sidecar-order-system sidecar-order-controller >/dev/null 2>&1 && [[ ${LOAD_ALLOW_DEPLOYED:-0} != 1 ]]; then
  die "load: a controller is deployed in the cluster (sidecar-order-system): it would judge and write the load pods' reports too; make undeploy first (or LOAD_ALLOW_DEPLOYED=1)"
fi

step "kwok (scripts/kwok.sh)"
KWOK=$(bash scripts/kwok.sh)

if kubectl get namespace "$NS" >/dev/null 2>&1; then
  step "removing the namespace $NS left by an earlier run"
  kubectl delete --raw "/api/v1/namespaces/$NS/pods?gracePeriodSeconds=0" >/dev/null 2>&1 || true
  # What that left (an aborted chaos run left 5,700 pods Terminating,
  # waiting for kwok to play their stop): forced, one by one.
  kubectl delete pods --all -n "$NS" --force --grace-period=0 --wait=false >/dev/null 2>&1 || true
  # Tens of thousands of events outlast the namespace controller's
  # deletecollection timeout (seen after 10,000 pods); one here helps it.
  kubectl delete --raw "/api/v1/namespaces/$NS/events" >/dev/null 2>&1 || true
  kubectl delete namespace "$NS" --timeout=600s --ignore-not-found >/dev/null
fi
kubectl delete nodes -l sidecar-order.dev/load=true --ignore-not-found >/dev/null

KWOK_PID_FILE=$PID_DIR/kwok.pid
stop_recorded kwok "$KWOK_PID_FILE"
step "starting kwok: $LOAD_NODES fake nodes (annotation kwok.x-k8s.io/node=fake), stages load/kwok/stages.yaml (log $LOAD_DIR/kwok.log)"
: >"$LOAD_DIR/kwok.log"
# load/kwok.sh starts it (and the chaos run restarts it) from these.
export KWOK_BIN=$KWOK KWOK_PID_FILE KWOK_LOG=$LOAD_DIR/kwok.log KWOK_CIDR
bash load/kwok.sh start

for ((i = 0; i < LOAD_NODES; i++)); do
  sed "s/NAME/kwok-load-$i/g" load/kwok/node.yaml
  echo ---
done | kubectl apply -f - >/dev/null
kubectl wait --for=condition=Ready node -l sidecar-order.dev/load=true --timeout=120s >/dev/null ||
  { tail -n 20 "$LOAD_DIR/kwok.log" >&2; die "load: the fake nodes did not become Ready (kwok log: $LOAD_DIR/kwok.log)"; }

step "CRD and namespace $NS"
"$LOAD_CONTROLLER_BIN" crd | kubectl apply -f - >/dev/null
kubectl wait --for=condition=established crd/sidecarorderreports.sidecar-order.dev --timeout=60s >/dev/null
# The namespace of an earlier run may still be terminating (its reports).
kubectl wait --for=delete "namespace/$NS" --timeout=180s >/dev/null 2>&1 || true
kubectl create namespace "$NS" >/dev/null

if [[ $TARGET == chaos ]]; then
  # No CHAOS_ setting at all is the long run's defaults (grep finds nothing).
  SETTINGS=$({ env | grep -E '^CHAOS_' || true; } | sort | tr '\n' ' ')
  step "driver (chaos): ${SETTINGS:-defaults} LOAD_RATE=$LOAD_RATE, controller $LOAD_CONTROLLER_BIN"
else
  SETTINGS="LOAD_PODS=$LOAD_PODS LOAD_RATE=$LOAD_RATE LOAD_CHURN=$LOAD_CHURN LOAD_SECONDS=$LOAD_SECONDS LOAD_IDLE_SECONDS=$LOAD_IDLE_SECONDS"
  step "driver: $SETTINGS, controller $LOAD_CONTROLLER_BIN"
fi
rc=0
"$CARGO" test --locked --features e2e --test "$TARGET" 2>&1 | tee "$LOAD_DIR/output.txt" || rc=$?
if [[ -n ${LOAD_OUT:-} ]]; then
  { echo "# $(date -u +%FT%TZ) $SETTINGS LOAD_NODES=$LOAD_NODES controller=$LOAD_CONTROLLER_BIN (git $(git rev-parse --short HEAD))"
    sed -n "/^sidecar-order $TARGET:/,\$p" "$LOAD_DIR/output.txt"; } >"$LOAD_OUT"
fi
exit "$rc"
