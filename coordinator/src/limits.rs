//! Limits of one run: parts in flight and bandwidth per node, and how many nodes snapshot and
//! upload at once. Set in the coordinator's config, overridden per run or per schedule, and
//! persisted with the run so a resumed run keeps them.
use serde::{Deserialize, Serialize};

/// A run's limits; 0 means "not set" (the config's value, or unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLimits {
    /// Parts in flight per node (0: the worker's own setting).
    #[serde(default)]
    pub upload_concurrency: u32,
    /// Upload bytes per second per node (0: unlimited).
    #[serde(default)]
    pub upload_bandwidth: u64,
    /// Nodes that snapshot and upload at the same time (0: all).
    #[serde(default)]
    pub nodes_at_once: u32,
}

impl RunLimits {
    /// These limits, with every unset one taken from `defaults`.
    pub fn or(self, defaults: RunLimits) -> RunLimits {
        RunLimits {
            upload_concurrency: pick(self.upload_concurrency, defaults.upload_concurrency),
            upload_bandwidth: pick(self.upload_bandwidth, defaults.upload_bandwidth),
            nodes_at_once: pick(self.nodes_at_once, defaults.nodes_at_once),
        }
    }

    /// How many of `nodes` work at once.
    pub fn parallel_nodes(&self, nodes: usize) -> usize {
        match self.nodes_at_once {
            0 => nodes.max(1),
            n => (n as usize).clamp(1, nodes.max(1)),
        }
    }
}

fn pick<T: PartialEq + Default>(value: T, default: T) -> T {
    if value == T::default() {
        default
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_limits_fall_back_to_the_defaults_and_set_ones_win() {
        let defaults = RunLimits {
            upload_concurrency: 8,
            upload_bandwidth: 100,
            nodes_at_once: 0,
        };
        let run = RunLimits {
            upload_bandwidth: 5,
            nodes_at_once: 1,
            ..Default::default()
        };
        assert_eq!(
            run.or(defaults),
            RunLimits {
                upload_concurrency: 8,
                upload_bandwidth: 5,
                nodes_at_once: 1
            }
        );
        assert_eq!(RunLimits::default().parallel_nodes(3), 3);
        assert_eq!(run.parallel_nodes(3), 1);
        assert_eq!(
            RunLimits {
                nodes_at_once: 9,
                ..Default::default()
            }
            .parallel_nodes(3),
            3
        );
    }
}
