//! What an SSTable says about itself: the STATS component of its `Statistics.db` (Cassandra
//! 4.x `nb`, 5.0 `oa` big and `da` BTI formats). A backup records these numbers per SSTable so a
//! test restore can compare what it reads back with what was backed up, without any access to
//! the live data.
//!
//! Layout (Cassandra's `MetadataSerializer` with checksums, every version since `na`): an int
//! count of components and its CRC32; per component an int type (0 validation, 1 compaction,
//! 2 stats, 3 header) and an int offset, then the CRC32 of that table of contents; each
//! component then spans from its offset to the next one (or the end), its last 4 bytes its
//! CRC32. STATS (`StatsMetadata.StatsMetadataSerializer`) starts with the partition-size
//! histogram (int n; n × (long offset, long count): the counts add up to the partitions written),
//! the cell-count histogram, the commit log upper bound (long, int), min/max timestamps
//! (longs), min/max local deletion time and TTL (4 ints), the compression ratio (double), the
//! tombstone histogram (int, int n, n × (long, int)), the level (int), repairedAt (long), the
//! clustering min/max, `hasLegacyCounterShards`, totalColumnsSet and totalRows (longs), ... .
//! The clustering bounds are typed values: totalRows is reported only when the whole component
//! parsed to its end (at most a few zero bytes of padding left), so a wrong guess about a
//! type's width never yields a number.
use thiserror::Error;

/// Why a `Statistics.db` could not be read.
#[derive(Debug, Error)]
pub enum StatsError {
    #[error("Statistics.db is truncated or malformed: {0}")]
    Malformed(String),
    #[error("Statistics.db checksum mismatch in {0}")]
    Checksum(&'static str),
    #[error("Statistics.db has no STATS component")]
    NoStats,
    #[error("SSTable format version {0:?} is not supported (nb, oa, da and later are)")]
    Version(String),
}

/// The numbers a backup records per SSTable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SstableStats {
    /// Partitions written to the SSTable (total count of its partition-size histogram).
    pub partitions: u64,
    /// Rows written (`totalRows`), when the component parsed completely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// Whether the SSTable may hold deletions or expiring cells (tombstone histogram not
    /// empty, or a partition-level deletion marked): rows read back may then be fewer.
    pub has_tombstones: bool,
}

/// Most bytes a `Statistics.db` may have: they are a few KiB; anything larger is not one.
pub const MAX_STATISTICS_BYTES: u64 = 16 << 20;

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StatsError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| StatsError::Malformed(format!("read of {n} bytes at {}", self.at)))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, StatsError> {
        Ok(self.take(1)?[0])
    }
    fn i32(&mut self) -> Result<i32, StatsError> {
        let s = self.take(4)?;
        Ok(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u16(&mut self) -> Result<u16, StatsError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn i64(&mut self) -> Result<i64, StatsError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(i64::from_be_bytes(a))
    }
    fn count(&mut self, what: &str) -> Result<usize, StatsError> {
        let n = self.i32()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.b.len())
            .ok_or_else(|| StatsError::Malformed(format!("{what} count {n}")))
    }
    /// Cassandra's unsigned vint: leading one bits of the first byte say how many bytes follow.
    fn uvint(&mut self) -> Result<u64, StatsError> {
        let first = self.u8()?;
        let extra = first.leading_ones() as usize;
        if extra == 0 {
            return Ok(u64::from(first));
        }
        let mut v = if extra >= 8 {
            0
        } else {
            u64::from(first & (0xff >> extra))
        };
        for &b in self.take(extra)? {
            v = (v << 8) | u64::from(b);
        }
        Ok(v)
    }
    fn vint_bytes(&mut self) -> Result<&'a [u8], StatsError> {
        let n =
            usize::try_from(self.uvint()?).map_err(|_| StatsError::Malformed("length".into()))?;
        self.take(n)
    }
}

fn crc32(b: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, b) as u32
}

/// What the file name's version implies about the STATS layout.
#[derive(Debug, Clone, Copy)]
struct Version {
    /// `oa` and later (and `da`): typed clustering bounds, unsigned deletion times, key range,
    /// token space coverage, partition-level deletion marker.
    five: bool,
}

impl Version {
    fn of(v: &str) -> Result<Self, StatsError> {
        let b = v.as_bytes();
        if b.len() != 2 || !b.iter().all(u8::is_ascii_lowercase) {
            return Err(StatsError::Version(v.to_string()));
        }
        match (b[0], b[1]) {
            (b'n', b'b'..) => Ok(Self { five: false }),
            (b'o'..=b'z', _) => Ok(Self { five: true }),
            // BTI: `da` corresponds to big `oa`.
            (b'd', _) => Ok(Self { five: true }),
            _ => Err(StatsError::Version(v.to_string())),
        }
    }
}

