//! Retention and purge, mark and sweep over the store itself (the source of truth, so backups
//! written by another coordinator count too). The protocol that keeps it safe against backups
//! of other coordinators committing meanwhile is described in `docs/design.md` ("Purge
//! protocol").
//!
//! 1. Retention picks the committed backups to keep: per cluster and schedule, the newest
//!    `keep_last` and/or those younger than `keep_days` (either rule keeps a backup; the newest
//!    backup of each group is always kept). A schedule's rule is the one configured here, else
//!    the one recorded in its backups' manifests (a removed schedule, another coordinator's).
//! 2. Mark: every blob named by a kept backup's node manifests, by a live lease
//!    (`runs/<id>/lease.json`) or by a run still running here.
//! 3. Sweep, in an order that is safe to interrupt: each expired run's `manifest.json` first
//!    (it stops being a backup), then the rest of its folder; then the blobs are listed, and
//!    unmarked ones older than the grace period (age known; an object whose store gives no age
//!    is kept) are deleted inside announced sweep windows (`purges/<id>.json`), each opened by
//!    re-reading every manifest and lease *after* the listing; then leftovers older than the
//!    grace period (folders of runs that never committed, `tmp/` keys of the shapes ringvault
//!    writes, expired purge markers). Deletes go in batches of up to 1,000 keys, four at once,
//!    each sent in the store's batch form (S3 DeleteObjects, GCS JSON batch, Azure Blob Batch).
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use ringvault_common::RunId;
use ringvault_common::hash::ContentHash;
use ringvault_common::layout::{self, ObjectKey};
use ringvault_common::manifest::{NodeManifest, PurgeMarker, RunLease, RunManifest};
use ringvault_common::store::{self, ObjectMeta, Store};

/// Keys per delete request.
pub const DELETE_BATCH: usize = 1000;
/// Batches deleted at once (each a single request on S3, a few batch requests elsewhere).
const DELETES_IN_FLIGHT: usize = 4;
const DAY_MS: i64 = 86_400_000;
/// The shortest grace period a purge accepts without `force`: other coordinators' uploads in
/// flight are protected only by their age.
pub const MIN_GRACE: Duration = Duration::from_secs(3600);
/// A sweep window as announced in its marker. Delete batches start only in its first half and
/// each is abandoned when the window ends, so no delete of this window lands after it.
pub const SWEEP_WINDOW: Duration = Duration::from_secs(600);
/// How much later than its announced end a backup still waits for a sweep window (clock skew
/// between machines).
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// How long a lease protects its blobs (a run deletes its lease once committed; a crashed
/// run's lease stops counting after this).
pub const LEASE_TTL: Duration = Duration::from_secs(6 * 3600);

/// A test hook: awaited after the blob listing, before the re-check and the sweep.
#[derive(Clone)]
pub struct PauseHook(pub Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>);

impl std::fmt::Debug for PauseHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PauseHook")
    }
}

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
    /// Test hook between the blob listing and the sweep (never set in production).
    pub pause: Option<PauseHook>,
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
    /// Unreferenced objects kept because their store gave no age.
    pub blobs_age_unknown: u64,
    /// Blobs kept because a lease or a backup committed during the purge named them.
    pub blobs_protected_late: u64,
    /// Objects under `tmp/` (or `purges/`) that ringvault did not write: never deleted.
    pub foreign_kept: u64,
}

/// One committed backup's retention facts.
#[derive(Debug, Clone)]
pub struct BackupFacts {
    pub run_id: String,
    pub tag: String,
    pub cluster_name: String,
    pub schedule: String,
    pub committed_unix_ms: i64,
    /// The schedule's rule as recorded in the backup's manifest.
    pub recorded: Option<RetentionPolicy>,
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
        members.sort_by_key(|b| (std::cmp::Reverse(b.committed_unix_ms), b.run_id.clone()));
        // A schedule configured here wins; a schedule gone (or another coordinator's) keeps the
        // rule its newest backup recorded; manual backups (and old scheduled ones that recorded
        // nothing) follow the default.
        let recorded = members.iter().find_map(|b| b.recorded);
        let policy = if schedule.is_empty() {
            default_policy
        } else {
            schedule_policies
                .get(&schedule)
                .copied()
                .or(recorded)
                .unwrap_or(default_policy)
        };
        let group = if schedule.is_empty() {
            format!("{cluster}/manual")
        } else {
            format!("{cluster}/schedule {schedule}")
        };
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

use crate::catalog::read_json as json;

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
    layout::run_folder(key)
}

