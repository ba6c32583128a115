//! One conformance suite for every store backend: the same test body runs against `file://`
//! (a temporary directory), the test bed's S3 server (s3s-fs), Azurite and fake-gcs-server,
//! through `ringvault_common::store::open`, exactly as the worker and coordinator use them.
//!
//! Every backend must: round-trip empty, small and large (3 parts and a tail, parts sent in
//! parallel and out of order) objects byte for byte; report sizes with `head`; list by prefix
//! across more than 1,000 keys (several pages); delete in batches; report a missing object as
//! `StoreError::NotFound`; rename. A backend with a streamed whole-object put (S3) must store
//! what it streams and refuse a body whose CRC32C differs from the one announced. The network backends are also driven through a small
//! fault-injecting HTTP proxy written here (it sits between the store client and the real
//! server and counts requests) to prove, at the protocol level, that
//! - a request body altered in flight (one byte flipped) is refused; a checksum refusal is not
//!   retried (see `after_altered` for what each server does),
//! - transient failures (503 answers, reset connections) are retried with backoff and succeed,
//! - permanent ones (403, 404) are not retried.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rand::RngCore;
use ringvault_common::layout::ObjectKey;
use ringvault_common::store::{self, RetryPolicy, Store, StoreError};
use ringvault_integration_tests::bed;
use ringvault_integration_tests::runs::set_store_env;
use ringvault_integration_tests::testbed::Testbed;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const LIST_KEYS: usize = 1_205;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    S3,
    Gcs,
    Azure,
}

/// The store URL of a backend under a fresh prefix, talking to `via` instead of the server's
/// own endpoint when given (the proxy).
fn store_url(tb: &Testbed, kind: Kind, prefix: &str, via: Option<SocketAddr>) -> Result<String> {
    Ok(match kind {
        Kind::File => {
            let dir = std::env::temp_dir().join(format!("rv-conformance-{prefix}"));
            format!("file://{}", dir.display())
        }
        Kind::S3 => {
            let endpoint = match via {
                Some(a) => format!("http://{a}"),
                None => tb.var("RV_S3_ENDPOINT")?,
            };
            format!(
                "s3://{}/conformance/{prefix}?endpoint={endpoint}&region={}",
                tb.var("RV_S3_BUCKET")?,
                tb.var("RV_S3_REGION")?
            )
        }
        Kind::Gcs => {
            let endpoint = match via {
                Some(a) => format!("http://{a}"),
                None => tb.var("RV_GCS_ENDPOINT")?,
            };
            format!(
                "gs://{}/conformance/{prefix}?endpoint={endpoint}",
                tb.var("RV_GCS_BUCKET")?
            )
        }
        Kind::Azure => {
            let account = tb.var("RV_AZ_ACCOUNT")?;
            let endpoint = match via {
                Some(a) => format!("http://{a}/{account}"),
                None => tb.var("RV_AZ_ENDPOINT")?,
            };
            format!(
                "az://{account}/{}/conformance/{prefix}?endpoint={endpoint}",
                tb.var("RV_AZ_CONTAINER")?
            )
        }
    })
}

fn upstream(tb: &Testbed, kind: Kind) -> Result<SocketAddr> {
    let endpoint = match kind {
        Kind::S3 => tb.var("RV_S3_ENDPOINT")?,
        Kind::Gcs => tb.var("RV_GCS_ENDPOINT")?,
        Kind::Azure => tb.var("RV_AZ_ENDPOINT")?,
        Kind::File => bail!("file:// has no server"),
    };
    let u = url::Url::parse(&endpoint)?;
    let host = u.host_str().context("endpoint without host")?;
    let port = u.port_or_known_default().context("endpoint without port")?;
    Ok(format!("{host}:{port}").parse()?)
}

fn random(len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    rand::rng().fill_bytes(&mut v);
    Bytes::from(v)
}

/// A streamed-put body yielding `data` in 64 KiB chunks, afresh on every call.
fn chunked(data: Bytes) -> store::BodySource {
    Arc::new(move || {
        let chunks: Vec<Result<Bytes, StoreError>> = data
            .chunks(64 << 10)
            .map(|c| Ok(data.slice_ref(c)))
            .collect();
        Box::pin(futures::stream::iter(chunks))
    })
}

