//! Shared vocabulary: ids, statuses, policies.

use rand::Rng;

use crate::clock::Millis;

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A prefixed, time-sortable id: `prefix_` + 10 base-32 digits of milliseconds + 16 random digits.
pub fn new_id(prefix: &str, now: Millis) -> String {
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    let t = now.max(0) as u64;
    for i in (0..10).rev() {
        out.push(CROCKFORD[((t >> (i * 5)) & 31) as usize] as char);
    }
    let mut rng = rand::rng();
    for _ in 0..16 {
        out.push(CROCKFORD[rng.random_range(0..32)] as char);
    }
    out
}

/// Execution statuses (delivery state; the outcome state is separate).
pub mod status {
    /// Created, waiting for a claim (or a webhook send).
    pub const PENDING: &str = "pending";
    /// Claimed: a handler is running it.
    pub const DELIVERING: &str = "delivering";
    /// Failed, a retry is scheduled at `next_retry`.
    pub const RETRYING: &str = "retrying";
    /// Done and successful.
    pub const SUCCESS: &str = "success";
    /// Done and failed (retries exhausted).
    pub const FAILED: &str = "failed";
    /// A tick that did not run because the process was down or the cue paused.
    pub const MISSED: &str = "missed";
    /// A tick that did not run because the previous run of the cue was still going.
    pub const SKIPPED: &str = "skipped";
    /// Every status, for validating filters.
    pub const ALL: &[&str] = &[
        PENDING, DELIVERING, RETRYING, SUCCESS, FAILED, MISSED, SKIPPED,
    ];
}

/// Outcome states (reference §3.4 plus `outcome_timeout`).
pub const OUTCOME_STATES: &[&str] = &[
    "reported_success",
    "reported_failure",
    "verified_success",
    "verification_failed",
    "verification_pending",
    "outcome_timeout",
];

/// Verification modes (reference §6.2).
pub const VERIFICATION_MODES: &[&str] = &[
    "none",
    "require_external_id",
    "require_result_url",
    "require_artifacts",
    "manual",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time() {
        let a = new_id("exec", 1_700_000_000_000);
        let b = new_id("exec", 1_700_000_000_001);
        assert!(a < b);
        assert_eq!(a.len(), "exec_".len() + 26);
    }
}
