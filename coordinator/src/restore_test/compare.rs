//! What a test restore expects to read back, from the SSTable statistics the backup recorded.
//!
//! A partition can be in several SSTables of a backup: in several flushes on one node, and on
//! every replica when the keyspace's replication factor is above 1. The statistics count each
//! SSTable's partitions, so their sum counts such a partition several times. The comparison is
//! therefore:
//! - **exact** when no partition can be in two SSTables: replication factor 1, at most one
//!   SSTable of the table per node, no deletions or expiring cells recorded (the sum is the
//!   count, and what is read back must equal it);
//! - **bound** otherwise: at most the sum; at least the largest SSTable (replication factor
//!   above 1), or the sum over nodes of each node's largest SSTable (replication factor 1:
//!   nodes hold disjoint partitions), or 0 when deletions or expiring cells were recorded
//!   (what is read back may be fewer, down to nothing);
//! - **unknown** when an SSTable of the table has no statistics (a backup made before they
//!   were recorded, or a file that did not parse): only the load and the sample count.
//!
//! Rows follow the same rule with `totalRows`, when every SSTable recorded it.
use std::collections::{BTreeMap, BTreeSet};

use ringvault_common::cql::{self, TokenKind};
use ringvault_common::sstable_stats::SstableStats;

/// How the found counts are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Exact,
    Bound,
    Unknown,
}

impl Comparison {
    /// As shown in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Exact => "exact",
            Comparison::Bound => "bound",
            Comparison::Unknown => "unknown",
        }
    }
}

/// The expected counts of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub comparison: Comparison,
    pub partitions: (u64, u64),
    /// `None` when some SSTable did not record its rows.
    pub rows: Option<(u64, u64)>,
}

impl Expected {
    /// `None` when the found counts fit, else why not.
    pub fn check(&self, partitions: u64, rows: u64) -> Option<String> {
        if self.comparison == Comparison::Unknown {
            return None;
        }
        let fits = |(lo, hi): (u64, u64), v: u64| lo <= v && v <= hi;
        let show = |(lo, hi): (u64, u64)| {
            if lo == hi {
                format!("{lo}")
            } else {
                format!("{lo}..={hi}")
            }
        };
        let mut out = Vec::new();
        if !fits(self.partitions, partitions) {
            out.push(format!(
                "{partitions} partitions read back, the backup recorded {} ({})",
                show(self.partitions),
                self.comparison.as_str()
            ));
        }
        if let Some(r) = self.rows
            && !fits(r, rows)
        {
            out.push(format!(
                "{rows} rows read back, the backup recorded {} ({})",
                show(r),
                self.comparison.as_str()
            ));
        }
        (!out.is_empty()).then(|| out.join("; "))
    }
}

/// The expected counts of a table from its SSTables' statistics as (source node, stats), given
/// the keyspace's replication factor over the backed-up nodes (`None`: not known).
pub fn expected(sstables: &[(String, Option<SstableStats>)], rf: Option<u32>) -> Expected {
    let unknown = Expected {
        comparison: Comparison::Unknown,
        partitions: (0, 0),
        rows: None,
    };
    let mut by_node: BTreeMap<&str, Vec<&SstableStats>> = BTreeMap::new();
    for (node, s) in sstables {
        match s {
            Some(s) => by_node.entry(node.as_str()).or_default().push(s),
            None => return unknown,
        }
    }
    if by_node.is_empty() {
        return Expected {
            comparison: Comparison::Exact,
            partitions: (0, 0),
            rows: Some((0, 0)),
        };
    }
    let all: Vec<&SstableStats> = by_node.values().flatten().copied().collect();
    let tombstones = all.iter().any(|s| s.has_tombstones);
    let rf1 = rf == Some(1);
    let single = by_node.values().all(|v| v.len() <= 1);
    let exact = rf1 && single && !tombstones;
    let range = |f: &dyn Fn(&SstableStats) -> u64| -> (u64, u64) {
        let sum = all.iter().map(|s| f(s)).fold(0u64, u64::saturating_add);
        let lo = if tombstones {
            0
        } else if rf1 {
            by_node
                .values()
                .map(|v| v.iter().map(|s| f(s)).max().unwrap_or(0))
                .fold(0u64, u64::saturating_add)
        } else {
            all.iter().map(|s| f(s)).max().unwrap_or(0)
        };
        (if exact { sum } else { lo }, sum)
    };
    let partitions = range(&|s| s.partitions);
    let rows = all
        .iter()
        .all(|s| s.rows.is_some())
        .then(|| range(&|s| s.rows.unwrap_or(0)));
    Expected {
        comparison: if exact {
            Comparison::Exact
        } else {
            Comparison::Bound
        },
        partitions,
        rows,
    }
}

