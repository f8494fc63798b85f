#!/usr/bin/env bash
# Soak test with faults: two ssepush instances on v3 with one tansu broker, about 5,000 SSE
# streams with churn (resuming with Last-Event-ID), publishing over HTTP and Kafka, stalled
# clients, the broker and one instance SIGKILLed and restarted, and a ledger of every message.
#
#   scripts/soak.sh [MINUTES] [soak flags]      default 15 minutes (~16 with setup and drain)
#   scripts/soak.sh 1 --faults broker --ssepush-arg=--kafka-fetch-wait=500ms   what CI runs
#   scripts/soak.sh 3 --streams 5000 --seed 42  see `--help` for every flag
#
# Builds ssepush and the soak in release mode, runs on loopback only, stops by itself, prints a
# markdown summary (also written to target/soak-results.md; server logs in target/soak-logs/)
# and exits non-zero if a target was missed: 0 lost, 0 duplicated, RSS drift after warm-up
# under 10 %, recovery under 15 s per fault. Needs `tansu` on PATH (scripts/install-deps.sh).
# Honours CARGO_TARGET_DIR: binaries, summary and logs then live there instead of target/.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=15
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then
  MINUTES=$1
  shift
fi
case "$MINUTES" in
  '' | *[!0-9.]* | *.*.*) echo "usage: scripts/soak.sh [MINUTES] [soak flags]  (MINUTES: a positive number)" >&2; exit 2 ;;
esac
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
case ":$PATH:" in *":$CARGO_BIN:"*) ;; *) export PATH="$CARGO_BIN:$PATH" ;; esac

TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -p server -p bench
exec "$TARGET/release/soak" "$MINUTES" \
  --ssepush "$TARGET/release/ssepush" \
  --output "$TARGET/soak-results.md" \
  --log-dir "$TARGET/soak-logs" \
  "$@"
