//! What the engine counts for `/metrics` and `/health`: fire lag, how webhook attempts ended,
//! retries scheduled, and whether the timer loop is alive. Atomics only, so a hook costs a few
//! nanoseconds and never waits; readers take a [`Snapshot`].
//!
//! Outcome states are counted by the store, which alone knows what was committed
//! ([`crate::store::Writes::outcome_counts`]).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::timer::{Timer, TimerKind};
use crate::clock::Millis;
use crate::delivery::Attempt;

/// Upper bounds (milliseconds) of the fire-lag histogram's buckets; `+Inf` follows.
pub const LAG_BUCKETS_MS: [u64; 15] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];

/// How a webhook attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryResult {
    /// A 2xx answer, read in full.
    Delivered,
    /// An answer other than 2xx or 410.
    Failed,
    /// `410 Gone`: not retried.
    Gone,
    /// No (complete) answer within the cue's timeout.
    Timeout,
    /// The SSRF guard refused the target's address.
    Refused,
    /// No answer at all: the connection failed, or the request could not be made.
    Error,
}

impl DeliveryResult {
    /// Every result, in the order they are shown.
    pub const ALL: [DeliveryResult; 6] = [
        DeliveryResult::Delivered,
        DeliveryResult::Failed,
        DeliveryResult::Gone,
        DeliveryResult::Timeout,
        DeliveryResult::Refused,
        DeliveryResult::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryResult::Delivered => "delivered",
            DeliveryResult::Failed => "failed",
            DeliveryResult::Gone => "gone",
            DeliveryResult::Timeout => "timeout",
            DeliveryResult::Refused => "refused",
            DeliveryResult::Error => "error",
        }
    }

    /// How an attempt ended.
    pub fn of(a: &Attempt) -> DeliveryResult {
        if a.delivered {
            DeliveryResult::Delivered
        } else if a.timed_out {
            DeliveryResult::Timeout
        } else if a.refused {
            DeliveryResult::Refused
        } else if a.gone {
            DeliveryResult::Gone
        } else if a.http_status.is_some() {
            DeliveryResult::Failed
        } else {
            DeliveryResult::Error
        }
    }
}

/// "Never" in the instant atomics.
const NEVER: i64 = i64::MIN;

/// The engine's counters.
#[derive(Debug)]
pub struct Metrics {
    lag_buckets: [AtomicU64; LAG_BUCKETS_MS.len()],
    lag_count: AtomicU64,
    lag_sum_ms: AtomicU64,
    last_lag_ms: AtomicI64,
    deliveries: [AtomicU64; DeliveryResult::ALL.len()],
    retries_scheduled: AtomicU64,
    loop_started_at: AtomicI64,
    last_wake: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            lag_buckets: Default::default(),
            lag_count: AtomicU64::new(0),
            lag_sum_ms: AtomicU64::new(0),
            last_lag_ms: AtomicI64::new(NEVER),
            deliveries: Default::default(),
            retries_scheduled: AtomicU64::new(0),
            loop_started_at: AtomicI64::new(NEVER),
            last_wake: AtomicI64::new(NEVER),
        }
    }
}

/// The instants of the timer entries whose release is fire lag: cue ticks and retries (and
/// manual fires held for a later time, which ride on retry entries); not outcome deadlines.
pub(super) fn release_instants(due: &[Timer]) -> Vec<Millis> {
    due.iter()
        .filter(|t| t.kind != TimerKind::Deadline)
        .map(|t| t.at)
        .collect()
}

fn instant(v: i64) -> Option<Millis> {
    (v != NEVER).then_some(v)
}

impl Metrics {
    /// The timer loop started.
    pub(super) fn loop_started(&self, now: Millis) {
        self.loop_started_at.store(now, Ordering::Relaxed);
        self.last_wake.store(now, Ordering::Relaxed);
    }

    /// The timer loop woke (to act, or to look at the heap again).
    pub(super) fn woke(&self, now: Millis) {
        self.last_wake.store(now, Ordering::Relaxed);
    }

    /// Work for entries due at `instants` was released at `now`.
    /// Ticks released so far (each with its fire lag).
    pub fn fired(&self) -> u64 {
        self.lag_count.load(Ordering::Relaxed)
    }

