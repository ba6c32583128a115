//! Cleanup that happens even when a test fails or panics: [`Keyspaces`] drops the keyspaces a
//! test created, [`EnvVars`] puts back the process environment a test changed.
use crate::testbed::Testbed;

/// Drops its keyspaces (`DROP KEYSPACE IF EXISTS`, on a session of its own) when it goes out
/// of scope, however the test ended. Create it right after choosing the name, before the
/// keyspace exists.
pub struct Keyspaces {
    tb: Testbed,
    names: Vec<String>,
}

impl Keyspaces {
    /// Guards keyspace `ks` (as written in CQL).
    pub fn new(tb: &Testbed, ks: &str) -> Self {
        Self {
            tb: tb.clone(),
            names: vec![ks.to_string()],
        }
    }

    /// Guards one more keyspace.
    pub fn also(&mut self, ks: &str) {
        self.names.push(ks.to_string());
    }
}

impl Drop for Keyspaces {
    fn drop(&mut self) {
        let (tb, names) = (self.tb.clone(), std::mem::take(&mut self.names));
        // Drop runs inside the test's runtime: the statements go on a thread of their own.
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let s = crate::cluster::session(&tb).await?;
                for ks in &names {
                    s.query_unpaged(format!("DROP KEYSPACE IF EXISTS {ks}"), ())
                        .await?;
                }
                s.await_schema_agreement().await?;
                anyhow::Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("keyspace guard: dropping keyspaces failed: {e:#}"),
            Err(_) => eprintln!("keyspace guard: the dropping thread panicked"),
        }
    }
}

/// Restores the listed environment variables to their values at creation when dropped. Only
/// for tests holding [`crate::bed::exclusive`]: the environment is the whole process's.
pub struct EnvVars {
    saved: Vec<(&'static str, Option<std::ffi::OsString>)>,
}

impl EnvVars {
    /// Remembers `names` as they are now.
    pub fn save(names: &[&'static str]) -> Self {
        Self {
            saved: names.iter().map(|n| (*n, std::env::var_os(n))).collect(),
        }
    }
}

impl Drop for EnvVars {
    fn drop(&mut self) {
        for (name, value) in &self.saved {
            // SAFETY: the test that changed them holds the bed exclusively; no other test
            // reads the environment meanwhile.
            unsafe {
                match value {
                    Some(v) => std::env::set_var(name, v),
                    None => std::env::remove_var(name),
                }
            }
        }
    }
}
