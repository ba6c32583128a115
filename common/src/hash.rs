//! Content hashing. A blob's address is the BLAKE3 hash of its bytes (64 lowercase hex
//! characters): cryptographic, so two different SSTables never share an address, and several
//! times faster than SHA-256 on one core, which matters on a node that shares its CPU with
//! Cassandra. Stores additionally get a cheap per-request CRC (see [`crc32c_base64`]).
use std::fmt;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// The content hash of a blob.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContentHash(String);

/// A hash string that is not 64 lowercase hex characters.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a BLAKE3 hash (64 lowercase hex characters)")]
pub struct BadHash(String);

impl ContentHash {
    /// Name of the algorithm, recorded in manifests.
    pub const ALGORITHM: &'static str = "blake3";

    /// Parses a hash read from a manifest or a request.
    pub fn parse(s: &str) -> Result<Self, BadHash> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_string()))
        } else {
            Err(BadHash(s.to_string()))
        }
    }
    /// Hashes a whole buffer.
    pub fn of(data: &[u8]) -> Self {
        Self(blake3::hash(data).to_hex().to_string())
    }
    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for ContentHash {
    type Error = BadHash;
    fn try_from(s: String) -> Result<Self, BadHash> {
        Self::parse(&s)
    }
}
impl From<ContentHash> for String {
    fn from(h: ContentHash) -> String {
        h.0
    }
}
impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Incremental content hasher, fed chunk by chunk during the single read that uploads a file.
#[derive(Default)]
pub struct ContentHasher(blake3::Hasher);

impl ContentHasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// The hash of everything fed.
    pub fn finish(&self) -> ContentHash {
        ContentHash(self.0.finalize().to_hex().to_string())
    }
}

/// CRC32C of `data`, big-endian and base64-encoded, as S3's `x-amz-checksum-crc32c` wants it.
pub fn crc32c_base64(data: &[u8]) -> String {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// Running CRC32C of a byte stream fed in order: a cheap check that two reads of one file
/// saw the same bytes (the worker hashes a large file, then reads it again to upload it).
pub struct Crc32c(crc_fast::Digest);

impl Default for Crc32c {
    fn default() -> Self {
        Self(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi))
    }
}

impl Crc32c {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// The CRC of everything fed.
    pub fn finish(&self) -> u32 {
        self.0.finalize() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_hash_equals_whole_hash() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = ContentHasher::new();
        for c in data.chunks(7777) {
            h.update(c);
        }
        assert_eq!(h.finish(), ContentHash::of(&data));
        assert!(ContentHash::parse(h.finish().as_str()).is_ok());
        assert!(ContentHash::parse("../etc").is_err());
    }

    #[test]
    fn crc32c_matches_the_published_check_value() {
        // CRC-32C("123456789") = 0xE3069283
        assert_eq!(
            crc32c_base64(b"123456789"),
            base64::engine::general_purpose::STANDARD.encode(0xE306_9283u32.to_be_bytes())
        );
        let mut c = Crc32c::default();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xE306_9283);
    }
}
