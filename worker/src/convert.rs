//! Proto ↔ domain conversions of the worker's gRPC edge, in one place: request fields are
//! parsed into validated domain types (a bad field is [`WorkerError::Invalid`]), and domain
//! events and rows become proto messages.
use ringvault_common::manifest::HostId;
use ringvault_common::{Identifier, RunId, SnapshotTag};
use ringvault_proto::v1 as pb;

use crate::error::{Result, WorkerError};
use crate::restore::{DownloadEvent, ManifestSelection, StagedFile};
use crate::staged::StagedTable;
use crate::upload::UploadEvent;

/// A snapshot tag from a request.
pub fn tag(tag: &str) -> Result<SnapshotTag> {
    SnapshotTag::parse(tag).map_err(WorkerError::invalid)
}

/// A backup run id from a request.
pub fn run_id(id: &str) -> Result<RunId> {
    RunId::parse(id).map_err(WorkerError::invalid)
}

/// A restore attempt id from a request.
pub fn attempt_id(id: &str) -> Result<RunId> {
    RunId::parse(id).map_err(|e| WorkerError::invalid(format!("attempt_id: {e}")))
}

/// A table name from a request.
pub fn table_name(name: &str) -> Result<Identifier> {
    Identifier::parse("table", name).map_err(WorkerError::invalid)
}

/// The staged table an Import or Load names.
pub fn staged_table(t: Option<pb::StagedTable>) -> Result<StagedTable> {
    let t = t.ok_or_else(|| WorkerError::invalid("table is required"))?;
    Ok(StagedTable {
        run: run_id(&t.backup_run_id)?,
        attempt: attempt_id(&t.attempt_id)?,
        host: HostId::parse(&t.source_host_id).map_err(WorkerError::invalid)?,
        keyspace: Identifier::parse("keyspace", &t.keyspace).map_err(WorkerError::invalid)?,
        table: table_name(&t.table)?,
    })
}

/// One file a Download lists.
pub fn staged_file(f: pb::RestoreFile) -> Result<StagedFile> {
    let bad = |e: &dyn std::fmt::Display| WorkerError::invalid(format!("file {:?}: {e}", f.name));
    Ok(StagedFile {
        source_host: HostId::parse(&f.source_host_id).map_err(|e| bad(&e))?,
        keyspace: Identifier::parse("keyspace", &f.keyspace).map_err(|e| bad(&e))?,
        table: Identifier::parse("table", &f.table).map_err(|e| bad(&e))?,
        name: ringvault_common::RelativeName::parse(&f.name).map_err(|e| bad(&e))?,
        size: f.size,
        hash: ringvault_common::hash::ContentHash::parse(&f.hash).map_err(|e| bad(&e))?,
    })
}

/// One node manifest's selection a Download names.
pub fn manifest_selection(s: pb::ManifestSelection) -> Result<ManifestSelection> {
    let source_host = HostId::parse(&s.source_host_id)
        .map_err(|e| WorkerError::invalid(format!("from_manifests: {e}")))?;
    let tables = s
        .tables
        .into_iter()
        .map(|t| {
            Ok((
                Identifier::parse("keyspace", &t.keyspace).map_err(WorkerError::invalid)?,
                table_name(&t.table)?,
            ))
        })
        .collect::<Result<_>>()?;
    Ok(ManifestSelection {
        source_host,
        tables,
        files: s.files,
        bytes: s.bytes,
    })
}

