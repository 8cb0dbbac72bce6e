#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kubectl and etcd at $K8S_VERSION from the Go module proxy into $CACHE_BIN.
# Skips when the stamp file says the binaries are already there.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd)
STAMP=$CACHE_BIN/.stamp-$K8S_VERSION
BUILD_LOG=${BUILD_LOG:-$CACHE/build.log}

CRICTL_VERSION=${CRICTL_VERSION:-v1.34.0}
# crictl is optional (debugging): a failure only warns.
ensure_crictl() {
  [[ -x $CACHE_BIN/crictl ]] && return 0
  [[ ${SIDECAR_ORDER_SKIP_CRICTL:-} == 1 ]] && return 0
  log "build: step 'crictl' (sigs.k8s.io/cri-tools $CRICTL_VERSION, optional)"
  if ! GOBIN=$CACHE_BIN GOFLAGS="-trimpath -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local} \
      nice -n 15 go install -ldflags "-s -w" "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" >>"$CACHE/crictl-build.log" 2>&1; then
    log "build: WARNING: crictl build failed (optional); log: $CACHE/crictl-build.log"
  fi
}

all_present() {
  [[ -f $STAMP ]] || return 1
  local b; for b in "${BINS[@]}"; do [[ -x $CACHE_BIN/$b ]] || return 1; done
}
# A kubelet of another release than the control plane: built alone.
other_kubelet() {
  [[ $KUBELET_VERSION == "$K8S_VERSION" ]] || bash "$CLUSTER_DIR/build-kubelet.sh"
}
if all_present; then
  log "build: binaries for $K8S_VERSION already in $CACHE_BIN (stamp $STAMP); skipping"
  ensure_crictl
  other_kubelet
  exit 0
fi

command -v go >/dev/null || die "build: go is not installed (need Go >= 1.24)"
mkdir -p "$CACHE_BIN"
start=$(date +%s)

# The module: the committed one for its own version, else a generated one in the cache.
MOD=$CLUSTER_DIR/k8s
if [[ "$(cat "$MOD/K8S_VERSION" 2>/dev/null)" != "$K8S_VERSION" ]]; then
  MOD=$CACHE/mod
fi
if [[ "$(cat "$MOD/K8S_VERSION" 2>/dev/null)" != "$K8S_VERSION" || ! -f $MOD/go.mod ]]; then
  log "build: generating Go module for $K8S_VERSION in $MOD"
  (cd "$CLUSTER_DIR/k8s" && bash ./gen-gomod.sh "$MOD" "$K8S_VERSION") ||
    die "build: step gen-gomod failed for $K8S_VERSION"
fi

log "build: log at $BUILD_LOG"
: > "$BUILD_LOG"
export GOFLAGS="-trimpath -buildvcs=false -mod=mod"
export CGO_ENABLED=0
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

if [[ ! -f $MOD/go.sum ]] || ! (cd "$MOD" && go list -deps -tags tools . >/dev/null 2>>"$BUILD_LOG"); then
  log "build: step 'go mod tidy' (module download) in $MOD"
  (cd "$MOD" && nice -n 15 go mod tidy >>"$BUILD_LOG" 2>&1) || {
    tail -n 30 "$BUILD_LOG" >&2; die "build: step 'go mod tidy' failed; log: $BUILD_LOG"; }
fi

major=${K8S_VERSION#v}; major=${major%%.*}
minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
vpkg=k8s.io/component-base/version
cpkg=k8s.io/client-go/pkg/version
ldx=""
for p in $vpkg $cpkg; do
  ldx+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
  ldx+=" -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.gitTreeState=clean"
  ldx+=" -X $p.buildDate=1970-01-01T00:00:00Z"
done

log "build: step 'go build' of ${BINS[*]} (2 cores: about 5-6 min cold, 30 s with a warm Go build cache)"
tmpbin=$CACHE/bin.tmp
rm -rf "$tmpbin"; mkdir -p "$tmpbin"
(cd "$MOD" && nice -n 15 go build -ldflags "-s -w$ldx" -o "$tmpbin/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kubectl \
    go.etcd.io/etcd/server/v3 >>"$BUILD_LOG" 2>&1) || {
  tail -n 40 "$BUILD_LOG" >&2; die "build: step 'go build' failed; log: $BUILD_LOG"; }
# go build names the etcd main package after its import path's last element ("v3").
[[ -x $tmpbin/v3 ]] && mv "$tmpbin/v3" "$tmpbin/etcd"
[[ -x $tmpbin/server ]] && mv "$tmpbin/server" "$tmpbin/etcd"
for b in "${BINS[@]}"; do
  [[ -x $tmpbin/$b ]] || die "build: $b missing after go build; log: $BUILD_LOG"
  mv -f "$tmpbin/$b" "$CACHE_BIN/$b"
done
rmdir "$tmpbin" 2>/dev/null || true
date -u +%FT%TZ > "$STAMP"
el=$(( $(date +%s) - start ))
log "build: done in ${el}s ($((el/60))m$((el%60))s); binaries in $CACHE_BIN"
"$CACHE_BIN/kubelet" --version >&2 || true
ensure_crictl
other_kubelet
