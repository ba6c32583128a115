//! Test restores (`ringvault verify RUN --restore-test`, or after each backup of a schedule
//! with `--restore-test`): proof that a backup restores, without touching live tables. Each
//! selected table goes through the real restore path — every worker downloads and verifies
//! its files (size and BLAKE3), sstableloader streams them — but into scratch keyspaces
//! `rv_test_<id>_<n>` (RF 1, the backup's table and type definitions with new table ids);
//! then every scratch table's partitions and rows are counted and a sample of partitions is
//! read back in full, and the counts are compared with the SSTable statistics the backup
//! recorded ([`compare`]). The scratch keyspaces and the staging are removed afterwards,
//! whatever happened. The test is a run of kind `restore_test` (progress, `runs show`, one run
//! per cluster at a time) and a row of its own ([`store`]) persisted at every stage: a
//! coordinator restarted mid-test records it as failed with the reason and drops its scratch
//! keyspaces once the workers are back.
pub mod compare;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use ringvault_common::RunId;
use ringvault_common::manifest::NodeManifest;
use ringvault_common::sstable_stats::{self, SstableStats};
use ringvault_common::test_restore::{create_scratch_keyspace, retarget, scratch_keyspace};
use ringvault_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::backup::{PlannedNode, reach_cluster};
use crate::catalog::{self, NodeSummary};
use crate::db::RunRow;
use crate::error::CoordinatorError;
use crate::restore::schema::{self, Scope};
use crate::restore::{Assignment, Mode, RestorePlan, SourceShare};
use crate::run::{NodeState, RunHandle, RunKind, RunStage, RunState, TestRestoreStage};
use crate::{Coordinator, now_ms};

/// The run kind of a test restore.
pub const KIND: &str = "restore_test"; // RunKind::RestoreTest
/// Partitions per table read back in full unless asked otherwise.
pub const DEFAULT_SAMPLE: u32 = 10;
/// Test hook: when set, a test restore creates `<file>.paused` once its data is loaded into
/// the scratch keyspaces and waits while `<file>` exists (only the crash test sets it).
pub const PAUSE_ENV: &str = crate::test_hooks::RESTORE_TEST_PAUSE_ENV;

/// A test restore to start.
#[derive(Debug, Clone, Default)]
pub struct TestRequest {
    pub backup_run: Option<RunId>,
    /// (keyspace, table); empty: every table of the backup.
    pub tables: Vec<(String, String)>,
    /// Bytes per second each worker reads from the store (0: unlimited).
    pub bandwidth: u64,
    pub sample: u32,
    pub schedule_id: String,
    pub cluster_name: Option<String>,
}

/// One table's result, stored with the test (JSON) and shown by `runs show`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableReport {
    pub keyspace: String,
    pub table: String,
    pub scratch_keyspace: String,
    pub loaded: bool,
    pub sstables: u64,
    pub comparison: String,
    pub expected_partitions_min: u64,
    pub expected_partitions_max: u64,
    pub found_partitions: u64,
    pub has_expected_rows: bool,
    pub expected_rows_min: u64,
    pub expected_rows_max: u64,
    pub found_rows: u64,
    pub sampled_partitions: u64,
    pub sampled_rows: u64,
    pub elapsed_ms: u64,
    pub ok: bool,
    pub detail: String,
}

/// Converts a worker's statistics (as validated for the manifest).
pub fn stats_from_proto(s: &pb::SstableStats) -> SstableStats {
    SstableStats {
        partitions: s.partitions,
        rows: s.rows,
        min_timestamp: s.min_timestamp,
        max_timestamp: s.max_timestamp,
        has_tombstones: s.has_tombstones,
    }
}

/// Everything a planned test needs.
struct Planned {
    restore: RestorePlan,
    scratch: BTreeMap<String, String>,
    objects: Vec<pb::SchemaObject>,
    tables: Vec<TableReport>,
    expected: BTreeMap<(String, String), compare::Expected>,
    sample: u32,
}

fn failed(e: impl std::fmt::Display) -> CoordinatorError {
    CoordinatorError::refused(e.to_string())
}

