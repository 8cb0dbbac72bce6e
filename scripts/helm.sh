#!/usr/bin/env bash
# helm.sh ARGS...: runs Helm, built once from the Go module proxy and cached
# by version under ~/.cache/sidecar-order/helm-<version>/bin/helm.
#   HELM_VERSION=v3.22.0 scripts/helm.sh version    # Helm 3 instead of 4
#   scripts/helm.sh --print-path                     # build if needed, print the binary's path
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-v4.3.1}
[[ $HELM_VERSION =~ ^v([34])\.[0-9]+\.[0-9]+$ ]] || { echo "helm.sh: HELM_VERSION must be v3.x.y or v4.x.y, got $HELM_VERSION" >&2; exit 2; }
major=${BASH_REMATCH[1]}
cache=${SIDECAR_ORDER_CACHE:-$HOME/.cache/sidecar-order}/helm-$HELM_VERSION
bin=$cache/bin/helm
if [[ ! -x $bin ]]; then
  command -v go >/dev/null || { echo "helm.sh: go is needed to build Helm (PATH has none)" >&2; exit 1; }
  mkdir -p "$cache"
  log=$cache/build.log
  echo "helm.sh: building Helm $HELM_VERSION from the Go module proxy into $cache (log: $log; about 3 min on 2 cores)" >&2
  start=$SECONDS
  # The version variable is what `helm version` prints (Helm's own Makefile sets it the same way).
  # GOTOOLCHAIN=local: this machine's Go, never one fetched on the side.
  if ! CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local} GOFLAGS=-buildvcs=false GOBIN=$cache/bin.tmp nice -n 10 go install -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v$major/internal/version.version=$HELM_VERSION" \
      "helm.sh/helm/v$major/cmd/helm@$HELM_VERSION" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "helm.sh: building Helm $HELM_VERSION failed; log: $log" >&2
    exit 1
  fi
  mkdir -p "$cache/bin" && mv "$cache/bin.tmp/helm" "$bin" && rmdir "$cache/bin.tmp"
  echo "helm.sh: built Helm $HELM_VERSION in $((SECONDS - start)) s" >&2
fi
if [[ ${1:-} == --print-path ]]; then
  echo "$bin"
  exit 0
fi
exec "$bin" "$@"
