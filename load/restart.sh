#!/usr/bin/env bash
# load/restart.sh BIN [N]: times N starts of the controller BIN against the
# state a `LOAD_KEEP=1 make load` left (namespace $LOAD_NAMESPACE): start ->
# /readyz 200, then 8 s more, then SIGTERM. Prints, per start, the time to
# ready, the CPU and RSS 8 s after it, and the start-up phases of its log.
# Alternate binaries start by start (A B A B ...) to compare them: the
# cluster's own speed drifts over minutes.
#
#   LOAD_KEEP=1 LOAD_PODS=10000 LOAD_SECONDS=300 make load
#   for i in 1 2 3; do load/restart.sh /tmp/a 1; load/restart.sh /tmp/b 1; done
#   kill <kwok pid the load run printed>   # before the next make load
set -euo pipefail
cd "$(dirname "$0")/.."
source e2e/cluster/lib.sh
BIN=$(realpath "${1:?usage: load/restart.sh BIN [N]}")
N=${2:-3}
NS=${LOAD_NAMESPACE:-sidecar-order-load}
PORT=${RESTART_METRICS_PORT:-18081}
export KUBECONFIG=${KUBECONFIG:-$KUBECONFIG_OUT}
LOG=${LOAD_DIR:-/tmp/sidecar-order-load}/restart.log
mkdir -p "$(dirname "$LOG")"
kubectl get namespace "$NS" >/dev/null || die "restart: no namespace $NS (run LOAD_KEEP=1 make load first)"
for ((i = 1; i <= N; i++)); do
  t0=$(date +%s.%N)
  RUST_LOG=info,kube=warn NO_COLOR=1 "$BIN" run --metrics-addr "127.0.0.1:$PORT" --namespace "$NS" \
    --max-reports 1000000 >"$LOG" 2>&1 &
  pid=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz"; do
    kill -0 "$pid" 2>/dev/null || die "restart: the controller exited (log: $LOG)"
    sleep 0.02
  done
  t1=$(date +%s.%N)
  sleep 8
  read -r cpu < <(awk '{print ($14+$15)/100}' "/proc/$pid/stat")
  rss=$(awk '/VmRSS/{print $2/1024}' "/proc/$pid/status")
  hwm=$(awk '/VmHWM/{print $2/1024}' "/proc/$pid/status")
  kill -TERM "$pid"
  wait "$pid" || true
  phases=$(grep -E "loaded existing reports|pods listed|events listed|watches synced" "$LOG" |
    awk -v t0="$t0" '{ split(substr($1, 12, 15), t, ":"); s = t[1]*3600 + t[2]*60 + t[3];
      printf "%s%s +%.2fs", (NR > 1 ? "," : ""), $4" "$5, s - (t0 % 86400) }')
  printf '%s start %d: ready %.2fs, %.2f core-s and RSS %.1f MiB (peak %.1f) 8 s after; %s\n' \
    "$(basename "$BIN")" "$i" "$(echo "$t1 - $t0" | bc)" "$cpu" "$rss" "$hwm" "$phases"
done
