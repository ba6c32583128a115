# fake-gcs-server over HTTPS for the compose profile `gcs` (certificate from the stack's CA).
ARG EMULATORS_IMAGE=ringvault/emulators:latest
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${EMULATORS_IMAGE} AS emulators
FROM ${BASE_IMAGE}
RUN set -eu; mkdir -p /data
COPY --from=emulators /out/fake-gcs-server /usr/local/bin/
EXPOSE 4443
ENTRYPOINT ["fake-gcs-server"]
