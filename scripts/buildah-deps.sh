#!/usr/bin/env bash
# Installs Debian's buildah when it is missing (needs root; no daemon, no
# Docker). `make image` runs it before `buildah bud`.
set -euo pipefail
command -v buildah >/dev/null && exit 0
[[ $(id -u) == 0 ]] || { echo "buildah-deps: buildah is missing; install it (apt-get install buildah) or run as root" >&2; exit 1; }
log=${TMPDIR:-/tmp}/sidecar-order-buildah-deps.log
echo "buildah-deps: installing buildah (log: $log)" >&2
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists once if they are missing or older than a day.
if [[ -z $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -mtime -1 2>/dev/null | head -1) ]]; then
  apt-get update -q >"$log" 2>&1 || { tail -n 20 "$log" >&2; echo "buildah-deps: apt-get update failed; log: $log" >&2; exit 1; }
fi
apt-get install -y -q --no-install-recommends buildah >>"$log" 2>&1 ||
  { tail -n 20 "$log" >&2; echo "buildah-deps: apt-get install buildah failed; log: $log" >&2; exit 1; }
command -v buildah >/dev/null || { echo "buildah-deps: buildah installed but not on PATH; log: $log" >&2; exit 1; }
echo "buildah-deps: $(buildah --version)" >&2