fn key(s: &str) -> Result<ObjectKey> {
    ObjectKey::from_listing(s).with_context(|| format!("bad key {s}"))
}

async fn read_all(st: &dyn Store, k: &ObjectKey) -> Result<Vec<u8>> {
    let mut s = st.get(k).await.with_context(|| format!("get {k}"))?;
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.with_context(|| format!("reading {k}"))?);
    }
    Ok(out)
}

async fn ensure_same(st: &dyn Store, k: &ObjectKey, expected: &[u8]) -> Result<()> {
    let got = read_all(st, k).await?;
    ensure!(
        got.len() == expected.len(),
        "{k}: read back {} bytes, wrote {}",
        got.len(),
        expected.len()
    );
    ensure!(
        blake3::hash(&got) == blake3::hash(expected),
        "{k}: content differs from what was written"
    );
    let meta = st
        .head(k)
        .await?
        .with_context(|| format!("head {k}: absent"))?;
    ensure!(
        meta.size == expected.len() as u64,
        "{k}: head says {} bytes, wrote {}",
        meta.size,
        expected.len()
    );
    Ok(())
}

/// The suite: the same body for every backend.
async fn conformance(kind: Kind) -> Result<()> {
    let tb = Testbed::load()?;
    set_store_env(&tb)?;
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    let url = store_url(&tb, kind, &prefix, None)?;
    let st = store::open(&url)
        .await
        .with_context(|| format!("open {url}"))?;
    st.check().await.context("store check")?;
    println!("{kind:?}: {}", st.describe());

    // Empty and small objects.
    let empty = key("objects/empty")?;
    st.put(&empty, Bytes::new()).await.context("put empty")?;
    ensure_same(st.as_ref(), &empty, b"").await?;
    let small = key("objects/small.bin")?;
    let small_data = random(1_000 + 7);
    st.put(&small, small_data.clone())
        .await
        .context("put small")?;
    ensure_same(st.as_ref(), &small, &small_data).await?;
    // Overwrite keeps the latest.
    let small_data = random(333);
    st.put(&small, small_data.clone())
        .await
        .context("overwrite")?;
    ensure_same(st.as_ref(), &small, &small_data).await?;

    // Writers racing to one key with identical bytes (replicas' identical files going to one
    // content-addressed blob) all succeed. (Different bytes racing to one key do not happen in
    // ringvault: every other key has one writer. s3s-fs is not atomic there anyway: it can
    // keep one writer's body with another's checksum.)
    let raced = key("objects/raced")?;
    let same = random(4_096);
    futures::future::try_join_all((0..6).map(|_| st.put(&raced, same.clone())))
        .await
        .context("racing puts of identical bytes")?;
    ensure_same(st.as_ref(), &raced, &same).await?;
    st.delete_many(std::slice::from_ref(&raced)).await?;

    // Large: three full parts and a tail, sent in parallel and out of order.
    let part = st.part_size();
    let large_data = random(part * 3 + 12_345);
    let staging = key("tmp/large.staging")?;
    let up = st
        .start_multipart(&staging)
        .await
        .context("start multipart")?;
    let chunks: Vec<(u32, Bytes)> = large_data
        .chunks(part)
        .enumerate()
        .map(|(i, c)| (i as u32 + 1, large_data.slice_ref(c)))
        .rev()
        .collect();
    ensure!(chunks.len() == 4, "expected 4 parts, got {}", chunks.len());
    futures::future::try_join_all(chunks.into_iter().map(|(n, c)| up.put_part(n, c)))
        .await
        .context("put parts")?;
    up.complete().await.context("complete multipart")?;
    ensure_same(st.as_ref(), &staging, &large_data).await?;
    // Rename, as the worker does once the content hash is known.
    let large = key("objects/large.bin")?;
    st.rename(&staging, &large).await.context("rename")?;
    ensure_same(st.as_ref(), &large, &large_data).await?;
    ensure!(st.head(&staging).await?.is_none(), "rename left the source");
    // Streamed whole-object put (stores that have one; the worker's path for large files):
    // the bytes arrive as sent, in one request; a CRC32C that does not match the bytes is
    // refused and stores nothing.
    if st.max_streamed_put() > 0 {
        let streamed = key("objects/streamed.bin")?;
        let data = random(part * 2 + 999);
        let mut crc = ringvault_common::hash::Crc32c::default();
        crc.update(&data);
        let crc = crc.finish();
        let size = data.len() as u64;
        st.put_streamed(&streamed, size, crc, chunked(data.clone()))
            .await
            .context("streamed put")?;
        ensure_same(st.as_ref(), &streamed, &data).await?;
        let refused = key("objects/streamed-bad-crc")?;
        let r = st
            .put_streamed(&refused, size, crc ^ 1, chunked(data.clone()))
            .await;
        let e = match r {
            Err(e) => e,
            Ok(()) => bail!("{kind:?}: a streamed put with a wrong CRC32C was accepted"),
        };
        ensure!(
            !e.is_transient(),
            "a checksum refusal must not be retried: {e}"
        );
        // s3s-fs writes the object before it checks the checksum and leaves it there when it
        // refuses (as with a refused single put, see `after_altered`); real S3 stores nothing.
        if kind != Kind::S3 {
            ensure!(
                st.head(&refused).await?.is_none(),
                "{kind:?}: a refused streamed put left an object"
            );
        }
        st.delete_many(std::slice::from_ref(&refused)).await?;
        st.delete_many(&[streamed]).await?;
    } else {
        println!("{kind:?}: no streamed put (large objects go up in parts)");
    }
    // An aborted upload leaves no object.
    let aborted = key("tmp/aborted")?;
    let up = st.start_multipart(&aborted).await?;
    up.put_part(1, random(1024)).await?;
    up.abort().await.context("abort")?;
    ensure!(st.head(&aborted).await?.is_none(), "aborted upload visible");

    // Not found is typed.
    let missing = key("objects/missing")?;
    match st.get(&missing).await {
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => bail!("get of a missing object: expected NotFound, got {e}"),
        Ok(_) => bail!("get of a missing object succeeded"),
    }
    ensure!(
        st.head(&missing).await?.is_none(),
        "head of a missing object"
    );
    match st.rename(&missing, &key("objects/x")?).await {
        Err(e) if !e.is_transient() => {}
        other => bail!("rename of a missing object: {other:?}"),
    }

    // Listing by prefix over several pages, then batch delete.
    let keys: Vec<ObjectKey> = (0..LIST_KEYS)
        .map(|i| key(&format!("list/k{i:05}")))
        .collect::<Result<_>>()?;
    futures::stream::iter(keys.iter().cloned())
        .map(|k| {
            let st = Arc::clone(&st);
            async move {
                let len = k.as_str().len();
                st.put(&k, Bytes::from(vec![7u8; len])).await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .context("putting the listing keys")?;
    st.put(&key("listing-neighbour")?, Bytes::from_static(b"n"))
        .await?;
    let listed = st.list("list/").await.context("list")?;
    ensure!(
        listed.len() == LIST_KEYS,
        "listed {} keys under list/, put {LIST_KEYS}",
        listed.len()
    );
    let mut names: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    names.sort_unstable();
    let expected: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    ensure!(names == expected, "listing differs from the keys put");
    ensure!(
        listed.iter().all(|m| m.size == m.key.as_str().len() as u64),
        "listing reports wrong sizes"
    );
    let all = st.list("").await?;
    ensure!(
        all.len() == LIST_KEYS + 4,
        "whole-store listing has {} keys: {:?}",
        all.len(),
        all.iter()
            .map(|m| m.key.as_str())
            .filter(|k| !k.starts_with("list/"))
            .collect::<Vec<_>>()
    );
    // One folder's own objects, not those of a subfolder or a key that merely shares the
    // prefix's letters (the commit's blob check lists `blobs/<2 hex>/` this way).
    let folder_keys = ["folder/a", "folder/b", "folder/sub/c", "folderx"];
    for k in folder_keys {
        st.put(&key(k)?, Bytes::from(vec![1u8; k.len()])).await?;
    }
    let mut in_folder: Vec<(String, u64)> = st
        .list_folder("folder/")
        .await
        .context("list_folder")?
        .into_iter()
        .map(|m| (m.key.as_str().to_string(), m.size))
        .collect();
    in_folder.sort();
    ensure!(
        in_folder == vec![("folder/a".to_string(), 8), ("folder/b".to_string(), 8)],
        "list_folder(folder/) gave {in_folder:?}"
    );
    let folder_keys: Vec<ObjectKey> = folder_keys.iter().map(|k| key(k)).collect::<Result<_>>()?;
    st.delete_many(&folder_keys).await?;
    let mut doomed = keys.clone();
    doomed.push(key("list/never-existed")?);
    st.delete_many(&doomed).await.context("batch delete")?;
    ensure!(
        st.list("list/").await?.is_empty(),
        "keys left after batch delete"
    );
    st.delete_many(&[empty, small, large, key("listing-neighbour")?])
        .await?;
    let left = st.list("").await?;
    ensure!(left.is_empty(), "store not empty at the end: {left:?}");

    if kind == Kind::File {
        println!("File: protocol-level fault injection does not apply (no network)");
        return Ok(());
    }
    faults(&tb, kind).await
}

/// Protocol-level checks through the fault-injecting proxy.
async fn faults(tb: &Testbed, kind: Kind) -> Result<()> {
    let proxy = Proxy::start(upstream(tb, kind)?).await?;
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    let url = store_url(tb, kind, &prefix, Some(proxy.addr))?;
    let policy = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
    };
    let st = store::open_with_retry(&url, policy).await?;
    let direct = store::open(&store_url(tb, kind, &prefix, None)?).await?;

    // A flipped byte in a put is refused (by the server's checksum check, or by the client's
    // check of what the server stored) and a checksum refusal is not retried.
    let k = key("flip/put.bin")?;
    let data = random(256 * 1024);
    proxy.plan(Fault::FlipBody, 1);
    let res = st.put(&k, data.clone()).await;
    ensure!(proxy.flipped() == 1, "flipped {} bodies", proxy.flipped());
    let answer = proxy.last_flip_answer().unwrap_or(0);
    println!("{kind:?}: server answered the altered put with HTTP {answer}; put: {res:?}");
    after_altered(kind, answer, res, direct.as_ref(), &k, &data).await?;
    // The same through a multipart part.
    let mk = key("flip/multi.bin")?;
    let up = st.start_multipart(&mk).await?;
    proxy.plan(Fault::FlipBody, 1);
    let res = up.put_part(1, data.clone()).await;
    ensure!(proxy.flipped() == 2, "flipped {} bodies", proxy.flipped());
    let answer = proxy.last_flip_answer().unwrap_or(0);
    println!("{kind:?}: server answered the altered part with HTTP {answer}; part: {res:?}");
    match res {
        Ok(()) => {
            up.complete().await?;
            after_altered(kind, answer, Ok(()), direct.as_ref(), &mk, &data).await?;
        }
        Err(e) => {
            let _ = up.abort().await;
            after_altered(kind, answer, Err(e), direct.as_ref(), &mk, &data).await?;
        }
    }
    // Untouched bytes through the same proxy are accepted.
    st.put(&k, data.clone())
        .await
        .context("clean put via proxy")?;
    ensure_same(direct.as_ref(), &k, &data).await?;

    // Transient: two 503s, then success; two resets, then success.
    for fault in [Fault::Status(503), Fault::Reset] {
        let k = key(&format!("transient/{fault:?}"))?;
        let data = random(10_000);
        proxy.plan(fault, 2);
        let before = proxy.requests();
        st.put(&k, data.clone())
            .await
            .with_context(|| format!("{kind:?}: put after two {fault:?}"))?;
        let sent = proxy.requests() - before;
        let put_requests = if kind == Kind::Azure { 2 } else { 1 }; // stage + commit
        ensure!(
            sent == 2 + put_requests,
            "{kind:?}: {fault:?} twice then success should take {} requests, took {sent}",
            2 + put_requests
        );
        ensure_same(direct.as_ref(), &k, &data).await?;
        let before = proxy.requests();
        proxy.plan(fault, 2);
        ensure!(st.head(&k).await?.is_some(), "head after {fault:?}");
        ensure!(proxy.requests() - before == 3, "head retries");
    }

    // Permanent: 403 and 404 are answered once, never retried.
    let k = key("transient/Status(503)")?;
    let before = proxy.requests();
    proxy.plan(Fault::Status(403), 10);
    let err = match st.put(&k, random(100)).await {
        Ok(()) => bail!("{kind:?}: put succeeded through a 403"),
        Err(e) => e,
    };
    ensure!(!err.is_transient(), "403 classified transient: {err}");
    ensure!(
        proxy.requests() - before == 1,
        "{kind:?}: a 403 was retried ({} requests)",
        proxy.requests() - before
    );
    let before = proxy.requests();
    proxy.plan(Fault::Status(404), 10);
    match st.get(&k).await {
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => bail!("{kind:?}: a 404 on get gave {e}"),
        Ok(_) => bail!("{kind:?}: get succeeded through a 404"),
    }
    ensure!(
        proxy.requests() - before == 1,
        "{kind:?}: a 404 was retried ({} requests)",
        proxy.requests() - before
    );
    proxy.plan(Fault::FlipBody, 0);

    let left: Vec<ObjectKey> = direct.list("").await?.into_iter().map(|m| m.key).collect();
    direct.delete_many(&left).await?;
    Ok(())
}

/// What must hold after a request whose body was altered in flight, given the server's answer
/// to that request and the outcome of the store call:
/// - the server refused it with 4xx (S3 BadDigest, Azure Crc64Mismatch): the call failed, was
///   not retried, names the checksum, and nothing was stored (s3s-fs 0.14.1 keeps the object
///   despite its BadDigest: a known bug, so absence is not asserted on S3);
/// - the server accepted the bytes (2xx: fake-gcs-server does not check CRC32C): the client's
///   comparison of the stored CRC32C refused it, and the backend removed the object;
/// - the server refused it with 5xx (s3s-fs answers a payload SHA-256 mismatch with 500
///   InternalError): transient, so the retry sent the original bytes, which are what is stored.
async fn after_altered(
    kind: Kind,
    answer: u16,
    res: Result<(), StoreError>,
    direct: &dyn Store,
    k: &ObjectKey,
    data: &[u8],
) -> Result<()> {
    match (answer, res) {
        (500..=599, Ok(())) => ensure_same(direct, k, data).await,
        (200..=499, Err(e)) => {
            ensure!(
                !e.is_transient(),
                "a checksum refusal must not be retried: {e}"
            );
            let text = e.to_string();
            ensure!(
                [
                    "BadDigest",
                    "Crc64Mismatch",
                    "Md5Mismatch",
                    "CRC32C",
                    "checksum"
                ]
                .iter()
                .any(|w| text.contains(w)),
                "refusal does not name the checksum: {text}"
            );
            if kind != Kind::S3 {
                ensure!(
                    direct.head(k).await?.is_none(),
                    "{kind:?}: a refused upload left an object"
                );
            }
            Ok(())
        }
        (answer, res) => bail!(
            "{kind:?}: altered body answered with HTTP {answer}, store call gave {res:?}: the \
             alteration went unnoticed or was mishandled"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The fault-injecting HTTP/1.1 proxy
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Forward the request with one byte of its body inverted (bodies of 1 KiB and more).
    FlipBody,
    /// Answer with this status and an empty body, without forwarding.
    Status(u16),
    /// Read the request, then reset the connection.
    Reset,
}

struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
}

struct ProxyState {
    upstream: SocketAddr,
    /// (fault, how many more requests get it)
    plan: Mutex<(Fault, usize)>,
    requests: AtomicUsize,
    flipped: AtomicUsize,
    /// The server's HTTP status for each request whose body was altered.
    flip_answers: Mutex<Vec<u16>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ProxyState {
            upstream,
            plan: Mutex::new((Fault::FlipBody, 0)),
            requests: AtomicUsize::new(0),
            flipped: AtomicUsize::new(0),
            flip_answers: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    if let Err(e) = s.serve(client).await {
                        eprintln!("proxy connection: {e:#}");
                    }
                });
            }
        });
        Ok(Self { addr, state })
    }

    /// The next `times` requests (that it applies to) get `fault`.
    fn plan(&self, fault: Fault, times: usize) {
        if let Ok(mut p) = self.state.plan.lock() {
            *p = (fault, times);
        }
    }

    fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn flipped(&self) -> usize {
        self.state.flipped.load(Ordering::SeqCst)
    }

    /// The server's answer to the last altered request.
    fn last_flip_answer(&self) -> Option<u16> {
        self.state
            .flip_answers
            .lock()
            .ok()
            .and_then(|a| a.last().copied())
    }
}

