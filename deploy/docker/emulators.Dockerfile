# The Azure and GCS emulators of the compose profiles (`--profile azure`, `--profile gcs`),
# fetched into /out of an image azurite.Dockerfile and gcs.Dockerfile copy from:
# fake-gcs-server from the Go module proxy, Azurite from npm.
# (scripts/docker-images --local collects the copies the test bed installed instead.)
ARG GO_IMAGE=golang:1-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim
FROM ${GO_IMAGE} AS gcs
ARG FAKE_GCS_VERSION=v1.54.0
RUN GOBIN=/out go install "github.com/fsouza/fake-gcs-server@${FAKE_GCS_VERSION}"
FROM ${NODE_IMAGE} AS azurite
ARG AZURITE_VERSION=3.37.0
RUN mkdir -p /out/azurite && cd /out/azurite \
 && npm install --no-audit --no-fund "azurite@${AZURITE_VERSION}"
FROM scratch
COPY --from=gcs /out/fake-gcs-server /out/
COPY --from=azurite /out/azurite /out/azurite
