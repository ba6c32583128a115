# Compiles ringvault (CLI, coordinator, worker) and the compose stack's S3 server
# (rv-s3-server) from the workspace into /out of an image the other Dockerfiles copy from.
# Build context: the repository root (scripts/docker-images does this).
ARG RUST_IMAGE=rust:1-bookworm
FROM ${RUST_IMAGE}
WORKDIR /src
# A JDK's javac compiles the worker's JMX session helper (worker/build.rs) into the worker.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p ringvault-cli -p ringvault-coordinator -p ringvault-worker \
      -p ringvault-s3-server \
 && mkdir -p /out \
 && cp target/release/ringvault target/release/ringvault-coordinator target/release/ringvault-worker \
      target/release/rv-s3-server /out/ \
 && rm -rf target
