//! The time source. Production uses the system clock; tests use [`Clock::manual`] and move time
//! by hand, so DST transitions, downtime and deadlines are tested without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Milliseconds since the Unix epoch, UTC. Every instant inside cueapi is one of these.
pub type Millis = i64;

/// A clock: either the system clock or a manual one shared with a test.
#[derive(Clone, Debug)]
pub enum Clock {
    /// The system clock.
    System,
    /// A clock that only moves when told to.
    Manual(Arc<ManualClock>),
}

/// A clock for tests: holds an instant and wakes every waiter when it moves.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
    tick: watch::Sender<Millis>,
}

impl ManualClock {
    /// The current instant of this clock.
    pub fn now(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }

    /// Moves the clock to `to` (never backwards) and wakes everything waiting on it.
    pub fn set(&self, to: Millis) {
        let prev = self.now.fetch_max(to, Ordering::SeqCst);
        if to > prev {
            self.tick.send_replace(to);
        }
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: Millis) {
        self.set(self.now() + ms.max(0));
    }
}

impl Clock {
    /// A manual clock starting at `start`.
    pub fn manual(start: Millis) -> Clock {
        let (tick, _) = watch::channel(start);
        Clock::Manual(Arc::new(ManualClock {
            now: AtomicI64::new(start),
            tick,
        }))
    }

    /// Now, in UTC milliseconds.
    pub fn now(&self) -> Millis {
        match self {
            Clock::System => system_now(),
            Clock::Manual(m) => m.now(),
        }
    }

    /// Waits until the clock reads `deadline` or later. Must be called inside the engine's runtime.
    pub async fn sleep_until(&self, deadline: Millis) {
        match self {
            Clock::System => loop {
                let left = deadline - system_now();
                if left <= 0 {
                    return;
                }
                // tokio's timer wheel has millisecond slots and rounds up, which shows as fire
                // lag: sleep until 1 ms before, then yield until the instant itself (at most a
                // millisecond of a runtime thread per distinct fire instant).
                if left > 1 {
                    tokio::time::sleep(Duration::from_millis((left - 1) as u64)).await;
                } else {
                    tokio::task::yield_now().await;
                }
            },
            Clock::Manual(m) => {
                let mut rx = m.tick.subscribe();
                while m.now() < deadline {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The system clock in UTC milliseconds.
pub fn system_now() -> Millis {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_millis() as Millis
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_never_goes_back() {
        let c = Clock::manual(1_000);
        if let Clock::Manual(m) = &c {
            m.advance(500);
            m.set(10);
        }
        assert_eq!(c.now(), 1_500);
    }
}
