#!/usr/bin/env bash
# image-binary.sh BINARY NAME:TAG
# Wraps a static (or musl) binary as an OCI image whose entrypoint is the binary
# (at /usr/local/bin/<basename>), on top of busybox so the container can be
# debugged with `kubectl exec ... -- sh`, and imports it into the cluster's containerd.
# Example: bash e2e/cluster/image-binary.sh target/x86_64-unknown-linux-musl/release/sidecar-order localhost/sidecar-order:dev
set -euo pipefail
source "$(dirname "$0")/lib.sh"

(($# == 2)) || die "usage: image-binary.sh BINARY NAME:TAG"
bin=$1; name=$2
[[ -f $bin ]] || die "image-binary: binary $bin not found"
[[ $name == *:* ]] || die "image-binary: NAME:TAG expected, got $name"
[[ -S $CONTAINERD_SOCK ]] || die "image-binary: containerd socket $CONTAINERD_SOCK not found (run up.sh); log: $LOGS/containerd.log"
if command -v file >/dev/null && file -L "$bin" | grep 'dynamically linked' >/dev/null; then
  log "image-binary: WARNING: $bin is dynamically linked; the image has no libc (use a static/musl build)"
fi
base=$(basename "$bin")
mkdir -p "$STATE/images" "$LOGS"
safe=${name//[\/:]/_}
tarball=$STATE/images/$safe.tar
ilog=$LOGS/images.log
python3 "$CLUSTER_DIR/oci-image.py" "$tarball" \
  "{\"name\":\"$name\",\"layers\":[{\"busybox\":\"/bin/busybox\"},{\"file\":\"$(realpath "$bin")\",\"dest\":\"/usr/local/bin/$base\"}],\"entrypoint\":[\"/usr/local/bin/$base\"]}" \
  >>"$ilog" 2>&1 || die "image-binary: step 'write OCI layout' failed; log: $ilog"
ctr -a "$CONTAINERD_SOCK" -n k8s.io images import "$tarball" >>"$ilog" 2>&1 ||
  { tail -n 20 "$ilog" >&2; die "image-binary: step 'ctr images import' failed; log: $ilog"; }
ctr -a "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -x "$name" >/dev/null ||
  die "image-binary: $name not listed after import; log: $ilog"
log "image-binary: imported $name (entrypoint /usr/local/bin/$base); use imagePullPolicy: IfNotPresent or Never"
