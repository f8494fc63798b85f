#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each one for SECONDS (default 60), one after
# the other, starting from its seeds (fuzz/seeds/<target>/) and past crashes
# (fuzz/regressions/<target>/). What a run learns goes to a temporary corpus, removed at the
# end; a crashing input is kept in fuzz/artifacts/<target>/ (ignored by git). Prints execs/s per
# target and exits non-zero if any target crashed.
#
#   scripts/fuzz.sh [SECONDS]
#
# Needs the nightly toolchain and cargo-fuzz (scripts/install-deps.sh). The first build takes
# about 10 minutes: every dependency is compiled again with sanitizer instrumentation.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-60}
case "$SECONDS_EACH" in
  '' | *[!0-9]* | 0) echo "usage: scripts/fuzz.sh [SECONDS]  (a whole number of seconds per target, at least 1)" >&2; exit 2 ;;
esac
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
case ":$PATH:" in *":$CARGO_BIN:"*) ;; *) export PATH="$CARGO_BIN:$PATH" ;; esac

log() { printf '\033[1m[fuzz]\033[0m %s\n' "$*"; }
# stat NAME LOG: a number from libFuzzer's final stats (-print_final_stats=1).
stat() { awk -v k="stat::$1:" '$1 == k { print $2 }' "$2" | tail -n 1; }

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "the nightly toolchain is missing: rustup toolchain install nightly" >&2
  exit 1
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "cargo-fuzz not found: run scripts/install-deps.sh" >&2
  exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ssepush-fuzz.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

t0=$SECONDS
log "cargo +nightly fuzz build"
cargo +nightly fuzz build
log "built in $((SECONDS - t0)) s"

mapfile -t targets < <(cargo +nightly fuzz list)
summary=()
crashed=0
for target in "${targets[@]}"; do
  corpus=$WORK/corpus/$target
  mkdir -p "$corpus"
  # Only the first corpus directory is written to; the others are read.
  dirs=("$corpus")
  for dir in "fuzz/seeds/$target" "fuzz/regressions/$target"; do
    [ -d "$dir" ] && dirs+=("$dir")
  done
  flags=("-max_total_time=$SECONDS_EACH" -max_len=4096 -timeout=10 -print_final_stats=1)
  [ -f "fuzz/dicts/$target.dict" ] && flags+=("-dict=fuzz/dicts/$target.dict")

  log "$target for ${SECONDS_EACH}s"
  output=$WORK/$target.log
  rc=0
  cargo +nightly fuzz run "$target" "${dirs[@]}" -- "${flags[@]}" >"$output" 2>&1 || rc=$?
  execs=$(stat number_of_executed_units "$output")
  rate=$(stat average_exec_per_sec "$output")
  units=$(find "$corpus" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    result=ok
  else
    result="CRASH (exit $rc)"
    crashed=$((crashed + 1))
    tail -n 60 "$output" >&2
    mkdir -p "fuzz/artifacts/$target"
    cp "$output" "fuzz/artifacts/$target/fuzz.log"
    log "$target: log in fuzz/artifacts/$target/fuzz.log, input in fuzz/artifacts/$target/"
  fi
  summary+=("$(printf '%-16s %10s execs %8s execs/s %6s in corpus  %s' \
    "$target" "${execs:-?}" "${rate:-?}" "$units" "$result")")
done

log "${SECONDS_EACH}s per target:"
printf '  %s\n' "${summary[@]}"
if [ "$crashed" -gt 0 ]; then
  log "$crashed target(s) crashed"
  exit 1
fi
