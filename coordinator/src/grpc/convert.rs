//! Proto ↔ domain conversions for the coordinator's gRPC services, all in one place: the
//! services call these at the edge and hand domain types to domain code.
use ringvault_common::Identifier;
use ringvault_proto::v1 as pb;

use crate::db::{ScheduleEventRow, ScheduleRow, WorkerRow};
use crate::error::CoordinatorError;
use crate::limits::RunLimits;
use crate::run::RunView;

/// The most parts in flight per node a run may ask for.
pub const MAX_UPLOAD_CONCURRENCY: u32 = 256;

/// A run's limits as asked; refuses more parts in flight than [`MAX_UPLOAD_CONCURRENCY`].
pub fn limits_from(l: Option<pb::RunLimits>) -> Result<RunLimits, CoordinatorError> {
    let l = l
        .map(|l| RunLimits {
            upload_concurrency: l.upload_concurrency,
            upload_bandwidth: l.upload_bandwidth,
            nodes_at_once: l.nodes_at_once,
        })
        .unwrap_or_default();
    if l.upload_concurrency > MAX_UPLOAD_CONCURRENCY {
        return Err(CoordinatorError::invalid(format!(
            "concurrency {} is over the limit of {MAX_UPLOAD_CONCURRENCY} parts in flight per node",
            l.upload_concurrency
        )));
    }
    Ok(l)
}

/// Limits as shown.
pub fn limits_to(l: RunLimits) -> pb::RunLimits {
    pb::RunLimits {
        upload_concurrency: l.upload_concurrency,
        upload_bandwidth: l.upload_bandwidth,
        nodes_at_once: l.nodes_at_once,
    }
}

/// A schedule with its recent events as shown.
pub fn schedule_view(s: &ScheduleRow, events: &[ScheduleEventRow]) -> pb::Schedule {
    pb::Schedule {
        id: s.id.clone(),
        cron: s.cron.clone(),
        keyspaces: s.keyspaces.clone(),
        tables: s.tables.clone(),
        cluster_name: s.cluster_name.clone(),
        retention: Some(pb::RetentionPolicy {
            keep_last: s.keep_last,
            keep_days: s.keep_days,
        }),
        limits: Some(limits_to(s.limits)),
        missed: s.missed.clone(),
        paused: s.paused,
        next_due_unix_ms: if s.paused { 0 } else { s.next_due_ms },
        recent: events
            .iter()
            .map(|e| pb::ScheduleEvent {
                due_unix_ms: e.due_ms,
                at_unix_ms: e.at_ms,
                outcome: e.outcome.clone(),
                run_id: e.run_id.clone(),
                detail: e.detail.clone(),
            })
            .collect(),
        restore_test: false,
        last_restore_test: None,
    }
}

/// A verify report as sent.
pub fn verify_report(r: &crate::verify::VerifyReport) -> pb::VerifyReport {
    pb::VerifyReport {
        run_id: r.run_id.clone(),
        deep: r.deep,
        files: r.files,
        blobs: r.blobs,
        bytes: r.bytes,
        bytes_read: r.bytes_read,
        ok: r.ok(),
        elapsed_ms: r.elapsed_ms,
        tables: r
            .tables
            .iter()
            .map(|t| pb::VerifyTable {
                host_id: t.host_id.clone(),
                address: t.address.clone(),
                keyspace: t.keyspace.clone(),
                table: t.table.clone(),
                files: t.files,
                bytes: t.bytes,
                problems: t.problems,
            })
            .collect(),
        problems: r
            .problems
            .iter()
            .map(|p| pb::VerifyProblem {
                host_id: p.host_id.clone(),
                address: p.address.clone(),
                keyspace: p.keyspace.clone(),
                table: p.table.clone(),
                name: p.name.clone(),
                hash: p.hash.clone(),
                kind: p.kind.to_string(),
                detail: p.detail.clone(),
            })
            .collect(),
    }
}

/// A purge report as sent.
pub fn purge_report(r: &crate::purge::PurgeReport) -> pb::PurgeReport {
    pb::PurgeReport {
        dry_run: r.dry_run,
        backups_kept: r.backups_kept,
        runs_deleted: r
            .runs_deleted
            .iter()
            .map(|e| pb::PurgedRun {
                run_id: e.run_id.clone(),
                tag: e.tag.clone(),
                cluster_name: e.cluster_name.clone(),
                group: e.group.clone(),
                committed_unix_ms: e.committed_unix_ms,
                reason: e.reason.clone(),
            })
            .collect(),
        blobs_total: r.blobs_total,
        blobs_referenced: r.blobs_referenced,
        blobs_deleted: r.blobs_deleted,
        bytes_deleted: r.bytes_deleted,
        blobs_too_young: r.blobs_too_young,
        objects_deleted: r.objects_deleted,
        delete_requests: r.delete_requests,
        leftovers_deleted: r.leftovers_deleted,
        elapsed_ms: r.elapsed_ms,
        blobs_age_unknown: r.blobs_age_unknown,
        blobs_protected_late: r.blobs_protected_late,
        foreign_kept: r.foreign_kept,
    }
}

