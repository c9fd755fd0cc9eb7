//! # cueapi
//!
//! Accountable scheduled work. A tour of the modules, in the order a tick travels:
//!
//! - [`schedule`] — cron (croniter semantics) with IANA zones, one-shot instants and intervals; the
//!   DST policy; the only user of the cron library.
//! - [`clock`] — the time source: the system clock, or a manual one for tests.
//! - [`store`] — SQLite, the single source of truth: migrations, one writer thread committing in
//!   batches, read connections, and every query (firing, claims, outcomes, history).
//! - [`engine`] — the timer (a min-heap woken by one tokio task, never a polling loop), the queue
//!   handlers pull from, retries, outcome deadlines, recovery on open.
//! - [`delivery`] — the webhook sender: signed requests, the SSRF guard (a resolver that only
//!   returns checked addresses), response classification, inline outcomes.
//! - `api` — the HTTP API of `cueapi serve` (feature `server`, axum); one file per resource.
//! - `python` — the PyO3 module `cueapi._cueapi` (feature `python`); nothing else knows PyO3.
//!
//! [`error`] holds the one error type; [`model`] the shared vocabulary (ids, statuses); [`public`]
//! the JSON form of cues and executions both faces answer with.

pub mod alerts;
#[cfg(feature = "server")]
pub mod api;
pub mod clock;
pub mod delivery;
pub mod engine;
pub mod error;
pub mod limits;
pub mod model;
pub mod public;
pub mod schedule;
pub mod signing;
pub mod store;

#[cfg(feature = "python")]
mod python;

pub use clock::{Clock, Millis};
pub use engine::{Config, Engine};
pub use error::{Error, Result};