/// The SSTable format version of a component file name such as `oa-3-big-Statistics.db` or
/// `nb-1-big-Statistics.db` (the legacy `ks-table-nb-1-big-...` form too).
pub fn version_of(file_name: &str) -> Option<&str> {
    let parts: Vec<&str> = file_name.split('-').collect();
    let big = parts.iter().position(|p| *p == "big" || *p == "bti")?;
    // <version>-<generation>-<format>-<component>
    parts.get(big.checked_sub(2)?).copied()
}

/// Whether a snapshot file name is an SSTable's statistics component.
pub fn is_statistics(file_name: &str) -> bool {
    !file_name.contains('/') && file_name.ends_with("-Statistics.db")
}

/// Parses a whole `Statistics.db` of format `version` (`nb`, `oa`, `da`, ...).
pub fn parse(bytes: &[u8], version: &str) -> Result<SstableStats, StatsError> {
    let v = Version::of(version)?;
    let mut r = Reader { b: bytes, at: 0 };
    let n = r.count("component")?;
    let crc = r.i32()? as u32;
    if crc32(&(n as i32).to_be_bytes()) != crc {
        return Err(StatsError::Checksum("the component count"));
    }
    let toc_start = r.at;
    let mut toc = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = r.i32()?;
        let offset = r.count("offset")?;
        toc.push((kind, offset));
    }
    let toc_crc = r.i32()? as u32;
    // One CRC32 runs over the count and the entries (not over the count's own checksum).
    let mut covered = bytes[..4].to_vec();
    covered.extend_from_slice(&bytes[toc_start..r.at - 4]);
    if crc32(&covered) != toc_crc {
        return Err(StatsError::Checksum("the table of contents"));
    }
    let idx = toc
        .iter()
        .position(|(k, _)| *k == 2)
        .ok_or(StatsError::NoStats)?;
    let start = toc[idx].1;
    let end = toc
        .iter()
        .map(|(_, o)| *o)
        .filter(|o| *o > start)
        .min()
        .unwrap_or(bytes.len());
    if end < start + 4 || end > bytes.len() {
        return Err(StatsError::Malformed(format!(
            "STATS spans {start}..{end} of {} bytes",
            bytes.len()
        )));
    }
    let body = &bytes[start..end - 4];
    let stored = u32::from_be_bytes([
        bytes[end - 4],
        bytes[end - 3],
        bytes[end - 2],
        bytes[end - 1],
    ]);
    if crc32(body) != stored {
        return Err(StatsError::Checksum("the STATS component"));
    }
    stats(body, v)
}

fn histogram_total(r: &mut Reader<'_>) -> Result<u64, StatsError> {
    let n = r.count("histogram bucket")?;
    let mut total = 0u64;
    for _ in 0..n {
        r.i64()?;
        let c = r.i64()?;
        total = total.saturating_add(u64::try_from(c).unwrap_or(0));
    }
    Ok(total)
}

fn stats(body: &[u8], v: Version) -> Result<SstableStats, StatsError> {
    let mut r = Reader { b: body, at: 0 };
    let partitions = histogram_total(&mut r)?;
    histogram_total(&mut r)?; // cells per partition
    r.take(12)?; // commit log upper bound
    let min_timestamp = r.i64()?;
    let max_timestamp = r.i64()?;
    r.take(16)?; // min/max local deletion time, min/max TTL
    r.take(8)?; // compression ratio
    r.i32()?; // tombstone histogram: max bin size
    let bins = r.count("tombstone histogram bin")?;
    r.take(
        bins.checked_mul(12)
            .ok_or(StatsError::Malformed("bins".into()))?,
    )?;
    let mut stats = SstableStats {
        partitions,
        rows: None,
        min_timestamp,
        max_timestamp,
        has_tombstones: bins > 0,
    };
    // The rest needs the clustering types; a failure leaves `rows` unknown, nothing else.
    // Cassandra sizes the component from an estimate and leaves the difference as zero
    // padding (0 or 4 bytes on 5.0.8): more than that, or anything not zero, and `rows` stays
    // unknown.
    if let Ok((rows, partition_deletions)) = tail(&mut r, v)
        && let Some(rest) = body.get(r.at..)
        && rest.len() <= 8
        && rest.iter().all(|b| *b == 0)
    {
        stats.rows = Some(rows);
        stats.has_tombstones |= partition_deletions;
    }
    Ok(stats)
}

/// Fixed value widths of Cassandra's types (`AbstractType.valueLengthIfFixed`); `None`: a vint
/// length precedes the value.
fn fixed_width(type_name: &str) -> Option<usize> {
    let t = type_name.trim();
    if let Some(inner) = t
        .strip_prefix("org.apache.cassandra.db.marshal.ReversedType(")
        .and_then(|s| s.strip_suffix(')'))
    {
        return fixed_width(inner);
    }
    let short = t.strip_prefix("org.apache.cassandra.db.marshal.")?;
    match short {
        "BooleanType" => Some(1),
        "Int32Type" | "FloatType" => Some(4),
        "LongType" | "DoubleType" | "DateType" | "TimestampType" | "CounterColumnType" => Some(8),
        "UUIDType" | "TimeUUIDType" | "LexicalUUIDType" => Some(16),
        "EmptyType" => Some(0),
        _ => None,
    }
}

