# syntax=docker/dockerfile:1
# attestmesh-webhook, the paymaster webhook the operator's gas manager calls. One recipe, two
# places the base image and the binary can come from (agent.Dockerfile explains both):
#   docker build -f deploy/docker/webhook.Dockerfile -t ghcr.io/attestmesh/attestmesh-webhook:0.1.0 .
#   podman build --format docker --target prebuilt --build-arg BASE=localhost/attestmesh-base:bookworm \
#     -f deploy/docker/webhook.Dockerfile target/podman/context     # offline, deploy/podman/build-images.sh
# Run it behind the operator's TLS proxy, then assert the public route after every deploy:
#   attestmesh-operator check-webhook --url https://… --expected-chain-id 8453 --expected-policy <id>=<cluster>

ARG BASE=docker.io/library/debian:bookworm-slim
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm

# --- compile ----------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS compile
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package attestmesh-webhook --bin attestmesh-webhook \
 && install -D -m 0755 target/release/attestmesh-webhook /out/attestmesh-webhook

# --- runtime ----------------------------------------------------------------------------------
FROM ${BASE} AS runtime
# ca-certificates (TLS to the RPC), curl (the healthcheck); installed unless the base has them.
RUN set -eu; need=; \
    for p in ca-certificates curl; do \
      [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || need="$need $p"; \
    done; \
    if [ -n "$need" ]; then \
      apt-get update && apt-get install -y --no-install-recommends $need && rm -rf /var/lib/apt/lists/*; \
    fi; \
    useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin webhook
USER 10001
# The binary's default listen address is loopback (for a host with a local proxy); inside a
# container the proxy is elsewhere. The secret comes from ATTESTMESH_WEBHOOK_SECRET_FILE (a
# mounted secret), the policies, RPC and chain id from the environment (webhook/README.md).
ENV ATTESTMESH_WEBHOOK_LISTEN=0.0.0.0:8787 \
    ATTESTMESH_WEBHOOK_LOG_FORMAT=json
EXPOSE 8787
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS -o /dev/null http://localhost:8787/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/attestmesh-webhook"]

# --- prebuilt: the runtime with the host-built binary -----------------------------------------
FROM runtime AS prebuilt
COPY attestmesh-webhook /usr/local/bin/attestmesh-webhook

# --- compiled (default, last): the runtime with the binary from `compile` ----------------------
FROM runtime AS compiled
COPY --from=compile /out/attestmesh-webhook /usr/local/bin/attestmesh-webhook
