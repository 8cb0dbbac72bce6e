#!/usr/bin/env bash
# chart-check.sh: lints and renders charts/sidecar-order with every Helm in
# HELM_VERSIONS (default and full values), checks the rendered manifests
# (scripts/chart-check.py) and that `sidecar-order run` accepts the flags the
# chart renders. Helm is built once per version by scripts/helm.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
HELM_VERSIONS=${HELM_VERSIONS:-v3.22.0 v4.3.1}
CARGO=${CARGO:-cargo}
# helm template has no cluster to ask; Helm 3 would assume 1.20, below the
# chart's kubeVersion (native sidecars need 1.28).
KUBE_VERSION=${KUBE_VERSION:-v1.34.4}
chart=charts/sidecar-order
out=target/chart-check
mkdir -p "$out"
python3 -c 'import yaml' 2>/dev/null || { echo "chart-check: python3 with the yaml module is needed (apt-get install python3-yaml)" >&2; exit 1; }
for v in $HELM_VERSIONS; do
  helm=$(HELM_VERSION=$v bash scripts/helm.sh --print-path)
  echo "chart-check: Helm $v" >&2
  for which in default full; do
    values=()
    [[ $which == full ]] && values=(-f "$chart/ci/full-values.yaml")
    "$helm" lint --strict "$chart" "${values[@]}" >"$out/lint-$v-$which.txt" 2>&1 ||
      { cat "$out/lint-$v-$which.txt" >&2; echo "chart-check: helm $v lint ($which values) failed" >&2; exit 1; }
    "$helm" template so "$chart" --namespace sidecar-order-system --kube-version "$KUBE_VERSION" --include-crds "${values[@]}" \
      >"$out/$v-$which.yaml" || { echo "chart-check: helm $v template ($which values) failed" >&2; exit 1; }
    python3 scripts/chart-check.py "$which" "$out/$v-$which.yaml" >"$out/args-$v-$which.txt"
  done
done
# The rendered flags parse: `run ... --help` fails on an unknown flag or a bad
# value before it prints the help.
for which in default full; do
  mapfile -t args <"$out/args-${HELM_VERSIONS##* }-$which.txt"
  $CARGO run --quiet --locked -- "${args[@]}" --help >/dev/null ||
    { echo "chart-check: sidecar-order rejects the flags rendered with $which values: ${args[*]}" >&2; exit 1; }
done
echo "chart-check: ok (Helm ${HELM_VERSIONS// /, }: lint, template with default and full values, manifests, flags)" >&2
