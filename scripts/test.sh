#!/usr/bin/env bash
# Runs every check and every test: formatting, lints, the compose file, the release web UI
# build and its size budget, the Rust tests (Kafka ones against tansu brokers they spawn), the
# fuzz targets for 20 s each, the wasm tests in headless Chromium, the browser end-to-end
# test, and a one-minute soak with the Kafka broker killed and restarted.
#
#   scripts/test.sh
#
# Installs missing tools first (scripts/install-deps.sh; ~40 min on a fresh machine, seconds
# afterwards). Exits non-zero at the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
case ":$PATH:" in *":$CARGO_BIN:"*) ;; *) export PATH="$CARGO_BIN:$PATH" ;; esac
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-auto}
export CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}

# gzipped size budget of the web UI's wasm.
WASM_GZIP_LIMIT=$((150 * 1024))

# Each step runs as its own process group (job control), so whatever it spawns and leaves
# behind (chromedriver, chromium, tansu) can be stopped without touching anything else.
set -m
STEP_PID=
START=$SECONDS
STEPS=0

stop_step() {
  if [ -n "$STEP_PID" ]; then
    kill -TERM -- "-$STEP_PID" 2>/dev/null || true
    STEP_PID=
  fi
}

# Stops stragglers of a finished step: live processes still in its group (zombies are
# already dead, only waiting for a parent to reap them).
reap_group() {
  local pgid=$1 left
  left=$(ps -eo pid=,pgid=,stat=,args= | awk -v g="$pgid" '$2 == g && $3 !~ /^Z/')
  if [ -n "$left" ]; then
    echo "[test] stopping leftover processes of the step:"
    printf '%s\n' "$left" | sed 's/^/[test]   /'
    kill -TERM -- "-$pgid" 2>/dev/null || true
    sleep 1
    kill -KILL -- "-$pgid" 2>/dev/null || true
  fi
}

on_exit() {
  local rc=$?
  stop_step
  if [ "$rc" -ne 0 ]; then
    printf '\n\033[1;31m[test] FAILED\033[0m after %s (exit %s)\n' "$(elapsed $((SECONDS - START)))" "$rc"
  fi
}
trap on_exit EXIT
trap 'stop_step; exit 130' INT
trap 'stop_step; exit 143' TERM

elapsed() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# step NAME COMMAND...: a banner, the command in its own process group, its time.
step() {
  local name=$1 t0=$SECONDS rc=0 pgid
  shift
  printf '\n\033[1m==> %s\033[0m  (at %s)\n' "$name" "$(elapsed $((SECONDS - START)))"
  "$@" </dev/null &
  STEP_PID=$!
  pgid=$STEP_PID
  wait "$STEP_PID" || rc=$?
  STEP_PID=
  reap_group "$pgid"
  if [ "$rc" -ne 0 ]; then
    printf '\033[1;31m==> %s failed (exit %s) after %s\033[0m\n' "$name" "$rc" "$(elapsed $((SECONDS - t0)))"
    exit "$rc"
  fi
  printf '\033[1m==> %s ok\033[0m in %s\n' "$name" "$(elapsed $((SECONDS - t0)))"
  STEPS=$((STEPS + 1))
}

wasm_size() {
  shopt -s nullglob
  local files=(dist/*.wasm) total=0 size f
  if [ ${#files[@]} -eq 0 ]; then
    echo "no dist/*.wasm: did trunk build fail?" >&2
    return 1
  fi
  for f in "${files[@]}"; do
    size=$(gzip -9c "$f" | wc -c)
    printf '%s: %d bytes, %d bytes gzipped (limit %d)\n' "$f" "$(wc -c <"$f")" "$size" "$WASM_GZIP_LIMIT"
    total=$((total + size))
  done
  if [ "$total" -gt "$WASM_GZIP_LIMIT" ]; then
    echo "the web UI's wasm is over its budget: $total > $WASM_GZIP_LIMIT bytes gzipped" >&2
    return 1
  fi
}

step "install tools" scripts/install-deps.sh
step "cargo fmt" cargo fmt --all --check
step "clippy (native)" cargo clippy -p server -p wire -p bench -p e2e -p testkit --all-targets -- -D warnings
step "clippy (wasm)" cargo clippy -p frontend --target wasm32-unknown-unknown --all-targets -- -D warnings
# The compose file wants the secret from .env; any value checks the file itself.
step "docker-compose config" env AUTH_SECRET=compose-config-check-0123456789abcdef docker-compose -f docker-compose.yml config -q
step "trunk build --release" trunk build --release
step "wasm size" wasm_size
step "tests: native crates" cargo test -p wire -p server -p bench -p testkit
step "fuzz (20 s per target)" scripts/fuzz.sh 20
step "tests: frontend (wasm)" cargo test -p frontend --target wasm32-unknown-unknown
step "tests: e2e (browser)" cargo test -p e2e
# 500 ms fetches: tansu's own fetch race (see README, Soak) then shows about 50 times less often;
# the 15-minute soak keeps the default 10 ms.
step "soak (1 min, broker killed)" scripts/soak.sh 1 --faults broker --ssepush-arg=--kafka-fetch-wait=500ms

printf '\n\033[1;32m[test] all %d steps passed in %s\033[0m\n' "$STEPS" "$(elapsed $((SECONDS - START)))"