/// The live leases under `runs/` in `objects`: their blobs are marked.
async fn mark_leases(
    st: &dyn Store,
    objects: &[ObjectMeta],
    now_ms: i64,
    referenced: &mut BTreeSet<String>,
) -> anyhow::Result<()> {
    for o in objects {
        let Some(run) = run_of(&o.key).and_then(|r| RunId::parse(r).ok()) else {
            continue;
        };
        if o.key != layout::run_lease(&run) {
            continue;
        }
        let lease: RunLease = match json(st, &o.key).await {
            Ok(l) => l,
            // Deleted by its run (committed) since the listing: the manifest names its blobs.
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        if lease.expires_unix_ms > now_ms {
            referenced.extend(lease.blobs.iter().map(ToString::to_string));
        }
    }
    Ok(())
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<store::StoreError>()
        .is_some_and(store::StoreError::is_not_found)
}

/// Whether a run folder holds a lease that has not expired.
async fn live_lease(st: &dyn Store, run: &RunId, objects: &[ObjectMeta], now_ms: i64) -> bool {
    let key = layout::run_lease(run);
    if !objects.iter().any(|o| o.key == key) {
        return false;
    }
    // Unreadable: treated as live (kept), never as permission to delete.
    json::<RunLease>(st, &key)
        .await
        .map_or(true, |l| l.expires_unix_ms > now_ms)
}

/// Re-reads `runs/` after the blob listing: every manifest not seen before (a backup committed
/// meanwhile, by any coordinator) and every live lease marks its blobs.
async fn recheck(
    st: &dyn Store,
    seen: &BTreeSet<String>,
    now_ms: i64,
    referenced: &mut BTreeSet<String>,
    report: &mut PurgeReport,
) -> anyhow::Result<()> {
    let objects = st.list(layout::RUNS_PREFIX).await?;
    for o in &objects {
        let Some(run) = run_of(&o.key) else { continue };
        let Ok(run_id) = RunId::parse(run) else {
            continue;
        };
        if o.key != layout::run_manifest(&run_id) || seen.contains(run) {
            continue;
        }
        let m: RunManifest = match json(st, &o.key).await {
            Ok(m) => m,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        mark(st, &m, referenced).await?;
        report.backups_kept += 1;
    }
    mark_leases(st, &objects, now_ms, referenced).await
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs retention and mark-and-sweep on `store`.
pub async fn purge(store: &Arc<dyn Store>, opts: &PurgeOptions) -> anyhow::Result<PurgeReport> {
    let started = Instant::now();
    let mut report = PurgeReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let grace_ms = i64::try_from(opts.grace.as_millis()).unwrap_or(i64::MAX);
    // An object whose age the store does not report is never old enough.
    let old_enough = |m: &ObjectMeta| m.modified_ms.is_some_and(|t| opts.now_ms - t >= grace_ms);

    // Run folders: committed ones (with manifest.json) and the rest.
    let run_objects = store.list(layout::RUNS_PREFIX).await?;
    let mut folders: BTreeMap<String, Vec<ObjectMeta>> = BTreeMap::new();
    for o in &run_objects {
        if let Some(run) = run_of(&o.key) {
            folders.entry(run.to_string()).or_default().push(o.clone());
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
            if objects.iter().any(|o| layout::names_manifest(&o.key)) {
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
            recorded: m.retention.map(|r| RetentionPolicy {
                keep_last: r.keep_last,
                keep_days: r.keep_days,
            }),
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
    mark_leases(store.as_ref(), &run_objects, unix_ms(), &mut referenced).await?;

    // Sweep 1: expired runs, commit marker first.
    let mut doomed_markers = Vec::new();
    let mut doomed_rest = Vec::new();
    for e in &expired {
        for o in folders.get(&e.run_id).into_iter().flatten() {
            if layout::names_manifest(&o.key) && run_of(&o.key) == Some(&e.run_id) {
                doomed_markers.push(o.key.clone());
            } else {
                doomed_rest.push(o.key.clone());
            }
        }
    }
    delete(store, &doomed_markers, opts.dry_run, &mut report).await?;
    delete(store, &doomed_rest, opts.dry_run, &mut report).await?;
    report.runs_deleted = expired;
    let seen: BTreeSet<String> = manifests.keys().cloned().collect();

    // Sweep 2: unreferenced blobs past the grace period. The listing may take minutes; what
    // committed or leased meanwhile is found by the re-check of each sweep window.
    let blob_objects = store.list(layout::BLOBS_PREFIX).await?;
    report.blobs_total = blob_objects.len() as u64;
    let mut candidates: Vec<&ObjectMeta> = Vec::new();
    for o in &blob_objects {
        let hash = o.key.as_str().rsplit('/').next().unwrap_or_default();
        if ContentHash::parse(hash).is_err() {
            continue; // not ours
        }
        if referenced.contains(hash) {
            report.blobs_referenced += 1;
        } else if o.modified_ms.is_none() {
            report.blobs_age_unknown += 1;
        } else if old_enough(o) {
            candidates.push(o);
        } else {
            report.blobs_too_young += 1;
        }
    }
    if let Some(hook) = &opts.pause {
        (hook.0)().await;
    }
    sweep_blobs(store, opts, candidates, &seen, &mut referenced, &mut report).await?;

    // Sweep 3: leftovers past the grace period: uncommitted run folders, tmp/ staging and
    // expired purge markers, each only in the shapes ringvault writes.
    let now = unix_ms();
    let mut leftovers = Vec::new();
    for (run, objects) in &folders {
        if manifests.contains_key(run) || opts.running_runs.contains(run) || foreign.contains(run) {
            continue;
        }
        let Ok(run_id) = RunId::parse(run) else {
            continue;
        };
        if objects.iter().all(old_enough)
            && !live_lease(store.as_ref(), &run_id, objects, now).await
        {
            leftovers.extend(objects.iter().map(|o| o.key.clone()));
        }
    }
    for o in store.list(layout::TMP_PREFIX).await? {
        match layout::parse_tmp(&o.key) {
            None => report.foreign_kept += 1,
            Some(layout::TmpKey::Staging(run)) if opts.running_runs.contains(run.as_str()) => {}
            Some(_) => {
                if old_enough(&o) {
                    leftovers.push(o.key.clone());
                }
            }
        }
    }
    for o in store.list(layout::PURGES_PREFIX).await? {
        if layout::parse_purge_marker(&o.key).is_none() {
            report.foreign_kept += 1;
            continue;
        }
        let done = match json::<PurgeMarker>(store.as_ref(), &o.key).await {
            Ok(m) => m.sweep_until_unix_ms + DAY_MS < now,
            Err(_) => false,
        };
        if done {
            leftovers.push(o.key.clone());
        }
    }
    report.leftovers_deleted = leftovers.len() as u64;
    delete(store, &leftovers, opts.dry_run, &mut report).await?;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Deletes `candidates` in sweep windows: each window is announced (`purges/<id>.json`), then
/// `runs/` is re-read (manifests committed and leases written since the first listing protect
/// their blobs), then batches are deleted while the window is open. A dry run re-reads once and
/// counts.
async fn sweep_blobs(
    store: &Arc<dyn Store>,
    opts: &PurgeOptions,
    candidates: Vec<&ObjectMeta>,
    seen: &BTreeSet<String>,
    referenced: &mut BTreeSet<String>,
    report: &mut PurgeReport,
) -> anyhow::Result<()> {
    let hash_of = |o: &ObjectMeta| {
        o.key
            .as_str()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let mut remaining: Vec<&ObjectMeta> = candidates;
    let purge_id = uuid::Uuid::new_v4();
    let marker = layout::purge_marker(&purge_id);
    let result: anyhow::Result<()> = async {
        while !remaining.is_empty() {
            let window_start = Instant::now();
            if !opts.dry_run {
                let written = unix_ms();
                let m = PurgeMarker {
                    purge_id: purge_id.to_string(),
                    written_unix_ms: written,
                    sweep_until_unix_ms: written + SWEEP_WINDOW.as_millis() as i64,
                };
                store
                    .put(&marker, Bytes::from(serde_json::to_vec(&m)?))
                    .await
                    .context("announcing the sweep window")?;
            }
            let before = referenced.len();
            recheck(store.as_ref(), seen, unix_ms(), referenced, report).await?;
            if referenced.len() != before || report.blobs_protected_late > 0 {
                let (late, rest): (Vec<&ObjectMeta>, Vec<&ObjectMeta>) = remaining
                    .into_iter()
                    .partition(|o| referenced.contains(&hash_of(o)));
                report.blobs_protected_late += late.len() as u64;
                report.blobs_referenced += late.len() as u64;
                remaining = rest;
            }
            if opts.dry_run {
                for o in &remaining {
                    report.blobs_deleted += 1;
                    report.bytes_deleted += o.size;
                }
                report.objects_deleted += remaining.len() as u64;
                return Ok(());
            }
            // Batches start only in the first half of the window; each gets the rest of it.
            while !remaining.is_empty() && window_start.elapsed() < SWEEP_WINDOW / 2 {
                let take = remaining.len().min(DELETE_BATCH * DELETES_IN_FLIGHT);
                let now: Vec<&ObjectMeta> = remaining.drain(..take).collect();
                let keys: Vec<ObjectKey> = now.iter().map(|o| o.key.clone()).collect();
                let left = SWEEP_WINDOW.saturating_sub(window_start.elapsed());
                tokio::time::timeout(left, delete(store, &keys, false, report))
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!("deleting blobs outlasted the sweep window; stopped")
                    })??;
                for o in &now {
                    report.blobs_deleted += 1;
                    report.bytes_deleted += o.size;
                }
            }
        }
        Ok(())
    }
    .await;
    if !opts.dry_run
        && let Err(e) = store.delete_many(std::slice::from_ref(&marker)).await
    {
        tracing::warn!(error = %e, "purge marker left behind (it expires)");
    }
    result
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

/// Before a backup relies on blobs it did not upload: waits until every purge sweep window
/// announced on the store has closed (its marker gone, or its announced end plus
/// [`CLOCK_SKEW`] passed). Call after the run's lease is written; a purge window opened later
/// re-reads `runs/` and sees the lease.
pub async fn wait_for_sweeps(st: &dyn Store) -> anyhow::Result<()> {
    loop {
        let mut open: Option<(ObjectKey, i64)> = None;
        for o in st.list(layout::PURGES_PREFIX).await? {
            if layout::parse_purge_marker(&o.key).is_none() {
                continue;
            }
            let m: PurgeMarker = match json(st, &o.key).await {
                Ok(m) => m,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(e),
            };
            let until = m.sweep_until_unix_ms + CLOCK_SKEW.as_millis() as i64;
            if until > unix_ms() {
                open = Some((o.key.clone(), until));
                break;
            }
        }
        let Some((key, until)) = open else {
            return Ok(());
        };
        tracing::info!(marker = %key, "waiting for a purge's sweep window to close");
        let left = Duration::from_millis(u64::try_from(until - unix_ms()).unwrap_or(0));
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
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
            recorded: None,
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

    mod on_a_store {
        use super::super::*;
        use ringvault_common::SnapshotTag;
        use ringvault_common::manifest::fixtures::{self, FixtureFile};
        use ringvault_common::manifest::{FORMAT_VERSION, HostId, NodeTotals, RecordedRetention};

        fn file_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
            let url = format!("file://{}", dir.path().join("store").display());
            futures::executor::block_on(store::open(&url)).expect("file store")
        }

        async fn put_json<T: serde::Serialize>(st: &dyn Store, key: &ObjectKey, v: &T) {
            let body = Bytes::from(serde_json::to_vec(v).expect("json"));
            st.put(key, body).await.expect("put");
        }

        async fn put_blob(st: &dyn Store, data: &[u8]) -> ContentHash {
            let h = ContentHash::of(data);
            st.put(&layout::blob(&h), Bytes::copy_from_slice(data))
                .await
                .expect("put blob");
            h
        }

        /// A committed backup naming `blobs`, as a coordinator writes it.
        async fn commit(
            st: &dyn Store,
            schedule: &str,
            retention: Option<RecordedRetention>,
            committed_unix_ms: i64,
            blobs: &[ContentHash],
        ) -> RunId {
            let run = RunId::new();
            let host = HostId::parse(&uuid::Uuid::new_v4().to_string()).expect("host");
            let names: Vec<String> = (0..blobs.len())
                .map(|i| format!("nb-{i}-big-Data.db"))
                .collect();
            let files = names
                .iter()
                .zip(blobs)
                .map(|(name, h)| FixtureFile {
                    keyspace: "ks",
                    table: "t",
                    name,
                    size: 1,
                    hash: h.clone(),
                })
                .collect();
            let mut node = fixtures::node_manifest(&run, &host, files);
            node.snapshot_taken_unix_ms = committed_unix_ms;
            put_json(st, &layout::node_manifest(&run, &host), &node).await;
            let m = RunManifest {
                format_version: FORMAT_VERSION,
                run_id: run.clone(),
                tag: SnapshotTag::parse("t").expect("tag"),
                cluster_name: "c".into(),
                keyspaces: vec![],
                tables: vec![],
                started_unix_ms: committed_unix_ms,
                committed_unix_ms,
                hash_algorithm: ContentHash::ALGORITHM.into(),
                nodes: vec![NodeTotals {
                    host_id: host,
                    address: "127.0.0.1".into(),
                    files: blobs.len() as u64,
                    bytes: blobs.len() as u64,
                }],
                total_files: blobs.len() as u64,
                total_bytes: blobs.len() as u64,
                distinct_blobs: blobs.len() as u64,
                schedule: schedule.into(),
                retention,
            };
            put_json(st, &layout::run_manifest(&run), &m).await;
            run
        }

        fn opts(now_ms: i64, keep_last: u32) -> PurgeOptions {
            PurgeOptions {
                dry_run: false,
                default_policy: RetentionPolicy {
                    keep_last,
                    keep_days: 0,
                },
                schedule_policies: HashMap::new(),
                grace: Duration::ZERO,
                running_blobs: BTreeSet::new(),
                running_runs: BTreeSet::new(),
                now_ms,
                pause: None,
            }
        }

        async fn exists(st: &dyn Store, h: &ContentHash) -> bool {
            st.head(&layout::blob(h)).await.expect("head").is_some()
        }

        #[tokio::test]
        async fn a_lease_written_between_listing_and_sweep_keeps_the_blob() {
            let dir = tempfile::tempdir().expect("tempdir");
            let st = file_store(&dir);
            let now = unix_ms() + 10_000;
            let shared = put_blob(st.as_ref(), b"named only by the expiring backup").await;
            let orphan = put_blob(st.as_ref(), b"named by nobody").await;
            commit(
                st.as_ref(),
                "",
                None,
                now - 3 * DAY_MS,
                std::slice::from_ref(&shared),
            )
            .await;
            let other = put_blob(st.as_ref(), b"the newest backup").await;
            commit(
                st.as_ref(),
                "",
                None,
                now - DAY_MS,
                std::slice::from_ref(&other),
            )
            .await;
            // Another coordinator's backup announces that it reuses `shared` while this purge
            // is between its blob listing and its sweep.
            let st2 = Arc::clone(&st);
            let leased = shared.clone();
            let mut o = opts(now, 1);
            o.pause = Some(PauseHook(Arc::new(move || {
                let (st, h) = (Arc::clone(&st2), leased.clone());
                Box::pin(async move {
                    let run = RunId::new();
                    let lease = RunLease {
                        run_id: run.clone(),
                        written_unix_ms: unix_ms(),
                        expires_unix_ms: unix_ms() + 60_000,
                        blobs: vec![h],
                    };
                    put_json(st.as_ref(), &layout::run_lease(&run), &lease).await;
                })
            })));
            let r = purge(&st, &o).await.expect("purge");
            assert_eq!(r.runs_deleted.len(), 1);
            assert!(exists(st.as_ref(), &shared).await, "leased blob deleted");
            assert!(exists(st.as_ref(), &other).await);
            assert!(!exists(st.as_ref(), &orphan).await, "orphan kept");
            assert_eq!(r.blobs_protected_late, 1, "{r:?}");
            assert_eq!(r.blobs_deleted, 1, "{r:?}");
            // The sweep window's marker is gone once the purge ends.
            assert!(
                st.list(layout::PURGES_PREFIX)
                    .await
                    .expect("list")
                    .is_empty()
            );
        }

        #[tokio::test]
        async fn an_expired_lease_protects_nothing() {
            let dir = tempfile::tempdir().expect("tempdir");
            let st = file_store(&dir);
            let now = unix_ms() + 10_000;
            let h = put_blob(st.as_ref(), b"leased long ago").await;
            let run = RunId::new();
            let lease = RunLease {
                run_id: run.clone(),
                written_unix_ms: now - 2 * DAY_MS,
                expires_unix_ms: now - DAY_MS,
                blobs: vec![h.clone()],
            };
            put_json(st.as_ref(), &layout::run_lease(&run), &lease).await;
            let r = purge(&st, &opts(now, 0)).await.expect("purge");
            assert!(!exists(st.as_ref(), &h).await, "{r:?}");
            assert_eq!(r.blobs_deleted, 1);
        }

        #[tokio::test]
        async fn tmp_keys_ringvault_did_not_write_are_kept() {
            let dir = tempfile::tempdir().expect("tempdir");
            let st = file_store(&dir);
            let now = unix_ms() + 10_000;
            let foreign = ObjectKey::from_listing("tmp/foreign.txt").expect("key");
            st.put(&foreign, Bytes::from_static(b"someone else's"))
                .await
                .expect("put");
            let ours = layout::staging(&RunId::new(), &uuid::Uuid::new_v4().to_string());
            st.put(&ours, Bytes::from_static(b"staged"))
                .await
                .expect("put");
            let r = purge(&st, &opts(now, 0)).await.expect("purge");
            assert!(st.head(&foreign).await.expect("head").is_some());
            assert!(st.head(&ours).await.expect("head").is_none());
            assert_eq!((r.leftovers_deleted, r.foreign_kept), (1, 1));
        }

        #[tokio::test]
        async fn a_removed_schedule_keeps_the_retention_its_backups_recorded() {
            let dir = tempfile::tempdir().expect("tempdir");
            let st = file_store(&dir);
            let now = unix_ms() + 10_000;
            let rule = RecordedRetention {
                keep_last: 30,
                keep_days: 0,
            };
            for i in 0..30 {
                let h = put_blob(st.as_ref(), format!("nightly {i}").as_bytes()).await;
                commit(
                    st.as_ref(),
                    "nightly",
                    Some(rule),
                    now - (30 - i) * DAY_MS,
                    &[h],
                )
                .await;
            }
            for i in 0..5 {
                let h = put_blob(st.as_ref(), format!("manual {i}").as_bytes()).await;
                commit(st.as_ref(), "", None, now - (10 - i) * DAY_MS, &[h]).await;
            }
            // The schedule is gone from this coordinator; manual backups keep the newest 3.
            let mut o = opts(now, 3);
            o.dry_run = true;
            let r = purge(&st, &o).await.expect("purge");
            assert_eq!(r.runs_deleted.len(), 2, "{:?}", r.runs_deleted);
            assert!(r.runs_deleted.iter().all(|e| e.group == "c/manual"));
            // A rule configured here for the schedule still wins over the recorded one.
            o.schedule_policies.insert(
                "nightly".into(),
                RetentionPolicy {
                    keep_last: 10,
                    keep_days: 0,
                },
            );
            let r = purge(&st, &o).await.expect("purge");
            assert_eq!(r.runs_deleted.len(), 2 + 20);
        }

        #[tokio::test]
        async fn a_backup_waits_while_a_sweep_window_is_open() {
            let dir = tempfile::tempdir().expect("tempdir");
            let st = file_store(&dir);
            let id = uuid::Uuid::new_v4();
            let marker = PurgeMarker {
                purge_id: id.to_string(),
                written_unix_ms: unix_ms(),
                sweep_until_unix_ms: unix_ms() + 600_000,
            };
            put_json(st.as_ref(), &layout::purge_marker(&id), &marker).await;
            // A marker long expired (a crashed purge) does not hold anyone up.
            let old = uuid::Uuid::new_v4();
            let stale = PurgeMarker {
                purge_id: old.to_string(),
                written_unix_ms: 0,
                sweep_until_unix_ms: 1,
            };
            put_json(st.as_ref(), &layout::purge_marker(&old), &stale).await;
            let st2 = Arc::clone(&st);
            let waiting = tokio::spawn(async move { wait_for_sweeps(st2.as_ref()).await });
            // Still waiting after a few polls of the store.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            assert!(!waiting.is_finished(), "returned while the window was open");
            st.delete_many(&[layout::purge_marker(&id)])
                .await
                .expect("delete");
            tokio::time::timeout(Duration::from_secs(10), waiting)
                .await
                .expect("wait ends once the window is closed")
                .expect("join")
                .expect("wait");
        }
    }
}
