//! The closed sets of states a run, its stages and its nodes move through. Each is stored in
//! SQLite and shown to the CLI by its name (`as_str`), and read back with `parse`: a typo is a
//! compile error, an unknown stored name a decoding error, never a silent new state.
use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// An enum stored by name: `as_str`, `parse`, `ALL` (in declaration order), `Display`, and
/// SQLite conversions.
macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vm])* $var),+ }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            /// As stored and shown.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }

            /// The value stored as `s`.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$var),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = v.as_str()?;
                Self::parse(s).ok_or_else(|| {
                    FromSqlError::Other(format!("unknown {} {s:?}", stringify!($name)).into())
                })
            }
        }
    };
}

named_enum!(
    /// What a run does.
    RunKind {
        Backup => "backup",
        Restore => "restore",
        /// A test restore into scratch keyspaces (`verify --restore-test`).
        RestoreTest => "restore_test",
    }
);

named_enum!(
    /// Where a run is as a whole.
    RunState {
        Running => "RUNNING",
        Done => "DONE",
        Failed => "FAILED",
        Cancelled => "CANCELLED",
    }
);

impl RunState {
    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        self != Self::Running
    }
}

named_enum!(
    /// Stages of a backup, in the order a run passes them (a resumed run restarts at the
    /// stage it was in).
    BackupStage {
        Plan => "plan",
        Snapshot => "snapshot",
        Schema => "schema",
        Upload => "upload",
        Commit => "commit",
        Cleanup => "cleanup",
        Done => "done",
    }
);

named_enum!(
    /// Stages of a restore, in order; `Import` and `Load` are the two ways data goes in.
    RestoreStage {
        Plan => "plan",
        Schema => "schema",
        Download => "download",
        Import => "import",
        Load => "load",
        Cleanup => "cleanup",
        Done => "done",
    }
);

named_enum!(
    /// Stages of a test restore, in order: scratch schema, download, load into the scratch
    /// tables, count and compare, drop the scratch keyspaces.
    TestRestoreStage {
        Plan => "plan",
        Schema => "schema",
        Download => "download",
        Load => "load",
        Count => "count",
        Cleanup => "cleanup",
        Done => "done",
    }
);

/// The stage of a run of any kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStage {
    Backup(BackupStage),
    Restore(RestoreStage),
    RestoreTest(TestRestoreStage),
}

impl RunStage {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backup(s) => s.as_str(),
            Self::Restore(s) => s.as_str(),
            Self::RestoreTest(s) => s.as_str(),
        }
    }

    /// The stage stored as `s` for a run of `kind`.
    pub fn parse(kind: RunKind, s: &str) -> Option<Self> {
        match kind {
            RunKind::Backup => BackupStage::parse(s).map(Self::Backup),
            RunKind::Restore => RestoreStage::parse(s).map(Self::Restore),
            RunKind::RestoreTest => TestRestoreStage::parse(s).map(Self::RestoreTest),
        }
    }

    /// The backup stage, if this is one.
    pub fn backup(self) -> Option<BackupStage> {
        match self {
            Self::Backup(s) => Some(s),
            Self::Restore(_) | Self::RestoreTest(_) => None,
        }
    }
}

impl fmt::Display for RunStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for RunStage {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

named_enum!(
    /// What is known of a node's snapshot for this run: whether `clearsnapshot` is owed.
    #[derive(Default)]
    SnapshotMark {
        #[default]
        None => "none",
        Requested => "requested",
        Taken => "taken",
        Cleared => "cleared",
    }
);

impl SnapshotMark {
    /// Whether the node may hold the run's snapshot (so cleanup must clear it).
    pub fn may_exist(self) -> bool {
        matches!(self, Self::Requested | Self::Taken)
    }
}

/// Where one node is in a run. Importing and loading name the table being worked on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NodeState {
    #[default]
    Planned,
    Waiting,
    Snapshotting,
    SnapshotTaken,
    Uploading,
    Uploaded,
    Downloading,
    Staged,
    /// `nodetool import` of `keyspace.table`.
    Importing(String),
    /// sstableloader of `keyspace.table` (and where to, for a test restore).
    Loading(String),
    /// A test restore's tables are loaded into the scratch keyspaces.
    Loaded,
    Done,
    Failed,
}

