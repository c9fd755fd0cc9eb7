//! Fair delivery. A webhook delivery holds three slots while it is in flight: one of its
//! tenant's, one of its destination's (the tenant's `host:port`), and one of the server's, taken
//! in that order. A tenant whose endpoint hangs fills its own slots and then waits in its own
//! queue; it never holds more than its share of the server's, so another tenant's deliveries find
//! a free slot. Destinations are counted per tenant: two tenants posting to the same host do not
//! share a queue, so neither can slow the other down by pointing cues at a dead path.
//!
//! The server's slots are the only queue tenants share. Deliveries waiting for one are timed,
//! and [`Lanes::oldest_wait`] is what `/health` reads to say the queue cannot drain.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use crate::limits;

/// A lane map is swept of idle lanes when it grows past this (and then past twice its size).
const SWEEP_AT: usize = 1024;

/// The caps, as the engine's configuration gives them (each at least 1).
#[derive(Clone, Copy, Debug)]
pub(super) struct Caps {
    pub server: usize,
    pub tenant: usize,
    pub destination: usize,
}

/// One permit at each level (the tenant's, the destination's, the server's); released when
/// dropped.
pub(super) struct Permits {
    _tenant: OwnedSemaphorePermit,
    _destination: OwnedSemaphorePermit,
    _server: OwnedSemaphorePermit,
}

/// The slots of one in-flight delivery.
pub(super) type Slot = Permits;

/// Leave for a delivery claimed before its slots are free to wait for them (see
/// [`Lanes::try_queue`]).
pub(super) type Ticket = Permits;

/// Semaphores by key, created on first use and swept when idle.
struct LaneMap {
    cap: usize,
    lanes: Mutex<(HashMap<String, Arc<Semaphore>>, usize)>,
}

impl LaneMap {
    fn new(cap: usize) -> Self {
        LaneMap {
            cap,
            lanes: Mutex::new((HashMap::new(), SWEEP_AT)),
        }
    }

    fn get(&self, key: &str) -> Arc<Semaphore> {
        let mut guard = self.lanes.lock();
        let (lanes, sweep_at) = &mut *guard;
        if let Some(s) = lanes.get(key) {
            return Arc::clone(s);
        }
        if lanes.len() >= *sweep_at {
            // A lane nobody holds or waits on has only the map's reference (permits and
            // pending acquisitions hold an `Arc` each).
            lanes.retain(|_, s| Arc::strong_count(s) > 1);
            *sweep_at = (lanes.len() * 2).max(SWEEP_AT);
        }
        let s = Arc::new(Semaphore::new(self.cap));
        lanes.insert(key.to_string(), Arc::clone(&s));
        s
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lanes.lock().0.len()
    }
}

/// Counted permits at each level: as many per tenant, per destination and for the server as
/// the caps say.
struct Levels {
    server: Arc<Semaphore>,
    tenants: LaneMap,
    destinations: LaneMap,
}

impl Levels {
    fn new(caps: Caps) -> Self {
        Levels {
            server: Arc::new(Semaphore::new(caps.server)),
            tenants: LaneMap::new(caps.tenant),
            destinations: LaneMap::new(caps.destination),
        }
    }

    /// A permit at every level if all three are free now (none taken otherwise).
    fn try_take(&self, tenant: &str, destination: &str) -> Option<Permits> {
        let t = self.tenants.get(tenant).try_acquire_owned().ok()?;
        let d = self
            .destinations
            .get(&destination_key(tenant, destination))
            .try_acquire_owned()
            .ok()?;
        let s = Arc::clone(&self.server).try_acquire_owned().ok()?;
        Some(Permits {
            _tenant: t,
            _destination: d,
            _server: s,
        })
    }
}

/// Where deliveries queue.
pub(super) struct Lanes {
    caps: Caps,
    /// The slots of deliveries in flight.
    slots: Levels,
    /// Leave to wait for slots already claimed (as many at each level as there are slots).
    queue: Levels,
    /// Deliveries waiting for a slot, at each level.
    waiting: Waiting,
    arrivals: AtomicU64,
}

