#!/usr/bin/env bash
# make e2e: the live-cluster end-to-end suite (e2e/tests/e2e.rs and
# e2e/tests/engine_model.rs).
#
#   cluster up (make cluster-up) -> node smoke test (make cluster-smoke)
#   -> controller image (make image) -> Helm install, one report checked,
#      helm uninstall (e2e/helm-check.sh) -> load harness, short pass: kwok
#      fake nodes, 1000 pods, 60 s of churn, a controller restart, every
#      verdict equal to its pod's labels (load/run.sh; before the deploy, so
#      no in-cluster controller judges the load pods) -> chaos
#      run, short pass: 1000 pods judged by two controller replicas with --leader-elect;
#      3 leaders and a standby SIGKILLed, one API server restart, a relist,
#      the leader's network cut; every verdict right, every increment
#      counted once, no duplicate Event (make chaos, LOAD_TARGET=chaos)
#   -> kustomize deploy (make deploy)
#   -> scenarios 1-9 in parallel -> scenario 10 (restarts the controller) alone
#   -> scenario 11 (a real Prometheus) alone
#   -> conformance (e2e/tests/conformance.rs, 4 in parallel): a clean run
#      with every promise Kept, --per-node with the minimal RBAC of
#      config/conformance/, an interrupted run leaving nothing, bad usage
#   -> scenario 16 (two controller replicas, the leader SIGKILLed) alone
#   -> engine model: scenarios 13-14 in parallel -> scenario 12 (stops the
#      kubelet: a node reboot) alone -> teardown test: cluster down with a
#      dummy process in a foreign kubepods cgroup that must survive it
#      (e2e/cluster/teardown-test.sh; not with KEEP_CLUSTER=1).
#
# Environment:
#   KEEP_CLUSTER=1        leave the cluster (and the deployed controller) running
#   E2E_THREADS=N         parallel tests for scenarios 1-9 (default 4)
#   E2E_KEEP_NAMESPACES=1 keep every test's namespace for inspection
#   E2E_LOG=FILE          full output (default /tmp/sidecar-order-e2e.log)
#   E2E_SKIP_ENGINE_MODEL=1  skip the engine-model scenarios 12-14
#   E2E_SKIP_LOAD=1       skip the load harness' short pass
#   E2E_CHAOS=0           skip the chaos run's short pass
#   E2E_SUITE=smoke       the version matrix's short suite (make e2e-matrix):
#                         cluster, node smoke test, image, deploy, the
#                         article's scenarios (1-7) and conformance's clean
#                         run; no Helm, load, chaos, restart, Prometheus,
#                         replicas, engine-model or teardown phases
#   K8S_VERSION, KUBELET_VERSION  the cluster's control plane and kubelet
#                         (e2e/cluster/README.md; default v1.34.4 for both)
# Exits with the tests' status (0 only when every scenario passed).
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBECONFIG=${KUBECONFIG:-${SIDECAR_ORDER_STATE:-/tmp/sidecar-order-cluster}/kubeconfig}
export RUST_BACKTRACE=0
THREADS=${E2E_THREADS:-4}
SUITE=${E2E_SUITE:-full}
[[ $SUITE == full || $SUITE == smoke ]] || { echo "e2e: E2E_SUITE must be full or smoke, not '$SUITE'" >&2; exit 2; }
# The tests read the kubelet they must find in reports and conformance rows.
export K8S_VERSION=${K8S_VERSION:-v1.34.4}
export KUBELET_VERSION=${KUBELET_VERSION:-$K8S_VERSION}
LOG=${E2E_LOG:-/tmp/sidecar-order-e2e.log}
START=$(date +%s)
: > "$LOG"
RESULTS=()

log() { printf '\n\033[1m== [%4ds] %s\033[0m\n' $(( $(date +%s) - START )) "$*" | tee -a "$LOG"; }

