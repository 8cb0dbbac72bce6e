#!/usr/bin/env bash
# make demo: the local cluster, the controller deployed from config/, the
# article's example pods, and the reports the controller wrote about them.
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBECONFIG=${KUBECONFIG:-${SIDECAR_ORDER_STATE:-/tmp/sidecar-order-cluster}/kubeconfig}
KUBECTL=$(make -s --no-print-directory print-kubectl)
BIN=target/static/x86_64-unknown-linux-gnu/image/sidecar-order
NS=sidecar-order-demo
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "cluster (make cluster-up)"
make --no-print-directory cluster-up
step "controller image and deployment (make image deploy)"
make --no-print-directory image deploy

step "the article's example pods in namespace $NS"
$KUBECTL create namespace $NS --dry-run=client -o yaml | $KUBECTL apply -f - >/dev/null
$KUBECTL -n $NS delete pod --all --wait=true >/dev/null 2>&1 || true
$KUBECTL -n $NS apply -f e2e/examples/
$KUBECTL -n $NS wait --for=condition=Ready --timeout=120s \
  pod/sidecar-container-example pod/sidecar-container-order-example
$KUBECTL -n $NS wait --for=jsonpath='{.status.phase}'=Succeeded --timeout=120s pod/sidecar-container-exit-example
echo "waiting for the liveness probe to restart its sidecar..."
for _ in $(seq 60); do
  n=$($KUBECTL -n $NS get pod sidecar-container-liveness-fail-example \
        -o jsonpath='{.status.initContainerStatuses[0].restartCount}' 2>/dev/null || echo 0)
  [[ ${n:-0} -ge 1 ]] && break
  sleep 2
done

step "delete the order example: app first, then second-sidecar, then first-sidecar"
$KUBECTL -n $NS delete pod sidecar-container-order-example --wait=true
sleep 3
$KUBECTL -n $NS get pods

step "kubectl get sidecarorderreports -n $NS"
$KUBECTL -n $NS get sidecarorderreports

step "sidecar-order show -n $NS sidecar-container-order-example"
$BIN show -n $NS sidecar-container-order-example
