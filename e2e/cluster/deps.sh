#!/usr/bin/env bash
# Installs the Debian packages the local cluster (and make e2e's Prometheus)
# needs, only when missing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# package -> a file it provides (quick presence check without dpkg-query per package)
declare -A PKGS=(
  [containerd]=/usr/bin/containerd
  [runc]=/usr/sbin/runc
  [containernetworking-plugins]=/usr/lib/cni/bridge
  [busybox-static]=/bin/busybox
  [openssl]=/usr/bin/openssl
  [iptables]=/usr/sbin/iptables
  [conntrack]=/usr/sbin/conntrack
  [iproute2]=/usr/sbin/ip
  [util-linux]=/usr/bin/findmnt
  [mount]=/usr/bin/mount
  [socat]=/usr/bin/socat
  [ethtool]=/usr/sbin/ethtool
  [kmod]=/usr/bin/kmod
  [procps]=/usr/bin/pgrep
  [tar]=/usr/bin/tar
  [coreutils]=/usr/bin/sha256sum
  [python3]=/usr/bin/python3
  [curl]=/usr/bin/curl
  [ca-certificates]=/etc/ssl/certs/ca-certificates.crt
  # Not for the cluster itself: make e2e's scenario 11 runs a real Prometheus
  # (and promtool) on this host against the controller.
  [prometheus]=/usr/bin/promtool
)
missing=()
for p in "${!PKGS[@]}"; do
  [[ -e ${PKGS[$p]} ]] || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  log "deps: all packages present"
  exit 0
fi
[[ $(id -u) == 0 ]] || die "deps: must run as root to install: ${missing[*]}"
DEPS_LOG=${TMPDIR:-/tmp}/sidecar-order-deps.log
log "deps: installing ${missing[*]} (log: $DEPS_LOG)"
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists once if they are missing or older than a day.
if [[ -z $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -mtime -1 2>/dev/null | head -1) ]]; then
  apt-get update -q >"$DEPS_LOG" 2>&1 || { tail -n 20 "$DEPS_LOG" >&2; die "deps: step 'apt-get update' failed; log: $DEPS_LOG"; }
fi
apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$DEPS_LOG" 2>&1 || {
  tail -n 20 "$DEPS_LOG" >&2; die "deps: step 'apt-get install ${missing[*]}' failed; log: $DEPS_LOG"; }
# Debian's containerd package would try to start a service; there is no systemd here, so nothing runs.
for p in "${missing[@]}"; do
  [[ -e ${PKGS[$p]} ]] || die "deps: $p installed but ${PKGS[$p]} is missing; log: $DEPS_LOG"
done
log "deps: done"
