//! Bearer tokens for CLI users without certificates. The coordinator's token file holds one
//! line per user, `NAME ROLE sha256:HEX`, the SHA-256 of the token (never the token itself), and
//! is re-read when it changes on disk. Tokens are accepted over TLS only.
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::SecurityError;
use super::identity::{Identity, Role};

/// A file's modification time and size: what tells a reload is due.
type Stamp = Option<(SystemTime, u64)>;

/// A token file, reloaded on change.
pub struct TokenFile {
    path: PathBuf,
    state: Mutex<(Stamp, Vec<Entry>)>,
}

#[derive(Clone)]
struct Entry {
    digest: [u8; 32],
    identity: Identity,
}

impl TokenFile {
    /// Opens and parses the file (a malformed line is an error naming the line).
    pub fn open(path: &Path) -> Result<Self, SecurityError> {
        let f = Self {
            path: path.to_path_buf(),
            state: Mutex::new((None, Vec::new())),
        };
        f.refresh()?;
        Ok(f)
    }

    fn stamp(&self) -> Stamp {
        std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    }

    fn refresh(&self) -> Result<(), SecurityError> {
        let stamp = self.stamp();
        let mut st = self.state.lock().map_err(|_| SecurityError::Poisoned)?;
        if st.0.is_some() && st.0 == stamp {
            return Ok(());
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| SecurityError::File {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let entries = parse(&text).map_err(|reason| SecurityError::File {
            path: self.path.clone(),
            reason,
        })?;
        *st = (stamp, entries);
        Ok(())
    }

    /// The identity a presented token maps to.
    pub fn lookup(&self, token: &str) -> Option<Identity> {
        if let Err(e) = self.refresh() {
            tracing::warn!(error = %e, "token file does not load; keeping the previous one");
        }
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        let st = self.state.lock().ok()?;
        st.1.iter()
            .find(|e| e.digest == digest)
            .map(|e| e.identity.clone())
    }
}

/// A fresh random token (256 bits, hex) and its token-file line.
pub fn new_token(name: &str, role: Role) -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = hex::encode(bytes);
    let line = token_line(name, role, &token);
    (token, line)
}

/// The token-file line for `token`.
pub fn token_line(name: &str, role: Role, token: &str) -> String {
    format!(
        "{name} {role} sha256:{}",
        hex::encode(Sha256::digest(token.as_bytes()))
    )
}

fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why} (expected NAME ROLE sha256:HEX)", n + 1);
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [name, role, digest] = parts.as_slice() else {
            return Err(bad("three fields"));
        };
        let role = Role::parse(role).map_err(|e| bad(&e.to_string()))?;
        let hex_digest = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| bad("the digest must start with sha256:"))?;
        let digest: [u8; 32] = hex::decode(hex_digest)
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| bad("the digest must be 64 hex digits"))?;
        out.push(Entry {
            digest,
            identity: Identity::User {
                name: name.to_string(),
                role,
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_maps_to_its_user_and_a_wrong_one_to_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let (token, line) = new_token("bob", Role::Viewer);
        assert!(!line.contains(&token), "the file must not hold the token");
        let path = dir.path().join("tokens");
        std::fs::write(&path, format!("# users\n{line}\n")).unwrap();
        let f = TokenFile::open(&path).unwrap();
        assert_eq!(
            f.lookup(&token),
            Some(Identity::User {
                name: "bob".into(),
                role: Role::Viewer
            })
        );
        assert_eq!(f.lookup("nope"), None);
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        let err = parse("a admin sha256:00\n").err().unwrap();
        assert!(err.contains("line 1"), "{err}");
        assert!(parse("a root sha256:00").is_err());
    }
}
