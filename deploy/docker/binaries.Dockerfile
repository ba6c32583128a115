# Compiles ringvault (CLI, coordinator, worker) from the workspace into /out of an image the
# other Dockerfiles copy from.
# Build context: the repository root (scripts/docker-images does this).
ARG RUST_IMAGE=rust:1-bookworm
FROM ${RUST_IMAGE}
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ringvault-cli -p ringvault-coordinator -p ringvault-worker \
 && mkdir -p /out \
 && cp target/release/ringvault target/release/ringvault-coordinator target/release/ringvault-worker /out/ \
 && rm -rf target