/// The schema to create in the scratch keyspaces: each keyspace's types and the selected
/// tables (with their dropped and re-added columns), rewritten into the scratch keyspace.
fn scratch_schema(
    backup: &catalog::BackupHeader,
    selected: &BTreeSet<(String, String)>,
    scratch: &BTreeMap<String, String>,
) -> Result<Vec<pb::SchemaObject>, CoordinatorError> {
    let scope = Scope {
        keyspaces: scratch.keys().cloned().collect(),
        tables: None,
        views: schema::views(&backup.schema),
    };
    let plan = schema::plan(&backup.schema, &[], &scope, false).map_err(failed)?;
    let mut out: Vec<pb::SchemaObject> = scratch
        .values()
        .map(|s| pb::SchemaObject {
            kind: pb::SchemaObjectKind::Keyspace as i32,
            keyspace: s.clone(),
            name: s.clone(),
            statement: create_scratch_keyspace(s),
            ..Default::default()
        })
        .collect();
    for o in plan.before_data {
        let kind = pb::SchemaObjectKind::try_from(o.kind).unwrap_or_default();
        let wanted = match kind {
            pb::SchemaObjectKind::Type => true,
            pb::SchemaObjectKind::Table
            | pb::SchemaObjectKind::DroppedColumn
            | pb::SchemaObjectKind::ReaddedColumn => {
                selected.contains(&(o.keyspace.clone(), o.name.clone()))
            }
            _ => false,
        };
        let Some(to) = scratch.get(&o.keyspace).filter(|_| wanted) else {
            continue;
        };
        let statement = retarget(&o.statement, &o.keyspace, to).map_err(|e| {
            failed(format!(
                "{kind:?} {}.{} cannot be created in a scratch keyspace: {e}",
                o.keyspace, o.name
            ))
        })?;
        out.push(pb::SchemaObject {
            keyspace: to.clone(),
            table_id: String::new(),
            statement,
            ..o
        });
    }
    Ok(out)
}

async fn plan(
    coord: &Arc<Coordinator>,
    req: &TestRequest,
    id: &RunId,
) -> Result<Planned, CoordinatorError> {
    let backup_run = req
        .backup_run
        .clone()
        .ok_or_else(|| CoordinatorError::invalid("a backup run is required"))?;
    let store = Arc::clone(&coord.store);
    let backup = catalog::load_header(&store, &backup_run).await?;
    let views = schema::views(&backup.schema);
    // Tables the backup holds data of and can describe (system keyspaces are not described).
    let described: BTreeSet<(String, String)> = backup
        .schema
        .iter()
        .filter(|r| r.kind == "table")
        .map(|r| (r.keyspace.clone(), r.name.clone()))
        .collect();
    let testable = |k: &(String, String)| !views.contains(k) && described.contains(k);
    // One pass over the node manifests: each node's summary, and what the SSTables of the
    // testable tables recorded about themselves.
    let mut recorded = Recorded::default();
    let mut manifests = catalog::node_manifests(&store, &backup.manifest);
    while let Some(m) = manifests.try_next().await? {
        recorded.add(&m, &testable);
    }
    drop(manifests);
    let held: BTreeSet<(String, String)> = recorded
        .sources
        .iter()
        .flat_map(|n| n.tables.keys())
        .filter(|k| testable(k))
        .cloned()
        .collect();
    let selected: BTreeSet<(String, String)> = if req.tables.is_empty() {
        held.clone()
    } else {
        for t in &req.tables {
            if !held.contains(t) {
                return Err(CoordinatorError::not_found(format!(
                    "table {}.{} is not in backup {backup_run} (or is a view, or has no schema to test it with)",
                    t.0, t.1
                )));
            }
        }
        req.tables.iter().cloned().collect()
    };
    if selected.is_empty() {
        return Err(failed(format!(
            "backup {backup_run} holds no table a test restore can load"
        )));
    }
    let keyspaces: BTreeSet<String> = selected.iter().map(|(k, _)| k.clone()).collect();
    let scratch: BTreeMap<String, String> = keyspaces
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), scratch_keyspace(id, i)))
        .collect();
    let objects = scratch_schema(&backup, &selected, &scratch)?;
    let (_cluster, nodes) = reach_cluster(coord, req.cluster_name.as_deref()).await?;
    let (assignments, expected, tables) = assign(recorded, &nodes, &selected, &backup, &scratch);
    // Room for the scratch data: each node stages its files and holds about its share of the
    // loaded data (RF 1), both on its data directory's filesystem.
    let total: u64 = assignments.iter().map(|a| a.totals().bytes).sum();
    let share = total.div_ceil(nodes.len().max(1) as u64);
    let mut short = Vec::new();
    for a in &assignments {
        let staged = a.totals().bytes;
        let need = staged + share;
        let free = a.target.info.free_bytes.first().copied().unwrap_or(0);
        if need > free {
            short.push(format!(
                "{}: {need} bytes needed ({staged} staged + {share} of loaded scratch data), {free} free",
                a.target.label()
            ));
        }
    }
    if !short.is_empty() {
        return Err(failed(format!(
            "the scratch keyspace would not fit on disk ({total} bytes of SSTables selected); nothing was changed: {}",
            short.join("; ")
        )));
    }
    let first = nodes.first().ok_or_else(|| failed("no target node"))?;
    crate::restore::check_schema(first, objects.clone(), "scratch schema check").await?;
    Ok(Planned {
        restore: RestorePlan {
            store,
            store_url: coord.opts.store.clone(),
            backup_run,
            mode: Mode::Loader,
            schema: Default::default(),
            nodes,
            assignments,
            bandwidth: req.bandwidth,
        },
        scratch,
        objects,
        tables,
        expected,
        sample: if req.sample == 0 {
            DEFAULT_SAMPLE
        } else {
            req.sample
        },
    })
}

