//! Upload bandwidth cap: a reservation clock shared by all uploads of a run. Each send
//! reserves its bytes and waits until the clock says the budget allows them.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Caps throughput at a number of bytes per second (0: no cap).
#[derive(Clone)]
pub struct Throttle {
    bytes_per_sec: u64,
    next_free: Arc<Mutex<Option<Instant>>>,
}

impl Throttle {
    /// A throttle at `bytes_per_sec` (0 disables it).
    pub fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec,
            next_free: Arc::new(Mutex::new(None)),
        }
    }

    /// Waits until `bytes` may be sent.
    pub async fn take(&self, bytes: u64) {
        if self.bytes_per_sec == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        let start = {
            let mut next = self.next_free.lock().await;
            let now = Instant::now();
            let start = next.map_or(now, |n| n.max(now));
            *next = Some(start + cost);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spreads_sends_at_the_configured_rate() {
        let t = Throttle::new(1000);
        let t0 = Instant::now();
        for _ in 0..5 {
            t.take(500).await; // 0.5 s each
        }
        // The 5th send may start after 4 x 0.5 s.
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        let unlimited = Throttle::new(0);
        let t1 = Instant::now();
        unlimited.take(1 << 40).await;
        assert_eq!(t1.elapsed(), Duration::ZERO);
    }
}
