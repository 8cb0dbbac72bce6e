#!/usr/bin/env bash
# e2e/helm-check.sh: the Helm install path on the local cluster, run by
# e2e/run.sh after `make image` and before the kustomize deploy (`make
# deploy`), so both install paths are tested.
#
#   helm install charts/sidecar-order (image localhost/sidecar-order:dev, the
#   one `make image` imported) -> the article's File 1 (one native sidecar) in
#   namespace e2e-helm -> its report's startup Verified -> helm uninstall.
#
# The output of `helm install` and `kubectl get sor` is also written to
# $HELM_CHECK_OUT (default /tmp/sidecar-order-e2e-helm.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBECONFIG=${KUBECONFIG:-${SIDECAR_ORDER_STATE:-/tmp/sidecar-order-cluster}/kubeconfig}
KUBECTL=${KUBECTL:-$(make -s --no-print-directory print-kubectl)}
OUT=${HELM_CHECK_OUT:-/tmp/sidecar-order-e2e-helm.txt}
NS=sidecar-order-system
TEST_NS=e2e-helm
RELEASE=sidecar-order
helm=(bash scripts/helm.sh)
k() { "$KUBECTL" "$@"; }
: > "$OUT"
# show CMD...: prints "$ CMD" and its output, to the terminal and $OUT.
show() { { echo "\$ ${SHOW_AS:-$*}"; "$@" 2>&1; } | tee -a "$OUT"; return "${PIPESTATUS[0]}"; }
fail() {
  echo "helm-check: FAILED: $*" >&2
  k -n "$NS" get deploy,pods -o wide >&2 || true
  k -n "$NS" logs -l app.kubernetes.io/instance=$RELEASE --tail=50 >&2 || true
  k -n "$TEST_NS" get pods,sor -o wide >&2 || true
  # Why a pod is Pending (FailedScheduling names the taint or resource).
  k -n "$NS" get events --field-selector involvedObject.kind=Pod -o 'custom-columns=REASON:.reason,MESSAGE:.message' >&2 || true
  bash e2e/cluster/schedulable.sh >&2 || true
  exit 1
}

# On a reused cluster (KEEP_CLUSTER=1) the kustomize deploy's objects are
# there and share names with the chart's: remove them (not the CRD, not the
# namespace); `make deploy` applies them again afterwards.
if k -n "$NS" get deployment/sidecar-order-controller >/dev/null 2>&1; then
  k delete -k config/rbac --ignore-not-found
  k -n "$NS" delete deployment/sidecar-order-controller service/sidecar-order-metrics --ignore-not-found --wait=true
fi
"${helm[@]}" uninstall "$RELEASE" -n "$NS" --wait >/dev/null 2>&1 || true
k delete namespace "$TEST_NS" --ignore-not-found --wait=true --timeout=60s >/dev/null

# The chart's default image is localhost/sidecar-order:dev, what make image imported.
SHOW_AS="helm install $RELEASE charts/sidecar-order -n $NS --create-namespace --set image.pullPolicy=Never --wait --timeout 3m" \
  show "${helm[@]}" install "$RELEASE" charts/sidecar-order -n "$NS" --create-namespace --set image.pullPolicy=Never \
  --wait --timeout 3m || fail "helm install"
k -n "$NS" rollout status "deployment/$RELEASE" --timeout=60s || fail "the Helm release's controller is not available"

k create namespace "$TEST_NS" >/dev/null
k -n "$TEST_NS" apply -f e2e/examples/01-sidecar.yaml >/dev/null
deadline=$((SECONDS + 90))
until [[ $(k -n "$TEST_NS" get sor -o 'jsonpath={.items[*].status.startup}' 2>/dev/null) == Verified ]]; do
  ((SECONDS < deadline)) || fail "no report with startup Verified for $TEST_NS/sidecar-container-example within 90 s"
  sleep 1
done
SHOW_AS="kubectl get sor -n $TEST_NS" show k -n "$TEST_NS" get sor
k delete namespace "$TEST_NS" --wait=false >/dev/null
SHOW_AS="helm uninstall $RELEASE -n $NS --wait" show "${helm[@]}" uninstall "$RELEASE" -n "$NS" --wait || fail "helm uninstall"
echo "helm-check: ok (helm install, report Verified, helm uninstall; output in $OUT)"
