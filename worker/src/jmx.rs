//! The worker's persistent JMX session with its node. A nodetool call is a JVM start: about
//! 1.5 s of CPU, and a run makes two per node (snapshot, clearsnapshot). With `--jmx HOST:PORT`
//! the worker instead keeps one small Java helper running (`java/RingvaultJmx.java`, compiled
//! into the worker by its build script) that holds a JMX connection, so each of those calls is
//! one JMX request of a few milliseconds (plus the flush a snapshot does).
//!
//! The session is a faster path, never a different one: [`crate::nodetool::Nodetool`] falls back
//! to nodetool whenever the helper cannot start (no helper in this build, no `java`, the node
//! unreachable, a login refused), and tries the helper again a minute later. Once connected, the
//! helper must report the host id the worker's CQL session sees: JMX aimed at another node is an
//! error, not a fallback.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::access::JmxAccess;
use crate::nodetool::NodetoolError;

/// The helper's class file (empty when the worker was built without a `javac`).
static HELPER_CLASS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/RingvaultJmx.class"));
/// How long a helper that could not start is left alone (nodetool meanwhile).
const RETRY_START_AFTER: Duration = Duration::from_secs(60);
/// How long starting the helper and logging in may take.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the node's JMX listens (`--jmx HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JmxTarget {
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for JmxTarget {
    type Err = String;

    /// `HOST:PORT`, `[IPV6]:PORT`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: port {port:?} is not a number from 1 to 65535"))?;
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
        if !host_ok || port == 0 {
            return Err(format!("{s:?} is not HOST:PORT"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for JmxTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A running helper with its pipes.
struct Helper {
    _child: Child,
    /// The host id the helper's JMX connection reported.
    host: String,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

#[derive(Default)]
struct State {
    helper: Option<Helper>,
    /// No start before this instant (the last one failed).
    retry_at: Option<Instant>,
}

/// One JMX connection to the local node, shared by all requests (one request at a time).
pub struct JmxSession {
    target: JmxTarget,
    access: Option<JmxAccess>,
    /// Where the helper's class file is written.
    class_dir: PathBuf,
    /// The node's host id as CQL reports it ([`JmxSession::expect_host`]).
    expected_host: std::sync::Mutex<Option<String>>,
    state: tokio::sync::Mutex<State>,
}

impl std::fmt::Debug for JmxSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JmxSession")
            .field("target", &self.target)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl JmxSession {
    /// A session to `target`, logging in as `access` says; the helper starts on first use.
    pub fn new(target: JmxTarget, access: Option<JmxAccess>, state_dir: &Path) -> Self {
        Self {
            target,
            access,
            class_dir: state_dir.join("jmx-helper"),
            expected_host: std::sync::Mutex::new(None),
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// Whether this build carries the helper.
    pub fn available() -> bool {
        !HELPER_CLASS.is_empty()
    }

    /// Records the node's host id (from CQL): the helper is used only while JMX reports the same.
    pub fn expect_host(&self, host_id: &str) {
        if let Ok(mut g) = self.expected_host.lock() {
            *g = Some(host_id.to_string());
        }
    }

    /// `nodetool snapshot` through the session; `None` when the session is not available (use
    /// nodetool).
    pub async fn snapshot(
        &self,
        tag: &str,
        ttl: Option<&str>,
        entities: &[String],
    ) -> Option<Result<(), NodetoolError>> {
        let req = format!(
            "snapshot\t{tag}\t{}\t{}",
            ttl.unwrap_or_default(),
            entities.join(",")
        );
        self.call(&req).await.map(|r| r.map(|_| ()))
    }

    /// `nodetool clearsnapshot -t TAG` through the session.
    pub async fn clear_snapshot(&self, tag: &str) -> Option<Result<(), NodetoolError>> {
        self.call(&format!("clearsnapshot\t{tag}"))
            .await
            .map(|r| r.map(|_| ()))
    }

    /// The node's release version through the session (proves the JMX login).
    pub async fn version(&self) -> Option<Result<String, NodetoolError>> {
        self.call("version").await
    }

    /// Sends one request; starts the helper first if needed. A helper found dead before the
    /// request was sent is started again once; one that dies after it was sent is an error
    /// (whether the request took effect is unknown, and it is never sent twice).
    async fn call(&self, request: &str) -> Option<Result<String, NodetoolError>> {
        if request.contains('\n') {
            return Some(Err(
                self.failed(request, "a request field holds a newline".into())
            ));
        }
        let mut state = self.state.lock().await;
        let expected = self.expected_host.lock().ok().and_then(|g| g.clone());
        if state
            .helper
            .as_ref()
            .is_some_and(|h| Some(&h.host) != expected.as_ref())
        {
            // CQL now reports another node (replaced behind the same address): log in again.
            state.helper = None;
        }
        for attempt in 0..2 {
            if state.helper.is_none() {
                if state.retry_at.is_some_and(|t| Instant::now() < t) {
                    return None;
                }
                match self.start().await {
                    Ok(h) => state.helper = Some(h),
                    Err(StartError::Unavailable(why)) => {
                        tracing::warn!(jmx = %self.target, "JMX session unavailable, using nodetool: {why}");
                        state.retry_at = Some(Instant::now() + RETRY_START_AFTER);
                        return None;
                    }
                    Err(StartError::WrongNode(e)) => return Some(Err(e)),
                }
            }
            let h = state.helper.as_mut()?;
            let sent = async {
                h.stdin.write_all(format!("{request}\n").as_bytes()).await?;
                h.stdin.flush().await
            }
            .await;
            if sent.is_err() {
                state.helper = None;
                if attempt == 0 {
                    continue;
                }
                return None;
            }
            let mut line = String::new();
            let read = h.stdout.read_line(&mut line).await;
            return Some(match read {
                Ok(n) if n > 0 => self.reply(request, line.trim_end_matches(['\r', '\n'])),
                other => {
                    state.helper = None;
                    let why = match other {
                        Err(e) => e.to_string(),
                        Ok(_) => "it exited".into(),
                    };
                    Err(self.failed(
                        request,
                        format!("the JMX helper stopped during the request ({why}): whether it took effect is unknown"),
                    ))
                }
            });
        }
        None
    }

    /// An `OK`/`ERR` reply line as the value after `OK`, or an error carrying the helper's text.
    fn reply(&self, request: &str, line: &str) -> Result<String, NodetoolError> {
        match line.split_once('\t').unwrap_or((line, "")) {
            ("OK", rest) => Ok(rest.to_string()),
            ("ERR", why) => Err(self.failed(request, why.to_string())),
            _ => Err(self.failed(request, format!("unexpected reply {line:?}"))),
        }
    }

    fn failed(&self, request: &str, output: String) -> NodetoolError {
        NodetoolError::Failed {
            args: format!(
                "JMX {} on {}",
                request.split('\t').next().unwrap_or(request),
                self.target
            ),
            code: None,
            output,
        }
    }

    /// Writes the class, starts the helper, logs in and checks the node's host id.
    async fn start(&self) -> Result<Helper, StartError> {
        if !Self::available() {
            return Err(StartError::Unavailable(
                "this worker was built without a javac, so it carries no JMX helper".into(),
            ));
        }
        let Some(expected) = self.expected_host.lock().ok().and_then(|g| g.clone()) else {
            return Err(StartError::Unavailable(
                "the node's host id is not known yet (CQL)".into(),
            ));
        };
        write_class(&self.class_dir).map_err(|e| {
            StartError::Unavailable(format!(
                "writing the helper into {}: {e}",
                self.class_dir.display()
            ))
        })?;
        let java = std::env::var_os("JAVA_HOME")
            .map(|h| PathBuf::from(h).join("bin/java"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("java"));
        let mut cmd = tokio::process::Command::new(&java);
        cmd.args([
            "-Xmx48m",
            "-Xss512k",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Xshare:auto",
            "-cp",
        ])
        .arg(&self.class_dir)
        .arg("RingvaultJmx")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
        ringvault_common::security::scrub_child_env(&mut cmd);
        for (k, v) in self.access.as_ref().map(|a| a.env()).unwrap_or_default() {
            cmd.env(k, v);
        }
        crate::nodetool::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            StartError::Unavailable(format!("could not run {}: {e}", java.display()))
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(StartError::Unavailable("the helper has no pipes".into()));
        };
        let mut h = Helper {
            _child: child,
            host: String::new(),
            stdin,
            stdout: BufReader::new(stdout),
        };
        let (user, pwf) = match &self.access {
            Some(a) => (
                a.username.clone().unwrap_or_default(),
                a.password_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            None => (String::new(), String::new()),
        };
        let connect = format!(
            "connect\t{}\t{}\t{user}\t{pwf}",
            self.target.host, self.target.port
        );
        if connect.matches('\t').count() != 4 || connect.contains('\n') {
            return Err(StartError::Unavailable(
                "the JMX user or password file path holds a tab or a newline".into(),
            ));
        }
        let login = async {
            h.stdin.write_all(format!("{connect}\n").as_bytes()).await?;
            h.stdin.flush().await?;
            let mut line = String::new();
            h.stdout.read_line(&mut line).await?;
            Ok::<_, std::io::Error>(line)
        };
        let line = match tokio::time::timeout(START_TIMEOUT, login).await {
            Ok(Ok(l)) if !l.is_empty() => l,
            Ok(Ok(_)) => {
                return Err(StartError::Unavailable(format!(
                    "{} exited at start",
                    java.display()
                )));
            }
            Ok(Err(e)) => return Err(StartError::Unavailable(e.to_string())),
            Err(_) => {
                return Err(StartError::Unavailable(format!(
                    "no login within {START_TIMEOUT:?}"
                )));
            }
        };
        let fields = self
            .reply("connect", line.trim_end_matches(['\r', '\n']))
            .map_err(|e| StartError::Unavailable(e.to_string()))?;
        let mut f = fields.split('\t');
        let (version, host) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        if host != expected {
            return Err(StartError::WrongNode(self.failed(
                "connect",
                format!(
                    "JMX at {} reaches the node with host id {host}, but CQL reaches {expected}: --jmx must name this worker's node",
                    self.target
                ),
            )));
        }
        tracing::info!(jmx = %self.target, version, "JMX session open");
        h.host = host.to_string();
        Ok(h)
    }
}

enum StartError {
    /// The session cannot be had now: nodetool does the work.
    Unavailable(String),
    /// JMX reaches another node: refuse.
    WrongNode(NodetoolError),
}

/// Writes the helper's class into `dir` unless the same bytes are there.
fn write_class(dir: &Path) -> std::io::Result<()> {
    let path = dir.join("RingvaultJmx.class");
    if std::fs::read(&path).is_ok_and(|b| b == HELPER_CLASS) {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".RingvaultJmx.class.{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&tmp, HELPER_CLASS)?;
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print_back() {
        for s in ["127.0.0.1:7199", "cassandra-1:7199", "[::1]:7199"] {
            let t: JmxTarget = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
        let v6: JmxTarget = "[::1]:7199".parse().unwrap();
        assert_eq!(v6.host, "::1");
    }

    #[test]
    fn bad_targets_are_refused_with_the_value() {
        for s in [
            "7199",
            "host:",
            "host:0",
            "host:70000",
            ":7199",
            "a b:7199",
            "h\t:1",
        ] {
            let e = s.parse::<JmxTarget>().unwrap_err();
            assert!(e.contains(&format!("{s:?}")), "{s}: {e}");
        }
    }

    #[test]
    fn the_build_carries_the_helper_class() {
        // CI and the test bed build with a JDK: a worker there without the helper would be
        // silently slow.
        assert!(JmxSession::available());
        assert_eq!(&HELPER_CLASS[..4], &[0xCA, 0xFE, 0xBA, 0xBE]);
    }
}