/// Per table: (source node, statistics) of each of its SSTables.
type RecordedStats = Vec<(String, Option<SstableStats>)>;

type Assigned = (
    Vec<Assignment>,
    BTreeMap<(String, String), compare::Expected>,
    Vec<TableReport>,
);

/// What a test restore keeps of the node manifests, read one at a time.
#[derive(Default)]
struct Recorded {
    /// Each backup node's summary, in the order read.
    sources: Vec<NodeSummary>,
    /// Per testable table: the statistics its SSTables recorded.
    stats: BTreeMap<(String, String), RecordedStats>,
    /// Per testable table: its SSTables (Data.db files).
    data_files: BTreeMap<(String, String), u64>,
}

impl Recorded {
    fn add(&mut self, m: &NodeManifest, testable: &impl Fn(&(String, String)) -> bool) {
        for f in m.files.iter().filter(|f| f.is_restorable()) {
            let key = (f.keyspace.to_string(), f.table.to_string());
            if !testable(&key) {
                continue;
            }
            if sstable_stats::is_statistics(f.name.as_str()) {
                self.stats
                    .entry(key.clone())
                    .or_default()
                    .push((m.node.host_id.to_string(), f.sstable.clone()));
            }
            if f.name.as_str().ends_with("-Data.db") {
                *self.data_files.entry(key).or_default() += 1;
            }
        }
        self.sources.push(NodeSummary::of(m));
    }
}

/// Spreads the backup's nodes over the live ones (sstableloader: any topology), and works out
/// each selected table's expected counts from the recorded statistics.
fn assign(
    recorded: Recorded,
    nodes: &[PlannedNode],
    selected: &BTreeSet<(String, String)>,
    backup: &catalog::BackupHeader,
    scratch: &BTreeMap<String, String>,
) -> Assigned {
    let Recorded {
        mut sources,
        stats,
        data_files,
    } = recorded;
    crate::restore::in_address_order(&mut sources);
    let mut assignments: Vec<Assignment> = nodes
        .iter()
        .map(|n| Assignment {
            target: n.clone(),
            sources: Vec::new(),
        })
        .collect();
    for (i, src) in sources.into_iter().enumerate() {
        if let Some(a) = assignments.get_mut(i % nodes.len().max(1)) {
            a.sources.push(SourceShare::of(src, |ks, t| {
                selected.contains(&(ks.to_string(), t.to_string()))
            }));
        }
    }
    let dcs: BTreeSet<String> = backup
        .topology
        .nodes
        .iter()
        .map(|n| n.datacenter.clone())
        .collect();
    let rf: BTreeMap<String, Option<u32>> = backup
        .schema
        .iter()
        .filter(|r| r.kind == "keyspace")
        .map(|r| {
            (
                r.keyspace.clone(),
                compare::replication_factor(&r.statement, &dcs),
            )
        })
        .collect();
    let mut expected = BTreeMap::new();
    let mut tables = Vec::new();
    for key in selected {
        let e = compare::expected(
            stats.get(key).map(Vec::as_slice).unwrap_or_default(),
            rf.get(&key.0).copied().flatten(),
        );
        tables.push(TableReport {
            keyspace: key.0.clone(),
            table: key.1.clone(),
            scratch_keyspace: scratch.get(&key.0).cloned().unwrap_or_default(),
            sstables: data_files.get(key).copied().unwrap_or(0),
            comparison: e.comparison.as_str().into(),
            expected_partitions_min: e.partitions.0,
            expected_partitions_max: e.partitions.1,
            has_expected_rows: e.rows.is_some(),
            expected_rows_min: e.rows.map_or(0, |r| r.0),
            expected_rows_max: e.rows.map_or(0, |r| r.1),
            ..Default::default()
        });
        expected.insert(key.clone(), e);
    }
    (assignments, expected, tables)
}

