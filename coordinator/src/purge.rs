//! Retention and purge, mark and sweep over the store itself (the source of truth, so backups
//! written by another coordinator count too).
//!
//! 1. Retention picks the committed backups to keep: per cluster and schedule, the newest
//!    `keep_last` and/or those younger than `keep_days` (either rule keeps a backup; the newest
//!    backup of each group is always kept). The rest expire.
//! 2. Mark: every blob named by a kept backup's node manifests, or by a run still running.
//! 3. Sweep, in an order that is safe to interrupt: each expired run's `manifest.json` first
//!    (it stops being a backup), then the rest of its folder, then unmarked blobs older than
//!    the grace period, then leftovers older than the grace period (folders of runs that never
//!    committed, `tmp/` staging). Deletes go in batches of up to 1,000 keys, four at once, each
//!    sent in the store's batch form (S3 DeleteObjects, GCS JSON batch, Azure Blob Batch).
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use ringvault_common::RunId;
use ringvault_common::hash::ContentHash;
use ringvault_common::layout::{self, ObjectKey};
use ringvault_common::manifest::{NodeManifest, RunManifest};
use ringvault_common::store::{self, ObjectMeta, Store};

/// Keys per delete request.
pub const DELETE_BATCH: usize = 1000;
/// Batches deleted at once (each a single request on S3, a few batch requests elsewhere).
const DELETES_IN_FLIGHT: usize = 4;
const MANIFEST_LIMIT: usize = 1 << 30;
const DAY_MS: i64 = 86_400_000;

/// How many backups to keep; 0 in a field means "no limit of that kind".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub keep_last: u32,
    pub keep_days: u32,
}

impl RetentionPolicy {
    /// Whether the policy keeps everything.
    pub fn keeps_all(&self) -> bool {
        self.keep_last == 0 && self.keep_days == 0
    }
}

/// How to purge.
#[derive(Debug, Clone)]
pub struct PurgeOptions {
    pub dry_run: bool,
    /// For backups not started by a schedule (or whose schedule is gone).
    pub default_policy: RetentionPolicy,
    /// Per schedule id.
    pub schedule_policies: HashMap<String, RetentionPolicy>,
    /// Unreferenced blobs and leftovers younger than this are kept.
    pub grace: Duration,
    /// Blobs of runs still running (from the coordinator's records).
    pub running_blobs: BTreeSet<String>,
    /// Runs still running: their folders are never leftovers.
    pub running_runs: BTreeSet<String>,
    pub now_ms: i64,
}

/// A backup that expired.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiredRun {
    pub run_id: String,
    pub tag: String,
    pub cluster_name: String,
    pub group: String,
    pub committed_unix_ms: i64,
    pub reason: String,
}

/// What a purge did (or, dry, would do).
#[derive(Debug, Clone, Default)]
pub struct PurgeReport {
    pub dry_run: bool,
    pub backups_kept: u64,
    pub runs_deleted: Vec<ExpiredRun>,
    pub blobs_total: u64,
    pub blobs_referenced: u64,
    pub blobs_deleted: u64,
    pub bytes_deleted: u64,
    pub blobs_too_young: u64,
    pub objects_deleted: u64,
    pub delete_requests: u64,
    pub leftovers_deleted: u64,
    pub elapsed_ms: u64,
}

/// One committed backup's retention facts.
#[derive(Debug, Clone)]
pub struct BackupFacts {
    pub run_id: String,
    pub tag: String,
    pub cluster_name: String,
    pub schedule: String,
    pub committed_unix_ms: i64,
}

