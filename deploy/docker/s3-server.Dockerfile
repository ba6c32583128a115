# rv-s3-server: the compose stack's default store, an S3-compatible server (s3s-fs) over TLS.
# Its certificate comes from the stack's CA (`ringvault certs --server`), its credentials from
# files (RV_S3_ACCESS_KEY_FILE, RV_S3_SECRET_KEY_FILE), never from the command line.
# BINARIES_IMAGE holds the binaries in /out (binaries.Dockerfile, or prebuilt ones collected by
# scripts/docker-images --local); BASE_IMAGE is any Debian bookworm (glibc) image.
ARG BINARIES_IMAGE=ringvault/binaries:latest
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BINARIES_IMAGE} AS binaries
FROM ${BASE_IMAGE}
# uid 999 (the compose stack runs it as the workers' user): a new volume on /data takes this owner.
RUN set -eu; mkdir -p /data; chown 999:999 /data
COPY --from=binaries /out/rv-s3-server /usr/local/bin/
VOLUME /data
EXPOSE 9000
ENV RV_S3_LISTEN=0.0.0.0:9000 RV_S3_ROOT=/data
ENTRYPOINT ["rv-s3-server"]
