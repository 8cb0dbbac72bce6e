#!/usr/bin/env bash
# Fuzzes parse + judge + render for SECONDS (default 60):
#   bash fuzz/run.sh [SECONDS] [extra libFuzzer flags...]
# Installs cargo-fuzz when missing, seeds the corpus from tests/fixtures
# (pod.json NUL events.json, as the target splits its input), then runs the
# target. cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. Crashes land in fuzz/artifacts/parse_judge/.
set -euo pipefail
seconds="${1:-60}"
shift || true
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

corpus="$here/corpus/parse_judge"
mkdir -p "$corpus"
for dir in "$root"/tests/fixtures/*/; do
    [[ -f "$dir/pod.json" && -f "$dir/events.json" ]] || continue
    name="fixture-$(basename "$dir")"
    { cat "$dir/pod.json"; printf '\0'; cat "$dir/events.json"; } >"$corpus/$name"
    # The pod alone, and the pod with an empty event list.
    cp "$dir/pod.json" "$corpus/$name-pod-only"
done

cd "$here"
exec cargo fuzz run parse_judge "$corpus" -- \
    -max_total_time="$seconds" -dict="$here/parse_judge.dict" -print_final_stats=1 "$@"
