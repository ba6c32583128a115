# Azurite (Azure Blob emulator) over HTTPS for the compose profile `azure` (certificate from
# the stack's CA). NODE_IMAGE is any image with node 20 on PATH.
ARG EMULATORS_IMAGE=ringvault/emulators:latest
ARG NODE_IMAGE=node:20-bookworm-slim
FROM ${EMULATORS_IMAGE} AS emulators
FROM ${NODE_IMAGE}
COPY --from=emulators /out/azurite /opt/azurite
COPY azurite-container.js /opt/azurite/
RUN mkdir -p /data
EXPOSE 10000
# Azurite in the background, then the container, then a ready marker for the health check.
ENTRYPOINT ["sh", "-c", "node /opt/azurite/node_modules/azurite/dist/src/blob/main.js \"$@\" & pid=$!; trap 'kill $pid' TERM INT; node /opt/azurite/azurite-container.js && touch /tmp/ready; wait $pid", "azurite"]
