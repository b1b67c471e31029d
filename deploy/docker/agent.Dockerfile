# syntax=docker/dockerfile:1
# cluster-mesh-agent, the AttestMesh sidecar. One recipe, two places the base image and the
# binary can come from:
#
# * With a registry (Docker/BuildKit, or podman), from the repository root:
#     docker build -f deploy/docker/agent.Dockerfile -t ghcr.io/attestmesh/cluster-mesh-agent:0.1.0 .
#   The `compile` stage builds the binary in the Rust image; the last stage (`compiled`) is the
#   image. (agent.Dockerfile.dockerignore keeps target/, node_modules/ and .git out; podman reads
#   only a context-root .dockerignore: add `--ignorefile deploy/docker/agent.Dockerfile.dockerignore`.)
# * Without a registry (this repository's tests: deploy/podman/build-images.sh):
#     podman build --format docker --target prebuilt \
#       --build-arg BASE=localhost/attestmesh-base:bookworm \
#       -f deploy/docker/agent.Dockerfile target/podman/context
#   BASE is made offline by deploy/podman/make-base-image.sh (debootstrap); the binary is the
#   host's own `cargo build --release --locked` (Debian bookworm: the glibc of the base), copied
#   into the context. Nothing is pulled: the `compile` stage is not built for this target.
#
# Both images are the `runtime` stage plus the binary at the same path.

ARG BASE=docker.io/library/debian:bookworm-slim
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm

# --- compile: the workspace's pinned toolchain, the committed lock file, one binary ----------
FROM ${RUST_IMAGE} AS compile
WORKDIR /src
COPY . .
# Bindings come from the committed ABIs and the protos compile with protox: no Node, no protoc.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package cluster-mesh-agent --bin cluster-mesh-agent \
 && install -D -m 0755 target/release/cluster-mesh-agent /out/cluster-mesh-agent

# --- runtime: Debian of the toolchain's release (same glibc) ----------------------------------
FROM ${BASE} AS runtime
# ca-certificates: TLS to the RPC, bundler, gas manager and gateway; curl: the compose
# healthcheck (GET http://localhost:9090/healthz). Installed unless the base has them already
# (the offline base is made with both; apt needs the network).
RUN set -eu; need=; \
    for p in ca-certificates curl; do \
      [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || need="$need $p"; \
    done; \
    if [ -n "$need" ]; then \
      apt-get update && apt-get install -y --no-install-recommends $need && rm -rf /var/lib/apt/lists/*; \
    fi
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

# --- prebuilt: the runtime with the host-built binary (build context: a folder holding it) ----
FROM runtime AS prebuilt
COPY cluster-mesh-agent /usr/local/bin/cluster-mesh-agent

# --- compiled (default, last): the runtime with the binary from `compile` ----------------------
FROM runtime AS compiled
COPY --from=compile /out/cluster-mesh-agent /usr/local/bin/cluster-mesh-agent
