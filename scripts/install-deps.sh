#!/usr/bin/env bash
# Installs every tool the build, the app and the tests need, skipping what is already there at
# the pinned version. Safe to run again and again: with everything present it takes a few
# seconds; a fresh machine needs about 40 minutes, mostly compiling trunk, wasm-bindgen and tansu.
set -euo pipefail
cd "$(dirname "$0")/.."

TRUNK_VERSION=0.21.14
TANSU_VERSION=${TANSU_VERSION:-}
BINARYEN_VERSION=132.0.0
KAFKA_PYTHON_VERSION=3.0.12
CARGO_FUZZ_VERSION=0.13.2
# The CLI must match the wasm-bindgen crate the frontend links against.
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
TOOLS_DIR=${TOOLS_DIR:-$HOME/.cache/ssepush-tools}
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
case ":$PATH:" in *":$CARGO_BIN:"*) ;; *) export PATH="$CARGO_BIN:$PATH" ;; esac

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }
has_version() { command -v "$1" >/dev/null 2>&1 && "$1" --version 2>/dev/null | grep -qF "$2"; }
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "need root (or sudo) to run: $*" >&2
    exit 1
  fi
}

command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }

need_wasm_opt=0
has_version wasm-opt "version ${BINARYEN_VERSION%%.*}" || need_wasm_opt=1

apt_packages=()
# openssl: the auth tests make RSA keys with it.
for pkg in chromium chromium-driver fonts-noto-color-emoji docker-compose pkg-config make gcc zlib1g-dev openssl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || apt_packages+=("$pkg")
done
# npm is only needed to fetch wasm-opt; node also runs it afterwards.
if [ "$need_wasm_opt" = 1 ] && ! command -v npm >/dev/null 2>&1; then
  apt_packages+=(nodejs npm)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  log "apt: ${apt_packages[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
else
  log "apt packages present"
fi

components=()
cargo fmt --version >/dev/null 2>&1 || components+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || components+=(clippy)
if [ ${#components[@]} -gt 0 ]; then
  log "rustup component add ${components[*]}"
  rustup component add "${components[@]}"
fi

if rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "wasm32-unknown-unknown present"
else
  rustup target add wasm32-unknown-unknown
fi

if has_version wasm-bindgen "$WASM_BINDGEN_VERSION"; then
  log "wasm-bindgen $WASM_BINDGEN_VERSION present"
else
  # No --locked: the CLI's own lockfile pins a crate the registry no longer serves.
  log "cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION (5-7 min)"
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
fi

if [ "$need_wasm_opt" = 0 ]; then
  log "wasm-opt ${BINARYEN_VERSION%%.*} present"
else
  # Debian's binaryen is too old: its wasm-opt output crashes in the browser.
  log "npm binaryen@$BINARYEN_VERSION"
  mkdir -p "$TOOLS_DIR" "$CARGO_BIN"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS_DIR" "binaryen@$BINARYEN_VERSION"
  ln -sf "$TOOLS_DIR/node_modules/.bin/wasm-opt" "$CARGO_BIN/wasm-opt"
fi

if has_version trunk "$TRUNK_VERSION"; then
  log "trunk $TRUNK_VERSION present"
else
  log "cargo install trunk $TRUNK_VERSION (12-15 min)"
  cargo install trunk --version "$TRUNK_VERSION" --locked --force
fi

if command -v tansu >/dev/null 2>&1; then
  log "tansu present"
else
  # A Kafka-protocol broker for the tests; dynostore gives it the memory storage engine.
  log "cargo install tansu (15-20 min)"
  cargo install tansu ${TANSU_VERSION:+--version "$TANSU_VERSION"} --locked --features dynostore
fi

# The fuzz targets (scripts/fuzz.sh) are built by cargo-fuzz with the nightly toolchain.
if has_version cargo-fuzz "$CARGO_FUZZ_VERSION"; then
  log "cargo-fuzz $CARGO_FUZZ_VERSION present"
else
  log "cargo install cargo-fuzz $CARGO_FUZZ_VERSION (1-2 min)"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --force
fi
if cargo +nightly --version >/dev/null 2>&1; then
  log "nightly toolchain present"
else
  log "nightly toolchain MISSING: scripts/fuzz.sh and the fuzz step of scripts/test.sh need it;" \
    "install it with: rustup toolchain install nightly --profile minimal"
fi

# A second Kafka client for the tests, pure Python, which batches records its own way.
if python3 -c 'import kafka' >/dev/null 2>&1; then
  log "kafka-python present"
else
  log "pip install kafka-python"
  python3 -m pip install --quiet --disable-pip-version-check "kafka-python==$KAFKA_PYTHON_VERSION"
fi

# Trunk.toml sets `offline = true`, so every crate (wasm32 ones included) must be local first.
log "cargo fetch"
cargo fetch --quiet
cargo fetch --quiet --manifest-path fuzz/Cargo.toml

log "done"
