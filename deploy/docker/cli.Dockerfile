# ringvault, the operator's CLI (also makes the stack's TLS material: `ringvault certs`).
ARG BINARIES_IMAGE=ringvault/binaries:latest
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BINARIES_IMAGE} AS binaries
FROM ${BASE_IMAGE}
RUN set -eu; groupadd -r ringvault --gid=10001; useradd -r -g ringvault --uid=10001 ringvault
COPY --from=binaries /out/ringvault /usr/local/bin/
USER ringvault
ENTRYPOINT ["ringvault"]