/// Deliveries waiting for a slot, by arrival: when each began to wait.
#[derive(Default)]
struct Queue(Mutex<BTreeMap<u64, Instant>>);

impl Queue {
    fn stats(&self) -> QueueStats {
        let q = self.0.lock();
        QueueStats {
            waiting: q.len(),
            oldest: q.first_key_value().map(|(_, at)| at.elapsed()),
        }
    }
}

#[derive(Default)]
struct Waiting {
    tenant: Queue,
    destination: Queue,
    server: Queue,
}

/// How many deliveries wait at one level, and how long the first of them has waited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct QueueStats {
    pub waiting: usize,
    pub oldest: Option<Duration>,
}

/// The waits at each level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Waits {
    /// Behind their tenant's limit (their own queue).
    pub tenant: QueueStats,
    /// Behind their destination's limit (their own queue).
    pub destination: QueueStats,
    /// Behind the server's limit (the queue every tenant shares).
    pub server: QueueStats,
}

/// Takes a waiting delivery off its queue however its wait ends (a slot, or its task dropped).
struct Listed<'a>(&'a Queue, u64);

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.0 .0.lock().remove(&self.1);
    }
}

impl Lanes {
    pub(super) fn new(caps: Caps) -> Self {
        let caps = Caps {
            server: caps.server.max(1),
            tenant: caps.tenant.max(1),
            destination: caps.destination.max(1),
        };
        Lanes {
            caps,
            slots: Levels::new(caps),
            queue: Levels::new(caps),
            waiting: Waiting::default(),
            arrivals: AtomicU64::new(0),
        }
    }

    /// The slots for a delivery of `tenant` to `destination` if all three are free now.
    pub(super) fn try_take(&self, tenant: &str, destination: &str) -> Option<Slot> {
        self.slots.try_take(tenant, destination)
    }

    /// Leave to claim a delivery of `tenant` to `destination` whose slots are taken, and to
    /// wait for them claimed ([`Lanes::take`] with the ticket held), if fewer deliveries wait so
    /// at each level than it has slots. Its request then goes out as soon as a slot frees, with
    /// no write in between; the others wait unclaimed, and are claimed when their turn comes.
    /// The bound keeps what a crash can leave claimed but unsent (recovered as interrupted
    /// attempts) to one more round of deliveries, whatever the backlog.
    pub(super) fn try_queue(&self, tenant: &str, destination: &str) -> Option<Ticket> {
        self.queue.try_take(tenant, destination)
    }

    /// Waits for the slots of a delivery of `tenant` to `destination`: first in the tenant's
    /// queue, then in the destination's, then in the server's. (`None` only should a semaphore
    /// be closed, which none is.)
    pub(super) async fn take(&self, tenant: &str, destination: &str) -> Option<Slot> {
        let tenant_lane = self.slots.tenants.get(tenant);
        let destination_lane = self
            .slots
            .destinations
            .get(&destination_key(tenant, destination));
        let t = self.wait(&self.waiting.tenant, tenant_lane).await?;
        let d = self
            .wait(&self.waiting.destination, destination_lane)
            .await?;
        let s = self
            .wait(&self.waiting.server, Arc::clone(&self.slots.server))
            .await?;
        Some(Slot {
            _tenant: t,
            _destination: d,
            _server: s,
        })
    }

    /// A permit of `lane`, at once or after waiting on `queue`.
    async fn wait(&self, queue: &Queue, lane: Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = Arc::clone(&lane).try_acquire_owned() {
            return Some(p);
        }
        let _listed = self.listed(queue);
        lane.acquire_owned().await.ok()
    }