/// A clustering bound: its kind, its size, its values.
fn clustering_bound(r: &mut Reader<'_>, widths: &[usize]) -> Result<(), StatsError> {
    let _kind = r.u8()?;
    let size = usize::from(r.u16()?);
    values(r, size, |i| {
        widths.get(i).copied().filter(|w| *w != VARIABLE)
    })
}

/// `ClusteringPrefix.serializer.deserializeValuesWithoutSize`: per 32 values a vint header
/// (2 bits a value: empty, null), then each present value.
fn values(
    r: &mut Reader<'_>,
    size: usize,
    width: impl Fn(usize) -> Option<usize>,
) -> Result<(), StatsError> {
    let mut i = 0;
    while i < size {
        let header = r.uvint()?;
        let limit = (i + 32).min(size);
        while i < limit {
            let bits = (header >> ((i % 32) * 2)) & 3;
            if bits == 0 {
                match width(i) {
                    Some(w) => {
                        r.take(w)?;
                    }
                    None => {
                        r.vint_bytes()?;
                    }
                }
            }
            i += 1;
        }
    }
    Ok(())
}

const VARIABLE: usize = usize::MAX;

fn tail(r: &mut Reader<'_>, v: Version) -> Result<(u64, bool), StatsError> {
    r.i32()?; // level
    r.i64()?; // repairedAt
    if v.five {
        let n = usize::try_from(r.uvint()?)
            .ok()
            .filter(|n| *n <= 4096)
            .ok_or(StatsError::Malformed("clustering types".into()))?;
        let mut widths = Vec::with_capacity(n);
        for _ in 0..n {
            let name = String::from_utf8_lossy(r.vint_bytes()?).into_owned();
            widths.push(fixed_width(&name).unwrap_or(VARIABLE));
        }
        clustering_bound(r, &widths)?;
        clustering_bound(r, &widths)?;
    } else {
        for _ in 0..2 {
            let n = r.count("min/max column")?;
            for _ in 0..n {
                let len = usize::from(r.u16()?);
                r.take(len)?;
            }
        }
    }
    r.u8()?; // hasLegacyCounterShards
    r.i64()?; // totalColumnsSet
    let rows = r.i64()?;
    r.take(12)?; // commit log lower bound
    let intervals = r.count("commit log interval")?;
    r.take(
        intervals
            .checked_mul(24)
            .ok_or(StatsError::Malformed("intervals".into()))?,
    )?;
    if r.u8()? != 0 {
        r.take(16)?; // pending repair
    }
    r.u8()?; // isTransient
    if r.u8()? != 0 {
        r.take(16)?; // originating host id
    }
    let mut partition_deletions = false;
    if v.five {
        partition_deletions = r.u8()? != 0;
        r.vint_bytes()?; // first key
        r.vint_bytes()?; // last key
        r.take(8)?; // token space coverage
    }
    let rows = u64::try_from(rows).map_err(|_| StatsError::Malformed("totalRows".into()))?;
    Ok((rows, partition_deletions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_file_names() {
        assert_eq!(version_of("oa-3-big-Statistics.db"), Some("oa"));
        assert_eq!(version_of("da-1-bti-Statistics.db"), Some("da"));
        assert_eq!(version_of("nb-12-big-Statistics.db"), Some("nb"));
        assert_eq!(version_of("ks-t-nb-12-big-Statistics.db"), Some("nb"));
        assert!(Version::of("ma").is_err());
        assert!(is_statistics("oa-3-big-Statistics.db"));
        assert!(!is_statistics(".idx/oa-3-big-Statistics.db"));
    }

    #[test]
    fn garbage_is_refused_not_misread() {
        assert!(parse(b"", "oa").is_err());
        assert!(parse(&[0, 0, 0, 5, 1, 2, 3, 4], "oa").is_err());
        let mut big = vec![0x7f, 0xff, 0xff, 0xff];
        big.extend([0u8; 64]);
        assert!(parse(&big, "oa").is_err());
    }

    /// Every `Statistics.db` of the test bed's nodes parses completely (rows known), when a bed
    /// is configured (`RV_TESTBED_DIR`); the numbers are checked against Cassandra in the
    /// integration tests.
    #[test]
    fn real_statistics_files_parse_to_their_end() -> Result<(), Box<dyn std::error::Error>> {
        let Ok(dir) = std::env::var("RV_TESTBED_DIR") else {
            return Ok(());
        };
        let mut seen = 0;
        let mut stack = vec![std::path::PathBuf::from(dir).join("node1/data")];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                let Some(name) = name.filter(|n| is_statistics(n)) else {
                    continue;
                };
                let version = version_of(&name).ok_or("no version")?;
                let s = parse(&std::fs::read(&p)?, version)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
                assert!(s.rows.is_some(), "{}: rows unknown", p.display());
                seen += 1;
            }
        }
        assert!(seen > 0, "no Statistics.db found");
        Ok(())
    }
}