enum BodyLen {
    Fixed(u64),
    Chunked,
}

impl ProxyState {
    /// One request per connection: the proxy asks the server to close after answering, so
    /// each request is counted and can be faulted on its own.
    async fn serve(&self, client: TcpStream) -> Result<()> {
        let (cr, mut cw) = client.into_split();
        let mut cr = BufReader::new(cr);
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            if cr.read_until(b'\n', &mut line).await? == 0 {
                return Ok(()); // closed before a request
            }
            let end = line == b"\r\n";
            head.push(line);
            if end {
                break;
            }
        }
        self.requests.fetch_add(1, Ordering::SeqCst);
        if std::env::var_os("RV_PROXY_DEBUG").is_some() {
            eprintln!("proxy: {}", String::from_utf8_lossy(&head.concat()));
        }
        let mut body = BodyLen::Fixed(0);
        let mut out_head = Vec::new();
        for (i, line) in head.iter().enumerate() {
            let text = String::from_utf8_lossy(line).to_ascii_lowercase();
            if i > 0 {
                if let Some(v) = text.strip_prefix("content-length:") {
                    body = BodyLen::Fixed(v.trim().parse().context("content-length")?);
                } else if text.starts_with("transfer-encoding:") && text.contains("chunked") {
                    body = BodyLen::Chunked;
                } else if text.starts_with("connection:") {
                    continue;
                }
            }
            if line == b"\r\n" {
                out_head.extend_from_slice(b"connection: close\r\n");
            }
            out_head.extend_from_slice(line);
        }
        let fault = {
            let mut p = self
                .plan
                .lock()
                .map_err(|_| anyhow::anyhow!("plan poisoned"))?;
            let applies = match (p.0, &body) {
                (Fault::FlipBody, BodyLen::Fixed(n)) => *n >= 1024,
                _ => true,
            };
            if p.1 > 0 && applies {
                p.1 -= 1;
                Some(p.0)
            } else {
                None
            }
        };
        match fault {
            Some(Fault::Status(code)) => {
                drain(&mut cr, &body).await?;
                let resp = format!(
                    "HTTP/1.1 {code} Injected\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                cw.write_all(resp.as_bytes()).await?;
                cw.shutdown().await?;
                return Ok(());
            }
            Some(Fault::Reset) => {
                drain(&mut cr, &body).await?;
                let stream = cr.into_inner().reunite(cw)?;
                stream.set_zero_linger()?;
                drop(stream);
                return Ok(());
            }
            _ => {}
        }
        let server = TcpStream::connect(self.upstream).await?;
        let (mut sr, mut sw) = server.into_split();
        sw.write_all(&out_head).await?;
        let flip = fault == Some(Fault::FlipBody);
        let flip_at = match &body {
            BodyLen::Fixed(n) if flip => Some(n / 2),
            _ => None,
        };
        let did_flip = AtomicBool::new(false);
        let to_server = async {
            match body {
                BodyLen::Fixed(n) => {
                    let mut left = n;
                    let mut offset = 0u64;
                    let mut buf = vec![0u8; 64 * 1024];
                    while left > 0 {
                        let want = buf.len().min(left as usize);
                        let got = cr.read(&mut buf[..want]).await?;
                        if got == 0 {
                            bail!("client closed mid-body");
                        }
                        if let Some(at) = flip_at
                            && (offset..offset + got as u64).contains(&at)
                        {
                            buf[(at - offset) as usize] ^= 0xff;
                            did_flip.store(true, Ordering::SeqCst);
                            self.flipped.fetch_add(1, Ordering::SeqCst);
                        }
                        sw.write_all(&buf[..got]).await?;
                        offset += got as u64;
                        left -= got as u64;
                    }
                }
                BodyLen::Chunked => {
                    copy_chunked(&mut cr, &mut sw, flip.then_some(&did_flip)).await?;
                    if did_flip.load(Ordering::SeqCst) {
                        self.flipped.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            sw.flush().await?;
            anyhow::Ok(())
        };
        let to_client = async {
            // The status line comes first; note it for an altered request.
            let mut first = vec![0u8; 4096];
            let n = sr.read(&mut first).await?;
            let head = String::from_utf8_lossy(&first[..n]).into_owned();
            if std::env::var_os("RV_PROXY_DEBUG").is_some() {
                eprintln!(
                    "proxy answer: {}",
                    head.chars().take(600).collect::<String>()
                );
            }
            // Noted before the client sees the answer, so the test reads a settled count.
            if did_flip.load(Ordering::SeqCst) {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if let Ok(mut a) = self.flip_answers.lock() {
                    a.push(status);
                }
            }
            // The client may hang up as soon as it has read what it needs.
            let _ = cw.write_all(&first[..n]).await;
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
            let _ = cw.shutdown().await;
            anyhow::Ok(head)
        };
        let (a, b) = tokio::join!(to_server, to_client);
        b?;
        // The server may answer (and close) before reading the whole body: not an error.
        if let Err(e) = a {
            eprintln!("proxy: request body not fully forwarded: {e:#}");
        }
        Ok(())
    }
}

async fn drain<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R, body: &BodyLen) -> Result<()> {
    match body {
        BodyLen::Fixed(n) => {
            tokio::io::copy(&mut r.take(*n), &mut tokio::io::sink()).await?;
        }
        BodyLen::Chunked => copy_chunked(r, &mut tokio::io::sink(), None).await?,
    }
    Ok(())
}

/// Copies one chunked body (chunks, the last zero chunk and its trailers), inverting the middle
/// byte of the first chunk of 1 KiB or more when `flip` is given (and noting it there).
async fn copy_chunked<R, W>(r: &mut R, w: &mut W, flip: Option<&AtomicBool>) -> Result<()>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    loop {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line).await?;
        w.write_all(&line).await?;
        let text = String::from_utf8_lossy(&line);
        let size_text = text.trim().split(';').next().unwrap_or_default();
        let size = u64::from_str_radix(size_text, 16).context("chunk size")?;
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let mut t = Vec::new();
                if r.read_until(b'\n', &mut t).await? == 0 {
                    return Ok(());
                }
                w.write_all(&t).await?;
                if t == b"\r\n" {
                    return Ok(());
                }
            }
        }
        match flip {
            Some(done) if size >= 1024 && !done.load(Ordering::SeqCst) => {
                let mut data = vec![0u8; size as usize + 2];
                r.read_exact(&mut data).await?;
                data[size as usize / 2] ^= 0xff;
                done.store(true, Ordering::SeqCst);
                w.write_all(&data).await?;
            }
            _ => {
                tokio::io::copy(&mut (&mut *r).take(size + 2), w).await?;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_store_conforms() -> Result<()> {
    let _bed = bed::shared().await;
    conformance(Kind::File).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_conforms() -> Result<()> {
    let _bed = bed::shared().await;
    conformance(Kind::S3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcs_store_conforms() -> Result<()> {
    let _bed = bed::shared().await;
    conformance(Kind::Gcs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_store_conforms() -> Result<()> {
    let _bed = bed::shared().await;
    conformance(Kind::Azure).await
}