    /// Puts a delivery on `queue`.
    fn listed<'a>(&self, queue: &'a Queue) -> Listed<'a> {
        let mut q = queue.0.lock();
        let n = self.arrivals.fetch_add(1, Ordering::Relaxed);
        q.insert(n, Instant::now());
        Listed(queue, n)
    }

    /// The server's slots: (in use, how many).
    pub(super) fn server_slots(&self) -> (usize, usize) {
        let free = self.slots.server.available_permits();
        (self.caps.server - free, self.caps.server)
    }

    /// Server slots free now (what a timer round may claim in its own transaction).
    pub(super) fn server_free(&self) -> usize {
        self.slots.server.available_permits()
    }

    /// The deliveries waiting at each level.
    pub(super) fn waits(&self) -> Waits {
        Waits {
            tenant: self.waiting.tenant.stats(),
            destination: self.waiting.destination.stats(),
            server: self.waiting.server.stats(),
        }
    }

    /// Tenants and destinations with a lane (idle ones until the next sweep).
    #[cfg(test)]
    fn lane_counts(&self) -> (usize, usize) {
        (self.slots.tenants.len(), self.slots.destinations.len())
    }
}

fn destination_key(tenant: &str, destination: &str) -> String {
    let mut k = String::with_capacity(tenant.len() + destination.len() + 1);
    k.push_str(tenant);
    k.push('\u{1f}');
    k.push_str(destination);
    k
}

/// The destination of a callback URL: its scheme, host and port, lowercased (`"-"` for a URL
/// that does not parse: it fails at delivery anyway).
pub(super) fn destination(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or("").to_ascii_lowercase(),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => "-".into(),
    }
}

/// Limits on webhook deliveries in flight: the server's, each tenant's and each
/// destination's (a tenant's `host:port`), and the longest a delivery may take whatever its cue
/// asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryLimits {
    pub max_in_flight: usize,
    pub per_tenant: usize,
    pub per_destination: usize,
    pub max_timeout_ms: i64,
}

