//! Access to the running test bed described by its env file (`$RINGVAULT_TESTBED_ENV`, default
//! `<repo>/target/testbed/env`).
use std::collections::HashMap;
use std::path::PathBuf;

/// The key=value pairs of the test bed env file.
#[derive(Debug, Clone)]
pub struct Testbed {
    vars: HashMap<String, String>,
}

impl Testbed {
    /// Loads the env file; fails with a hint to run `scripts/testbed up` when it is missing.
    pub fn load() -> anyhow::Result<Self> {
        let path = env_file_path();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!(
                "test bed env file {} unreadable ({e}); start it with `scripts/testbed up`",
                path.display()
            )
        })?;
        let mut vars = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim_matches('\'').trim_matches('"');
                vars.insert(k.to_string(), v.to_string());
            }
        }
        Ok(Self { vars })
    }

    /// A variable of the env file, or an error naming it.
    pub fn var(&self, key: &str) -> anyhow::Result<String> {
        self.vars
            .get(key)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("test bed env file has no {key}"))
    }

    /// Number of Cassandra nodes running.
    pub fn nodes(&self) -> anyhow::Result<usize> {
        Ok(self.var("RV_NODES")?.parse()?)
    }

    /// Path of the repository root.
    pub fn repo_root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default()
    }

    /// Runs `scripts/testbed nodetool N args...` and returns stdout, failing on non-zero exit.
    pub fn nodetool(&self, node: usize, args: &[&str]) -> anyhow::Result<String> {
        // The secured bed's nodetool logs in to JMX as its operator.
        let out = if let Ok(admin) = self.var(&format!("RV_NODE{node}_NODETOOL_ADMIN")) {
            std::process::Command::new(admin).args(args).output()?
        } else {
            let script = Self::repo_root().join("scripts/testbed");
            std::process::Command::new(script)
                .arg("nodetool")
                .arg(node.to_string())
                .args(args)
                .output()?
        };
        if !out.status.success() {
            anyhow::bail!(
                "nodetool {node} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Where `scripts/testbed up` writes its env file.
pub fn env_file_path() -> PathBuf {
    std::env::var_os("RINGVAULT_TESTBED_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Testbed::repo_root().join("target/testbed/env"))
}

impl Testbed {
    /// Puts the test bed's store credentials in this process's environment, where the store
    /// backends read them. Call before starting other threads.
    pub fn export_store_credentials(&self) -> anyhow::Result<()> {
        let vars = [
            ("AWS_ACCESS_KEY_ID", self.var("RV_S3_ACCESS_KEY")?),
            ("AWS_SECRET_ACCESS_KEY", self.var("RV_S3_SECRET_KEY")?),
            ("AWS_REGION", self.var("RV_S3_REGION")?),
            ("AZURE_STORAGE_KEY", self.var("RV_AZ_KEY")?),
        ];
        for (k, v) in vars {
            // SAFETY: documented as called before other threads start.
            unsafe { std::env::set_var(k, v) };
        }
        Ok(())
    }

    /// A store URL under a fresh prefix of one of the test bed's stores (file, s3, gs, az).
    pub fn fresh_store_url(&self, backend: &str, prefix: &str) -> anyhow::Result<String> {
        let run = uuid::Uuid::new_v4().simple().to_string();
        Ok(match backend {
            "file" => format!(
                "file://{}",
                std::env::temp_dir()
                    .join(format!("rv-{prefix}-{run}"))
                    .display()
            ),
            "s3" => format!(
                "s3://{}/{prefix}-{run}?endpoint={}&region={}",
                self.var("RV_S3_BUCKET")?,
                self.var("RV_S3_ENDPOINT")?,
                self.var("RV_S3_REGION")?
            ),
            "gs" => format!(
                "gs://{}/{prefix}-{run}?endpoint={}",
                self.var("RV_GCS_BUCKET")?,
                self.var("RV_GCS_ENDPOINT")?
            ),
            "az" => format!(
                "az://{}/{}/{prefix}-{run}?endpoint={}",
                self.var("RV_AZ_ACCOUNT")?,
                self.var("RV_AZ_CONTAINER")?,
                self.var("RV_AZ_ENDPOINT")?
            ),
            other => anyhow::bail!("unknown backend {other:?} (file, s3, gs, az)"),
        })
    }
}
