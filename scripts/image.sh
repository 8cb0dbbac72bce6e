#!/usr/bin/env bash
# image.sh BINARY NAME:TAG: builds the controller's image from the
# Containerfile with buildah (vfs storage: no daemon, no overlay mounts),
# writes it as an OCI archive (target/image/sidecar-order.oci.tar) and, when
# the local cluster runs (its containerd socket exists), imports it there.
#   make image    # builds BINARY first
set -euo pipefail
cd "$(dirname "$0")/.."
(($# == 2)) || { echo "usage: image.sh BINARY NAME:TAG" >&2; exit 2; }
bin=$1 name=$2
STATE=${STATE:-${SIDECAR_ORDER_STATE:-/tmp/sidecar-order-cluster}}
sock=$STATE/containerd.sock
archive=target/image/sidecar-order.oci.tar
die() { echo "image: $*" >&2; exit 1; }
[[ -f $bin ]] || die "binary $bin not found (make image builds it)"
if command -v file >/dev/null && file -L "$bin" | grep -q 'dynamically linked'; then
  die "$bin is dynamically linked; the image has no libc (build it with crt-static, as make image does)"
fi
bash scripts/buildah-deps.sh
buildah=(buildah --storage-driver vfs)
version=$(grep -m1 '^version = ' Cargo.toml | sed 's/.*"\(.*\)"/\1/')
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
start=$(date +%s%N)
"${buildah[@]}" bud --quiet --layers=false -f Containerfile -t "$name" \
  --build-arg BINARY="$bin" --build-arg VERSION="$version" --build-arg REVISION="$revision" . >/dev/null ||
  die "buildah bud failed"
mkdir -p "$(dirname "$archive")"
rm -f "$archive"
"${buildah[@]}" push --quiet "$name" "oci-archive:$archive:$name" || die "buildah push to $archive failed"
# Earlier builds of the same tag, now untagged.
"${buildah[@]}" rmi --prune >/dev/null 2>&1 || true
echo "image: built $name ($(du -h "$archive" | cut -f1) OCI archive $archive) in $((($(date +%s%N) - start) / 1000000)) ms" >&2
if [[ -S $sock ]]; then
  ctr -a "$sock" -n k8s.io images import "$archive" >/dev/null || die "ctr images import into $sock failed"
  # Listed first, then searched: `ctr ... | grep -q` under pipefail fails
  # whenever grep exits before ctr has written everything (SIGPIPE).
  listed=$(ctr -a "$sock" -n k8s.io images ls -q) || die "ctr images ls on $sock failed"
  grep -qx -- "$name" <<<"$listed" || die "$name not listed in the cluster's containerd after import"
  echo "image: imported $name into the local cluster's containerd ($sock)" >&2
else
  echo "image: no local cluster ($sock missing): not imported; push it with: buildah push --storage-driver vfs $name docker://REGISTRY/sidecar-order:TAG" >&2
fi
