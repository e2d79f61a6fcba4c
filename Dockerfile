# syntax=docker/dockerfile:1
# One image holding both services; compose picks the binary per service with `command`.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between builds. The target
# directory is a cache mount, so it is gone after this step: copy the binaries out in the same RUN.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p herald-edge -p herald-publisher \
    && mkdir -p /out \
    && cp target/release/herald-edge target/release/herald-publisher /out/

FROM debian:bookworm-slim
# ca-certificates so a TLS connection to NATS can verify the server's certificate.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin herald
COPY --from=builder /out/ /usr/local/bin/
USER herald
# No ENTRYPOINT, so `command: ["herald-edge"]` in compose runs the edge. Without a command,
# the container runs the publisher.
CMD ["herald-publisher"]
