//! Security on the real test bed, TLS on every hop: who may call what (certificates, roles,
//! tokens), what a caller can no longer aim elsewhere (stores, host ids), bounded requests,
//! start-up refusals, and certificate rotation without a restart. Each refusal is checked to
//! have changed nothing.
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ringvault_common::security::certs::CertAuthority;
use ringvault_common::security::{ClientSecurity, Identity, ReloadingTls, Role};
use ringvault_integration_tests::bed;
use ringvault_integration_tests::deployment::{Deployment, TESTBED_CLUSTER, bin, free_port};
use ringvault_integration_tests::runs::{file_store_url, output_text};
use ringvault_proto::v1 as pb;
use ringvault_proto::v1::registry_client::RegistryClient;
use ringvault_proto::v1::worker_client::WorkerClient;
use tonic::Code;
use tonic::transport::Channel;

/// Client security trusting `ca`, presenting `cert` (name under `dir`) if given.
fn client(ca: &Path, own: Option<(&Path, &str)>) -> ClientSecurity {
    let own = own.map(|(dir, name)| {
        (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        )
    });
    ClientSecurity {
        tls: Some(Arc::new(ReloadingTls::new(ca.to_path_buf(), own))),
    }
}

async fn channel(sec: &ClientSecurity, url: &str) -> Channel {
    sec.channel(url, |ep| ep.connect_timeout(Duration::from_secs(5)))
        .expect("channel")
}

/// Every RPC of `service` in its .proto file.
fn rpcs(proto: &str, service: &str) -> Vec<String> {
    let start = proto
        .find(&format!("service {service} {{"))
        .expect("service in proto");
    let body = &proto[start..];
    let body = &body[..body.find("\n}").expect("end of service")];
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .map(|l| l.split('(').next().unwrap_or_default().trim().to_string())
        .collect()
}

/// Calls `path` with an empty message, whatever its real types: the authorization layer
/// answers before anything decodes it.
async fn raw_call(ch: Channel, path: &str) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    grpc.unary(tonic::Request::new(()), path.parse().expect("path"), codec)
        .await
        .map(|_| ())
}

fn runs_count(d: &Deployment) -> usize {
    d.cli_json(&["runs", "list"])
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(usize::MAX)
}

/// A TCP server that counts connections and keeps what it received.
struct Mock {
    port: u16,
    connections: Arc<AtomicUsize>,
    received: Arc<std::sync::Mutex<Vec<u8>>>,
}

