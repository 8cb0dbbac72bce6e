#!/usr/bin/env bash
# Builds kwok (sigs.k8s.io/kwok/cmd/kwok, KWOK_VERSION, default v0.8.0) from
# the Go module proxy once, into
# ${SIDECAR_ORDER_CACHE:-$HOME/.cache/sidecar-order}/kwok-$KWOK_VERSION/kwok,
# and prints that path. Later runs print the cached binary at once.
# Built with nice -n 15 (the machine has 2 cores), CGO off, -trimpath.
set -euo pipefail
VERSION=${KWOK_VERSION:-v0.8.0}
DIR=${SIDECAR_ORDER_CACHE:-$HOME/.cache/sidecar-order}/kwok-$VERSION
BIN=$DIR/kwok
if [[ -x $BIN && -e $DIR/.stamp-$VERSION ]]; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { echo "kwok.sh: go is missing (apt-get install golang-go, or Go from go.dev)" >&2; exit 1; }
mkdir -p "$DIR"
LOG=$DIR/build.log
echo "kwok.sh: building kwok $VERSION from the Go module proxy (log: $LOG)" >&2
start=$(date +%s)
if ! GOBIN=$DIR GOFLAGS=-mod=mod CGO_ENABLED=0 \
  nice -n 15 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$VERSION" >"$LOG" 2>&1; then
  echo "kwok.sh: go install sigs.k8s.io/kwok/cmd/kwok@$VERSION failed; the end of $LOG:" >&2
  tail -n 20 "$LOG" >&2
  exit 1
fi
"$BIN" --version >>"$LOG" 2>&1 || true
echo "built in $(( $(date +%s) - start ))s" >>"$LOG"
touch "$DIR/.stamp-$VERSION"
echo "kwok.sh: kwok $VERSION built in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
