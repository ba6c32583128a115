# ringvault-worker on the Cassandra image it runs beside: nodetool and sstableloader of the
# same Cassandra version, and the cassandra user (snapshots' hard links and imported files
# keep the node's ownership).
ARG BINARIES_IMAGE=ringvault/binaries:latest
ARG CASSANDRA_IMAGE=cassandra:5.0
FROM ${BINARIES_IMAGE} AS binaries
FROM ${CASSANDRA_IMAGE}
COPY --from=binaries /out/ringvault-worker /out/ringvault /usr/local/bin/
USER cassandra
EXPOSE 7601
ENV RINGVAULT_WORKER_LISTEN=0.0.0.0:7601 RINGVAULT_CQL=127.0.0.1:9042 \
    RINGVAULT_WORKER_DATA_DIR=/var/lib/cassandra/data \
    RINGVAULT_WORKER_STATE=/var/lib/cassandra/ringvault-worker
ENTRYPOINT ["ringvault-worker"]
