#!/usr/bin/env bash
# Builds and runs ssepush with its web UI on http://localhost:3000.
#
#   scripts/run.sh [ssepush flags...]      e.g. scripts/run.sh --port 3001
#   scripts/run.sh --tls [flags...]        also HTTPS (HTTP/2) on https://localhost:3443, with a
#                                          self-signed certificate made on first use
#
# Installs missing tools first (scripts/install-deps.sh; ~40 min on a fresh machine, seconds
# afterwards), builds the web UI into dist/ and the server in release mode. Unless
# KAFKA_BROKERS or --kafka-brokers is given, or something already listens on 127.0.0.1:9092,
# it starts a local in-memory tansu broker (Kafka protocol) for v3 and stops it on exit.
# Ctrl-C (or SIGTERM) shuts the server down gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
case ":$PATH:" in *":$CARGO_BIN:"*) ;; *) export PATH="$CARGO_BIN:$PATH" ;; esac

KAFKA_PORT=9092
TOPIC=${KAFKA_TOPIC:-v3_messages}

log() { printf '\033[1m[run]\033[0m %s\n' "$*"; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The value of flag $1 among the server's arguments (--flag value or --flag=value), if any.
arg_value() {
  local flag=$1
  shift
  while [ $# -gt 0 ]; do
    case $1 in
      "$flag") echo "${2:-}"; return ;;
      "$flag"=*) echo "${1#*=}"; return ;;
    esac
    shift
  done
}

TANSU_PID=
SERVER_PID=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ -n "$TANSU_PID" ]; then
    log "stopping tansu (pid $TANSU_PID)"
    kill -TERM "$TANSU_PID" 2>/dev/null || true
    wait "$TANSU_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

TLS=0
if [ "${1:-}" = "--tls" ]; then
  TLS=1
  shift
fi

scripts/install-deps.sh
log "trunk build --release"
trunk build --release
log "cargo build --release -p server"
cargo build --release -p server --bin ssepush

brokers=$(arg_value --kafka-brokers "$@")
if [ -n "${KAFKA_BROKERS:-}" ] || [ -n "$brokers" ]; then
  log "Kafka: ${brokers:-$KAFKA_BROKERS}"
elif listening "$KAFKA_PORT"; then
  log "Kafka: something already listens on 127.0.0.1:$KAFKA_PORT; using it"
else
  mkdir -p target
  log "starting tansu on 127.0.0.1:$KAFKA_PORT (in memory; log: target/tansu.log)"
  tansu broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine memory://tansu/ >target/tansu.log 2>&1 &
  TANSU_PID=$!
  for _ in $(seq 100); do
    listening "$KAFKA_PORT" && break
    kill -0 "$TANSU_PID" 2>/dev/null || { cat target/tansu.log >&2; log "tansu exited"; exit 1; }
    sleep 0.1
  done
  listening "$KAFKA_PORT" || { log "tansu did not open port $KAFKA_PORT"; exit 1; }
  tansu topic create --broker "tcp://127.0.0.1:$KAFKA_PORT" --partitions 1 "$TOPIC" >>target/tansu.log 2>&1 \
    || log "could not create topic $TOPIC (see target/tansu.log)"
  export KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
fi

tls_args=()
if [ "$TLS" = 1 ]; then
  if [ ! -s target/tls/cert.pem ] || [ ! -s target/tls/key.pem ]; then
    mkdir -p target/tls
    target/release/ssepush self-signed --cert target/tls/cert.pem --key target/tls/key.pem
  fi
  tls_args=(--tls-cert target/tls/cert.pem --tls-key target/tls/key.pem)
fi

port=$(arg_value --port "$@")
port=${port:-${PORT:-3000}}
log "open http://localhost:$port  (Ctrl-C stops the server)"
if [ "$TLS" = 1 ]; then
  tls_port=$(arg_value --tls-port "$@")
  log "and https://localhost:${tls_port:-${TLS_PORT:-3443}} (self-signed: the browser warns once)"
fi

# In the background so this script can forward signals and then clean up.
cargo run --release -q -p server --bin ssepush -- "${tls_args[@]}" "$@" &
SERVER_PID=$!
trap 'kill -TERM "$SERVER_PID" 2>/dev/null || true' INT TERM
# A trapped signal interrupts `wait`; wait again until the server has really exited.
while :; do
  wait "$SERVER_PID" && status=0 || status=$?
  kill -0 "$SERVER_PID" 2>/dev/null || break
done
SERVER_PID=
exit "$status"