async fn mock() -> Mock {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, r) = (Arc::clone(&connections), Arc::clone(&received));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let r = Arc::clone(&r);
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    r.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    Mock {
        port,
        connections,
        received,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_needs_a_certificate_from_our_ca_and_a_role_that_allows_it() -> anyhow::Result<()>
{
    let _bed = bed::exclusive().await;
    let d = Deployment::start(&file_store_url("roles")?)?;
    let certs = d.certs();
    let coordinator_proto = include_str!("../../../proto/ringvault/v1/coordinator.proto");
    let worker_proto = include_str!("../../../proto/ringvault/v1/worker.proto");
    let registry_proto = include_str!("../../../proto/ringvault/v1/registry.proto");

    // 1. No client certificate: UNAUTHENTICATED on every RPC of every service.
    let anon = client(&certs.ca, None);
    let targets = [
        (&d.coordinator_url, "Coordinator", coordinator_proto),
        (&d.coordinator_url, "Registry", registry_proto),
        (&d.worker_url(1), "Worker", worker_proto),
    ];
    let mut checked = 0;
    for (url, service, proto) in targets {
        for rpc in rpcs(proto, service) {
            let ch = channel(&anon, url).await;
            let err = raw_call(ch, &format!("/ringvault.v1.{service}/{rpc}"))
                .await
                .expect_err("an anonymous call must be refused");
            assert_eq!(
                err.code(),
                Code::Unauthenticated,
                "{service}/{rpc}: {err:?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 25, "only {checked} RPCs found in the protos");
    // The databases are the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    for db in [
        d.dir.path().join("coordinator.db"),
        d.dir.path().join("worker1/hash-cache.sqlite"),
    ] {
        let mode = std::fs::metadata(&db)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", db.display());
    }

    // A certificate from another CA: refused at the handshake (the handler never runs).
    let other_dir = tempfile::tempdir()?;
    let other = CertAuthority::load_or_create(other_dir.path(), "intruder CA")?;
    other.write(
        other_dir.path(),
        "intruder",
        &Identity::User {
            name: "mallory".into(),
            role: Role::Admin,
        },
        &[],
    )?;
    let intruder = client(&certs.ca, Some((other_dir.path(), "intruder")));
    for url in [&d.coordinator_url, &d.worker_url(1)] {
        let ch = channel(&intruder, url).await;
        let err = raw_call(ch, "/ringvault.v1.Coordinator/ListRuns")
            .await
            .expect_err("a foreign certificate must be refused");
        assert!(
            !matches!(
                err.code(),
                Code::PermissionDenied | Code::Unauthenticated | Code::Ok
            ),
            "{url}: refused by a handler, not the handshake: {err:?}"
        );
    }
    let log = std::fs::read_to_string(d.log("coordinator"))?;
    assert!(log.contains("TLS handshake refused"), "{log}");

    // 2. Roles.
    let before = runs_count(&d);
    let o = d.cli_as("viewer", &["backup", "-k", "system_auth"])?;
    assert!(
        !o.status.success() && output_text(&o).contains("permission denied"),
        "{}",
        output_text(&o)
    );
    assert!(d.cli_as("viewer", &["runs", "list"])?.status.success());
    let fake_run = uuid::Uuid::now_v7().to_string();
    let o = d.cli_as("operator", &["restore", &fake_run])?;
    assert!(
        !o.status.success() && output_text(&o).contains("admin role"),
        "{}",
        output_text(&o)
    );
    let o = d.cli_as("operator", &["purge", "--dry-run"])?;
    assert!(
        !o.status.success() && output_text(&o).contains("admin role"),
        "{}",
        output_text(&o)
    );
    let o = d.cli_as("viewer", &["verify", &fake_run, "--deep"])?;
    assert!(
        !o.status.success() && output_text(&o).contains("operator role"),
        "{}",
        output_text(&o)
    );
    let o = d.cli_as("admin", &["purge", "--dry-run"])?;
    assert!(o.status.success(), "{}", output_text(&o));
    assert_eq!(runs_count(&d), before, "a refused call started a run");

    // 3. Components may not call what is not theirs.
    let as_worker = client(&certs.ca, Some((&certs.dir, "worker1")));
    for m in ["StartBackup", "Purge", "ListRuns"] {
        let err = raw_call(
            channel(&as_worker, &d.coordinator_url).await,
            &format!("/ringvault.v1.Coordinator/{m}"),
        )
        .await
        .expect_err("worker calling the Coordinator service");
        assert_eq!(err.code(), Code::PermissionDenied, "{m}: {err:?}");
    }
    let as_admin = client(&certs.ca, Some((&certs.dir, "admin")));
    let err = WorkerClient::new(channel(&as_admin, &d.worker_url(1)).await)
        .get_node_info(pb::GetNodeInfoRequest {})
        .await
        .expect_err("a CLI certificate calling a worker");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = RegistryClient::new(channel(&as_admin, &d.coordinator_url).await)
        .heartbeat(pb::HeartbeatRequest::default())
        .await
        .expect_err("a CLI certificate calling the registry");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // 4. A host id is bound to the identity that registered it first.
    let workers = d.cli_json(&["workers", "list"])?;
    let node1 = workers
        .as_array()
        .and_then(|a| a.iter().find(|w| w["address"] == "127.0.0.1"))
        .cloned()
        .expect("node 1 registered");
    let host_id = node1["host_id"].as_str().unwrap_or_default().to_string();
    let ca = CertAuthority::load_or_create(&certs.dir, "unused")?;
    ca.write(
        &certs.dir,
        "impostor",
        &Identity::Worker {
            cluster: TESTBED_CLUSTER.into(),
            name: "node9".into(),
        },
        &["127.0.0.1".into()],
    )?;
    let impostor = client(&certs.ca, Some((&certs.dir, "impostor")));
    let mut reg = RegistryClient::new(channel(&impostor, &d.coordinator_url).await);
    let err = reg
        .register(pb::RegisterRequest {
            node: Some(pb::NodeInfo {
                cluster_name: TESTBED_CLUSTER.into(),
                host_id: host_id.clone(),
                address: "127.0.0.1".into(),
                worker_address: "https://127.0.0.1:1".into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("registering a bound host id under another identity");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let hb = reg
        .heartbeat(pb::HeartbeatRequest {
            host_id: host_id.clone(),
            cluster_name: TESTBED_CLUSTER.into(),
        })
        .await?
        .into_inner();
    assert!(
        !hb.known,
        "an impostor's heartbeat must not keep the node alive"
    );
    let after = d.cli_json(&["workers", "list"])?;
    let row = after
        .as_array()
        .and_then(|a| a.iter().find(|w| w["host_id"] == host_id.as_str()))
        .cloned()
        .expect("row still there");
    assert_eq!(
        row["worker_address"], node1["worker_address"],
        "row changed"
    );
    // A worker certificate of another cluster may not register at all.
    ca.write(
        &certs.dir,
        "othercluster",
        &Identity::Worker {
            cluster: "another".into(),
            name: "node1".into(),
        },
        &["127.0.0.1".into()],
    )?;
    let err = RegistryClient::new(
        channel(
            &client(&certs.ca, Some((&certs.dir, "othercluster"))),
            &d.coordinator_url,
        )
        .await,
    )
    .register(pb::RegisterRequest {
        node: Some(pb::NodeInfo {
            cluster_name: TESTBED_CLUSTER.into(),
            host_id: uuid::Uuid::new_v4().to_string(),
            address: "127.0.0.9".into(),
            worker_address: "https://127.0.0.9:1".into(),
            ..Default::default()
        }),
    })
    .await
    .expect_err("a worker of another cluster");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // `workers remove` is for admins; the real worker then registers again by itself.
    let o = d.cli_as("operator", &["workers", "remove", &host_id])?;
    assert!(
        !o.status.success() && output_text(&o).contains("admin role"),
        "{}",
        output_text(&o)
    );
    let o = d.cli_as("admin", &["workers", "remove", &host_id])?;
    assert!(o.status.success(), "{}", output_text(&o));
    d.wait_workers(3)?;

    // Bearer tokens are not accepted by this coordinator (no --tokens-file).
    let token_dir = tempfile::tempdir()?;
    std::fs::write(token_dir.path().join("t"), "not-a-token")?;
    let o = Command::new(bin("ringvault")?)
        .args(["--coordinator", &d.coordinator_url, "--tls-ca"])
        .arg(&certs.ca)
        .arg("--token-file")
        .arg(token_dir.path().join("t"))
        .args(["runs", "list"])
        .output()?;
    assert!(
        !o.status.success() && output_text(&o).contains("unauthenticated"),
        "{}",
        output_text(&o)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_carry_a_role_for_users_without_certificates() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let tokens = tempfile::tempdir()?;
    let (viewer, line) = ringvault_common::security::tokens::new_token("bob", Role::Viewer);
    std::fs::write(tokens.path().join("tokens"), format!("{line}\n"))?;
    std::fs::write(tokens.path().join("bob.token"), &viewer)?;
    std::fs::write(tokens.path().join("wrong.token"), "0123")?;
    let tokens_file = tokens.path().join("tokens").display().to_string();
    let d = Deployment::start_with(&file_store_url("tokens")?, &["--tokens-file", &tokens_file])?;
    let run = |token: &str, args: &[&str]| -> anyhow::Result<std::process::Output> {
        Ok(Command::new(bin("ringvault")?)
            .args(["--coordinator", &d.coordinator_url, "--tls-ca"])
            .arg(&d.certs().ca)
            .arg("--token-file")
            .arg(tokens.path().join(token))
            .args(args)
            .output()?)
    };
    let o = run("bob.token", &["runs", "list"])?;
    assert!(o.status.success(), "{}", output_text(&o));
    let o = run("bob.token", &["backup", "-k", "system_auth"])?;
    assert!(
        !o.status.success() && output_text(&o).contains("permission denied"),
        "{}",
        output_text(&o)
    );
    let o = run("wrong.token", &["runs", "list"])?;
    assert!(
        !o.status.success() && output_text(&o).contains("unauthenticated"),
        "{}",
        output_text(&o)
    );
    // A token never travels in clear.
    let o = Command::new(bin("ringvault")?)
        .args([
            "--coordinator",
            &format!("http://127.0.0.1:{}", d.coordinator_port()),
        ])
        .arg("--token-file")
        .arg(tokens.path().join("bob.token"))
        .args(["runs", "list"])
        .output()?;
    assert!(
        !o.status.success() && output_text(&o).contains("https"),
        "{}",
        output_text(&o)
    );
    let log = std::fs::read_to_string(d.log("coordinator"))?;
    assert!(!log.contains(&viewer), "the token reached the log");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_opens_only_the_stores_it_is_configured_for_and_bounds_requests()
-> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let d = Deployment::start(&file_store_url("allow")?)?;
    let certs = d.certs();
    let m = mock().await;
    let elsewhere =
        std::env::temp_dir().join(format!("rv-elsewhere-{}", uuid::Uuid::new_v4().simple()));
    let aimed = [
        format!(
            "s3://ringvault/x?endpoint=http://127.0.0.1:{}&region=us-east-1",
            m.port
        ),
        format!("gs://ringvault/x?endpoint=http://127.0.0.1:{}", m.port),
        format!(
            "az://devstoreaccount1/ringvault/x?endpoint=http://127.0.0.1:{}/devstoreaccount1",
            m.port
        ),
        format!("file://{}", elsewhere.display()),
    ];
    let as_coordinator = client(&certs.ca, Some((&certs.dir, "coordinator")));
    let mut w = WorkerClient::new(channel(&as_coordinator, &d.worker_url(1)).await);
    let run_id = uuid::Uuid::now_v7().to_string();
    for url in &aimed {
        let e = w
            .check_storage(pb::CheckStorageRequest {
                store_url: url.clone(),
            })
            .await
            .expect_err("CheckStorage outside the allowlist");
        assert_eq!(e.code(), Code::PermissionDenied, "{url}: {e:?}");
        let e = w
            .upload(pb::UploadRequest {
                run_id: run_id.clone(),
                tag: "t1".into(),
                store_url: url.clone(),
                ..Default::default()
            })
            .await
            .expect_err("Upload outside the allowlist");
        assert_eq!(e.code(), Code::PermissionDenied, "{url}: {e:?}");
        let e = w
            .download(futures::stream::iter(vec![pb::DownloadRequest {
                backup_run_id: run_id.clone(),
                attempt_id: run_id.clone(),
                store_url: url.clone(),
                ..Default::default()
            }]))
            .await
            .expect_err("Download outside the allowlist");
        assert_eq!(e.code(), Code::PermissionDenied, "{url}: {e:?}");
        // The coordinator's --from-store is held to its own allowlist.
        let o = d.cli(&["backups", "list", "--from-store", url])?;
        assert!(
            !o.status.success() && output_text(&o).contains("refused"),
            "{}",
            output_text(&o)
        );
    }
    // Every refused call has returned; a margin for a connection still in flight, since an
    // absence cannot be observed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        m.connections.load(Ordering::SeqCst),
        0,
        "a request reached the mock endpoint"
    );
    let got = String::from_utf8_lossy(&m.received.lock().unwrap()).to_string();
    assert!(!got.contains("sig=") && !got.contains("Bearer"), "{got}");
    assert!(!elsewhere.exists(), "{} was created", elsewhere.display());

    // 7. Absurd concurrency is refused, by the worker and by the coordinator.
    let huge = 4_000_000_000u32;
    let e = w
        .upload(pb::UploadRequest {
            run_id: run_id.clone(),
            tag: "t1".into(),
            store_url: d.store_url.clone(),
            concurrency: huge,
            ..Default::default()
        })
        .await
        .expect_err("huge upload concurrency");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = w
        .download(futures::stream::iter(vec![pb::DownloadRequest {
            backup_run_id: run_id.clone(),
            attempt_id: run_id.clone(),
            store_url: d.store_url.clone(),
            concurrency: huge,
            ..Default::default()
        }]))
        .await
        .expect_err("huge download concurrency");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let before = runs_count(&d);
    let o = d.cli(&[
        "backup",
        "-k",
        "system_auth",
        "--concurrency",
        &huge.to_string(),
    ])?;
    assert!(
        !o.status.success() && output_text(&o).contains("concurrency"),
        "{}",
        output_text(&o)
    );
    assert_eq!(runs_count(&d), before);
    let rss_kb: u64 = std::fs::read_to_string(format!(
        "/proc/{}/status",
        d.worker_pid(1).expect("worker 1 runs")
    ))?
    .lines()
    .find_map(|l| l.strip_prefix("VmRSS:"))
    .and_then(|v| v.split_whitespace().next()?.parse().ok())
    .unwrap_or(u64::MAX);
    assert!(rss_kb < 300 * 1024, "worker RSS {rss_kb} kB");
    Ok(())
}

#[test]
fn servers_refuse_to_start_without_tls_off_loopback() -> anyhow::Result<()> {
    let _bed = bed::shared_blocking();
    let dir = tempfile::tempdir()?;
    let store = format!("file://{}", dir.path().join("store").display());
    let db = dir.path().join("c.db").display().to_string();
    let port = free_port("127.0.0.1")?;
    let coordinator = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        let mut child = Command::new(bin("ringvault-coordinator")?)
            .args(["--db", &db, "--store", &store])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                child.kill()?;
                anyhow::bail!("the coordinator kept running with {args:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(child.wait_with_output()?)
    };
    let o = coordinator(&[
        "--listen",
        &format!("0.0.0.0:{port}"),
        "--insecure-loopback",
    ])?;
    assert!(
        !o.status.success() && output_text(&o).contains("loopback"),
        "{}",
        output_text(&o)
    );
    let o = coordinator(&["--listen", &format!("127.0.0.1:{port}")])?;
    assert!(
        !o.status.success() && output_text(&o).contains("no TLS configured"),
        "{}",
        output_text(&o)
    );
    let o = Command::new(bin("ringvault-worker")?)
        .args([
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--data-dir",
            "/tmp",
            "--allow-store",
            &store,
        ])
        .output()?;
    assert!(
        !o.status.success() && output_text(&o).contains("no TLS configured"),
        "{}",
        output_text(&o)
    );
    // A plain-text client is refused off loopback before it connects.
    let o = Command::new(bin("ringvault")?)
        .args(["--coordinator", "http://192.0.2.1:7600", "runs", "list"])
        .output()?;
    assert!(
        !o.status.success() && output_text(&o).contains("loopback"),
        "{}",
        output_text(&o)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_rotated_on_disk_is_used_by_the_next_connection() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let d = Deployment::start(&file_store_url("rotate")?)?;
    let certs = d.certs();
    let pid = d.coordinator_pid();
    assert!(d.cli(&["runs", "list"])?.status.success());
    let old_dir = tempfile::tempdir()?;
    let old_ca = old_dir.path().join("old-ca.pem");
    std::fs::copy(&certs.ca, &old_ca)?;
    // A new CA; the coordinator's CA, certificate and key are replaced on disk.
    let new = tempfile::tempdir()?;
    let ca2 = CertAuthority::load_or_create(new.path(), "rotated CA")?;
    ca2.write(
        new.path(),
        "coordinator",
        &Identity::Coordinator,
        &["127.0.0.1".into()],
    )?;
    ca2.write(
        new.path(),
        "admin",
        &Identity::User {
            name: "admin2".into(),
            role: Role::Admin,
        },
        &[],
    )?;
    for (from, to) in [
        (
            new.path().join("coordinator.pem"),
            certs.get("coordinator").cert,
        ),
        (
            new.path().join("coordinator.key"),
            certs.get("coordinator").key,
        ),
        (new.path().join("ca.pem"), certs.ca.clone()),
    ] {
        let tmp = to.with_extension("new");
        std::fs::copy(&from, &tmp)?;
        std::fs::rename(&tmp, &to)?;
    }
    // New-CA clients get in; old-CA clients no longer do. No restart.
    let o = Command::new(bin("ringvault")?)
        .args(["--coordinator", &d.coordinator_url, "--tls-ca"])
        .arg(new.path().join("ca.pem"))
        .arg("--tls-cert")
        .arg(new.path().join("admin.pem"))
        .arg("--tls-key")
        .arg(new.path().join("admin.key"))
        .args(["runs", "list"])
        .output()?;
    assert!(
        o.status.success(),
        "the rotated certificates were not used: {}",
        output_text(&o)
    );
    let err = raw_call(
        channel(
            &ClientSecurity {
                tls: Some(Arc::new(ReloadingTls::new(
                    old_ca,
                    Some((certs.get("admin").cert, certs.get("admin").key)),
                ))),
            },
            &d.coordinator_url,
        )
        .await,
        "/ringvault.v1.Coordinator/ListRuns",
    )
    .await
    .expect_err("a client of the old CA must no longer get in");
    assert!(!matches!(err.code(), Code::Ok), "{err:?}");
    assert_eq!(d.coordinator_pid(), pid, "the coordinator was restarted");
    Ok(())
}
