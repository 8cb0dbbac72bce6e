#!/usr/bin/env bash
# Writes the OCI images localhost/busybox:1 and localhost/pause:1 by hand
# (busybox-static; the pause image holds Kubernetes' pause.c built static,
# see below; no registry) and imports them into the cluster's containerd.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ -S $CONTAINERD_SOCK ]] || die "images: containerd socket $CONTAINERD_SOCK not found (run up.sh); log: $LOGS/containerd.log"
BB=/bin/busybox
[[ -x $BB ]] || die "images: $BB missing (run deps.sh: busybox-static)"
mkdir -p "$STATE/images" "$LOGS"
tarball=$STATE/images/base.tar
ilog=$LOGS/images.log
# The pause image: Kubernetes' own pause (build/pause/linux/pause.c of the
# k8s.io/kubernetes module build.sh downloaded), static, which reaps the
# zombies of a pod that shares its process namespace; busybox's
# `sleep infinity` (which reaps nothing) when it cannot be built.
PAUSE_BIN=$CACHE_BIN/pause
if [[ ! -x $PAUSE_BIN ]]; then
  pause_c=$(go env GOMODCACHE 2>/dev/null || true)/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c
  if [[ -f $pause_c ]] && command -v gcc >/dev/null &&
    gcc -Os -static -DVERSION="$K8S_VERSION-sidecar-order" -o "$PAUSE_BIN.tmp" "$pause_c" >>"$ilog" 2>&1; then
    mv "$PAUSE_BIN.tmp" "$PAUSE_BIN"
    log "images: built $PAUSE_BIN from $pause_c"
  else
    rm -f "$PAUSE_BIN.tmp"
    log "images: WARNING: could not build the pause binary (pause.c: $pause_c, gcc: $(command -v gcc || echo none); log: $ilog); $PAUSE_IMAGE runs busybox sleep, which reaps no zombies"
  fi
fi
if [[ -x $PAUSE_BIN ]]; then
  pause_spec="{\"name\":\"$PAUSE_IMAGE\",\"layers\":[{\"file\":\"$PAUSE_BIN\",\"dest\":\"/pause\"}],\"entrypoint\":[\"/pause\"]}"
else
  pause_spec="{\"name\":\"$PAUSE_IMAGE\",\"layers\":[{\"busybox\":\"$BB\"}],\"entrypoint\":[\"/bin/sleep\",\"infinity\"]}"
fi
python3 "$CLUSTER_DIR/oci-image.py" "$tarball" \
  "{\"name\":\"$BUSYBOX_IMAGE\",\"layers\":[{\"busybox\":\"$BB\"}],\"cmd\":[\"sh\"]}" \
  "$pause_spec" \
  >>"$ilog" 2>&1 || die "images: step 'write OCI layout' failed; log: $ilog"
ctr -a "$CONTAINERD_SOCK" -n k8s.io images import "$tarball" >>"$ilog" 2>&1 ||
  { tail -n 20 "$ilog" >&2; die "images: step 'ctr images import' failed; log: $ilog"; }
for i in "$BUSYBOX_IMAGE" "$PAUSE_IMAGE"; do
  ctr -a "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -x "$i" >/dev/null ||
    die "images: $i not listed after import; log: $ilog"
done
log "images: imported $BUSYBOX_IMAGE and $PAUSE_IMAGE"