impl NodeState {
    /// As stored and shown.
    pub fn to_text(&self) -> String {
        match self {
            Self::Importing(t) => format!("IMPORTING {t}"),
            Self::Loading(t) => format!("LOADING {t}"),
            other => other.fixed_name().to_string(),
        }
    }

    fn fixed_name(&self) -> &'static str {
        match self {
            Self::Planned => "PLANNED",
            Self::Waiting => "WAITING",
            Self::Snapshotting => "SNAPSHOTTING",
            Self::SnapshotTaken => "SNAPSHOT_TAKEN",
            Self::Uploading => "UPLOADING",
            Self::Uploaded => "UPLOADED",
            Self::Downloading => "DOWNLOADING",
            Self::Staged => "STAGED",
            Self::Importing(_) => "IMPORTING",
            Self::Loading(_) => "LOADING",
            Self::Loaded => "LOADED",
            Self::Done => "DONE",
            Self::Failed => "FAILED",
        }
    }

    /// The state stored as `s`.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(t) = s.strip_prefix("IMPORTING ") {
            return Some(Self::Importing(t.to_string()));
        }
        if let Some(t) = s.strip_prefix("LOADING ") {
            return Some(Self::Loading(t.to_string()));
        }
        [
            Self::Planned,
            Self::Waiting,
            Self::Snapshotting,
            Self::SnapshotTaken,
            Self::Uploading,
            Self::Uploaded,
            Self::Downloading,
            Self::Staged,
            Self::Loaded,
            Self::Done,
            Self::Failed,
        ]
        .into_iter()
        .find(|x| x.fixed_name() == s)
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl ToSql for NodeState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_text()))
    }
}

impl FromSql for NodeState {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        Self::parse(s)
            .ok_or_else(|| FromSqlError::Other(format!("unknown node state {s:?}").into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in RunState::ALL {
            assert_eq!(RunState::parse(s.as_str()), Some(*s));
        }
        for s in BackupStage::ALL {
            assert_eq!(
                RunStage::parse(RunKind::Backup, s.as_str()),
                Some(RunStage::Backup(*s))
            );
        }
        for s in RestoreStage::ALL {
            assert_eq!(
                RunStage::parse(RunKind::Restore, s.as_str()),
                Some(RunStage::Restore(*s))
            );
        }
        for s in SnapshotMark::ALL {
            assert_eq!(SnapshotMark::parse(s.as_str()), Some(*s));
        }
        for s in [
            NodeState::Waiting,
            NodeState::SnapshotTaken,
            NodeState::Importing("ks.t".into()),
            NodeState::Loading("ks.t".into()),
            NodeState::Failed,
        ] {
            assert_eq!(NodeState::parse(&s.to_text()), Some(s));
        }
        assert_eq!(NodeState::parse("UPLOADNG"), None);
        assert_eq!(RunStage::parse(RunKind::Backup, "download"), None);
    }

    #[test]
    fn backup_stages_are_ordered_as_a_run_passes_them() {
        assert!(BackupStage::Plan < BackupStage::Snapshot);
        assert!(BackupStage::Snapshot < BackupStage::Schema);
        assert!(BackupStage::Upload < BackupStage::Commit);
        assert!(BackupStage::Commit < BackupStage::Cleanup);
        assert!(BackupStage::ALL.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn unknown_stored_names_fail_to_decode() {
        let c = rusqlite::Connection::open_in_memory().expect("sqlite");
        let r: rusqlite::Result<RunState> = c.query_row("SELECT 'RUNING'", [], |r| r.get(0));
        assert!(r.is_err());
        let ok: RunState = c
            .query_row("SELECT 'DONE'", [], |r| r.get(0))
            .expect("decodes");
        assert_eq!(ok, RunState::Done);
    }
}
