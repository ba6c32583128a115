//! Stage `schema`: the cluster's schema (`DESCRIBE SCHEMA WITH INTERNALS`, through one worker's
//! local CQL) and the topology (host ids, addresses, DC, rack, tokens) go to the store.
use bytes::Bytes;
use ringvault_common::layout;
use ringvault_common::manifest::{HostId, NodeDescription, SchemaRow, Topology};
use ringvault_proto::v1 as pb;

use super::{PlannedNode, RunContext};

/// Describes a planned node for the manifests.
pub fn describe(n: &PlannedNode) -> anyhow::Result<NodeDescription> {
    Ok(NodeDescription {
        host_id: HostId::parse(&n.info.host_id)?,
        address: n.info.address.clone(),
        datacenter: n.info.datacenter.clone(),
        rack: n.info.rack.clone(),
        tokens: n.info.tokens.clone(),
        data_dirs: n.info.data_dirs.clone(),
        cassandra_version: n.info.cassandra_version.clone(),
    })
}

/// Writes `schema.cql` and `topology.json` of the run.
pub async fn save(
    ctx: &RunContext,
    nodes: &[PlannedNode],
    cluster: &str,
    partitioner: &str,
) -> anyhow::Result<()> {
    let mut last_err = None;
    let mut schema = None;
    let mut rows: Vec<SchemaRow> = Vec::new();
    for n in nodes {
        match n
            .client
            .clone()
            .describe_schema(pb::DescribeSchemaRequest {})
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                rows = r
                    .rows
                    .into_iter()
                    .map(|x| SchemaRow {
                        keyspace: x.keyspace,
                        kind: x.kind,
                        name: x.name,
                        statement: x.statement,
                    })
                    .collect();
                schema = Some(r.schema_cql);
                break;
            }
            Err(e) => last_err = Some(format!("{}: {}", n.label(), e.message())),
        }
    }
    let schema = schema.ok_or_else(|| {
        anyhow::anyhow!(
            "DESCRIBE SCHEMA failed on every node; last: {}",
            last_err.unwrap_or_default()
        )
    })?;
    let store = &ctx.coord.store;
    store
        .put(&layout::run_schema(&ctx.run_id), Bytes::from(schema))
        .await?;
    store
        .put(
            &layout::run_schema_rows(&ctx.run_id),
            Bytes::from(serde_json::to_vec(&rows)?),
        )
        .await?;
    let topology = Topology {
        cluster_name: cluster.to_string(),
        partitioner: partitioner.to_string(),
        nodes: nodes.iter().map(describe).collect::<anyhow::Result<_>>()?,
    };
    store
        .put(
            &layout::run_topology(&ctx.run_id),
            Bytes::from(serde_json::to_vec_pretty(&topology)?),
        )
        .await?;
    Ok(())
}
