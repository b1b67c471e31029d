# syntax=docker/dockerfile:1
# cluster-mesh-agent, the AttestMesh sidecar. Build from the repository root:
#   docker build -f deploy/docker/agent.Dockerfile -t ghcr.io/attestmesh/cluster-mesh-agent:0.1.0 .
# (agent.Dockerfile.dockerignore beside this file keeps target/, node_modules/ and .git out.)

# --- build: the workspace's pinned toolchain, the committed lock file, one binary -----------
FROM rust:1.95-slim-trixie AS build
WORKDIR /src
COPY . .
# Bindings come from the committed ABIs and the protos compile with protox: no Node, no protoc.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package cluster-mesh-agent --bin cluster-mesh-agent \
 && install -D -m 0755 target/release/cluster-mesh-agent /out/cluster-mesh-agent

# --- runtime: Debian slim of the same release (same glibc) ------------------------------------
FROM debian:trixie-slim
# ca-certificates: TLS to the RPC, bundler, gas manager and gateway; curl: the compose
# healthcheck (GET http://localhost:9090/healthz).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/cluster-mesh-agent /usr/local/bin/cluster-mesh-agent
# Runs as root inside the container: creating attestmesh0 needs CAP_NET_ADMIN in the effective
# set, and the compose file grants the container that capability and /dev/net/tun, nothing else.
ENV ATTESTMESH_LOG_FORMAT=json \
    ATTESTMESH_HEALTH_LISTEN=0.0.0.0:9090 \
    ATTESTMESH_API_SOCKET=/var/run/attestmesh/agent.sock
EXPOSE 9090 51820
HEALTHCHECK --interval=5s --timeout=3s --start-period=600s --retries=12 \
  CMD curl -fsS -o /dev/null http://localhost:9090/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/cluster-mesh-agent"]
CMD ["run"]
