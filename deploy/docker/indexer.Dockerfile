# syntax=docker/dockerfile:1
# attestmesh-indexer, the shared indexer (runs in a dstack CVM: its signing key is derived from
# the TEE through /var/run/dstack.sock). One recipe, two places the base image and the binary
# can come from (agent.Dockerfile explains both):
#   docker build -f deploy/docker/indexer.Dockerfile -t ghcr.io/attestmesh/attestmesh-indexer:0.1.0 .
#   podman build --format docker --target prebuilt --build-arg BASE=localhost/attestmesh-base:bookworm \
#     -f deploy/docker/indexer.Dockerfile target/podman/context     # offline, deploy/podman/build-images.sh
# After it boots, read its public key and check it is registered:
#   attestmesh-operator check-indexer --health-url https://…/healthz --rpc-url … --expected-chain-id 8453

ARG BASE=docker.io/library/debian:bookworm-slim
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm

# --- compile ----------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS compile
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package attestmesh-indexer --bin attestmesh-indexer \
 && install -D -m 0755 target/release/attestmesh-indexer /out/attestmesh-indexer

# --- runtime ----------------------------------------------------------------------------------
FROM ${BASE} AS runtime
# ca-certificates (TLS to the RPC); installed unless the base has it.
RUN set -eu; \
    if [ "$(dpkg-query -W -f='${db:Status-Status}' ca-certificates 2>/dev/null)" != installed ]; then \
      apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*; \
    fi; \
    useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin indexer
# Non-root: the dstack socket must be readable by uid 10001 (or run the container as root if
# the CVM's socket permissions do not allow it). Logs as JSON, no colour codes (field note 9).
USER 10001
ENTRYPOINT ["/usr/local/bin/attestmesh-indexer"]

# --- prebuilt: the runtime with the host-built binary -----------------------------------------
FROM runtime AS prebuilt
COPY attestmesh-indexer /usr/local/bin/attestmesh-indexer

# --- compiled (default, last): the runtime with the binary from `compile` ----------------------
FROM runtime AS compiled
COPY --from=compile /out/attestmesh-indexer /usr/local/bin/attestmesh-indexer
