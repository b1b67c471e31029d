# syntax=docker/dockerfile:1
# attestmesh-indexer, the shared indexer (runs in a dstack CVM: its signing key is derived from
# the TEE through /var/run/dstack.sock). Build from the repository root:
#   docker build -f deploy/docker/indexer.Dockerfile -t ghcr.io/attestmesh/attestmesh-indexer:0.1.0 .
# After it boots, read its public key and check it is registered:
#   attestmesh-operator check-indexer --health-url https://…/healthz --rpc-url … --expected-chain-id 8453

# --- build ----------------------------------------------------------------------------------
FROM rust:1.95-slim-trixie AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package attestmesh-indexer --bin attestmesh-indexer \
 && install -D -m 0755 target/release/attestmesh-indexer /out/attestmesh-indexer

# --- runtime --------------------------------------------------------------------------------
FROM debian:trixie-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin indexer
COPY --from=build /out/attestmesh-indexer /usr/local/bin/attestmesh-indexer
# Non-root: the dstack socket must be readable by uid 10001 (or run the container as root if
# the CVM's socket permissions do not allow it). Logs as JSON, no colour codes (field note 9).
USER 10001
ENTRYPOINT ["/usr/local/bin/attestmesh-indexer"]
