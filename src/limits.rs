//! Every limit and default that more than one part of cueapi relies on, defined once: the store,
//! the HTTP API, the engine and the Python package (which reads them as `_cueapi.LIMITS`) all
//! take them from here.

/// Outcome metadata: bytes of its canonical JSON (the HTTP API and the embedded App alike).
pub const METADATA_BYTES: usize = 10_240;

/// Outcome text that is cut to this many characters (ending in `…`) rather than refused: an
/// outcome is evidence of work done, and losing it over the length of a message helps nobody.
pub const CUT_TEXT: [(&str, usize); 3] = [("result", 2_000), ("error", 2_000), ("summary", 500)];

/// Outcome evidence refused beyond this many characters.
pub const EVIDENCE_TEXT: [(&str, usize); 4] = [
    ("external_id", 500),
    ("result_url", URL_CHARS),
    ("result_ref", 500),
    ("result_type", 100),
];

/// A URL: callbacks, alert webhooks, result URLs.
pub const URL_CHARS: usize = 2_083;

/// The part of a delivery's answer the server reads (enough for an inline outcome with its
/// evidence); a longer answer is cut short and no longer parses as an outcome.
pub const INLINE_OUTCOME_BYTES: usize = 64 * 1024;

/// Requests a minute per API key (or client address without a valid key) by default, and the
/// highest limit accepted.
pub const RATE_LIMIT_PER_MINUTE: u32 = 1_200;
pub const MAX_RATE_LIMIT_PER_MINUTE: u32 = 1_000_000;

/// A pull worker's claim lasts this long unless extended by an execution heartbeat.
pub const WORKER_LEASE_MS: i64 = 300_000;
/// A worker not heard from for this long counts as gone (its expired claims are released).
pub const WORKER_TIMEOUT_MS: i64 = 180_000;
/// Several nodes on one PostgreSQL database: how long a node's lease on its partitions lasts
/// unless renewed (it renews three times a lease). A node silent this long (dead, or cut off
/// from the database) has its cues, attempts and claims taken over by the others.
pub const NODE_LEASE_MS: i64 = 3_000;
/// The shortest and longest node lease accepted.
pub const MIN_NODE_LEASE_MS: i64 = 300;
pub const MAX_NODE_LEASE_MS: i64 = 600_000;
/// The longest a worker's own heartbeats keep a claim whose lease has run out (execution
/// heartbeats, which extend the lease, keep it as long as they come). Past it the claim is
/// released as abandoned: a worker restarted under the same id, or one that lost a claim's answer
/// or dropped its report, would otherwise hold it for ever. The official worker's handlers stop at
/// 300 s by default.
pub const MAX_CLAIM_HOLD_MS: i64 = 3_600_000;
/// The same alert for the same cue or worker within this long counts as one.
pub const REALERT_MS: i64 = 3_600_000;

/// Webhook deliveries in flight on the whole server.
pub const MAX_DELIVERIES: usize = 512;
/// ... of one tenant: eight tenants with dead endpoints before the server's slots are all taken.
pub const MAX_DELIVERIES_PER_TENANT: usize = 64;
/// ... to one destination (a tenant's `scheme://host:port`).
pub const MAX_DELIVERIES_PER_DESTINATION: usize = 32;
/// The longest a delivery may take, whatever its cue asks for (a cue may ask for an hour).
pub const MAX_DELIVERY_TIMEOUT_MS: i64 = 300_000;
/// The highest slot count an operator may set.
pub const MAX_DELIVERY_SLOTS: usize = 65_536;
/// The highest maximum delivery timeout an operator may set (what a cue may ask for).
pub const DELIVERY_TIMEOUT_CEILING_MS: i64 = 3_600_000;

/// `cueapi serve`'s connections before authentication: how long a connection has to send a
/// request's headers (also the idle keep-alive timeout), how long its body may take, and how many
/// connections are served at once.
pub const HEADER_TIMEOUT_MS: i64 = 10_000;
pub const BODY_TIMEOUT_MS: i64 = 30_000;
pub const MAX_CONNECTIONS: usize = 1_024;

/// Every single-number limit above by name, for the Python package (which gets the text
/// limits as `cut_text` and `evidence_text`).
pub fn numbers() -> Vec<(&'static str, i64)> {
    vec![
        ("metadata_bytes", METADATA_BYTES as i64),
        ("url_chars", URL_CHARS as i64),
        ("inline_outcome_bytes", INLINE_OUTCOME_BYTES as i64),
        ("rate_limit_per_minute", i64::from(RATE_LIMIT_PER_MINUTE)),
        (
            "max_rate_limit_per_minute",
            i64::from(MAX_RATE_LIMIT_PER_MINUTE),
        ),
        ("worker_lease_ms", WORKER_LEASE_MS),
        ("worker_timeout_ms", WORKER_TIMEOUT_MS),
        ("node_lease_ms", NODE_LEASE_MS),
        ("min_node_lease_ms", MIN_NODE_LEASE_MS),
        ("max_node_lease_ms", MAX_NODE_LEASE_MS),
        ("realert_ms", REALERT_MS),
        ("max_claim_hold_ms", MAX_CLAIM_HOLD_MS),
        ("max_deliveries", MAX_DELIVERIES as i64),
        (
            "max_deliveries_per_tenant",
            MAX_DELIVERIES_PER_TENANT as i64,
        ),
        (
            "max_deliveries_per_destination",
            MAX_DELIVERIES_PER_DESTINATION as i64,
        ),
        ("max_delivery_timeout_ms", MAX_DELIVERY_TIMEOUT_MS),
        ("max_delivery_slots", MAX_DELIVERY_SLOTS as i64),
        ("delivery_timeout_ceiling_ms", DELIVERY_TIMEOUT_CEILING_MS),
        ("header_timeout_ms", HEADER_TIMEOUT_MS),
        ("body_timeout_ms", BODY_TIMEOUT_MS),
        ("max_connections", MAX_CONNECTIONS as i64),
    ]
}
