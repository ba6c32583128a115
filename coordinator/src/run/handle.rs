//! A run in progress in this process: a `watch` channel carrying its whole [`RunView`] (the
//! CLI's `WatchRun` subscribes to it) and its cancellation token. Persisting the view to SQLite
//! is batched by the run driver, never done per event.
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::view::RunView;
use crate::db::RunNodeRow;

/// A run in progress in this process.
pub struct RunHandle {
    pub id: String,
    pub cluster_name: String,
    pub view: watch::Sender<RunView>,
    pub cancel: CancellationToken,
}

impl RunHandle {
    /// A handle publishing `initial`.
    pub fn new(initial: RunView) -> Self {
        let id = initial.run.id.clone();
        let cluster_name = initial.run.cluster_name.clone();
        let (view, _) = watch::channel(initial);
        Self {
            id,
            cluster_name,
            view,
            cancel: CancellationToken::new(),
        }
    }

    /// Changes the published view.
    pub fn update(&self, f: impl FnOnce(&mut RunView)) {
        self.view.send_modify(f);
    }

    /// Changes one node's entry.
    pub fn update_node(&self, host_id: &str, f: impl FnOnce(&mut RunNodeRow)) {
        self.view.send_modify(|r| {
            if let Some(n) = r.nodes.iter_mut().find(|n| n.host_id == host_id) {
                f(n);
            }
        });
    }

    /// The current view.
    pub fn snapshot(&self) -> RunView {
        self.view.borrow().clone()
    }
}
