# ssepush: the server binary plus the web UI (trunk's dist/), on a slim Debian.
#
#   docker build -t ssepush .
#   docker run --rm -p 3000:3000 -e KAFKA_BROKERS=host.docker.internal:29092 ssepush
#
# or, with Kafka: docker-compose up -d --build

FROM rust:1.95-bookworm AS builder

# cmake, pkg-config and zlib: rdkafka's bundled librdkafka build. node/npm: wasm-opt.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake pkg-config zlib1g-dev nodejs npm \
    && rm -rf /var/lib/apt/lists/*

# Web UI tools, pinned as in Trunk.toml. They change rarely, so these layers stay cached.
RUN rustup target add wasm32-unknown-unknown
RUN cargo install trunk --version 0.21.14 --locked
# binaryen 132 (Trunk.toml: wasm_opt = "version_132"); Debian's wasm-opt is too old.
RUN npm install --global --no-audit --no-fund binaryen@132.0.0 && wasm-opt --version
# The wasm-bindgen CLI must equal the wasm-bindgen crate in Cargo.lock.
COPY Cargo.lock /tmp/Cargo.lock
RUN version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' /tmp/Cargo.lock) \
    && cargo install wasm-bindgen-cli --version "$version"

WORKDIR /src
COPY . .
# Trunk.toml builds offline, so fetch every crate (wasm32 ones included) first.
RUN cargo fetch --locked
RUN trunk build --release
RUN cargo build --release --locked -p server --bin ssepush

FROM debian:bookworm-slim

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin ssepush
WORKDIR /app
COPY --from=builder /src/target/release/ssepush /usr/local/bin/ssepush
COPY --from=builder /src/dist /app/dist

ENV HOST=0.0.0.0 \
    PORT=3000 \
    STATIC_DIR=/app/dist \
    RUST_LOG=info
EXPOSE 3000
USER ssepush

# No curl in the slim image: bash's /dev/tcp asks /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${PORT:-3000} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

ENTRYPOINT ["ssepush"]