/// Validates and plans a test restore, records it and starts it; refused with a reason (and
/// nothing changed) when the backup, the selection, the cluster or the disk does not allow it.
pub async fn start(coord: &Arc<Coordinator>, req: TestRequest) -> Result<RunId, CoordinatorError> {
    let _no_purge = coord.runs.start_guard("test restore")?;
    let id = RunId::new();
    let planned = plan(coord, &req, &id).await?;
    let cluster = planned
        .restore
        .nodes
        .first()
        .map(|n| n.info.cluster_name.clone())
        .unwrap_or_default();
    let backup = planned.restore.backup_run.to_string();
    let row = RunRow {
        id: id.to_string(),
        kind: RunKind::RestoreTest,
        tag: format!("restore-test-of-{backup}"),
        cluster_name: cluster.clone(),
        state: RunState::Running,
        stage: RunStage::RestoreTest(TestRestoreStage::Plan),
        keyspaces: planned.scratch.keys().cloned().collect(),
        tables: planned
            .tables
            .iter()
            .map(|t| format!("{}.{}", t.keyspace, t.table))
            .collect(),
        store_url: planned.restore.store_url.clone(),
        created_ms: now_ms(),
        finished_ms: 0,
        error: String::new(),
        source_run_id: backup.clone(),
        limits: Default::default(),
        schedule_id: req.schedule_id.clone(),
    };
    let nodes = crate::restore::planned_nodes(&planned.restore.assignments);
    let handle = coord.record_start(&row, &nodes).await?;
    let test = store::TestRow {
        id: id.to_string(),
        backup_run_id: backup.clone(),
        cluster_name: cluster,
        schedule_id: req.schedule_id.clone(),
        state: "RUNNING".into(),
        stage: "plan".into(),
        scratch_keyspaces: planned.scratch.values().cloned().collect(),
        scratch_dropped: false,
        started_ms: row.created_ms,
        finished_ms: 0,
        error: String::new(),
        report: serde_json::to_string(&planned.tables).unwrap_or_else(|_| "[]".into()),
    };
    let recorded = coord.db.call(move |db| store::insert(db, &test)).await;
    if let Err(e) = recorded {
        coord
            .finish_run(
                &handle,
                RunState::Failed,
                &format!("recording the test: {e:#}"),
            )
            .await;
        return Err(CoordinatorError::Internal(
            e.context("recording the test restore"),
        ));
    }
    tracing::info!(test = %id, backup, tables = planned.tables.len(), "test restore started");
    tokio::spawn(drive(Arc::clone(coord), handle, planned));
    Ok(id)
}

async fn enter(
    coord: &Coordinator,
    handle: &RunHandle,
    stage: TestRestoreStage,
) -> anyhow::Result<()> {
    if handle.cancel.is_cancelled() {
        anyhow::bail!("cancelled by the operator");
    }
    let run_stage = RunStage::RestoreTest(stage);
    handle.update(|r| r.run.stage = run_stage);
    let id = handle.id.clone();
    coord
        .db
        .call(move |db| {
            db.set_stage(&id, run_stage)?;
            store::set_stage(db, &id, stage.as_str())
        })
        .await
}

async fn pause_for_tests() {
    crate::test_hooks::pause(PAUSE_ENV, "test restore with its data loaded").await;
}

