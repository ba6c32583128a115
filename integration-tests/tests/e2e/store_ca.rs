//! `--store-ca-file` against real servers speaking TLS with a certificate from a private CA
//! (`ringvault certs --server`), started here on free loopback ports beside the shared bed:
//! rv-s3-server (s3s-fs over TLS, the compose stack's default store), Azurite (`--cert/--key`)
//! and fake-gcs-server (`-scheme https`), from the copies the test bed installed.
//!
//! For each, the worker's own store check (`ringvault-worker --check-storage URL`: a put, head
//! and delete through the product's store client) must succeed with the CA and fail without it
//! (the certificate is unknown to the system roots), and a missing or unparseable CA file must
//! stop the worker with the file named, before any request.
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ringvault_integration_tests::deployment::{bin, free_port};
use ringvault_integration_tests::testbed::Testbed;

/// A server process killed when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA and a server certificate for `localhost`, made by the CLI the operator uses.
fn certs(dir: &Path) -> Result<()> {
    let out = Command::new(bin("ringvault")?)
        .args(["certs", "--out"])
        .arg(dir)
        .args(["--server", "store=localhost,127.0.0.1"])
        .output()?;
    ensure!(
        out.status.success(),
        "ringvault certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Waits until `port` accepts connections, or the server exits.
fn wait_port(server: &mut Server, port: u16, what: &str, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = server.0.try_wait()? {
            bail!(
                "{what} exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within 60s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Server> {
    let f = std::fs::File::create(log)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    Ok(Server(child))
}

/// The test bed's cache of installed servers (`~/.cache/ringvault`): RV_S3S_BIN is `<cache>/bin/s3s-fs`.
fn cache(bed: &Testbed) -> Result<PathBuf> {
    let s3s = PathBuf::from(bed.var("RV_S3S_BIN")?);
    s3s.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("RV_S3S_BIN has no grandparent")
}

/// `ringvault-worker --check-storage URL` with `env`, and `--store-ca-file ca` when given.
fn check(url: &str, ca: Option<&Path>, env: &[(&str, String)]) -> Result<Output> {
    let mut cmd = Command::new(bin("ringvault-worker")?);
    cmd.args(["--data-dir", "/nonexistent-data", "--check-storage", url]);
    if let Some(ca) = ca {
        cmd.arg("--store-ca-file").arg(ca);
    }
    // Nothing from this process's environment decides the outcome.
    for v in [
        "RINGVAULT_STORE_CA_FILE",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "STORAGE_EMULATOR_HOST",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AZURE_STORAGE_AUTH",
        "AZURE_STORAGE_SAS_TOKEN",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd.output()?)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The store check passes with `--store-ca-file ca` and fails without it.
fn usable_only_with_the_ca(url: &str, ca: &Path, env: &[(&str, String)]) -> Result<()> {
    let with = check(url, Some(ca), env)?;
    ensure!(
        with.status.success() && text(&with).contains("is usable"),
        "{url} with --store-ca-file: {}",
        text(&with)
    );
    let without = check(url, None, env)?;
    ensure!(
        !without.status.success(),
        "{url} without the CA passed its check: {}",
        text(&without)
    );
    Ok(())
}

/// The three checks every store must pass: usable with the CA, refused without it, and a bad
/// CA file named.
fn prove(url: &str, ca: &Path, env: &[(&str, String)]) -> Result<()> {
    usable_only_with_the_ca(url, ca, env)?;
    let without = check(url, None, env)?;
    let t = text(&without).to_lowercase();
    ensure!(
        t.contains("certificate") || t.contains("tls") || t.contains("issuer"),
        "{url} without the CA failed for another reason than TLS: {}",
        text(&without)
    );
    let missing = ca.with_file_name("missing-ca.pem");
    let bad = check(url, Some(&missing), env)?;
    ensure!(
        !bad.status.success() && text(&bad).contains(&missing.display().to_string()),
        "a missing CA file: {}",
        text(&bad)
    );
    let garbage = ca.with_file_name("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )?;
    let bad = check(url, Some(&garbage), env)?;
    ensure!(
        !bad.status.success() && text(&bad).contains(&garbage.display().to_string()),
        "an unparseable CA file: {}",
        text(&bad)
    );
    Ok(())
}

#[test]
fn s3_over_tls_with_a_private_ca() -> Result<()> {
    let dir = tempfile::tempdir()?;
    certs(dir.path())?;
    let port = free_port("127.0.0.1")?;
    let (access, secret) = ("rvcatest", uuid::Uuid::new_v4().simple().to_string());
    let log = dir.path().join("s3.log");
    let mut server = spawn(
        Command::new(bin("rv-s3-server")?)
            .env("RV_S3_LISTEN", format!("127.0.0.1:{port}"))
            .env("RV_S3_ROOT", dir.path().join("data"))
            .env("RV_S3_BUCKETS", "ringvault")
            .env("RV_S3_TLS_CERT", dir.path().join("server-store.pem"))
            .env("RV_S3_TLS_KEY", dir.path().join("server-store.key"))
            .env("RV_S3_ACCESS_KEY", access)
            .env("RV_S3_SECRET_KEY", &secret),
        &log,
    )?;
    wait_port(&mut server, port, "rv-s3-server", &log)?;
    let url = format!("s3://ringvault/ca-test?endpoint=https://localhost:{port}&region=us-east-1");
    let env = [
        ("AWS_ACCESS_KEY_ID", access.to_string()),
        ("AWS_SECRET_ACCESS_KEY", secret.clone()),
    ];
    prove(&url, &dir.path().join("ca.pem"), &env)?;
    // The server never logs its credentials.
    let logged = std::fs::read_to_string(&log)?;
    ensure!(
        !logged.contains(&secret),
        "the secret key is in the server's log"
    );
    Ok(())
}

#[test]
fn azure_over_tls_with_a_private_ca() -> Result<()> {
    let bed = Testbed::load()?;
    let dir = tempfile::tempdir()?;
    certs(dir.path())?;
    let port = free_port("127.0.0.1")?;
    let azurite = cache(&bed)?.join("azurite/node_modules/azurite/dist/src/blob/main.js");
    let log = dir.path().join("azurite.log");
    let data = dir.path().join("azurite");
    std::fs::create_dir_all(&data)?;
    let mut server = spawn(
        Command::new("node")
            .arg(&azurite)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(&data)
            .arg("--cert")
            .arg(dir.path().join("server-store.pem"))
            .arg("--key")
            .arg(dir.path().join("server-store.key"))
            .args(["--skipApiVersionCheck", "--loose"]),
        &log,
    )?;
    wait_port(&mut server, port, "azurite", &log)?;
    let key = bed.var("RV_AZ_KEY")?;
    // The container, made by the compose profile's own script (Shared Key over https,
    // trusting the CA through NODE_EXTRA_CA_CERTS).
    let script = Testbed::repo_root().join("deploy/docker/azurite-container.js");
    let made = Command::new("node")
        .arg(&script)
        .env("AZ_HOST", "localhost")
        .env("AZ_PORT", port.to_string())
        .env("AZ_CONTAINER", "ringvault")
        .env("AZURE_STORAGE_KEY", &key)
        .env("NODE_EXTRA_CA_CERTS", dir.path().join("ca.pem"))
        .output()?;
    ensure!(
        made.status.success(),
        "azurite-container.js: {}",
        text(&made)
    );
    let url = format!(
        "az://devstoreaccount1/ringvault/ca-test?endpoint=https://localhost:{port}/devstoreaccount1"
    );
    let env = [
        ("AZURE_STORAGE_KEY", key),
        ("AZURE_STORAGE_AUTH", "key".to_string()),
    ];
    prove(&url, &dir.path().join("ca.pem"), &env)
}

#[test]
fn gcs_over_tls_with_a_private_ca() -> Result<()> {
    let bed = Testbed::load()?;
    let dir = tempfile::tempdir()?;
    certs(dir.path())?;
    let port = free_port("127.0.0.1")?;
    let data = dir.path().join("gcs");
    std::fs::create_dir_all(data.join("ringvault"))?;
    let log = dir.path().join("gcs.log");
    let endpoint = format!("https://localhost:{port}");
    let mut server = spawn(
        Command::new(cache(&bed)?.join("bin/fake-gcs-server"))
            .args([
                "-scheme",
                "https",
                "-host",
                "127.0.0.1",
                "-port",
                &port.to_string(),
            ])
            .arg("-data")
            .arg(&data)
            .arg("-cert-location")
            .arg(dir.path().join("server-store.pem"))
            .arg("-private-key-location")
            .arg(dir.path().join("server-store.key"))
            .args([
                "-external-url",
                &endpoint,
                "-public-host",
                &format!("localhost:{port}"),
            ]),
        &log,
    )?;
    wait_port(&mut server, port, "fake-gcs-server", &log)?;
    let url = format!("gs://ringvault/ca-test?endpoint={endpoint}");
    let ca = dir.path().join("ca.pem");
    // The Google SDK's own client reads SSL_CERT_FILE (see the gcs backend's doc).
    let env = [
        ("STORAGE_EMULATOR_HOST", endpoint.clone()),
        ("SSL_CERT_FILE", ca.display().to_string()),
    ];
    // Without --store-ca-file ringvault's own calls (the JSON API) refuse the server.
    usable_only_with_the_ca(&url, &ca, &env)?;
    let missing = ca.with_file_name("missing-ca.pem");
    let bad = check(&url, Some(&missing), &env)?;
    ensure!(
        !bad.status.success() && text(&bad).contains(&missing.display().to_string()),
        "a missing CA file: {}",
        text(&bad)
    );
    Ok(())
}
