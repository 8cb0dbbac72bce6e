#!/usr/bin/env bash
# make e2e-matrix: the live suite (e2e/run.sh) on every kubelet release
# sidecar-order claims, one local cluster after the other, and one table.
#
# The kubelet is what is judged. Where its own release's control plane
# cannot be built from the Go module proxy here (it refuses some staging
# modules of 1.29, 1.31 and 1.32), the kubelet runs against a newer control
# plane, within the version-skew policy (a kubelet at most three minors
# older than the API server, never newer): 1.29-1.30 on v1.30.14, 1.31-1.34
# on v1.34.4 (the default cluster), 1.35-1.37 on v1.37.2. Each build is
# cached by version (e2e/cluster/build.sh, build-kubelet.sh). A running
# local cluster ($STATE, e.g. from make cluster-up) is taken down first.
#
# Suites: "full" is make e2e without its load and chaos passes (kwok pods do not depend
# on the kubelet); "smoke" is the node smoke test, the article's scenarios
# 1-7 and conformance's clean run (E2E_SUITE=smoke in e2e/run.sh).
#
# Environment:
#   MATRIX_VERSIONS="v1.29.6 v1.37.2"  only these kubelets (default: all rows)
#   MATRIX_SUITE=full|smoke            every row with this suite
#   MATRIX_OUT=FILE                    the table (default /tmp/sidecar-order-matrix.txt)
# Exits 0 only when every row passed.
set -uo pipefail
cd "$(dirname "$0")/.."

# kubelet         control plane   suite
ROWS=(
  "v1.29.6        v1.30.14        full"
  "v1.30.14       v1.30.14        smoke"
  "v1.31.14       v1.34.4         smoke"
  "v1.32.13       v1.34.4         smoke"
  "v1.33.13       v1.34.4         smoke"
  "v1.34.4        v1.34.4         full"
  "v1.35.4        v1.37.2         smoke"
  "v1.36.3        v1.37.2         smoke"
  "v1.37.2        v1.37.2         full"
)
OUT=${MATRIX_OUT:-/tmp/sidecar-order-matrix.txt}
LOGDIR=${MATRIX_LOGS:-/tmp/sidecar-order-matrix}
mkdir -p "$LOGDIR"
START=$(date +%s)

want() {
  [[ -z ${MATRIX_VERSIONS:-} ]] && return 0
  local v; for v in $MATRIX_VERSIONS; do [[ $v == "$1" ]] && return 0; done
  return 1
}
for v in ${MATRIX_VERSIONS:-}; do
  printf '%s\n' "${ROWS[@]}" | awk '{print $1}' | grep -qx -- "$v" ||
    { echo "e2e-matrix: $v is not a row (kubelets: $(printf '%s\n' "${ROWS[@]}" | awk '{printf "%s ", $1}'))" >&2; exit 2; }
done

TABLE=("$(printf '| %-9s | %-13s | %-5s | %-6s | %-6s | %-7s | %s |' kubelet "control plane" suite passed failed time result)"
  "| --------- | ------------- | ----- | ------ | ------ | ------- | ------ |")
status=0
for row in "${ROWS[@]}"; do
  read -r kv cp suite <<<"$row"
  want "$kv" || continue
  suite=${MATRIX_SUITE:-$suite}
  log=$LOGDIR/$kv.log
  printf '\n\033[1m== e2e-matrix: kubelet %s, control plane %s, suite %s (log: %s)\033[0m\n' "$kv" "$cp" "$suite" "$log"
  t0=$(date +%s) rc=0
  # Each row starts its own cluster: the local cluster ($STATE) of another
  # row or of make cluster-up is taken down first.
  make --no-print-directory cluster-down >"$LOGDIR/$kv.down.log" 2>&1 ||
    { echo "e2e-matrix: make cluster-down failed (log: $LOGDIR/$kv.down.log)" >&2; exit 1; }
  K8S_VERSION=$cp KUBELET_VERSION=$kv E2E_SUITE=$suite E2E_SKIP_LOAD=1 E2E_CHAOS=0 E2E_LOG=$log \
    bash e2e/run.sh > "$LOGDIR/$kv.out" 2>&1 || rc=$?
  el=$(( $(date +%s) - t0 ))
  # Every phase's "test result:" line: N passed; M failed.
  passed=$(grep -hE '^test result:' "$log" | sed -n 's/.* \([0-9]*\) passed.*/\1/p' | awk '{s+=$1} END {print s+0}')
  failed=$(grep -hE '^test result:' "$log" | sed -n 's/.* \([0-9]*\) failed.*/\1/p' | awk '{s+=$1} END {print s+0}')
  result=passed
  if ((rc != 0)); then
    result="FAILED (exit $rc; $LOGDIR/$kv.out)"
    status=1
    tail -n 25 "$LOGDIR/$kv.out"
  fi
  TABLE+=("$(printf '| %-9s | %-13s | %-5s | %6s | %6s | %4dm%02ds | %s |' "$kv" "$cp" "$suite" "$passed" "$failed" $((el / 60)) $((el % 60)) "$result")")
  printf '%s\n' "${TABLE[-1]}"
done
{
  echo "e2e-matrix, $(date -u +%FT%TZ), $(( $(date +%s) - START ))s in all:"
  printf '%s\n' "${TABLE[@]}"
} | tee "$OUT"
exit "$status"