async fn drive(coord: Arc<Coordinator>, handle: Arc<RunHandle>, p: Planned) {
    let tables = Arc::new(Mutex::new(p.tables.clone()));
    let result = async {
        enter(&coord, &handle, TestRestoreStage::Schema).await?;
        let first = p
            .restore
            .nodes
            .first()
            .ok_or_else(|| anyhow::anyhow!("no target node"))?;
        first
            .client
            .clone()
            .apply_schema(pb::ApplySchemaRequest {
                objects: p.objects.clone(),
                dry_run: false,
            })
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "creating the scratch schema on {}: {}",
                    first.label(),
                    e.message()
                )
            })?;
        enter(&coord, &handle, TestRestoreStage::Download).await?;
        let r = crate::restore::data::download_all(&coord, &handle, &p.restore).await;
        coord.persist_nodes(&handle).await?;
        r?;
        enter(&coord, &handle, TestRestoreStage::Load).await?;
        let r = load_all(&handle, &p, &tables).await;
        coord.persist_nodes(&handle).await?;
        r?;
        pause_for_tests().await;
        enter(&coord, &handle, TestRestoreStage::Count).await?;
        count_all(&p, &tables).await
    }
    .await;
    // Whatever happened: the scratch keyspaces and the staging go.
    let _ = enter(&coord, &handle, TestRestoreStage::Cleanup).await;
    let dropped = drop_scratch(&p.restore.nodes, p.scratch.values()).await;
    let cleaned = clean_staging(&p.restore).await;
    let report = tables.lock().map(|t| t.clone()).unwrap_or_default();
    let mut problems: Vec<String> = Vec::new();
    if let Err(e) = &result {
        problems.push(format!("{e:#}"));
    }
    if result.is_ok() {
        problems.extend(
            report
                .iter()
                .filter(|t| !t.ok)
                .map(|t| format!("{}.{}: {}", t.keyspace, t.table, t.detail)),
        );
    }
    if let Err(e) = &dropped {
        problems.push(format!("dropping the scratch keyspaces: {e:#}"));
    }
    if let Err(e) = &cleaned {
        problems.push(format!("removing the staging: {e:#}"));
    }
    let passed = problems.is_empty();
    let error = problems.join("; ");
    let (id, json) = (
        handle.id.clone(),
        serde_json::to_string(&report).unwrap_or_else(|_| "[]".into()),
    );
    let (state, err, done) = (
        if passed { "PASSED" } else { "FAILED" },
        error.clone(),
        dropped.is_ok(),
    );
    if let Err(e) = coord
        .db
        .call(move |db| store::finish(db, &id, state, &err, &json, done, now_ms()))
        .await
    {
        tracing::error!(error = %format!("{e:#}"), "recording the test restore's result");
    }
    if passed {
        let _ = enter(&coord, &handle, TestRestoreStage::Done).await;
    }
    let state = if passed {
        RunState::Done
    } else if handle.cancel.is_cancelled() {
        RunState::Cancelled
    } else {
        RunState::Failed
    };
    coord.finish_run(&handle, state, &error).await;
}

/// Loads every staged (source node, table) into its scratch keyspace: nodes in parallel,
/// tables one after another; the time each table took is summed over its loads.
async fn load_all(
    handle: &RunHandle,
    p: &Planned,
    tables: &Mutex<Vec<TableReport>>,
) -> anyhow::Result<()> {
    let hosts: Vec<String> = p
        .restore
        .nodes
        .iter()
        .map(|n| n.info.address.clone())
        .collect();
    let record = |ks: &str, table: &str, f: &dyn Fn(&mut TableReport)| {
        if let Ok(mut t) = tables.lock()
            && let Some(t) = t.iter_mut().find(|t| t.keyspace == ks && t.table == table)
        {
            f(t);
        }
    };
    crate::restore::data::each_staged_table(
        handle,
        &p.restore,
        "loading ",
        NodeState::Loaded,
        |a, staged| {
            let hosts = hosts.clone();
            async move {
                let (ks, table) = (staged.keyspace.clone(), staged.table.clone());
                let target = p.scratch.get(&ks).cloned().unwrap_or_default();
                handle.update_node(&a.target.info.host_id, |n| {
                    n.state = NodeState::Loading(format!("{ks}.{table} into {target}"))
                });
                let started = Instant::now();
                let r = a
                    .target
                    .client
                    .clone()
                    .load(pb::LoadRequest {
                        table: Some(staged),
                        hosts,
                        target_keyspace: target,
                    })
                    .await;
                let ms = started.elapsed().as_millis() as u64;
                match r {
                    Ok(_) => {
                        record(&ks, &table, &|t| {
                            t.elapsed_ms += ms;
                            t.loaded = true;
                        });
                        Ok(())
                    }
                    Err(e) => {
                        let msg = e.message().to_string();
                        record(&ks, &table, &|t| {
                            t.elapsed_ms += ms;
                            t.loaded = false;
                            t.detail = format!("load failed: {msg}");
                        });
                        Err(msg)
                    }
                }
            }
        },
    )
    .await
}

/// Counts every scratch table and compares with what the backup recorded.
async fn count_all(p: &Planned, tables: &Mutex<Vec<TableReport>>) -> anyhow::Result<()> {
    let first = p
        .restore
        .nodes
        .first()
        .ok_or_else(|| anyhow::anyhow!("no target node"))?;
    let list: Vec<(String, String, String)> = tables
        .lock()
        .map_err(|_| anyhow::anyhow!("report lock poisoned"))?
        .iter()
        .map(|t| {
            (
                t.keyspace.clone(),
                t.table.clone(),
                t.scratch_keyspace.clone(),
            )
        })
        .collect();
    for (ks, table, scratch) in list {
        let started = Instant::now();
        let r = first
            .client
            .clone()
            .count_scratch_table(pb::CountScratchTableRequest {
                keyspace: scratch.clone(),
                table: table.clone(),
                sample: p.sample,
            })
            .await;
        let ms = started.elapsed().as_millis() as u64;
        let mut guard = tables
            .lock()
            .map_err(|_| anyhow::anyhow!("report lock poisoned"))?;
        let Some(t) = guard
            .iter_mut()
            .find(|t| t.keyspace == ks && t.table == table)
        else {
            continue;
        };
        t.elapsed_ms += ms;
        match r {
            Ok(c) => {
                let c = c.into_inner();
                t.found_partitions = c.partitions;
                t.found_rows = c.rows;
                t.sampled_partitions = c.sampled_partitions;
                t.sampled_rows = c.sampled_rows;
                let problem = p
                    .expected
                    .get(&(ks.clone(), table.clone()))
                    .and_then(|e| e.check(c.partitions, c.rows));
                match problem {
                    None if t.loaded => t.ok = true,
                    None => t.detail = "not loaded".into(),
                    Some(why) => t.detail = why,
                }
            }
            Err(e) => t.detail = format!("reading {scratch}.{table} back: {}", e.message()),
        }
    }
    Ok(())
}

