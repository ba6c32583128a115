//! The coordinator's Prometheus `/metrics` page (`--metrics-listen`). Every value is computed
//! at scrape time from SQLite (through the read-only queries of [`crate::db`]), not kept in
//! memory, so counters and the last-backup time survive restarts and agree with `runs list`.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use ringvault_common::metrics::{MetricsText, NO_LABELS};

use crate::Coordinator;
use crate::db::{ClusterFileTotals, RunStateCount};
use crate::run::{RunKind, RunState};

const KINDS: &[RunKind] = RunKind::ALL;
const STATES: &[RunState] = RunState::ALL;

/// Binds `addr` and serves `GET /metrics` for `coord` on a spawned task.
pub async fn spawn(addr: SocketAddr, coord: Arc<Coordinator>) -> anyhow::Result<()> {
    let listener = ringvault_common::metrics::bind(addr)
        .await
        .with_context(|| format!("binding metrics listener {addr}"))?;
    tracing::info!(listen = %addr, "metrics serving");
    ringvault_common::metrics::serve(listener, move || {
        let coord = Arc::clone(&coord);
        async move { render(&coord).await.map_err(|e| format!("{e:#}")) }
    });
    Ok(())
}

/// What one scrape reads from the database.
struct Snapshot {
    runs: Vec<RunStateCount>,
    files: Vec<ClusterFileTotals>,
    last_backups: Vec<(String, i64)>,
    workers: Vec<(String, i64)>,
}

/// Renders the page from the database.
pub async fn render(coord: &Coordinator) -> anyhow::Result<String> {
    let snap = coord
        .db
        .call(|db| {
            Ok(Snapshot {
                runs: db.run_state_counts()?,
                files: db.backup_file_totals()?,
                last_backups: db.last_successful_backups()?,
                workers: db.worker_last_seen()?,
            })
        })
        .await
        .context("reading metrics from the database")?;
    let workers: Vec<(String, bool)> = snap
        .workers
        .into_iter()
        .map(|(cluster, seen)| {
            let up = coord.alive(seen);
            (cluster, up)
        })
        .collect();
    let mut page = format(&snap.runs, &snap.files, &snap.last_backups, &workers);
    page.push_str(&crate::restore_test::metrics_text(coord).await?);
    Ok(page)
}

