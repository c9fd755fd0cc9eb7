//! The one error type of the core. Each variant maps to one Python exception class
//! (see `python/cueapi/exceptions.py`) and, later, to one HTTP error code.

use thiserror::Error;

/// Everything that can go wrong inside the engine, with enough structure for a caller to act on it.
#[derive(Debug, Error)]
pub enum Error {
    /// A schedule (cron, one-shot time, interval or time zone) that cannot be used.
    #[error("invalid schedule: {0}")]
    InvalidSchedule(String),
    /// Any other argument that fails validation; `field` names the culprit.
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A cue looked up by id or name does not exist.
    #[error("cue not found: {0}")]
    CueNotFound(String),
    /// An execution looked up by id does not exist.
    #[error("execution not found: {0}")]
    ExecutionNotFound(String),
    /// The request conflicts with the stored state (e.g. an outcome that was already recorded).
    #[error("{0}")]
    Conflict(String),

    #[error("worker not found: {0}")]
    WorkerNotFound(String),

    #[error("alert not found: {0}")]
    AlertNotFound(String),

    /// A worker acting on a claim another worker holds.
    #[error("{0}")]
    NotClaimHolder(String),
    /// Another process holds this database file.
    #[error("database is open in another process: {0}")]
    Locked(String),
    /// The database could not be opened: unreadable, damaged, not a database, read-only.
    #[error("cannot open the database {path}: {reason}")]
    Open { path: String, reason: String },
    /// The database file was written by a newer version of cueapi.
    #[error(
        "the database {path} has schema version {found}, newer than this cueapi supports \
         ({supported}); open it with the newer cueapi that wrote it"
    )]
    SchemaTooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    /// The engine has been closed.
    #[error("the engine is closed")]
    Closed,
    /// SQLite failed.
    #[error("storage error: {0}")]
    Storage(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("storage error: {}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// File system failure (opening the database or its lock file).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A JSON document could not be encoded or decoded.
    #[error("json error: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// What PostgreSQL said, with its SQLSTATE code: tokio-postgres shows only "db error" for an
/// error the server reported.
fn postgres_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Result alias for the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
