//! Runs: the typed states a run, its stages and its nodes pass through ([`state`]); the one
//! owner of which runs are in progress and of the purge lock ([`registry`]); the live view of a
//! run in progress ([`handle`], [`view`]); and what every kind of run does the same way —
//! record its start, persist its nodes' progress, record its end ([`lifecycle`]).
pub mod handle;
pub mod lifecycle;
pub mod registry;
pub mod state;
pub mod view;

pub use handle::RunHandle;
pub use registry::RunRegistry;
pub use state::{
    BackupStage, NodeState, RestoreStage, RunKind, RunStage, RunState, SnapshotMark,
    TestRestoreStage,
};
pub use view::RunView;
