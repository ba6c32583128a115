//! A run in progress in this process: a `watch` channel carrying its whole [`RunView`] (the
//! CLI's `WatchRun` subscribes to it) and its cancellation token. Persisting the view to SQLite
//! is batched by the run driver, never done per event.
use std::collections::HashMap;

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
    /// Each node's position in the view's node list, by host id: every file event updates its
    /// node, and a scan of a 1,000-node list per event was most of the coordinator's CPU.
    node_index: HashMap<String, usize>,
}

impl RunHandle {
    /// A handle publishing `initial`.
    pub fn new(initial: RunView) -> Self {
        let id = initial.run.id.clone();
        let cluster_name = initial.run.cluster_name.clone();
        let node_index = initial
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.host_id.clone(), i))
            .collect();
        let (view, _) = watch::channel(initial);
        Self {
            id,
            cluster_name,
            view,
            cancel: CancellationToken::new(),
            node_index,
        }
    }

    /// Changes the published view.
    pub fn update(&self, f: impl FnOnce(&mut RunView)) {
        self.view.send_modify(f);
    }

    /// Changes one node's entry.
    pub fn update_node(&self, host_id: &str, f: impl FnOnce(&mut RunNodeRow)) {
        let at = self.node_index.get(host_id).copied();
        self.view.send_modify(|r| {
            // The index is checked, not trusted: a view whose node list changed is scanned.
            let i = at
                .filter(|&i| r.nodes.get(i).is_some_and(|n| n.host_id == host_id))
                .or_else(|| r.nodes.iter().position(|n| n.host_id == host_id));
            if let Some(n) = i.and_then(|i| r.nodes.get_mut(i)) {
                f(n);
            }
        });
    }

    /// The current view.
    pub fn snapshot(&self) -> RunView {
        self.view.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::view::tests::view;

    #[test]
    fn update_node_changes_only_the_named_node() {
        let nodes: Vec<RunNodeRow> = ["h0", "h1", "h2"]
            .iter()
            .map(|h| RunNodeRow {
                host_id: (*h).into(),
                ..Default::default()
            })
            .collect();
        let mut initial = view("r", "c");
        initial.nodes = nodes;
        let handle = RunHandle::new(initial);
        handle.update_node("h1", |n| n.files_done += 2);
        handle.update_node("h1", |n| n.files_done += 1);
        handle.update_node("absent", |n| n.files_done += 100);
        let done: Vec<u64> = handle
            .snapshot()
            .nodes
            .iter()
            .map(|n| n.files_done)
            .collect();
        assert_eq!(done, vec![0, 3, 0]);
        // A view whose node list was reordered is still updated by host id.
        handle.update(|v| v.nodes.reverse());
        handle.update_node("h0", |n| n.files_done += 5);
        let got: Vec<(String, u64)> = handle
            .snapshot()
            .nodes
            .iter()
            .map(|n| (n.host_id.clone(), n.files_done))
            .collect();
        assert_eq!(
            got,
            vec![("h2".into(), 0), ("h1".into(), 3), ("h0".into(), 5)]
        );
    }
}