    pub(super) fn released(&self, instants: &[Millis], now: Millis) {
        for at in instants {
            let lag = (now - at).max(0);
            let ms = lag as u64;
            if let Some(i) = LAG_BUCKETS_MS.iter().position(|b| ms <= *b) {
                self.lag_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
            self.lag_count.fetch_add(1, Ordering::Relaxed);
            self.lag_sum_ms.fetch_add(ms, Ordering::Relaxed);
            self.last_lag_ms.store(lag, Ordering::Relaxed);
        }
    }

    /// A webhook attempt ended.
    pub(super) fn delivery(&self, a: &Attempt) {
        let i = DeliveryResult::ALL
            .iter()
            .position(|r| *r == DeliveryResult::of(a))
            .unwrap_or(DeliveryResult::ALL.len() - 1);
        self.deliveries[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A retry was put on the timer.
    pub(super) fn retry_scheduled(&self) {
        self.retries_scheduled.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let mut cumulative = [0u64; LAG_BUCKETS_MS.len()];
        let mut running = 0;
        for (i, b) in self.lag_buckets.iter().enumerate() {
            running += b.load(Ordering::Relaxed);
            cumulative[i] = running;
        }
        // The count is read after the buckets: with observations landing meanwhile, `+Inf` is
        // never below the last bucket.
        let count = self.lag_count.load(Ordering::Relaxed).max(running);
        Snapshot {
            lag_cumulative: cumulative,
            lag_count: count,
            lag_sum_ms: self.lag_sum_ms.load(Ordering::Relaxed),
            last_lag_ms: instant(self.last_lag_ms.load(Ordering::Relaxed)),
            deliveries: DeliveryResult::ALL
                .iter()
                .zip(&self.deliveries)
                .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
                .collect(),
            retries_scheduled: self.retries_scheduled.load(Ordering::Relaxed),
            loop_started_at: instant(self.loop_started_at.load(Ordering::Relaxed)),
            last_wake: instant(self.last_wake.load(Ordering::Relaxed)),
        }
    }
}

/// The counters at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Releases with a lag at or below each of [`LAG_BUCKETS_MS`], cumulative.
    pub lag_cumulative: [u64; LAG_BUCKETS_MS.len()],
    /// Releases observed.
    pub lag_count: u64,
    /// Their lags added up, in milliseconds.
    pub lag_sum_ms: u64,
    /// The lag of the latest release.
    pub last_lag_ms: Option<i64>,
    /// Webhook attempts by how they ended.
    pub deliveries: Vec<(DeliveryResult, u64)>,
    /// Retries put on the timer.
    pub retries_scheduled: u64,
    /// When the timer loop started.
    pub loop_started_at: Option<Millis>,
    /// When the timer loop last woke.
    pub last_wake: Option<Millis>,
}

/// A due timer entry left this long without the loop waking means the loop is stuck.
pub const STALLED_AFTER_MS: i64 = 30_000;

/// The engine's state at one moment, for health checks.
#[derive(Clone, Debug)]
pub struct Health {
    /// The engine clock's now.
    pub now: Millis,
    /// Whether the timer loop's task is running (started, not finished, engine not closed).
    pub loop_running: bool,
    /// When the loop started and last woke.
    pub loop_started_at: Option<Millis>,
    pub last_wake: Option<Millis>,
    /// The earliest instant on the timer.
    pub next_due: Option<Millis>,
    /// The fire lag of the latest release.
    pub last_fire_lag_ms: Option<i64>,
    /// Webhook deliveries started and not yet recorded (including those held for their instant).
    pub deliveries_in_flight: usize,
    /// The server's delivery slots, and how many are taken.
    pub delivery_slots: usize,
    pub delivery_slots_busy: usize,
    /// The slots of one tenant and of one destination, and the longest a delivery may take.
    pub tenant_slots: usize,
    pub destination_slots: usize,
    pub max_delivery_timeout_ms: i64,
    /// Deliveries waiting for a server slot (their tenant's and destination's slots held): the
    /// queue every tenant shares.
    pub server_queue: QueueHealth,
    /// Deliveries waiting behind their own tenant's or destination's limit.
    pub tenant_queue: QueueHealth,
    pub destination_queue: QueueHealth,
    /// A wait longer than this means the delivery queue fills faster than it drains.
    pub stuck_after_ms: i64,
    /// Executions of the local transport waiting for a handler thread.
    pub local_queue: usize,
}

/// Deliveries waiting in one kind of queue, and how long the first of them has waited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueHealth {
    pub waiting: usize,
    pub oldest_wait_ms: Option<i64>,
}

impl Health {
    /// How long the earliest timer entry has been due without the loop waking since (0 when
    /// nothing is due).
    pub fn overdue_ms(&self) -> i64 {
        match self.next_due {
            Some(at) => (self.now - at.max(self.last_wake.unwrap_or(at))).max(0),
            None => 0,
        }
    }