/// Splits committed backups into kept and expired (with the reason), by group.
pub fn apply_retention(
    backups: &[BackupFacts],
    default_policy: RetentionPolicy,
    schedule_policies: &HashMap<String, RetentionPolicy>,
    now_ms: i64,
) -> (Vec<BackupFacts>, Vec<ExpiredRun>) {
    let mut groups: BTreeMap<(String, String), Vec<&BackupFacts>> = BTreeMap::new();
    for b in backups {
        groups
            .entry((b.cluster_name.clone(), b.schedule.clone()))
            .or_default()
            .push(b);
    }
    let (mut kept, mut expired) = (Vec::new(), Vec::new());
    for ((cluster, schedule), mut members) in groups {
        let policy = schedule_policies
            .get(&schedule)
            .copied()
            .unwrap_or(default_policy);
        let group = if schedule.is_empty() {
            format!("{cluster}/manual")
        } else {
            format!("{cluster}/schedule {schedule}")
        };
        members.sort_by_key(|b| (std::cmp::Reverse(b.committed_unix_ms), b.run_id.clone()));
        for (i, b) in members.into_iter().enumerate() {
            let by_count = policy.keep_last > 0 && (i as u32) < policy.keep_last;
            let by_age = policy.keep_days > 0
                && now_ms - b.committed_unix_ms < i64::from(policy.keep_days) * DAY_MS;
            if policy.keeps_all() || i == 0 || by_count || by_age {
                kept.push(b.clone());
                continue;
            }
            let mut why = Vec::new();
            if policy.keep_last > 0 {
                why.push(format!("beyond the newest {}", policy.keep_last));
            }
            if policy.keep_days > 0 {
                why.push(format!("older than {} days", policy.keep_days));
            }
            expired.push(ExpiredRun {
                run_id: b.run_id.clone(),
                tag: b.tag.clone(),
                cluster_name: b.cluster_name.clone(),
                group: group.clone(),
                committed_unix_ms: b.committed_unix_ms,
                reason: why.join(" and "),
            });
        }
    }
    (kept, expired)
}

async fn json<T: serde::de::DeserializeOwned>(
    st: &dyn Store,
    key: &ObjectKey,
) -> anyhow::Result<T> {
    let bytes = store::get_bytes(st, key, MANIFEST_LIMIT).await?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{key} is not a valid ringvault document"))
}

/// Marks every blob a committed backup's node manifests name.
async fn mark(
    st: &dyn Store,
    m: &RunManifest,
    referenced: &mut BTreeSet<String>,
) -> anyhow::Result<()> {
    for n in &m.nodes {
        let nm: NodeManifest = json(st, &layout::node_manifest(&m.run_id, &n.host_id)).await?;
        referenced.extend(nm.files.iter().map(|f| f.hash.to_string()));
    }
    Ok(())
}

/// The run folder a key under `runs/` belongs to.
fn run_of(key: &ObjectKey) -> Option<&str> {
    key.as_str()
        .strip_prefix(layout::RUNS_PREFIX)
        .and_then(|rest| rest.split('/').next())
}

