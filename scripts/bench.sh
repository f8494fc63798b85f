#!/usr/bin/env bash
# Benchmarks ssepush against a naive baseline server and prints a markdown table.
#
#   scripts/bench.sh            full run (19,000 idle streams, 3+3 fanout runs, ...; ~5-10 min)
#   scripts/bench.sh --quick    smoke run, a minute or two (BENCH_QUICK=1 does the same)
#   scripts/bench.sh --scenario idle,churn --skip-kafka ...   any loadgen flag; see --help
#
# Builds ssepush, loadgen and baseline in release mode, then loadgen spawns each server on a
# free loopback port, measures it from /proc, and kills it. The kafka scenario needs `tansu`
# on PATH (scripts/install-deps.sh) and skips itself otherwise. The table is also written to
# target/bench-results.md; server logs go to target/bench-logs/.
set -euo pipefail
cd "$(dirname "$0")/.."

args=("$@")
if [ "${BENCH_QUICK:-0}" = 1 ]; then
  args=(--quick "${args[@]}")
fi

cargo build --release -p server -p bench
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/loadgen" --output "$target/bench-results.md" "${args[@]}"
