#!/usr/bin/env bash
# Writes /etc/cassandra/cassandra.yaml from the variables the public cassandra image reads
# (CASSANDRA_CLUSTER_NAME, CASSANDRA_SEEDS, CASSANDRA_NUM_TOKENS, CASSANDRA_LISTEN_ADDRESS,
# CASSANDRA_BROADCAST_ADDRESS, CASSANDRA_BROADCAST_RPC_ADDRESS), then starts Cassandra as the
# cassandra user.
set -euo pipefail
if [ "${1:-}" = cassandra ]; then
  ip=${CASSANDRA_LISTEN_ADDRESS:-$(hostname -i | awk '{print $1}')}
  [ "$ip" = auto ] && ip=$(hostname -i | awk '{print $1}')
  bcast=${CASSANDRA_BROADCAST_ADDRESS:-$ip}
  cat >/etc/cassandra/cassandra.yaml <<YAML
cluster_name: '${CASSANDRA_CLUSTER_NAME:-Test Cluster}'
num_tokens: ${CASSANDRA_NUM_TOKENS:-16}
allocate_tokens_for_local_replication_factor: 3
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: ${CASSANDRA_ENDPOINT_SNITCH:-SimpleSnitch}
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "${CASSANDRA_SEEDS:-$bcast}"
listen_address: $ip
broadcast_address: $bcast
rpc_address: 0.0.0.0
broadcast_rpc_address: ${CASSANDRA_BROADCAST_RPC_ADDRESS:-$bcast}
storage_port: 7000
native_transport_port: 9042
commitlog_sync: periodic
commitlog_sync_period: 10000ms
data_file_directories: [/var/lib/cassandra/data]
commitlog_directory: /var/lib/cassandra/commitlog
saved_caches_directory: /var/lib/cassandra/saved_caches
hints_directory: /var/lib/cassandra/hints
concurrent_compactors: 1
YAML
  mkdir -p /var/lib/cassandra/tmp
  if [ "$(id -u)" = 0 ]; then
    chown -R cassandra:cassandra /var/lib/cassandra /var/log/cassandra
    exec setpriv --reuid=cassandra --regid=cassandra --init-groups /opt/cassandra/bin/cassandra -f
  fi
  exec /opt/cassandra/bin/cassandra -f
fi
exec "$@"