impl DeliveryLimits {
    /// Checks the limits: each count between 1 and [`limits::MAX_DELIVERY_SLOTS`], a tenant's
    /// and a destination's no larger than the server's, the timeout between 1 s and an hour.
    pub fn validate(&self) -> Result<()> {
        let count = |name: &'static str, n: usize| {
            if (1..=limits::MAX_DELIVERY_SLOTS).contains(&n) {
                Ok(())
            } else {
                Err(Error::invalid(
                    name,
                    format!("must be between 1 and {}", limits::MAX_DELIVERY_SLOTS),
                ))
            }
        };
        count("max_deliveries", self.max_in_flight)?;
        count("max_deliveries_per_tenant", self.per_tenant)?;
        count("max_deliveries_per_destination", self.per_destination)?;
        if self.per_tenant > self.max_in_flight || self.per_destination > self.max_in_flight {
            return Err(Error::invalid(
                "max_deliveries_per_tenant",
                "a tenant's and a destination's limits cannot exceed the server's max_deliveries",
            ));
        }
        if !(1_000..=limits::DELIVERY_TIMEOUT_CEILING_MS).contains(&self.max_timeout_ms) {
            return Err(Error::invalid(
                "max_delivery_timeout",
                format!(
                    "must be between 1 and {} seconds",
                    limits::DELIVERY_TIMEOUT_CEILING_MS / 1000
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn caps(&self) -> Caps {
        Caps {
            server: self.max_in_flight,
            tenant: self.per_tenant,
            destination: self.per_destination,
        }
    }

    /// How long a delivery waits for a server slot before `/health` calls the queue stuck: a
    /// minute, or the longest a delivery may take if that is shorter (a slot frees within it,
    /// so a wait longer than it means the queue fills faster than it drains).
    pub fn stuck_after_ms(&self) -> i64 {
        self.max_timeout_ms.min(60_000)
    }
}

impl Default for DeliveryLimits {
    fn default() -> Self {
        DeliveryLimits {
            max_in_flight: limits::MAX_DELIVERIES,
            per_tenant: limits::MAX_DELIVERIES_PER_TENANT,
            per_destination: limits::MAX_DELIVERIES_PER_DESTINATION,
            max_timeout_ms: limits::MAX_DELIVERY_TIMEOUT_MS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lanes(server: usize, tenant: usize, destination: usize) -> Lanes {
        Lanes::new(Caps {
            server,
            tenant,
            destination,
        })
    }

    #[test]
    fn a_tenant_at_its_cap_leaves_server_slots_to_others() {
        let l = lanes(4, 2, 2);
        let held: Vec<Slot> = (0..2).filter_map(|_| l.try_take("a", "x")).collect();
        assert_eq!(held.len(), 2);
        assert!(l.try_take("a", "y").is_none(), "tenant a is at its cap");
        assert!(l.try_take("b", "x").is_some(), "tenant b has its own lane");
        assert_eq!(l.server_slots(), (2, 4));
    }

    #[test]
    fn as_many_may_wait_claimed_as_there_are_slots_at_each_level() {
        let l = lanes(3, 2, 1);
        let _slot = l.try_take("a", "x").expect("a slot");
        assert!(l.try_take("a", "x").is_none(), "x's one slot is taken");
        let ticket = l.try_queue("a", "x").expect("one may wait for x claimed");
        assert!(l.try_queue("a", "x").is_none(), "x has one slot: one waits");
        let _other = l.try_queue("a", "y").expect("y is another destination");
        assert!(l.try_queue("a", "z").is_none(), "a has two slots: two wait");
        let _b = l.try_queue("b", "x").expect("b has its own lanes");
        assert!(l.try_queue("c", "x").is_none(), "the server has three");
        assert_eq!(l.server_slots(), (1, 3), "tickets hold no slot");
        drop(ticket);
        assert!(l.try_queue("a", "x").is_some(), "a ticket is given back");
    }

    #[test]
    fn destinations_are_counted_per_tenant() {
        let l = lanes(8, 8, 1);
        let _a = l.try_take("a", "https://h:443").expect("first");
        assert!(l.try_take("a", "https://h:443").is_none());
        assert!(l.try_take("a", "https://other:443").is_some());
        assert!(l.try_take("b", "https://h:443").is_some());
    }

    #[test]
    fn a_refused_take_releases_what_it_took() {
        let l = lanes(1, 4, 4);
        let _held = l.try_take("a", "x").expect("server slot");
        assert!(l.try_take("b", "y").is_none());
        drop(_held);
        assert!(
            l.try_take("b", "y").is_some(),
            "b's tenant slot was given back"
        );
    }

    #[test]
    fn idle_lanes_are_swept() {
        let l = lanes(1, 1, 1);
        for i in 0..(SWEEP_AT * 3) {
            drop(l.try_take(&format!("t{i}"), "x"));
        }
        let (tenants, destinations) = l.lane_counts();
        assert!(tenants <= SWEEP_AT, "{tenants} tenant lanes kept");
        assert!(
            destinations <= SWEEP_AT,
            "{destinations} destination lanes kept"
        );
    }

    #[test]
    fn waits_for_a_server_slot_are_timed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let l = Arc::new(lanes(1, 1, 4));
            let held = l.try_take("a", "x").expect("slot");
            let waiter = {
                let l = Arc::clone(&l);
                tokio::spawn(async move { l.take("b", "y").await })
            };
            while l.waits().server.waiting == 0 {
                tokio::task::yield_now().await;
            }
            assert!(l.waits().server.oldest.is_some());
            assert_eq!(l.waits().tenant, QueueStats::default());
            let second = {
                let l = Arc::clone(&l);
                tokio::spawn(async move { l.take("b", "y").await })
            };
            while l.waits().tenant.waiting == 0 {
                tokio::task::yield_now().await;
            }
            drop(held);
            let slot = waiter.await.expect("waiter");
            assert!(slot.is_some());
            assert_eq!(l.waits().server, QueueStats::default());
            drop(slot);
            assert!(second.await.expect("second").is_some());
            assert_eq!(l.waits(), Waits::default());
        });
    }

    #[test]
    fn destination_reads_scheme_host_and_port() {
        assert_eq!(
            destination("https://Example.COM/a?b"),
            "https://example.com:443"
        );
        assert_eq!(
            destination("http://127.0.0.1:8080/x"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(destination("not a url"), "-");
    }
}
