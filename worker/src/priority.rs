//! The worker's CPU and I/O priority. A backup shares the node with Cassandra, which serves
//! live traffic: by default the worker runs at `nice 10` and in the best-effort I/O class at
//! its lowest level (7), so under contention the node's own work goes first (the same stance
//! as Medusa's defaults). Both are set once, before the runtime starts its threads, which
//! inherit them, as do the `nodetool` and `sstableloader` processes the worker runs.
use clap::{Args, ValueEnum};

/// Linux I/O scheduling classes a worker may choose (`ionice -c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoClass {
    /// Leave the I/O priority as inherited.
    Inherit,
    /// Best effort (`ionice -c 2`), at `--io-level`.
    BestEffort,
    /// Idle (`ionice -c 3`): disk time only when nobody else wants it. A busy node can
    /// starve the backup entirely.
    Idle,
}

/// Priority options of the worker.
#[derive(Debug, Clone, Args)]
pub struct PriorityOptions {
    /// CPU niceness of the worker and the tools it runs (0 = unchanged, up to 19). Lowering
    /// below the inherited value needs CAP_SYS_NICE and is refused otherwise.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19), env = "RINGVAULT_WORKER_NICE")]
    pub nice: i32,
    /// I/O scheduling class (ionice): inherit, best-effort or idle.
    #[arg(
        long,
        value_enum,
        default_value = "best-effort",
        env = "RINGVAULT_WORKER_IO_CLASS"
    )]
    pub io_class: IoClass,
    /// I/O priority level within the best-effort class, 0 (highest) to 7 (lowest).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u8).range(0..=7), env = "RINGVAULT_WORKER_IO_LEVEL")]
    pub io_level: u8,
    /// Drop from the page cache what a backup read brought in (pages already cached stay).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "RINGVAULT_WORKER_GENTLE_READS")]
    pub gentle_reads: bool,
}

/// A priority could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PriorityError {
    #[error("setting nice {nice}: {source} (lowering niceness needs CAP_SYS_NICE)")]
    Nice { nice: i32, source: std::io::Error },
    #[error("setting I/O priority {class:?}/{level}: {source}")]
    Io {
        class: IoClass,
        level: u8,
        source: std::io::Error,
    },
}

const IOPRIO_CLASS_SHIFT: i32 = 13;
const IOPRIO_CLASS_BE: i32 = 2;
const IOPRIO_CLASS_IDLE: i32 = 3;
const IOPRIO_WHO_PROCESS: i32 = 1;

impl PriorityOptions {
    /// Applies both priorities to the calling thread; call it before any other thread starts
    /// (threads and child processes inherit it). Returns what was applied, for the log.
    pub fn apply(&self) -> Result<String, PriorityError> {
        if self.nice != 0 {
            // SAFETY: setpriority only reads its integer arguments.
            let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, self.nice) };
            if rc != 0 {
                return Err(PriorityError::Nice {
                    nice: self.nice,
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        let io = match self.io_class {
            IoClass::Inherit => None,
            IoClass::BestEffort => {
                Some((IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | i32::from(self.io_level))
            }
            IoClass::Idle => Some(IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT),
        };
        if let Some(prio) = io {
            // SAFETY: ioprio_set only reads its integer arguments.
            let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, prio) };
            if rc != 0 {
                return Err(PriorityError::Io {
                    class: self.io_class,
                    level: self.io_level,
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        Ok(format!(
            "nice {}, I/O {:?}{}, gentle reads {}",
            current_nice(),
            self.io_class,
            if self.io_class == IoClass::BestEffort {
                format!(" level {}", self.io_level)
            } else {
                String::new()
            },
            if self.gentle_reads { "on" } else { "off" }
        ))
    }
}

/// The calling thread's niceness.
pub fn current_nice() -> i32 {
    // SAFETY: getpriority only reads its integer arguments.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

/// The calling thread's I/O priority as `(class, level)`.
pub fn current_io_priority() -> std::io::Result<(i32, i32)> {
    // SAFETY: ioprio_get only reads its integer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let v = rc as i32;
    Ok((v >> IOPRIO_CLASS_SHIFT, v & ((1 << IOPRIO_CLASS_SHIFT) - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        p: PriorityOptions,
    }

    #[test]
    fn defaults_are_nice_10_best_effort_7_and_bad_values_are_refused() {
        let c = Cli::try_parse_from(["w"]).expect("defaults");
        assert_eq!(
            (c.p.nice, c.p.io_class, c.p.io_level),
            (10, IoClass::BestEffort, 7)
        );
        assert!(c.p.gentle_reads);
        for bad in [
            &["w", "--nice", "20"][..],
            &["w", "--nice", "-5"],
            &["w", "--io-level", "8"],
            &["w", "--io-class", "realtime"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn applied_priorities_are_inherited_by_new_threads() {
        // In a thread of its own: the priority of the test harness's thread stays as it was.
        std::thread::spawn(|| {
            let before = current_nice();
            let p = PriorityOptions {
                nice: (before + 3).min(19),
                io_class: IoClass::BestEffort,
                io_level: 6,
                gentle_reads: true,
            };
            p.apply().expect("apply");
            let child =
                std::thread::spawn(|| (current_nice(), current_io_priority().expect("ioprio_get")))
                    .join()
                    .expect("child thread");
            assert_eq!(child, ((before + 3).min(19), (IOPRIO_CLASS_BE, 6)));
        })
        .join()
        .expect("test thread");
    }
}