/// The page for these aggregates; `workers` is (cluster, up) per worker.
fn format(
    runs: &[RunStateCount],
    files: &[ClusterFileTotals],
    last_backups: &[(String, i64)],
    workers: &[(String, bool)],
) -> String {
    let mut m = MetricsText::new();
    m.gauge(
        "ringvault_coordinator_up",
        "1 while the coordinator serves.",
        [(NO_LABELS, 1.0)],
    );
    m.gauge(
        "ringvault_build_info",
        "Version of this ringvault coordinator; the value is always 1.",
        [([("version", env!("CARGO_PKG_VERSION"))], 1.0)],
    );

    // Every (kind, state) pair is present, zero when no run has it, so series do not vanish.
    let mut by_kind_state: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for k in KINDS {
        for s in STATES {
            by_kind_state.insert((k.as_str(), s.as_str()), 0);
        }
    }
    for r in runs {
        *by_kind_state
            .entry((r.kind.as_str(), r.state.as_str()))
            .or_default() += r.runs;
    }
    m.gauge(
        "ringvault_runs",
        "Runs recorded by the coordinator, by kind and state.",
        by_kind_state
            .iter()
            .map(|((k, s), n)| ([("kind", *k), ("state", *s)], *n as f64)),
    );
    let mut failed: BTreeMap<&str, u64> = KINDS.iter().map(|k| (k.as_str(), 0)).collect();
    for r in runs.iter().filter(|r| r.state == RunState::Failed) {
        *failed.entry(r.kind.as_str()).or_default() += r.runs;
    }
    m.counter(
        "ringvault_run_errors_total",
        "Runs that ended FAILED, by kind.",
        failed.iter().map(|(k, n)| ([("kind", *k)], *n as f64)),
    );

    let per_cluster = |f: fn(&ClusterFileTotals) -> u64| {
        files
            .iter()
            .map(move |t| ([("cluster", t.cluster.as_str())], f(t) as f64))
    };
    m.counter(
        "ringvault_backup_files_uploaded_total",
        "Files backup runs uploaded to the store.",
        per_cluster(|t| t.files_uploaded),
    );
    m.counter(
        "ringvault_backup_bytes_uploaded_total",
        "Bytes backup runs uploaded to the store.",
        per_cluster(|t| t.bytes_uploaded),
    );
    m.counter(
        "ringvault_backup_files_skipped_total",
        "Files backup runs recorded without uploading: their content was already in the store.",
        per_cluster(|t| t.files_skipped),
    );
    m.counter(
        "ringvault_backup_bytes_skipped_total",
        "Bytes backup runs recorded without uploading: their content was already in the store.",
        per_cluster(|t| t.bytes_skipped),
    );
    m.gauge(
        "ringvault_last_successful_backup_timestamp_seconds",
        "When the newest backup run that ended DONE finished, in seconds since the Unix epoch.",
        last_backups
            .iter()
            .map(|(c, ms)| ([("cluster", c.as_str())], *ms as f64 / 1000.0)),
    );

    let mut up_down: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (cluster, up) in workers {
        up_down.entry((cluster, "up")).or_default();
        up_down.entry((cluster, "down")).or_default();
        *up_down
            .entry((cluster, if *up { "up" } else { "down" }))
            .or_default() += 1;
    }
    m.gauge(
        "ringvault_workers",
        "Registered workers by cluster, up (heard from within --worker-timeout-ms) or down.",
        up_down
            .iter()
            .map(|((c, s), n)| ([("cluster", *c), ("state", *s)], *n as f64)),
    );
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_zeroes_filled_in() {
        let runs = vec![
            RunStateCount {
                kind: RunKind::Backup,
                state: RunState::Done,
                runs: 2,
            },
            RunStateCount {
                kind: RunKind::Backup,
                state: RunState::Failed,
                runs: 1,
            },
        ];
        let files = vec![ClusterFileTotals {
            cluster: "Test \"Cluster\"".into(),
            files_uploaded: 3,
            bytes_uploaded: 300,
            files_skipped: 4,
            bytes_skipped: 400,
        }];
        let last = vec![("Test \"Cluster\"".to_string(), 1_700_000_000_500)];
        let workers = vec![
            ("Test \"Cluster\"".to_string(), true),
            ("Test \"Cluster\"".to_string(), false),
            ("Test \"Cluster\"".to_string(), true),
        ];
        let page = format(&runs, &files, &last, &workers);
        let c = "cluster=\"Test \\\"Cluster\\\"\"";
        for line in [
            "ringvault_coordinator_up 1".to_string(),
            format!(
                "ringvault_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
            "ringvault_runs{kind=\"backup\",state=\"DONE\"} 2".into(),
            "ringvault_runs{kind=\"backup\",state=\"FAILED\"} 1".into(),
            "ringvault_runs{kind=\"restore\",state=\"CANCELLED\"} 0".into(),
            "ringvault_run_errors_total{kind=\"backup\"} 1".into(),
            "ringvault_run_errors_total{kind=\"restore\"} 0".into(),
            format!("ringvault_backup_files_uploaded_total{{{c}}} 3"),
            format!("ringvault_backup_bytes_uploaded_total{{{c}}} 300"),
            format!("ringvault_backup_files_skipped_total{{{c}}} 4"),
            format!("ringvault_backup_bytes_skipped_total{{{c}}} 400"),
            format!("ringvault_last_successful_backup_timestamp_seconds{{{c}}} 1700000000.5"),
            format!("ringvault_workers{{{c},state=\"down\"}} 1"),
            format!("ringvault_workers{{{c},state=\"up\"}} 2"),
            "# TYPE ringvault_runs gauge".into(),
            "# TYPE ringvault_backup_files_skipped_total counter".into(),
        ] {
            assert!(
                page.lines().any(|l| l == line),
                "missing {line:?} in\n{page}"
            );
        }
        assert_eq!(
            page.lines()
                .filter(|l| l.starts_with("ringvault_runs{"))
                .count(),
            RunKind::ALL.len() * RunState::ALL.len(),
            "every kind and state, zero-filled"
        );
    }
}
