# ringvault-coordinator: the gRPC service with its SQLite database on /var/lib/ringvault.
# BINARIES_IMAGE holds the binaries in /out (binaries.Dockerfile, or prebuilt ones collected by
# scripts/docker-images --local); BASE_IMAGE is any Debian bookworm (glibc) image.
ARG BINARIES_IMAGE=ringvault/binaries:latest
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BINARIES_IMAGE} AS binaries
FROM ${BASE_IMAGE}
RUN set -eu; \
    if [ ! -e /etc/ssl/certs/ca-certificates.crt ]; then \
      apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd -r ringvault --gid=10001; \
    useradd -r -g ringvault --uid=10001 -d /var/lib/ringvault ringvault; \
    mkdir -p /var/lib/ringvault; chown ringvault:ringvault /var/lib/ringvault
COPY --from=binaries /out/ringvault-coordinator /out/ringvault /usr/local/bin/
USER ringvault
VOLUME /var/lib/ringvault
EXPOSE 7600
ENV RINGVAULT_LISTEN=0.0.0.0:7600 RINGVAULT_DB=/var/lib/ringvault/coordinator.db
ENTRYPOINT ["ringvault-coordinator"]