finish() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ ${KEEP_CLUSTER:-0} == 1 ]]; then
    log "KEEP_CLUSTER=1: the cluster stays up (make cluster-down to stop it)"
  else
    log "cluster down (make cluster-down)"
    make --no-print-directory cluster-down >>"$LOG" 2>&1 || echo "cluster-down failed (see $LOG)" >&2
  fi
  if ((${#RESULTS[@]})); then
    printf '%s\n' "${RESULTS[@]}" | tee -a "$LOG"
  fi
  log "e2e finished: exit $rc, $(( $(date +%s) - START ))s in all (log: $LOG)"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

log "cluster (make cluster-up): Kubernetes $K8S_VERSION, kubelet $KUBELET_VERSION, suite $SUITE"
make --no-print-directory cluster-up 2>&1 | tee -a "$LOG"
log "node smoke test: the kubelet stops app, second-sidecar, first-sidecar in that order (make cluster-smoke)"
make --no-print-directory cluster-smoke 2>&1 | tee -a "$LOG"
log "controller image (make image)"
make --no-print-directory image 2>&1 | tee -a "$LOG"
# The node must take pods (Ready, no disk-pressure taint) before anything is deployed.
bash e2e/cluster/schedulable.sh 2>&1 | tee -a "$LOG"
if [[ $SUITE == smoke ]]; then
  export E2E_SKIP_LOAD=1 E2E_CHAOS=0
else
t0=$(date +%s)
log "Helm install path: helm install, a report Verified, helm uninstall (e2e/helm-check.sh)"
rc=0
bash e2e/helm-check.sh 2>&1 | tee -a "$LOG" || rc=$?
RESULTS+=("$(printf '%-42s %4ds  %s' "Helm install (e2e/helm-check.sh)" $(( $(date +%s) - t0 )) "$( ((rc == 0)) && echo ok || echo FAILED)")")
((rc == 0)) || exit "$rc"
fi
load_rc=0
if [[ ${E2E_SKIP_LOAD:-0} != 1 ]]; then
  t0=$(date +%s)
  log "load harness, short pass: 1000 pods, 60 s of churn at 20/s, a controller restart; every verdict must match its labels (load/run.sh)"
  LOAD_PODS=1000 LOAD_RATE=50 LOAD_CHURN=20 LOAD_SECONDS=60 LOAD_IDLE_SECONDS=30 \
    bash load/run.sh 2>&1 | tee -a "$LOG" || load_rc=$?
  RESULTS+=("$(printf '%-42s %4ds  %s' "load harness (1000 pods, load/run.sh)" $(( $(date +%s) - t0 )) "$( ((load_rc == 0)) && echo ok || echo FAILED)")")
fi
chaos_rc=0
if [[ ${E2E_CHAOS:-1} == 1 ]]; then
  t0=$(date +%s)
  log "chaos run, short pass: 1000 pods, two replicas; 3 leader and 1 standby SIGKILLs, an API server restart, a relist, a network cut (make chaos)"
  CHAOS_PODS=1000 CHAOS_CHURN=20 CHAOS_KILLS=3 CHAOS_STANDBY_KILLS=1 CHAOS_APISERVER_RESTARTS=1 \
    CHAOS_RELISTS=1 CHAOS_CUTS=1 CHAOS_CUT_SECONDS=20 CHAOS_GAP_SECONDS=2 \
    make --no-print-directory chaos 2>&1 | tee -a "$LOG" || chaos_rc=$?
  RESULTS+=("$(printf '%-42s %4ds  %s' "chaos run (1000 pods, make chaos)" $(( $(date +%s) - t0 )) "$( ((chaos_rc == 0)) && echo ok || echo FAILED)")")
fi
log "controller deployment with kustomize (make deploy)"
make --no-print-directory deploy 2>&1 | tee -a "$LOG"
KUBECTL=$(make -s --no-print-directory print-kubectl)
export KUBECTL

# Scenario 11 runs Debian's Prometheus on this host: make cluster-up's deps.sh installs it.
command -v prometheus >/dev/null && command -v promtool >/dev/null ||
  { echo "e2e: prometheus or promtool missing (e2e/cluster/deps.sh installs them)" >&2; exit 1; }

CARGO_TEST=(cargo test --locked --features e2e)
log "building the suite"
"${CARGO_TEST[@]}" --test e2e --test e2e_engine_model --test e2e_ha --test e2e_conformance --no-run 2>&1 | tee -a "$LOG"

status=0
((load_rc == 0)) || status=1
((chaos_rc == 0)) || status=1
# One cargo test invocation of test target $2; its "test result:" line is kept for the summary.
phase() {
  local what=$1 target=$2
  shift 2
  log "$what"
  local t0=$(date +%s) rc=0
  "${CARGO_TEST[@]}" --test "$target" -- "$@" 2>&1 | tee -a "$LOG" | tee /tmp/sidecar-order-e2e-phase.$$ || rc=$?
  local line
  line=$(grep -E '^test result:' /tmp/sidecar-order-e2e-phase.$$ | tail -n 1 || true)
  rm -f /tmp/sidecar-order-e2e-phase.$$
  RESULTS+=("$(printf '%-42s %4ds  %s' "$what" $(( $(date +%s) - t0 )) "${line:-no test result (build or harness failure)}")")
  if ((rc != 0)); then status=1; fi
}

if [[ $SUITE == smoke ]]; then
  phase "the article's scenarios 1-7 ($THREADS threads)" e2e --test-threads="$THREADS" t01_ t02_ t03_ t04_ t05_ t06_ t07_
  phase "conformance, clean run" e2e_conformance --exact c1_clean_run_every_promise_kept
  exit "$status"
fi
phase "scenarios 1-9 ($THREADS threads)" e2e --test-threads="$THREADS" --skip t10_ --skip t11_
# Scenario 10 deletes the controller pod: alone, so no other test loses its scrape.
phase "scenario 10 (controller restart)" e2e --exact t10_controller_restart_counts_once
phase "scenario 11 (Prometheus)" e2e --exact t11_prometheus_scrapes_and_dashboard_queries_return_data
# sidecar-order conformance, the binary: its probe pods only, no controller needed.
phase "conformance (4 in parallel)" e2e_conformance --test-threads=4
# Scenario 16 scales the controller to two replicas and SIGKILLs the leader: alone.
phase "scenario 16 (two replicas, leader killed)" e2e_ha --exact t16_leader_killed_mid_violation_reports_once
if [[ ${E2E_SKIP_ENGINE_MODEL:-0} != 1 ]]; then
  phase "scenarios 13-14 (engine model)" e2e_engine_model --test-threads=2 --skip t12_
  # Scenario 12 stops the kubelet (a node reboot): alone, no other pod may lose its node.
  phase "scenario 12 (node reboot)" e2e_engine_model --exact t12_node_reboot_keeps_the_report_without_errors
fi
if [[ ${KEEP_CLUSTER:-0} != 1 ]]; then
  # Takes the cluster down itself: a dummy process in a kubepods cgroup that
  # is not ours, and a netns named like a CNI one, must survive it.
  log "teardown test: make cluster-down leaves what it did not create (e2e/cluster/teardown-test.sh)"
  t0=$(date +%s) rc=0
  bash e2e/cluster/teardown-test.sh 2>&1 | tee -a "$LOG" || rc=$?
  RESULTS+=("$(printf '%-42s %4ds  %s' "teardown test (cluster down)" $(( $(date +%s) - t0 )) "$( ((rc == 0)) && echo ok || echo FAILED)")")
  ((rc == 0)) || status=1
fi
exit "$status"