/// Builds the CLI's view of a run from its rows.
pub fn run_view(v: &RunView) -> pb::Run {
    let (r, nodes, tables) = (&v.run, &v.nodes, &v.tables);
    pb::Run {
        id: r.id.clone(),
        kind: r.kind.as_str().into(),
        tag: r.tag.clone(),
        cluster_name: r.cluster_name.clone(),
        state: r.state.as_str().into(),
        stage: r.stage.as_str().into(),
        keyspaces: r.keyspaces.clone(),
        tables: r.tables.clone(),
        store_url: ringvault_common::store::redact_url(&r.store_url),
        created_unix_ms: r.created_ms,
        finished_unix_ms: r.finished_ms,
        error: r.error.clone(),
        source_run_id: r.source_run_id.clone(),
        limits: Some(pb::RunLimits {
            upload_concurrency: r.limits.upload_concurrency,
            upload_bandwidth: r.limits.upload_bandwidth,
            nodes_at_once: r.limits.nodes_at_once,
        }),
        schedule_id: r.schedule_id.clone(),
        nodes: nodes
            .iter()
            .map(|n| pb::NodeProgress {
                host_id: n.host_id.clone(),
                address: n.address.clone(),
                state: n.state.to_text(),
                files_total: n.files_total,
                files_done: n.files_done,
                bytes_total: n.bytes_total,
                bytes_done: n.bytes_done,
                bytes_uploaded: n.bytes_uploaded,
                files_uploaded: n.files_uploaded,
                error: n.error.clone(),
                worker_address: n.worker_address.clone(),
                snapshot: n.snapshot.as_str().into(),
                retries: n.retries,
            })
            .collect(),
        datacenters: v.datacenters.clone(),
        table_summaries: tables
            .iter()
            .map(|t| pb::TableSummary {
                keyspace: t.keyspace.clone(),
                table: t.table.clone(),
                files: t.files,
                bytes: t.bytes,
            })
            .collect(),
        last_restore_test: None,
        restore_test: None,
    }
}

/// A registered worker as listed; `alive` as judged by the coordinator.
pub fn worker_status(w: WorkerRow, alive: bool) -> pb::WorkerStatus {
    pb::WorkerStatus {
        alive,
        last_seen_unix_ms: w.last_seen_ms,
        node: Some(pb::NodeInfo {
            cluster_name: w.cluster_name,
            host_id: w.host_id,
            address: w.address,
            datacenter: w.datacenter,
            rack: w.rack,
            tokens: w.tokens,
            data_dirs: w.data_dirs,
            cassandra_version: w.cassandra_version,
            worker_address: w.worker_address,
            instance_id: String::new(),
            free_bytes: Vec::new(),
            partitioner: String::new(),
        }),
    }
}

/// Validates a keyspace/table selection: plain names, never a keyspace without data of its own
/// (`system`, `system_schema`, the virtual ones), and tables only with exactly one keyspace.
pub fn selection(
    keyspaces: &[String],
    tables: &[String],
) -> Result<(Vec<Identifier>, Vec<Identifier>), CoordinatorError> {
    if let Some(k) = keyspaces.iter().find(|k| {
        ringvault_common::cql::NON_DATA_KEYSPACES
            .iter()
            .any(|s| s.eq_ignore_ascii_case(k))
    }) {
        return Err(CoordinatorError::invalid(format!(
            "keyspace {k} cannot be backed up or restored: {} hold node-local state, the schema \
             (saved with every backup and recreated from it) or virtual tables, not data",
            ringvault_common::cql::NON_DATA_KEYSPACES.join(", ")
        )));
    }
    let parse = |what, names: &[String]| {
        names
            .iter()
            .map(|n| Identifier::parse(what, n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CoordinatorError::invalid(e.to_string()))
    };
    let keyspaces = parse("keyspace", keyspaces)?;
    let tables = parse("table", tables)?;
    if !tables.is_empty() && keyspaces.len() != 1 {
        return Err(CoordinatorError::invalid(
            "a table selection needs exactly one keyspace (-k KEYSPACE -t TABLE)",
        ));
    }
    Ok((keyspaces, tables))
}

/// Tables or problems per verify message (each a few hundred bytes).
const VERIFY_CHUNK: usize = 2_000;

/// A verify report as a stream's messages: its tables and problems in chunks, then the report
/// itself — never one message the size of the backup.
pub fn verify_events(r: &crate::verify::VerifyReport) -> (Vec<pb::VerifyEvent>, pb::VerifyEvent) {
    let mut report = verify_report(r);
    let tables = std::mem::take(&mut report.tables);
    let problems = std::mem::take(&mut report.problems);
    let event = |e| pb::VerifyEvent { event: Some(e) };
    let mut events: Vec<pb::VerifyEvent> = tables
        .chunks(VERIFY_CHUNK)
        .map(|c| {
            event(pb::verify_event::Event::Tables(pb::VerifyTables {
                tables: c.to_vec(),
            }))
        })
        .collect();
    events.extend(problems.chunks(VERIFY_CHUNK).map(|c| {
        event(pb::verify_event::Event::Problems(pb::VerifyProblems {
            problems: c.to_vec(),
        }))
    }));
    (events, event(pb::verify_event::Event::Report(report)))
}
