//! Live state of runs in progress: a `watch` channel per run carrying the whole [`pb::Run`]
//! view (the CLI's `WatchRun` subscribes to it), plus the run's cancellation token. Persisting
//! that view to SQLite is batched by the run driver, never done per event.
use ringvault_proto::v1 as pb;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// States a run moves through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Done,
    Failed,
    Cancelled,
}

impl RunState {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Done => "DONE",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// Stages of a backup run, persisted as the run moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Plan,
    Snapshot,
    Schema,
    Upload,
    Commit,
    Download,
    Import,
    Load,
    Cleanup,
    Done,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 10] = [
        Self::Plan,
        Self::Snapshot,
        Self::Schema,
        Self::Upload,
        Self::Commit,
        Self::Download,
        Self::Import,
        Self::Load,
        Self::Cleanup,
        Self::Done,
    ];

    /// The stage stored as `s`.
    pub fn parse(s: &str) -> Option<Stage> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plan => "plan",
            Self::Snapshot => "snapshot",
            Self::Schema => "schema",
            Self::Upload => "upload",
            Self::Commit => "commit",
            Self::Download => "download",
            Self::Import => "import",
            Self::Load => "load",
            Self::Cleanup => "cleanup",
            Self::Done => "done",
        }
    }
}

/// A run in progress in this process.
pub struct RunHandle {
    pub id: String,
    pub cluster_name: String,
    pub view: watch::Sender<pb::Run>,
    pub cancel: CancellationToken,
}

impl RunHandle {
    /// A handle publishing `initial`.
    pub fn new(initial: pb::Run) -> Self {
        let (view, _) = watch::channel(initial.clone());
        Self {
            id: initial.id,
            cluster_name: initial.cluster_name,
            view,
            cancel: CancellationToken::new(),
        }
    }

    /// Changes the published view.
    pub fn update(&self, f: impl FnOnce(&mut pb::Run)) {
        self.view.send_modify(f);
    }

    /// Changes one node's entry.
    pub fn update_node(&self, host_id: &str, f: impl FnOnce(&mut pb::NodeProgress)) {
        self.view.send_modify(|r| {
            if let Some(n) = r.nodes.iter_mut().find(|n| n.host_id == host_id) {
                f(n);
            }
        });
    }

    /// The current view.
    pub fn snapshot(&self) -> pb::Run {
        self.view.borrow().clone()
    }
}
