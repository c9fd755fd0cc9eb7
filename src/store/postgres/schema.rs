//! Numbered migrations, recorded in the table `cueapi_schema` (one row per applied migration; the
//! highest is the database's version). Migration N is `migrations/000N_*.sql`.
//!
//! Several nodes may start at once on a fresh database: each migration runs in a transaction of
//! its own that first takes a transaction-scoped advisory lock on [`MIGRATION_LOCK`], then reads
//! the version, so the nodes apply each migration once, one after the other, and the others find
//! it done. A database written by a newer cueapi is refused with [`Error::SchemaTooNew`].

use deadpool_postgres::Object;
use tokio_postgres::IsolationLevel;

use crate::error::{Error, Result};

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_schema.sql"),
    include_str!("migrations/0002_outcome_counter.sql"),
    include_str!("migrations/0003_cluster.sql"),
    include_str!("migrations/0004_chain_parent_index.sql"),
];

/// The schema version this build writes on PostgreSQL.
pub const PG_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock key the migrations are serialised on: "cueapi" in ASCII, then 1. Advisory
/// locks are per database, so databases on one server do not wait on each other.
const MIGRATION_LOCK: i64 = 0x6375_6561_7069_0001;

const CREATE_VERSION_TABLE: &str = "CREATE TABLE cueapi_schema (
    version    BIGINT PRIMARY KEY,
    -- Unix milliseconds, UTC.
    applied_at BIGINT NOT NULL,
    -- The cueapi release that applied it.
    cueapi     TEXT NOT NULL
)";

/// The reason a statement failed, in the form [`Error::Open`] carries.
type Why = String;

/// The database's schema version: 0 when cueapi never wrote to it.
pub(super) async fn version(client: &Object) -> std::result::Result<i64, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('cueapi_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    client
        .query_one("SELECT COALESCE(max(version), 0) FROM cueapi_schema", &[])
        .await
        .map(|r| r.get(0))
}

/// Applies every migration above the database's version up to `target` (at most
/// [`PG_SCHEMA_VERSION`]), each in its own transaction. `explain` turns a failed statement into
/// a reason; errors name the database as `shown`.
pub(super) async fn migrate(
    client: &mut Object,
    target: i64,
    shown: &str,
    explain: impl Fn(&tokio_postgres::Error) -> Why,
) -> Result<()> {
    let target = target.min(PG_SCHEMA_VERSION);
    loop {
        let step = apply_next(client, target)
            .await
            .map_err(|(version, e)| Error::Open {
                path: shown.to_string(),
                reason: match version {
                    Some(v) => format!("applying schema migration {v} failed: {}", explain(&e)),
                    None => format!("reading the schema version failed: {}", explain(&e)),
                },
            })?;
        match step {
            Step::Applied => continue,
            Step::Done => return Ok(()),
            Step::TooNew(found) => {
                return Err(Error::SchemaTooNew {
                    path: shown.to_string(),
                    found,
                    supported: PG_SCHEMA_VERSION,
                })
            }
            Step::Unknown(found) => {
                return Err(Error::Open {
                    path: shown.to_string(),
                    reason: format!(
                        "its table cueapi_schema says schema version {found}, which no cueapi \
                         writes: the table was changed by hand"
                    ),
                })
            }
        }
    }
}

enum Step {
    /// One migration applied; there may be more.
    Applied,
    /// The database is at `target` or above it (and not newer than this build).
    Done,
    /// The database was written by a newer cueapi: its version.
    TooNew(i64),
    /// A version below zero.
    Unknown(i64),
}

/// One transaction: lock, read the version, apply the next migration if one is due. An error
/// comes with the migration it was applying (None: before it knew which).
async fn apply_next(
    client: &mut Object,
    target: i64,
) -> std::result::Result<Step, (Option<i64>, tokio_postgres::Error)> {
    let before = |e| (None, e);
    // READ COMMITTED whatever the server's default: each statement after the lock must see what
    // the previous holder of the lock committed.
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(before)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(before)?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('cueapi_schema') IS NOT NULL", &[])
        .await
        .map_err(before)?
        .get(0);
    let found: i64 = if exists {
        tx.query_one("SELECT COALESCE(max(version), 0) FROM cueapi_schema", &[])
            .await
            .map_err(before)?
            .get(0)
    } else {
        0
    };
    let Ok(index) = usize::try_from(found) else {
        return Ok(Step::Unknown(found));
    };
    if found > PG_SCHEMA_VERSION || found >= target {
        // Nothing written; the rollback releases the lock.
        tx.rollback().await.map_err(before)?;
        return Ok(if found > PG_SCHEMA_VERSION {
            Step::TooNew(found)
        } else {
            Step::Done
        });
    }
    let next = found + 1;
    let during = |e| (Some(next), e);
    if !exists {
        tx.batch_execute(CREATE_VERSION_TABLE)
            .await
            .map_err(during)?;
    }
    tx.batch_execute(MIGRATIONS[index]).await.map_err(during)?;
    tx.execute(
        "INSERT INTO cueapi_schema (version, applied_at, cueapi)
         VALUES ($1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint, $2)",
        &[&next, &env!("CARGO_PKG_VERSION")],
    )
    .await
    .map_err(during)?;
    tx.commit().await.map_err(during)?;
    Ok(Step::Applied)
}