    /// Whether a delivery has waited for a server slot longer than a delivery may take.
    pub fn deliveries_stuck(&self) -> bool {
        self.server_queue
            .oldest_wait_ms
            .is_some_and(|w| w > self.stuck_after_ms)
    }

    /// Whether due work is waiting on a loop that does not wake.
    pub fn stalled(&self) -> bool {
        self.overdue_ms() > STALLED_AFTER_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lags_fall_into_cumulative_buckets() {
        let m = Metrics::default();
        m.released(&[1_000, 1_000, 990, 0], 1_000);
        m.released(&[2_000], 1_990); // released early: counts as no lag
        let s = m.snapshot();
        assert_eq!(s.lag_count, 5);
        assert_eq!(s.lag_sum_ms, 10 + 1_000);
        assert_eq!(s.lag_cumulative[0], 3); // 0, 0 and 0 ms
        assert_eq!(s.lag_cumulative[3], 4); // + 10 ms
        assert_eq!(s.lag_cumulative[9], 5); // + 1 s
        assert_eq!(*s.lag_cumulative.last().unwrap(), 5);
        assert_eq!(s.last_lag_ms, Some(0));
    }

    #[test]
    fn due_work_left_waiting_by_a_loop_that_does_not_wake_is_a_stall() {
        let h = |next_due: Option<Millis>, last_wake: Option<Millis>| Health {
            now: 100_000,
            loop_running: true,
            loop_started_at: Some(0),
            last_wake,
            next_due,
            last_fire_lag_ms: None,
            deliveries_in_flight: 0,
            delivery_slots: 512,
            delivery_slots_busy: 0,
            tenant_slots: 64,
            destination_slots: 32,
            max_delivery_timeout_ms: 300_000,
            server_queue: QueueHealth::default(),
            tenant_queue: QueueHealth::default(),
            destination_queue: QueueHealth::default(),
            stuck_after_ms: 60_000,
            local_queue: 0,
        };
        // Nothing due, or due in the future: fine however long the loop sleeps.
        assert!(!h(None, Some(0)).stalled());
        assert!(!h(Some(200_000), Some(0)).stalled());
        // Due 50 s ago, but the loop woke since (a backlog it is working through).
        assert_eq!(h(Some(50_000), Some(99_000)).overdue_ms(), 1_000);
        assert!(!h(Some(50_000), Some(99_000)).stalled());
        // Due 50 s ago and the loop has not woken since.
        assert_eq!(h(Some(50_000), Some(10_000)).overdue_ms(), 50_000);
        assert!(h(Some(50_000), Some(10_000)).stalled());
        assert!(!h(Some(80_000), Some(10_000)).stalled());
    }

    #[test]
    fn attempts_are_classified() {
        let a = |f: fn(&mut Attempt)| {
            let mut a = Attempt::default();
            f(&mut a);
            DeliveryResult::of(&a)
        };
        assert_eq!(a(|a| a.delivered = true), DeliveryResult::Delivered);
        assert_eq!(a(|a| a.http_status = Some(500)), DeliveryResult::Failed);
        assert_eq!(
            a(|a| {
                a.http_status = Some(410);
                a.gone = true
            }),
            DeliveryResult::Gone
        );
        assert_eq!(
            a(|a| {
                a.http_status = Some(200);
                a.timed_out = true
            }),
            DeliveryResult::Timeout
        );
        assert_eq!(a(|a| a.refused = true), DeliveryResult::Refused);
        assert_eq!(a(|_| {}), DeliveryResult::Error);
    }
}
