//! Measures the memory the worker's real upload path needs for one large file: uploads a file
//! (default: a fresh 5 GB file of random bytes) through `ringvault_worker::upload::Uploader` to
//! one store and prints this process's peak RSS (VmHWM). The promise it checks: files stream
//! through fixed buffers, so a 5 GB SSTable needs no more memory than a small one (< 200 MB).
//!
//! ```sh
//! cargo build --release -p ringvault-integration-tests --bin rv-upload-rss
//! target/release/rv-upload-rss --backend gs --gb 5          # test bed store, fresh prefix
//! target/release/rv-upload-rss --store 'file:///tmp/x' --file /data/big.db
//! ```
//! `scripts/bench-store-rss` runs it for every backend, one process each.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rand::RngCore;
use ringvault_common::{Identifier, RelativeName, RunId};
use ringvault_integration_tests::testbed::Testbed;
use ringvault_worker::hash_cache::HashCache;
use ringvault_worker::snapshot_files::SnapshotFile;
use ringvault_worker::throttle::Throttle;
use ringvault_worker::upload::{UploadEvent, Uploader};
use tokio::sync::mpsc;

struct Args {
    store: Option<String>,
    backend: Option<String>,
    file: Option<PathBuf>,
    gb: f64,
    concurrency: usize,
    keep: bool,
    max_rss_mb: Option<u64>,
}

fn usage() -> &'static str {
    "usage: rv-upload-rss (--backend file|s3|gs|az | --store URL) [--file PATH | --gb N] \
     [--concurrency N] [--keep] [--max-rss-mb N]"
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        store: None,
        backend: None,
        file: None,
        gb: 5.0,
        concurrency: 8,
        keep: false,
        max_rss_mb: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{arg} needs a value; {}", usage()))
        };
        match arg.as_str() {
            "--store" => a.store = Some(val()?),
            "--backend" => a.backend = Some(val()?),
            "--file" => a.file = Some(PathBuf::from(val()?)),
            "--gb" => a.gb = val()?.parse().context("--gb")?,
            "--concurrency" => a.concurrency = val()?.parse().context("--concurrency")?,
            "--max-rss-mb" => a.max_rss_mb = Some(val()?.parse().context("--max-rss-mb")?),
            "--keep" => a.keep = true,
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {}", usage()),
        }
    }
    if a.store.is_none() == a.backend.is_none() {
        bail!("give exactly one of --backend and --store; {}", usage());
    }
    Ok(a)
}

/// A test bed store URL under a fresh prefix, with the test bed's credentials in the
/// providers' standard variables.
fn testbed_store(backend: &str) -> Result<String> {
    let tb = Testbed::load()?;
    tb.export_store_credentials()?;
    tb.fresh_store_url(backend, "rss")
}

/// Writes `bytes` random bytes to `path` through a 4 MiB buffer.
fn make_file(path: &std::path::Path, bytes: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut buf = vec![0u8; 4 << 20];
    let mut rng = rand::rng();
    let mut left = bytes;
    while left > 0 {
        let n = buf.len().min(left as usize);
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// A `VmHWM`/`VmRSS` line of /proc/self/status, in kB.
fn proc_status_kb(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))
}

#[tokio::main]
async fn main() -> Result<()> {
    ringvault_worker::bound_allocator_caching();
    let args = parse_args()?;
    let url = match (&args.store, &args.backend) {
        (Some(u), _) => u.clone(),
        (None, Some(b)) => testbed_store(b)?,
        (None, None) => bail!("{}", usage()),
    };
    let work = tempfile::tempdir()?;
    let path = match &args.file {
        Some(p) => p.clone(),
        None => {
            let p = work.path().join("nb-1-big-Data.db");
            let bytes = (args.gb * 1e9) as u64;
            let t = Instant::now();
            make_file(&p, bytes)?;
            eprintln!(
                "wrote {bytes} random bytes to {} in {:.1}s",
                p.display(),
                t.elapsed().as_secs_f64()
            );
            p
        }
    };
    let meta = std::fs::metadata(&path).with_context(|| format!("{}", path.display()))?;
    let mtime_ns = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as i128;
    let store = ringvault_common::store::open(&url).await?;
    store
        .check()
        .await
        .with_context(|| format!("store {} failed its check", store.describe()))?;
    let rss_before = proc_status_kb("VmHWM:")?;

    let uploader = Arc::new(Uploader {
        run_id: RunId::new(),
        store: Arc::clone(&store),
        cache: HashCache::open(&work.path().join("hash-cache.sqlite"))?,
        concurrency: args.concurrency,
        throttle: Throttle::new(0),
        gentle: true,
        store_key: ringvault_worker::hash_cache::store_key(&url),
        trust_seen: false,
        held_pages_max: ringvault_worker::upload::HELD_PAGES_MAX,
    });
    let file = SnapshotFile {
        data_dir_index: 0,
        keyspace: Identifier::parse("keyspace", "rss")?,
        table: Identifier::parse("table", "big")?,
        table_id: "0123456789abcdef0123456789abcdef".into(),
        name: RelativeName::parse("nb-1-big-Data.db")?,
        path: path.clone(),
        size: meta.len(),
        mtime_ns,
    };
    let (tx, mut rx) = mpsc::channel(64);
    let started = Instant::now();
    let task = tokio::spawn(Arc::clone(&uploader).run(vec![file], tx));
    let mut blob = None;
    while let Some(ev) = rx.recv().await {
        if let UploadEvent::FileDone { entry, .. } = ev {
            blob = Some(entry.hash);
        }
    }
    task.await.context("upload task")??;
    let secs = started.elapsed().as_secs_f64();
    let hash = blob.context("the upload reported no file")?;
    let key = ringvault_common::layout::blob(&hash);
    let stored = store
        .head(&key)
        .await?
        .with_context(|| format!("{key} not in the store after the upload"))?;
    if stored.size != meta.len() {
        bail!(
            "{key}: stored {} bytes, file has {}",
            stored.size,
            meta.len()
        );
    }
    let hwm = proc_status_kb("VmHWM:")?;
    println!(
        "store={} bytes={} seconds={secs:.1} MB/s={:.0} peak_rss_mb={:.1} (before upload {:.1}) blob={key}",
        store.describe(),
        meta.len(),
        meta.len() as f64 / 1e6 / secs,
        hwm as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    if !args.keep {
        store.delete_many(std::slice::from_ref(&key)).await?;
        let left: Vec<_> = store.list("").await?.into_iter().map(|m| m.key).collect();
        store.delete_many(&left).await?;
    }
    if let Some(max) = args.max_rss_mb
        && hwm / 1024 >= max
    {
        bail!("peak RSS {} MB is not under {max} MB", hwm / 1024);
    }
    Ok(())
}
