#!/usr/bin/env bash
# Writes the OCI images localhost/busybox:1 and localhost/pause:1 by hand
# (busybox-static, no registry) and imports them into the cluster's containerd.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ -S $CONTAINERD_SOCK ]] || die "images: containerd socket $CONTAINERD_SOCK not found (run up.sh); log: $LOGS/containerd.log"
BB=/bin/busybox
[[ -x $BB ]] || die "images: $BB missing (run deps.sh: busybox-static)"
mkdir -p "$STATE/images" "$LOGS"
tarball=$STATE/images/base.tar
ilog=$LOGS/images.log
python3 "$CLUSTER_DIR/oci-image.py" "$tarball" \
  "{\"name\":\"$BUSYBOX_IMAGE\",\"layers\":[{\"busybox\":\"$BB\"}],\"cmd\":[\"sh\"]}" \
  "{\"name\":\"$PAUSE_IMAGE\",\"layers\":[{\"busybox\":\"$BB\"}],\"entrypoint\":[\"/bin/sleep\",\"infinity\"]}" \
  >>"$ilog" 2>&1 || die "images: step 'write OCI layout' failed; log: $ilog"
ctr -a "$CONTAINERD_SOCK" -n k8s.io images import "$tarball" >>"$ilog" 2>&1 ||
  { tail -n 20 "$ilog" >&2; die "images: step 'ctr images import' failed; log: $ilog"; }
for i in "$BUSYBOX_IMAGE" "$PAUSE_IMAGE"; do
  ctr -a "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -x "$i" >/dev/null ||
    die "images: $i not listed after import; log: $ilog"
done
log "images: imported $BUSYBOX_IMAGE and $PAUSE_IMAGE"
