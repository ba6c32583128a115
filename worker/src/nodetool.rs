//! The one module that runs `nodetool` against the local node (through the persistent JMX
//! session of [`crate::jmx`] for the calls every run makes, when the worker has one).
use std::path::PathBuf;
use std::time::Duration;

use ringvault_common::{Identifier, SnapshotTag};

/// A failed nodetool call, with what it printed.
#[derive(Debug, thiserror::Error)]
pub enum NodetoolError {
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{args}` failed (exit {code:?}): {output}")]
    Failed {
        args: String,
        code: Option<i32>,
        output: String,
    },
}

/// Runs nodetool subcommands.
#[derive(Debug, Clone)]
pub struct Nodetool {
    program: PathBuf,
    /// JMX login and TLS (`-u USER -pwf FILE`; the truststore through the JVM's environment).
    jmx: Option<crate::access::JmxAccess>,
    /// Class-data-sharing archive of nodetool's JVM, if enabled ([`Nodetool::with_class_archive`]).
    archive: Option<PathBuf>,
    /// The persistent JMX session that replaces nodetool's JVM starts when it can
    /// ([`Nodetool::with_session`]).
    session: Option<std::sync::Arc<crate::jmx::JmxSession>>,
}

/// What to snapshot.
#[derive(Debug, Clone)]
pub enum SnapshotScope {
    /// These keyspaces, whole.
    Keyspaces(Vec<Identifier>),
    /// These tables of one keyspace.
    Tables(Identifier, Vec<Identifier>),
}

impl Nodetool {
    /// Uses `program` as nodetool.
    pub fn new(program: PathBuf) -> Self {
        Self {
            program,
            jmx: None,
            archive: None,
            session: None,
        }
    }

    /// Sends snapshot, clearsnapshot and version through `session` while it is available
    /// (nodetool otherwise).
    pub fn with_session(mut self, session: Option<crate::jmx::JmxSession>) -> Self {
        self.session = session.map(std::sync::Arc::new);
        self
    }

    /// Records the node's host id as CQL reports it: the JMX session is used only while JMX
    /// reaches the same node.
    pub fn expect_host(&self, host_id: &str) {
        if let Some(s) = &self.session {
            s.expect_host(host_id);
        }
    }

    /// Starts nodetool's JVM from a class-data-sharing archive kept in `state_dir`: each
    /// call starts in about two thirds of the time (a run makes two calls per node). The first
    /// call writes the archive (to a temporary name, renamed once the JVM exited cleanly); its
    /// name carries the program's path, size and mtime, so a Cassandra upgrade makes a new one.
    /// A JVM that dies on the archive (a damaged file) is run again without it, and the archive
    /// is deleted. A state directory whose path has whitespace gets no archive
    /// (`JAVA_TOOL_OPTIONS` is split on it).
    pub fn with_class_archive(mut self, state_dir: &std::path::Path) -> Self {
        let fingerprint = std::fs::metadata(&self.program)
            .ok()
            .or_else(|| which(&self.program).and_then(|p| std::fs::metadata(p).ok()))
            .map(|m| {
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                format!("{}|{}|{mtime}", self.program.display(), m.len())
            });
        let name = format!(
            "nodetool-{}.jsa",
            &ringvault_common::hash::ContentHash::of(fingerprint.unwrap_or_default().as_bytes())
                .as_str()[..16]
        );
        let path = state_dir.join(name);
        if !path.to_string_lossy().contains(char::is_whitespace) {
            self.archive = Some(path);
        }
        self
    }

    /// Logs in to JMX (and uses TLS) as `jmx` says.
    pub fn with_jmx(mut self, jmx: Option<crate::access::JmxAccess>) -> Self {
        self.jmx = jmx;
        self
    }

    /// The JMX settings, for messages.
    pub fn jmx(&self) -> Option<&crate::access::JmxAccess> {
        self.jmx.as_ref()
    }

    async fn run(&self, args: &[String]) -> Result<String, NodetoolError> {
        let (mut all, env) = match &self.jmx {
            Some(j) => (j.args(), j.env()),
            None => (Vec::new(), Vec::new()),
        };
        all.extend_from_slice(args);
        let Some(archive) = &self.archive else {
            return run_tool_env(&self.program, &all, &env).await;
        };
        let (flag, writing) = if archive.exists() {
            (format!("-XX:SharedArchiveFile={}", archive.display()), None)
        } else {
            let tmp = archive.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
            (
                format!("-XX:ArchiveClassesAtExit={}", tmp.display()),
                Some(tmp),
            )
        };
        // CDS logs its warnings to stdout, where they would mix with nodetool's output.
        let with_cds = with_java_options(&env, &format!("-Xlog:cds=off,cds+dynamic=off {flag}"));
        let r = run_tool_env(&self.program, &all, &with_cds).await;
        match (&r, writing) {
            (Ok(_), Some(tmp)) => {
                if let Err(e) = std::fs::rename(&tmp, archive) {
                    tracing::debug!(error = %e, "nodetool class archive not kept");
                    let _ = std::fs::remove_file(&tmp);
                }
            }
            (Err(_), Some(tmp)) => {
                let _ = std::fs::remove_file(&tmp);
            }
            (Err(e), None) if jvm_crashed(e) => {
                tracing::warn!(archive = %archive.display(), "nodetool's JVM died on its class archive: deleted, running without it");
                let _ = std::fs::remove_file(archive);
                return run_tool_env(&self.program, &all, &env).await;
            }
            _ => {}
        }
        r
    }

    /// `nodetool version`: the cheapest call that logs in to JMX.
    pub async fn version(&self) -> Result<String, NodetoolError> {
        if let Some(s) = &self.session
            && let Some(r) = s.version().await
        {
            return r;
        }
        self.run(&["version".to_string()]).await
    }

    /// `nodetool snapshot -t TAG [--ttl Ns] (ks... | -kt ks.t,...)`, or the same through the JMX
    /// session.
    pub async fn snapshot(
        &self,
        tag: &SnapshotTag,
        scope: &SnapshotScope,
        ttl: Option<Duration>,
    ) -> Result<(), NodetoolError> {
        // Whole seconds, as nodetool's --ttl and the MBean's "ttl" option both read it.
        let ttl = ttl.map(|t| format!("{}s", t.as_secs().max(1)));
        let entities: Vec<String> = match scope {
            SnapshotScope::Keyspaces(ks) => ks.iter().map(|k| k.to_string()).collect(),
            SnapshotScope::Tables(ks, tables) => {
                tables.iter().map(|t| format!("{ks}.{t}")).collect()
            }
        };
        if let Some(s) = &self.session
            && let Some(r) = s.snapshot(tag.as_str(), ttl.as_deref(), &entities).await
        {
            return r;
        }
        let mut args = vec!["snapshot".to_string(), "-t".to_string(), tag.to_string()];
        if let Some(ttl) = ttl {
            args.push("--ttl".into());
            args.push(ttl);
        }
        match scope {
            SnapshotScope::Keyspaces(_) => args.extend(entities),
            SnapshotScope::Tables(..) => {
                args.push("-kt".into());
                args.push(entities.join(","));
            }
        }
        self.run(&args).await.map(|_| ())
    }

    /// `nodetool clearsnapshot -t TAG`.
    pub async fn clear_snapshot(&self, tag: &SnapshotTag) -> Result<(), NodetoolError> {
        if let Some(s) = &self.session
            && let Some(r) = s.clear_snapshot(tag.as_str()).await
        {
            return r;
        }
        self.run(&["clearsnapshot".into(), "-t".into(), tag.to_string()])
            .await
            .map(|_| ())
    }

    /// `nodetool import ks table dir`: loads staged SSTables into the live table (files are
    /// moved). nodetool reports failed directories in its output, which is checked too.
    pub async fn import(
        &self,
        ks: &Identifier,
        table: &Identifier,
        dir: &std::path::Path,
    ) -> Result<String, NodetoolError> {
        let args = vec![
            "import".to_string(),
            ks.to_string(),
            table.to_string(),
            dir.display().to_string(),
        ];
        let out = self.run(&args).await?;
        if out.contains("failed to import") || out.contains("Failed importing") {
            return Err(NodetoolError::Failed {
                args: args.join(" "),
                code: Some(0),
                output: out.trim().to_string(),
            });
        }
        Ok(out)
    }
}

/// `env` with `options` added to `JAVA_TOOL_OPTIONS` (after what is there).
fn with_java_options(env: &[(String, String)], options: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = env.to_vec();
    match out.iter_mut().find(|(k, _)| k == "JAVA_TOOL_OPTIONS") {
        Some((_, v)) => *v = format!("{v} {options}"),
        None => out.push(("JAVA_TOOL_OPTIONS".into(), options.into())),
    }
    out
}

/// Whether a failed call was the JVM dying (SIGBUS/SIGSEGV on a damaged archive), not nodetool
/// refusing.
fn jvm_crashed(e: &NodetoolError) -> bool {
    match e {
        NodetoolError::Failed { code, output, .. } => {
            *code == Some(134)
                || code.is_none()
                || output.contains("A fatal error has been detected by the Java Runtime")
        }
        NodetoolError::Spawn { .. } => false,
    }
}

/// `program` looked up on `PATH` when it is a bare name.
fn which(program: &std::path::Path) -> Option<PathBuf> {
    if program.components().count() != 1 {
        return None;
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// Runs a Cassandra tool (nodetool, sstableloader) and returns its stdout, or an error with the
/// first lines of what it printed (Java stack frames dropped).
pub async fn run_tool(program: &std::path::Path, args: &[String]) -> Result<String, NodetoolError> {
    run_tool_env(program, args, &[]).await
}

/// [`run_tool`] with `env` set in the tool's environment (after the worker's own settings and
/// cloud credentials are removed from it): how credentials reach a tool without its argv.
pub async fn run_tool_env(
    program: &std::path::Path,
    args: &[String],
    env: &[(String, String)],
) -> Result<String, NodetoolError> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true);
    // Cloud credentials stay with the worker: a JVM tool has no use for them.
    ringvault_common::security::scrub_child_env(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    die_with_parent(&mut cmd);
    let out = cmd.output().await.map_err(|source| NodetoolError::Spawn {
        program: program.display().to_string(),
        source,
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let text = format!("{}{}", stdout.trim(), stderr.trim());
        // Keep the first lines: nodetool appends long Java stack traces (after a
        // `-- StackTrace --` line, or as `at ...` frames).
        let output: String = text
            .lines()
            .take_while(|l| l.trim() != "-- StackTrace --")
            .filter(|l| !l.trim_start().starts_with("at "))
            .filter(|l| !l.starts_with("Picked up JAVA_TOOL_OPTIONS"))
            .take(6)
            .collect::<Vec<_>>()
            .join(" | ");
        return Err(NodetoolError::Failed {
            args: args.join(" "),
            code: out.status.code(),
            output,
        });
    }
    Ok(stdout)
}

/// A tool started by a worker that is then killed (`kill -9` skips `kill_on_drop`) must not
/// run on: it is sent SIGKILL when the worker dies, so a restarted worker re-issuing the same
/// snapshot never races a leftover nodetool.
pub(crate) fn die_with_parent(cmd: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs in the forked child before exec and only calls prctl and
    // getppid, both async-signal-safe.
    unsafe {
        let worker = std::process::id() as libc::pid_t;
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may already have died between fork and prctl.
            if libc::getppid() != worker {
                return Err(std::io::Error::other("the worker exited"));
            }
            Ok(())
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}
