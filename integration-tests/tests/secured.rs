//! Backups and restores of a secured cluster (`scripts/testbed up --secure`:
//! PasswordAuthenticator + CassandraAuthorizer, JMX authentication, client and internode TLS),
//! with the workers logged in as the least-privilege `ringvault` role. Rows are read back by an
//! independent client that authenticates over TLS. While runs go, `ps -eo args` is sampled and
//! every secret of the bed is looked for there, in the coordinator's database, in every log and
//! in the CLI's output.
//!
//! Needs the secured bed: `RINGVAULT_TESTBED_ENV=<dir>/env cargo test -p
//! ringvault-integration-tests --features secured-bed --test secured`.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use ringvault_integration_tests::cluster;
use ringvault_integration_tests::deployment::Deployment;
use ringvault_integration_tests::runs;
use ringvault_integration_tests::testbed::Testbed;
use scylla::client::session::Session;
use serde_json::Value;

/// The tests share three Cassandra nodes; one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn secured_bed() -> anyhow::Result<Testbed> {
    let tb = Testbed::load()?;
    anyhow::ensure!(
        tb.var("RV_SECURE").ok().as_deref() == Some("1"),
        "these tests need the secured test bed: scripts/testbed up --secure, then \
         RINGVAULT_TESTBED_ENV=<its dir>/env"
    );
    Ok(tb)
}

/// Every secret value of the bed (first line of each secret file).
fn secrets(tb: &Testbed) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for f in tb.var("RV_SECRET_FILES")?.split(':') {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?;
        let v = text.lines().next().unwrap_or_default().trim().to_string();
        anyhow::ensure!(v.len() >= 16, "secret in {f} is too short to search for");
        out.push(v);
    }
    Ok(out)
}

/// Collects every distinct `ps -eo args` line while it runs.
struct PsSampler {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<BTreeSet<String>>>,
}