/// Runs retention and mark-and-sweep on `store`.
pub async fn purge(store: &Arc<dyn Store>, opts: &PurgeOptions) -> anyhow::Result<PurgeReport> {
    let started = Instant::now();
    let mut report = PurgeReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let grace_ms = i64::try_from(opts.grace.as_millis()).unwrap_or(i64::MAX);
    let old_enough = |m: &ObjectMeta| {
        m.modified_ms.is_some_and(|t| opts.now_ms - t >= grace_ms) || grace_ms == 0
    };

    // Run folders: committed ones (with manifest.json) and the rest.
    let run_objects = store.list(layout::RUNS_PREFIX).await?;
    let mut folders: BTreeMap<String, Vec<ObjectMeta>> = BTreeMap::new();
    for o in run_objects {
        if let Some(run) = run_of(&o.key) {
            folders.entry(run.to_string()).or_default().push(o);
        }
    }
    let mut committed = Vec::new();
    let mut manifests: HashMap<String, RunManifest> = HashMap::new();
    // Folders that are not ours to judge (a name that is not a run id, or a commit marker this
    // code cannot place): never deleted, never swept as leftovers.
    let mut foreign: BTreeSet<String> = BTreeSet::new();
    for (run, objects) in &folders {
        let canonical = RunId::parse(run).ok().filter(|r| r.as_str() == run);
        let Some(run_id) = canonical else {
            foreign.insert(run.clone());
            continue;
        };
        let manifest_key = layout::run_manifest(&run_id);
        if !objects.iter().any(|o| o.key == manifest_key) {
            if objects
                .iter()
                .any(|o| o.key.as_str().ends_with("/manifest.json"))
            {
                foreign.insert(run.clone());
            }
            continue;
        }
        let m: RunManifest = json(store.as_ref(), &manifest_key).await?;
        committed.push(BackupFacts {
            run_id: run.clone(),
            tag: m.tag.to_string(),
            cluster_name: m.cluster_name.clone(),
            schedule: m.schedule.clone(),
            committed_unix_ms: m.committed_unix_ms,
        });
        manifests.insert(run.clone(), m);
    }
    let (kept, expired) = apply_retention(
        &committed,
        opts.default_policy,
        &opts.schedule_policies,
        opts.now_ms,
    );
    report.backups_kept = kept.len() as u64;

    // Mark.
    let mut referenced: BTreeSet<String> = opts.running_blobs.clone();
    for b in &kept {
        let Some(m) = manifests.get(&b.run_id) else {
            continue;
        };
        mark(store.as_ref(), m, &mut referenced).await?;
    }

    // Sweep 1: expired runs, commit marker first.
    let mut doomed_markers = Vec::new();
    let mut doomed_rest = Vec::new();
    for e in &expired {
        for o in folders.get(&e.run_id).into_iter().flatten() {
            if o.key.as_str().ends_with("/manifest.json") && run_of(&o.key) == Some(&e.run_id) {
                doomed_markers.push(o.key.clone());
            } else {
                doomed_rest.push(o.key.clone());
            }
        }
    }
    delete(store, &doomed_markers, opts.dry_run, &mut report).await?;
    delete(store, &doomed_rest, opts.dry_run, &mut report).await?;
    report.runs_deleted = expired;

    // A backup committed (by another coordinator) since the listing above is kept too: its
    // deduplicated blobs may be old enough to pass the grace period.
    for o in store.list(layout::RUNS_PREFIX).await? {
        let Some(run) = run_of(&o.key) else { continue };
        let Ok(run_id) = RunId::parse(run) else {
            continue;
        };
        if o.key != layout::run_manifest(&run_id) || manifests.contains_key(run) {
            continue;
        }
        let m: RunManifest = json(store.as_ref(), &o.key).await?;
        mark(store.as_ref(), &m, &mut referenced).await?;
        report.backups_kept += 1;
    }

    // Sweep 2: unreferenced blobs past the grace period.
    let blob_objects = store.list(layout::BLOBS_PREFIX).await?;
    report.blobs_total = blob_objects.len() as u64;
    let mut doomed_blobs = Vec::new();
    for o in &blob_objects {
        let hash = o.key.as_str().rsplit('/').next().unwrap_or_default();
        if ContentHash::parse(hash).is_err() {
            continue; // not ours
        }
        if referenced.contains(hash) {
            report.blobs_referenced += 1;
        } else if old_enough(o) {
            report.blobs_deleted += 1;
            report.bytes_deleted += o.size;
            doomed_blobs.push(o.key.clone());
        } else {
            report.blobs_too_young += 1;
        }
    }
    delete(store, &doomed_blobs, opts.dry_run, &mut report).await?;

    // Sweep 3: leftovers past the grace period: uncommitted run folders and tmp/ staging.
    let mut leftovers = Vec::new();
    for (run, objects) in &folders {
        if manifests.contains_key(run) || opts.running_runs.contains(run) || foreign.contains(run) {
            continue;
        }
        if objects.iter().all(old_enough) {
            leftovers.extend(objects.iter().map(|o| o.key.clone()));
        }
    }
    for o in store.list(layout::TMP_PREFIX).await? {
        let in_running = o
            .key
            .as_str()
            .strip_prefix(layout::TMP_PREFIX)
            .and_then(|r| r.split('/').next())
            .is_some_and(|r| opts.running_runs.contains(r));
        if !in_running && old_enough(&o) {
            leftovers.push(o.key.clone());
        }
    }
    report.leftovers_deleted = leftovers.len() as u64;
    delete(store, &leftovers, opts.dry_run, &mut report).await?;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

async fn delete(
    store: &Arc<dyn Store>,
    keys: &[ObjectKey],
    dry_run: bool,
    report: &mut PurgeReport,
) -> anyhow::Result<()> {
    if !dry_run {
        let batches: Vec<Vec<ObjectKey>> = keys.chunks(DELETE_BATCH).map(<[_]>::to_vec).collect();
        futures::stream::iter(batches)
            .map(|batch| async move {
                store
                    .delete_many(&batch)
                    .await
                    .with_context(|| format!("deleting {} objects", batch.len()))
            })
            .buffer_unordered(DELETES_IN_FLIGHT)
            .try_for_each(|()| {
                report.delete_requests += 1;
                futures::future::ready(Ok(()))
            })
            .await?;
    }
    report.objects_deleted += keys.len() as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(run: &str, schedule: &str, at: i64) -> BackupFacts {
        BackupFacts {
            run_id: run.into(),
            tag: run.into(),
            cluster_name: "c".into(),
            schedule: schedule.into(),
            committed_unix_ms: at,
        }
    }

    fn ids(v: &[ExpiredRun]) -> Vec<&str> {
        let mut out: Vec<&str> = v.iter().map(|e| e.run_id.as_str()).collect();
        out.sort();
        out
    }

    #[test]
    fn keep_last_counts_per_schedule_and_keeps_the_newest() {
        let now = 100 * DAY_MS;
        let backups = vec![
            b("m1", "", now - 5 * DAY_MS),
            b("m2", "", now - 4 * DAY_MS),
            b("m3", "", now - 3 * DAY_MS),
            b("n1", "nightly", now - 2 * DAY_MS),
            b("n2", "nightly", now - DAY_MS),
        ];
        let mut per = HashMap::new();
        per.insert(
            "nightly".to_string(),
            RetentionPolicy {
                keep_last: 1,
                keep_days: 0,
            },
        );
        let policy = RetentionPolicy {
            keep_last: 2,
            keep_days: 0,
        };
        let (kept, expired) = apply_retention(&backups, policy, &per, now);
        assert_eq!(ids(&expired), vec!["m1", "n1"]);
        assert_eq!(kept.len(), 3);
        // No policy: everything kept.
        let (_, none) = apply_retention(&backups, RetentionPolicy::default(), &HashMap::new(), now);
        assert!(none.is_empty());
    }

    #[test]
    fn keep_days_or_keep_last_keeps_and_the_newest_always_stays() {
        let now = 100 * DAY_MS;
        let backups = vec![
            b("old1", "", now - 30 * DAY_MS),
            b("old2", "", now - 20 * DAY_MS),
            b("new", "", now - DAY_MS / 2),
        ];
        let days = RetentionPolicy {
            keep_last: 0,
            keep_days: 7,
        };
        let (_, expired) = apply_retention(&backups, days, &HashMap::new(), now);
        assert_eq!(ids(&expired), vec!["old1", "old2"]);
        assert!(expired[0].reason.contains("older than 7 days"));
        // Either rule keeps: the newest two by count.
        let both = RetentionPolicy {
            keep_last: 2,
            keep_days: 7,
        };
        let (_, expired) = apply_retention(&backups, both, &HashMap::new(), now);
        assert_eq!(ids(&expired), vec!["old1"]);
        // Everything too old: the newest one is still kept.
        let only_old = vec![b("a", "", now - 30 * DAY_MS), b("z", "", now - 40 * DAY_MS)];
        let (kept, expired) = apply_retention(&only_old, days, &HashMap::new(), now);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].run_id, "a");
        assert_eq!(ids(&expired), vec!["z"]);
    }
}