/// Drops the scratch keyspaces through the first node that answers.
async fn drop_scratch<'a>(
    nodes: &[PlannedNode],
    keyspaces: impl IntoIterator<Item = &'a String>,
) -> anyhow::Result<()> {
    let keyspaces: Vec<&String> = keyspaces.into_iter().collect();
    let mut last = None;
    for n in nodes {
        let mut ok = true;
        for ks in &keyspaces {
            if let Err(e) = n
                .client
                .clone()
                .drop_scratch_keyspace(pb::DropScratchKeyspaceRequest {
                    keyspace: (*ks).clone(),
                })
                .await
            {
                last = Some(anyhow::anyhow!("{}: {ks}: {}", n.label(), e.message()));
                ok = false;
                break;
            }
        }
        if ok {
            return Ok(());
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no node to drop the scratch keyspaces on")))
}

/// Removes the test's staging on every node that staged files.
async fn clean_staging(plan: &RestorePlan) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    for a in &plan.assignments {
        if let Err(e) = a
            .target
            .client
            .clone()
            .clean_staging(pb::CleanStagingRequest {
                backup_run_id: plan.backup_run.to_string(),
            })
            .await
        {
            errors.push(format!("{}: {}", a.target.label(), e.message()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", errors.join("; "))
    }
}

/// At start: every test left running is recorded as failed with the reason, and the scratch
/// keyspaces of every test not confirmed dropped are dropped once the cluster's workers answer.
pub async fn recover(coord: &Arc<Coordinator>) -> anyhow::Result<()> {
    let running = coord.db.call(store::running).await?;
    for t in running {
        let reason = format!(
            "the coordinator stopped during the test restore (stage {}); it did not finish",
            t.stage
        );
        tracing::warn!(test = %t.id, reason, "failing an interrupted test restore");
        let (id, r, report) = (t.id.clone(), reason.clone(), t.report.clone());
        coord
            .db
            .call(move |db| {
                store::finish(db, &id, "FAILED", &r, &report, false, now_ms())?;
                db.finish_run(&id, RunState::Failed, &r, now_ms())
            })
            .await?;
    }
    let pending = coord.db.call(store::undropped).await?;
    if !pending.is_empty() {
        tokio::spawn(drop_after_restart(Arc::clone(coord), pending));
    }
    Ok(())
}

/// How long a restarted coordinator keeps trying to reach the workers to drop scratch
/// keyspaces (they are tried again at the next start after that).
const DROP_PATIENCE: Duration = Duration::from_secs(15 * 60);

async fn drop_after_restart(coord: Arc<Coordinator>, tests: Vec<store::TestRow>) {
    let deadline = Instant::now() + DROP_PATIENCE;
    for t in tests {
        loop {
            let cluster = (!t.cluster_name.is_empty()).then_some(t.cluster_name.as_str());
            let outcome = match reach_cluster(&coord, cluster).await {
                Ok((_, nodes)) => {
                    let dropped = drop_scratch(&nodes, t.scratch_keyspaces.iter()).await;
                    if dropped.is_ok()
                        && let Ok(run) = RunId::parse(&t.backup_run_id)
                    {
                        for n in &nodes {
                            let _ = n
                                .client
                                .clone()
                                .clean_staging(pb::CleanStagingRequest {
                                    backup_run_id: run.to_string(),
                                })
                                .await;
                        }
                    }
                    dropped.map_err(|e| format!("{e:#}"))
                }
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(()) => {
                    let id = t.id.clone();
                    let note = "; its scratch keyspaces were dropped after the restart";
                    if let Err(e) = coord
                        .db
                        .call(move |db| store::mark_dropped(db, &id, note))
                        .await
                    {
                        tracing::error!(error = %format!("{e:#}"), "recording the dropped scratch keyspaces");
                    }
                    tracing::info!(test = %t.id, keyspaces = ?t.scratch_keyspaces, "scratch keyspaces of an interrupted test restore dropped");
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(test = %t.id, error = e, "scratch keyspaces not dropped yet");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => {
                    tracing::error!(test = %t.id, error = e, "scratch keyspaces left; tried again at the next start");
                    break;
                }
            }
        }
    }
}

/// After a scheduled backup that ended DONE: runs the schedule's test restore (when it has
/// one) and waits for it to end. Failures are recorded with the test, never on the backup.
pub async fn after_scheduled_backup(coord: &Arc<Coordinator>, run_id: &str, schedule: &str) {
    let id = schedule.to_string();
    match coord
        .db
        .call(move |db| store::schedule_option(db, &id))
        .await
    {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reading the schedule's test restore option");
            return;
        }
    }
    let Ok(backup) = RunId::parse(run_id) else {
        return;
    };
    let req = TestRequest {
        backup_run: Some(backup),
        schedule_id: schedule.to_string(),
        ..Default::default()
    };
    // The backup's own run may still be leaving the active set.
    let deadline = Instant::now() + Duration::from_secs(60);
    let test = loop {
        match start(coord, req.clone()).await {
            Ok(t) => break t,
            Err(
                e @ (CoordinatorError::Unavailable { .. }
                | CoordinatorError::Busy(_)
                | CoordinatorError::Conflict(_)),
            ) => {
                if Instant::now() >= deadline {
                    tracing::error!(
                        schedule,
                        run = run_id,
                        error = %e,
                        "scheduled test restore not started"
                    );
                    return;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => {
                tracing::error!(
                    schedule,
                    run = run_id,
                    error = %e,
                    "scheduled test restore refused"
                );
                return;
            }
        }
    };
    tracing::info!(schedule, run = run_id, test = %test, "scheduled test restore started");
    wait(coord, test.as_str()).await;
}

/// Waits until a test has recorded its end.
pub async fn wait(coord: &Arc<Coordinator>, test: &str) -> Option<store::TestRow> {
    loop {
        let id = test.to_string();
        match coord.db.call(move |db| store::get(db, &id)).await {
            Ok(Some(t)) if t.state != "RUNNING" => return Some(t),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `verify RUN --restore-test`: starts the test, sends its id at once (a RUNNING report), then
/// its report when it ends. The test goes on if the caller goes away.
pub async fn verify_stream(
    coord: &Arc<Coordinator>,
    r: pb::VerifyRequest,
) -> Result<
    tokio_stream::wrappers::ReceiverStream<Result<pb::VerifyEvent, tonic::Status>>,
    CoordinatorError,
> {
    if !r.from_store_url.is_empty() {
        return Err(CoordinatorError::invalid(
            "--restore-test reads the coordinator's own store (no --from-store)",
        ));
    }
    let backup = RunId::parse(&r.run_id).map_err(|e| CoordinatorError::invalid(e.to_string()))?;
    let mut tables = Vec::new();
    for t in &r.tables {
        let (ks, table) = t.split_once('.').ok_or_else(|| {
            CoordinatorError::invalid(format!("table {t:?} must be keyspace.table"))
        })?;
        for (what, v) in [("keyspace", ks), ("table", table)] {
            ringvault_common::Identifier::parse(what, v)
                .map_err(|e| CoordinatorError::invalid(e.to_string()))?;
        }
        tables.push((ks.to_string(), table.to_string()));
    }
    let id = start(
        coord,
        TestRequest {
            backup_run: Some(backup.clone()),
            tables,
            bandwidth: if r.bandwidth_bytes_per_sec > 0 {
                r.bandwidth_bytes_per_sec
            } else {
                coord.opts.verify_bandwidth
            },
            sample: r.sample_partitions,
            schedule_id: String::new(),
            cluster_name: None,
        },
    )
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let coord = Arc::clone(coord);
    tokio::spawn(async move {
        let event = |rep: pb::RestoreTestReport| pb::VerifyEvent {
            event: Some(pb::verify_event::Event::RestoreTest(rep)),
        };
        let _ = tx
            .send(Ok(event(pb::RestoreTestReport {
                test_run_id: id.to_string(),
                backup_run_id: backup.to_string(),
                state: "RUNNING".into(),
                ..Default::default()
            })))
            .await;
        let out = match wait(&coord, id.as_str()).await {
            Some(t) => Ok(event(report(&t))),
            None => Err(CoordinatorError::Internal(anyhow::anyhow!(
                "test restore {id} was not recorded"
            ))
            .into_status()),
        };
        let _ = tx.send(out).await;
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A stored test as the CLI shows it.
pub fn report(t: &store::TestRow) -> pb::RestoreTestReport {
    let tables: Vec<TableReport> = serde_json::from_str(&t.report).unwrap_or_default();
    pb::RestoreTestReport {
        test_run_id: t.id.clone(),
        backup_run_id: t.backup_run_id.clone(),
        state: t.state.clone(),
        error: t.error.clone(),
        started_unix_ms: t.started_ms,
        finished_unix_ms: t.finished_ms,
        scratch_keyspaces: t.scratch_keyspaces.clone(),
        scratch_dropped: t.scratch_dropped,
        schedule_id: t.schedule_id.clone(),
        tables: tables
            .into_iter()
            .map(|x| pb::RestoreTestTable {
                keyspace: x.keyspace,
                table: x.table,
                scratch_keyspace: x.scratch_keyspace,
                loaded: x.loaded,
                sstables: x.sstables,
                expected_partitions_min: x.expected_partitions_min,
                expected_partitions_max: x.expected_partitions_max,
                found_partitions: x.found_partitions,
                has_expected_rows: x.has_expected_rows,
                expected_rows_min: x.expected_rows_min,
                expected_rows_max: x.expected_rows_max,
                found_rows: x.found_rows,
                comparison: x.comparison,
                sampled_partitions: x.sampled_partitions,
                sampled_rows: x.sampled_rows,
                elapsed_ms: x.elapsed_ms,
                ok: x.ok,
                detail: x.detail,
            })
            .collect(),
    }
}

/// The one-line summary of a stored test.
pub fn summary(t: &store::TestRow) -> pb::RestoreTestSummary {
    let tables: Vec<TableReport> = serde_json::from_str(&t.report).unwrap_or_default();
    pb::RestoreTestSummary {
        test_run_id: t.id.clone(),
        state: t.state.clone(),
        finished_unix_ms: t.finished_ms,
        error: t.error.clone(),
        tables: tables.len() as u32,
        tables_ok: tables.iter().filter(|x| x.ok).count() as u32,
        backup_run_id: t.backup_run_id.clone(),
    }
}

/// `runs show`: a backup gets its last test restore, a test restore its report.
pub async fn decorate_run(coord: &Coordinator, run: &mut pb::Run) {
    let id = run.id.clone();
    if run.kind == "backup" {
        if let Ok(Some(t)) = coord
            .db
            .call(move |db| store::last_for_backup(db, &id))
            .await
        {
            run.last_restore_test = Some(summary(&t));
        }
    } else if run.kind == KIND
        && let Ok(Some(t)) = coord.db.call(move |db| store::get(db, &id)).await
    {
        run.restore_test = Some(report(&t));
    }
}

/// `backups list`: each backup's last test restore.
pub async fn decorate_backups(coord: &Coordinator, backups: &mut [pb::BackupSummary]) {
    for b in backups {
        let id = b.run_id.clone();
        if let Ok(Some(t)) = coord
            .db
            .call(move |db| store::last_for_backup(db, &id))
            .await
        {
            b.last_restore_test = Some(summary(&t));
        }
    }
}

/// `schedule list`: whether the schedule tests its backups, and its last test restore.
pub async fn decorate_schedule(coord: &Coordinator, s: &mut pb::Schedule) {
    let id = s.id.clone();
    if let Ok((on, last)) = coord
        .db
        .call(move |db| {
            Ok((
                store::schedule_option(db, &id)?,
                store::last_for_schedule(db, &id)?,
            ))
        })
        .await
    {
        s.restore_test = on;
        s.last_restore_test = last.as_ref().map(summary);
    }
}

/// The test restores' part of `/metrics`: per cluster, when the newest test restore finished
/// and whether it passed.
pub async fn metrics_text(coord: &Coordinator) -> anyhow::Result<String> {
    let rows = coord.db.call(store::last_finished_per_cluster).await?;
    let mut m = ringvault_common::metrics::MetricsText::new();
    m.gauge(
        "ringvault_last_restore_test_timestamp_seconds",
        "When the newest test restore finished, in seconds since the Unix epoch.",
        rows.iter()
            .map(|(c, ms, _)| ([("cluster", c.as_str())], *ms as f64 / 1000.0)),
    );
    m.gauge(
        "ringvault_last_restore_test_success",
        "1 when the newest test restore passed, 0 when it failed.",
        rows.iter()
            .map(|(c, _, ok)| ([("cluster", c.as_str())], if *ok { 1.0 } else { 0.0 })),
    );
    Ok(m.finish())
}