impl PsSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(out) = std::process::Command::new("ps")
                    .args(["-eo", "args"])
                    .output()
                {
                    for l in String::from_utf8_lossy(&out.stdout).lines() {
                        seen.insert(l.to_string());
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// Fails naming where a secret value shows up in `text`.
fn assert_no_secret(where_: &str, text: &str, secrets: &[String]) -> anyhow::Result<()> {
    for (i, s) in secrets.iter().enumerate() {
        anyhow::ensure!(
            !text.contains(s.as_str()),
            "secret #{i} of the bed appears in {where_}"
        );
    }
    Ok(())
}

/// The coordinator's database (with its WAL), every log of the deployment and `cli_output`
/// hold no secret.
fn assert_no_secret_at_rest(
    d: &Deployment,
    cli_output: &str,
    secrets: &[String],
) -> anyhow::Result<()> {
    assert_no_secret("the CLI's output", cli_output, secrets)?;
    for e in std::fs::read_dir(d.dir.path())? {
        let p = e?.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("coordinator.db") || name.ends_with(".log") {
            let bytes = std::fs::read(&p)?;
            assert_no_secret(
                &p.display().to_string(),
                &String::from_utf8_lossy(&bytes),
                secrets,
            )?;
        }
    }
    Ok(())
}

/// Runs the CLI, returning (exit success, stdout + stderr).
fn cli(d: &Deployment, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = d.cli(args)?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn cli_json(d: &Deployment, args: &[&str], log: &mut String) -> anyhow::Result<Value> {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let (ok, text) = cli(d, &all)?;
    log.push_str(&text);
    anyhow::ensure!(ok, "ringvault {args:?} failed: {text}");
    serde_json::from_str(&text).with_context(|| format!("parsing {text}"))
}

/// A scratch file store, removed with the deployment that uses it.
fn store_url(tag: &str) -> String {
    ringvault_integration_tests::runs::file_store_url(&format!("secured-{tag}"))
        .expect("a path under the temp directory")
}

/// A keyspace with two tables on the secured cluster, flushed.
async fn keyspace(tb: &Testbed, s: &Session, prefix: &str) -> anyhow::Result<String> {
    let ks = cluster::unique_keyspace(prefix);
    cluster::create_keyspace(s, tb, &ks, &["employee", "department"]).await?;
    cluster::write_rows(s, &ks, "employee", 0, 800, 200).await?;
    cluster::write_rows(s, &ks, "department", 0, 200, 40).await?;
    cluster::flush(tb, &ks)?;
    Ok(ks)
}

async fn drop_keyspace(s: &Session, ks: &str) {
    let _ = s
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {ks}"), ())
        .await;
}

/// No stack trace in an error shown to the operator.
fn assert_no_stack_trace(text: &str) -> anyhow::Result<()> {
    for marker in [
        "\tat ",
        "at org.apache",
        "at java.",
        "StackTrace",
        "panicked",
    ] {
        anyhow::ensure!(
            !text.contains(marker),
            "error carries a stack trace ({marker:?}): {text}"
        );
    }
    Ok(())
}

/// Acceptance 1 and 5: full, keyspace and table backups commit and pass `verify --deep`; no
/// secret in any process's argv meanwhile, nor in the database, the logs or the CLI's output.
#[tokio::test]
async fn backups_commit_and_verify_deep_with_no_secret_anywhere() -> anyhow::Result<()> {
    let _g = SERIAL.lock().await;
    let tb = secured_bed()?;
    let secrets = secrets(&tb)?;
    let s = cluster::session(&tb).await?;
    let ks = keyspace(&tb, &s, "sec_backup").await?;
    let d = Deployment::start(&store_url("backup"))?;
    let mut out = String::new();
    let ps = PsSampler::start();
    let result: anyhow::Result<()> = async {
        for args in [
            vec!["backup", "--wait"],
            vec!["backup", "--wait", "-k", ks.as_str()],
            vec!["backup", "--wait", "-k", ks.as_str(), "-t", "employee"],
        ] {
            let v = cli_json(&d, &args, &mut out)?;
            anyhow::ensure!(v["state"] == "DONE", "{args:?} ended {v}");
            let run = v["id"].as_str().context("run id")?.to_string();
            let (code, report) = runs::verify(&d, &run, true)?;
            out.push_str(&report.to_string());
            anyhow::ensure!(code == 0, "verify --deep of {args:?} failed: {report}");
        }
        Ok(())
    }
    .await;
    let seen = ps.finish();
    drop_keyspace(&s, &ks).await;
    result?;
    // The sampling saw the workers' JMX login in use (so it looked while credentials were):
    // their JMX session's helper, which reads the password file, or a nodetool run with -pwf.
    anyhow::ensure!(
        seen.iter()
            .any(|l| l.contains("RingvaultJmx") || (l.contains("NodeTool") && l.contains("-pwf"))),
        "ps never showed the JMX session's helper nor a nodetool run with -pwf"
    );
    assert_no_secret(
        "ps -eo args",
        &seen.into_iter().collect::<Vec<_>>().join("\n"),
        &secrets,
    )?;
    assert_no_secret_at_rest(&d, &out, &secrets)
}

/// Acceptance 2, 3 and 5: TRUNCATE + table restore, DROP KEYSPACE + keyspace restore (import)
/// and a `--mode loader` restore give the rows back exactly, read over authenticated TLS.
#[tokio::test]
async fn restores_give_identical_rows_with_no_secret_anywhere() -> anyhow::Result<()> {
    let _g = SERIAL.lock().await;
    let tb = secured_bed()?;
    let secrets = secrets(&tb)?;
    let s = cluster::session(&tb).await?;
    let ks = keyspace(&tb, &s, "sec_restore").await?;
    let d = Deployment::start(&store_url("restore"))?;
    let mut out = String::new();
    let ps = PsSampler::start();
    let result: anyhow::Result<()> = async {
        let v = cli_json(&d, &["backup", "--wait", "-k", &ks], &mut out)?;
        anyhow::ensure!(v["state"] == "DONE", "backup ended {v}");
        let run = v["id"].as_str().context("run id")?.to_string();
        let employee = cluster::all_rows(&s, &ks, "employee").await?;
        let department = cluster::all_rows(&s, &ks, "department").await?;
        anyhow::ensure!(employee.len() == 800 && department.len() == 200);

        // TRUNCATE + table restore (nodetool import).
        s.query_unpaged(format!("TRUNCATE {ks}.employee"), ())
            .await?;
        anyhow::ensure!(cluster::all_rows(&s, &ks, "employee").await?.is_empty());
        let v = cli_json(
            &d,
            &["restore", &run, "-k", &ks, "-t", "employee", "--wait"],
            &mut out,
        )?;
        anyhow::ensure!(v["state"] == "DONE", "table restore ended {v}");
        anyhow::ensure!(
            cluster::all_rows(&s, &ks, "employee").await? == employee,
            "employee differs after TRUNCATE + restore"
        );

        // DROP KEYSPACE + keyspace restore: the schema is recreated by the ringvault role.
        s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
        let v = cli_json(&d, &["restore", &run, "-k", &ks, "--wait"], &mut out)?;
        anyhow::ensure!(v["state"] == "DONE", "keyspace restore ended {v}");
        anyhow::ensure!(
            cluster::all_rows(&s, &ks, "employee").await? == employee,
            "employee differs after DROP KEYSPACE + restore"
        );
        anyhow::ensure!(
            cluster::all_rows(&s, &ks, "department").await? == department,
            "department differs after DROP KEYSPACE + restore"
        );

        // sstableloader with authentication (auth provider) and TLS (client and internode).
        s.query_unpaged(format!("TRUNCATE {ks}.department"), ())
            .await?;
        let v = cli_json(
            &d,
            &[
                "restore",
                &run,
                "-k",
                &ks,
                "-t",
                "department",
                "--mode",
                "loader",
                "--wait",
            ],
            &mut out,
        )?;
        anyhow::ensure!(v["state"] == "DONE", "loader restore ended {v}");
        anyhow::ensure!(
            cluster::all_rows(&s, &ks, "department").await? == department,
            "department differs after a --mode loader restore"
        );
        Ok(())
    }
    .await;
    let seen = ps.finish();
    drop_keyspace(&s, &ks).await;
    result?;
    anyhow::ensure!(
        seen.iter()
            .any(|l| l.contains("BulkLoader") && l.contains("-ap")),
        "ps never showed sstableloader with its auth provider"
    );
    anyhow::ensure!(
        seen.iter()
            .any(|l| l.contains("NodeTool") && l.contains("import")),
        "ps never showed nodetool import"
    );
    assert_no_secret(
        "ps -eo args",
        &seen.into_iter().collect::<Vec<_>>().join("\n"),
        &secrets,
    )?;
    assert_no_secret_at_rest(&d, &out, &secrets)
}

/// A file holding a wrong password (owner-only), in `dir`.
fn wrong_password_file(dir: &Path, name: &str, content: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, content)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    Ok(p)
}

/// `args` with the value after `flag` replaced.
fn with_flag(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    if let Some(i) = args.iter().position(|a| a == flag) {
        args[i + 1] = value.to_string();
    }
    args
}

/// Acceptance 4: a wrong CQL password, a CA that did not sign the node's certificate, a wrong
/// JMX password and a role without MODIFY each stop before anything is snapshotted or
/// imported, with a message naming what failed and no stack trace.
#[tokio::test]
async fn access_failures_are_named_before_anything_changes() -> anyhow::Result<()> {
    let _g = SERIAL.lock().await;
    let tb = secured_bed()?;
    let secrets = secrets(&tb)?;
    let s = cluster::session(&tb).await?;
    let ks = keyspace(&tb, &s, "sec_fail").await?;
    let mut d = Deployment::start(&store_url("fail"))?;
    let mut out = String::new();
    let result: anyhow::Result<()> = async {
        let bad = tempfile::tempdir()?;
        let good = d.cassandra_access_args(1)?;

        // Wrong CQL password: the worker stops at start, naming the login that failed.
        let pw = wrong_password_file(bad.path(), "cql", "not-the-password-of-ringvault\n")?;
        d.set_worker_access_args(
            1,
            Some(with_flag(
                good.clone(),
                "--cql-password-file",
                &pw.display().to_string(),
            )),
        );
        let refused = d
            .worker_start_refused(1, Duration::from_secs(90))?
            .context("a worker with a wrong CQL password kept running")?;
        out.push_str(&refused);
        eprintln!("wrong CQL password -> {}", refused.trim());
        anyhow::ensure!(
            refused.contains("CQL authentication failed") && refused.contains("ringvault"),
            "wrong CQL password: {refused}"
        );
        assert_no_stack_trace(&refused)?;

        // A CA that did not sign the node's certificate.
        let other_ca = tb.var("RV_CQL_TLS_OTHER_CA")?;
        d.set_worker_access_args(1, Some(with_flag(good.clone(), "--cql-tls-ca", &other_ca)));
        let refused = d
            .worker_start_refused(1, Duration::from_secs(90))?
            .context("a worker trusting the wrong CA kept running")?;
        out.push_str(&refused);
        eprintln!("wrong CA -> {}", refused.trim());
        anyhow::ensure!(
            refused.contains("CQL TLS") && refused.contains(&other_ca),
            "wrong CA: {refused}"
        );
        assert_no_stack_trace(&refused)?;

        // Wrong JMX password: the backup is refused before any snapshot.
        let jmx = wrong_password_file(bad.path(), "jmx", "ringvault not-the-jmx-password\n")?;
        d.set_worker_access_args(
            1,
            Some(with_flag(
                good.clone(),
                "--jmx-password-file",
                &jmx.display().to_string(),
            )),
        );
        d.kill_worker(1)?;
        d.start_worker(1)?;
        d.wait_workers(3)?;
        let (ok, text) = cli(
            &d,
            &["backup", "--wait", "-k", &ks, "--tag", "sec-jmx-refused"],
        )?;
        out.push_str(&text);
        anyhow::ensure!(!ok, "backup with a wrong JMX password succeeded: {text}");
        eprintln!("wrong JMX password -> {}", text.trim());
        anyhow::ensure!(
            text.contains("JMX authentication failed") && text.contains("ringvault"),
            "wrong JMX password: {text}"
        );
        assert_no_stack_trace(&text)?;
        cluster::assert_no_snapshot(&tb, "sec-jmx-refused")?;

        // Back to the right credentials, a backup to restore from.
        d.set_worker_access_args(1, None);
        d.kill_worker(1)?;
        d.start_worker(1)?;
        d.wait_workers(3)?;
        let v = cli_json(&d, &["backup", "--wait", "-k", &ks], &mut out)?;
        anyhow::ensure!(v["state"] == "DONE", "backup ended {v}");
        let run = v["id"].as_str().context("run id")?.to_string();

        // A role without MODIFY: the restore is refused before any file is imported.
        s.query_unpaged(format!("TRUNCATE {ks}.employee"), ())
            .await?;
        for n in 1..=3 {
            let args = d.cassandra_access_args(n)?;
            let args = with_flag(args, "--cql-username", &tb.var("RV_CQL_NOMODIFY_USERNAME")?);
            let args = with_flag(
                args,
                "--cql-password-file",
                &tb.var("RV_CQL_NOMODIFY_PASSWORD_FILE")?,
            );
            d.set_worker_access_args(n, Some(args));
            d.kill_worker(n)?;
            d.start_worker(n)?;
        }
        d.wait_workers(3)?;
        let (ok, text) = cli(
            &d,
            &["restore", &run, "-k", &ks, "-t", "employee", "--wait"],
        )?;
        out.push_str(&text);
        anyhow::ensure!(!ok, "restore by a role without MODIFY succeeded: {text}");
        eprintln!("role without MODIFY -> {}", text.trim());
        anyhow::ensure!(
            text.contains("lacks MODIFY")
                && text.contains("ringvault_nomodify")
                && text.contains("GRANT MODIFY"),
            "role without MODIFY: {text}"
        );
        assert_no_stack_trace(&text)?;
        anyhow::ensure!(
            cluster::all_rows(&s, &ks, "employee").await?.is_empty(),
            "rows were imported although the restore was refused"
        );
        Ok(())
    }
    .await;
    drop_keyspace(&s, &ks).await;
    result?;
    assert_no_secret_at_rest(&d, &out, &secrets)
}