/// The replication factor of a keyspace (its `CREATE KEYSPACE` as backed up) over the
/// datacenters that were backed up: `SimpleStrategy`'s `replication_factor`, or the sum of
/// `NetworkTopologyStrategy`'s per-datacenter factors (`3/1` transient notation: the full
/// count). `None` when the statement says something else.
pub fn replication_factor(statement: &str, datacenters: &BTreeSet<String>) -> Option<u32> {
    let tokens = cql::tokenize(statement).ok()?;
    let at = tokens.iter().position(|t| t.is_kw("replication"))?;
    let open = at + 2;
    if !tokens.get(at + 1)?.is_sym('=') || !tokens.get(open)?.is_sym('{') {
        return None;
    }
    let text = |i: usize| -> Option<String> {
        let t = tokens.get(i)?;
        (t.kind == TokenKind::Str).then(|| t.text[1..t.text.len() - 1].replace("''", "'"))
    };
    let mut map = BTreeMap::new();
    let mut i = open + 1;
    while let Some(k) = text(i) {
        if !tokens.get(i + 1)?.is_sym(':') {
            return None;
        }
        let v = text(i + 2).or_else(|| {
            let t = tokens.get(i + 2)?;
            (t.kind == TokenKind::Word).then(|| t.text.to_string())
        })?;
        map.insert(k, v);
        i += 3;
        if tokens.get(i).is_some_and(|t| t.is_sym(',')) {
            i += 1;
        }
    }
    let class = map.get("class")?;
    let count = |v: &str| -> Option<u32> { v.split('/').next()?.trim().parse().ok() };
    if class.ends_with("SimpleStrategy") {
        count(map.get("replication_factor")?)
    } else if class.ends_with("NetworkTopologyStrategy") {
        let mut rf = 0;
        for (k, v) in &map {
            if k != "class" && (datacenters.is_empty() || datacenters.contains(k)) {
                rf += count(v)?;
            }
        }
        Some(rf)
    } else if class.ends_with("LocalStrategy") {
        Some(1)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(partitions: u64, rows: Option<u64>, tomb: bool) -> Option<SstableStats> {
        Some(SstableStats {
            partitions,
            rows,
            min_timestamp: 1,
            max_timestamp: 2,
            has_tombstones: tomb,
        })
    }

    #[test]
    fn exact_only_when_no_partition_can_be_counted_twice() {
        let one_each = vec![
            ("a".to_string(), s(10, Some(30), false)),
            ("b".to_string(), s(5, Some(15), false)),
        ];
        let e = expected(&one_each, Some(1));
        assert_eq!(e.comparison, Comparison::Exact);
        assert_eq!((e.partitions, e.rows), ((15, 15), Some((45, 45))));
        assert_eq!(e.check(15, 45), None);
        assert!(e.check(14, 45).expect("too few").contains("14 partitions"));
        // Replicas: the sum counts each partition three times.
        let e = expected(&one_each, Some(3));
        assert_eq!((e.comparison, e.partitions), (Comparison::Bound, (10, 15)));
        // Two flushes on one node.
        let mut two = one_each.clone();
        two.push(("a".to_string(), s(4, Some(4), false)));
        let e = expected(&two, Some(1));
        assert_eq!((e.comparison, e.partitions), (Comparison::Bound, (15, 19)));
        // Deletions: anything up to the sum.
        let e = expected(&[("a".to_string(), s(7, None, true))], Some(1));
        assert_eq!(
            (e.comparison, e.partitions, e.rows),
            (Comparison::Bound, (0, 7), None)
        );
        // Not recorded.
        let e = expected(&[("a".to_string(), None)], Some(1));
        assert_eq!(e.comparison, Comparison::Unknown);
        assert_eq!(e.check(99, 99), None);
    }

    #[test]
    fn replication_factors() {
        let none = BTreeSet::new();
        assert_eq!(
            replication_factor(
                "CREATE KEYSPACE a WITH replication = {'class': 'org.apache.cassandra.locator.SimpleStrategy', 'replication_factor': '1'} AND durable_writes = true;",
                &none
            ),
            Some(1)
        );
        let st = "CREATE KEYSPACE b WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': '3', 'dc2': '2/1'};";
        assert_eq!(replication_factor(st, &none), Some(5));
        assert_eq!(replication_factor(st, &["dc1".to_string()].into()), Some(3));
        assert_eq!(
            replication_factor(
                "CREATE KEYSPACE c WITH replication = {'class': 'Other'};",
                &none
            ),
            None
        );
    }
}