/// An uploader event as streamed to the coordinator.
pub fn upload_event(ev: UploadEvent) -> pb::UploadEvent {
    use pb::upload_event::Event;
    let event = match ev {
        UploadEvent::Plan { files, bytes } => Event::Plan(pb::UploadPlan {
            total_files: files,
            total_bytes: bytes,
        }),
        UploadEvent::Progress { bytes } => {
            Event::Progress(pb::UploadProgress { bytes_read: bytes })
        }
        UploadEvent::FileDone {
            entry,
            mtime_ns,
            uploaded,
            hash_cached,
        } => Event::File(pb::FileDone {
            file: Some(pb::FileEntry {
                keyspace: entry.keyspace.to_string(),
                table: entry.table.to_string(),
                table_id: entry.table_id,
                name: entry.name.to_string(),
                size: entry.size,
                hash: entry.hash.to_string(),
                mtime_unix_ms: (mtime_ns / 1_000_000) as i64,
                data_dir_index: entry.data_dir_index,
                sstable: entry.sstable.map(|s| pb::SstableStats {
                    partitions: s.partitions,
                    rows: s.rows,
                    min_timestamp: s.min_timestamp,
                    max_timestamp: s.max_timestamp,
                    has_tombstones: s.has_tombstones,
                }),
            }),
            uploaded,
            hash_cached,
        }),
    };
    pb::UploadEvent { event: Some(event) }
}

/// A download event as streamed to the coordinator.
pub fn download_event(ev: DownloadEvent) -> pb::DownloadEvent {
    use pb::download_event::Event;
    let event = match ev {
        DownloadEvent::Plan {
            files,
            bytes,
            present,
        } => Event::Plan(pb::DownloadPlan {
            total_files: files,
            total_bytes: bytes,
            present_files: present,
        }),
        DownloadEvent::Progress { bytes } => Event::Progress(pb::DownloadProgress { bytes }),
        DownloadEvent::FileDone {
            file,
            already_staged,
        } => Event::File(pb::DownloadFileDone {
            file: Some(pb::RestoreFile {
                source_host_id: file.source_host.to_string(),
                keyspace: file.keyspace.to_string(),
                table: file.table.to_string(),
                name: file.name.to_string(),
                size: file.size,
                hash: file.hash.to_string(),
            }),
            already_staged,
        }),
    };
    pb::DownloadEvent { event: Some(event) }
}

/// A ring member.
pub fn ring_node(n: crate::topology::RingNode) -> pb::RingNode {
    pb::RingNode {
        host_id: n.host_id,
        address: n.address,
        datacenter: n.datacenter,
        rack: n.rack,
    }
}

/// A table of the live schema.
pub fn table_ref(t: crate::cql::TableInfo) -> pb::TableRef {
    pb::TableRef {
        keyspace: t.keyspace,
        table: t.table,
        table_id: t.id,
    }
}

/// A row of the schema description.
pub fn schema_row(r: crate::cql::SchemaRow) -> pb::SchemaRow {
    pb::SchemaRow {
        keyspace: r.keyspace,
        kind: r.kind,
        name: r.name,
        statement: r.statement,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn staged(run: &str, attempt: &str, ks: &str) -> Option<pb::StagedTable> {
        Some(pb::StagedTable {
            backup_run_id: run.into(),
            attempt_id: attempt.into(),
            source_host_id: "2a3b4c5d-0000-4000-8000-000000000001".into(),
            keyspace: ks.into(),
            table: "t".into(),
        })
    }

    #[test]
    fn a_bad_staged_table_is_invalid_naming_the_field() {
        let run = RunId::new().to_string();
        assert!(staged_table(staged(&run, &run, "ks")).is_ok());
        let e = staged_table(None).unwrap_err();
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            (Code::InvalidArgument, "table is required")
        );
        let e = staged_table(staged(&run, "../x", "ks")).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.to_string().starts_with("attempt_id: "), "{e}");
        let e = staged_table(staged(&run, &run, "../ks")).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }

    #[test]
    fn a_bad_download_file_is_invalid_naming_the_file() {
        let f = pb::RestoreFile {
            source_host_id: "2a3b4c5d-0000-4000-8000-000000000001".into(),
            keyspace: "ks".into(),
            table: "t".into(),
            name: "../../etc/passwd".into(),
            size: 1,
            hash: String::new(),
        };
        let e = staged_file(f).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.to_string().starts_with("file \"../../etc/passwd\": "),
            "{e}"
        );
    }
}
