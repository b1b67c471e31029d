# syntax=docker/dockerfile:1
# attestmesh-webhook, the paymaster webhook the operator's gas manager calls. Build from the
# repository root:
#   docker build -f deploy/docker/webhook.Dockerfile -t ghcr.io/attestmesh/attestmesh-webhook:0.1.0 .
# Run it behind the operator's TLS proxy, then assert the public route after every deploy:
#   attestmesh-operator check-webhook --url https://… --expected-chain-id 8453 --expected-policy <id>=<cluster>

# --- build ----------------------------------------------------------------------------------
FROM rust:1.95-slim-trixie AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package attestmesh-webhook --bin attestmesh-webhook \
 && install -D -m 0755 target/release/attestmesh-webhook /out/attestmesh-webhook

# --- runtime --------------------------------------------------------------------------------
FROM debian:trixie-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin webhook
COPY --from=build /out/attestmesh-webhook /usr/local/bin/attestmesh-webhook
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
