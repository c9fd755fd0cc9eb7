//! The PostgreSQL store (issue 12): for now its groundwork — reading a database URL, a pool of
//! connections, and numbered migrations that give the same tables as SQLite's. The engine does
//! not use it yet; the store boundary it will sit behind comes first (DESIGN.md §3).
//!
//! Choices, each with its reason:
//! - **Connections**: a [deadpool](deadpool_postgres) pool of tokio-postgres connections, at most
//!   [`PgSettings::pool_size`]; each connection's I/O runs as a task on the tokio runtime that
//!   opened the pool, so a [`Pg`] is used from that runtime. A connection is recycled after a
//!   check that it is not closed (deadpool's `Fast`): a round trip on every checkout would cost
//!   more than the errors it saves (the store's units of work will have to retry what a
//!   connection that died meanwhile fails anyway).
//! - **Timeouts**: making a connection (TCP, startup, authentication) is bounded by
//!   [`PgSettings::connect_timeout`], or by the URL's `connect_timeout` (seconds) when it has one;
//!   waiting for a free connection from a full pool is not bounded here.
//! - **TLS**: not yet. A URL that asks for it (`sslmode=require`) is refused at open with a
//!   reason that says so, rather than connecting without it; `sslmode=prefer` (libpq's default)
//!   and `disable` connect without TLS. (tokio-postgres-rustls over the rustls and ring already
//!   built would add it; it waits for the certificate settings that should come with it.)
//! - **Errors** at open are [`Error::Open`] naming the URL with its password hidden
//!   ([`redact_url`]) and saying what to fix: a URL that cannot be read, a server that cannot be
//!   reached or does not answer, a user or password refused, a database that does not exist.
//! - **Schema**: `migrations/000N_*.sql`, applied at open, safe when several nodes start at once
//!   (see schema.rs, and the first migration's header for how SQLite's types translate).

mod connect;
mod schema;
mod store;
mod tx;
mod url;

use std::fmt;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

pub use schema::PG_SCHEMA_VERSION;
pub use store::PgStore;
pub use tx::Tx;
pub use url::redact as redact_url;

use crate::error::{Error, Result};

/// Connections a store keeps open at most, unless told otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// How long making a connection may take, unless told otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the server waits for a node in the middle of a transaction before ending it.
pub const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(10);

/// How a [`Pg`] connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgSettings {
    /// Connections kept open at most (at least 1).
    pub pool_size: usize,
    /// How long making one connection may take: TCP connect, startup and authentication. A
    /// `connect_timeout` in the URL takes precedence.
    pub connect_timeout: Duration,
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings {
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// A PostgreSQL database holding cueapi's tables: a pool of connections to it.
pub struct Pg {
    pool: Pool,
    /// The URL with any password hidden: what messages name.
    shown: String,
    config: tokio_postgres::Config,
    connect_timeout: Duration,
}

impl fmt::Debug for Pg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pg").field("url", &self.shown).finish()
    }
}

impl Pg {
    /// Connects to the database at `url` (`postgresql://user:password@host:port/database`, or
    /// libpq's key/value form) and brings its schema to [`PG_SCHEMA_VERSION`]. Refused with
    /// [`Error::Open`] when the URL cannot be used or the server cannot be reached or refuses
    /// the connection, and with [`Error::SchemaTooNew`] when a newer cueapi wrote the database.
    /// Must run on a tokio runtime with its time driver, which the pool's connections then use.
    pub async fn open(url: &str, settings: PgSettings) -> Result<Pg> {
        let pg = Pg::connect(url, settings).await?;
        pg.migrate(PG_SCHEMA_VERSION).await?;
        Ok(pg)
    }

    /// [`Pg::open`] from synchronous code, on the multi-thread runtime `rt` (whose worker
    /// threads then run the connections). Refused, rather than blocking a worker, when called
    /// from inside a runtime.
    pub fn open_blocking(
        rt: &tokio::runtime::Handle,
        url: &str,
        settings: PgSettings,
    ) -> Result<Pg> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::Open {
                path: redact_url(url),
                reason: "Pg::open_blocking was called from inside a tokio runtime, where it \
                         would block a worker thread: await Pg::open there instead"
                    .into(),
            });
        }
        rt.block_on(Pg::open(url, settings))
    }

    /// Reads the URL, makes the pool and one connection (so that a wrong URL is refused here,
    /// not at the first query); no migration.
    async fn connect(url: &str, settings: PgSettings) -> Result<Pg> {
        let shown = redact_url(url);
        if settings.pool_size == 0 {
            return Err(Error::invalid("pool_size", "must be at least 1"));
        }
        let config = url::parse(url, &shown)?;
        Pg::connect_config(config, shown, settings).await
    }

    /// Another pool over the same database as `self`, made on the runtime this runs on (whose
    /// threads then drive its connections); no migration.
    pub async fn sibling(&self, settings: PgSettings) -> Result<Pg> {
        Pg::connect_config(self.config.clone(), self.shown.clone(), settings).await
    }

    /// [`Pg::connect`] from a parsed configuration.
    async fn connect_config(
        mut config: tokio_postgres::Config,
        shown: String,
        settings: PgSettings,
    ) -> Result<Pg> {
        let connect_timeout = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(settings.connect_timeout);
        config.connect_timeout(connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("cueapi");
        }
        if config.get_options().is_none() {
            // A node cut off from the database mid-transaction (its packets lost, not refused)
            // would hold that transaction's row locks until the server noticed; the server ends
            // such a transaction after this long instead, so the other nodes can go on.
            config.options(format!(
                "-c idle_in_transaction_session_timeout={}",
                IDLE_IN_TRANSACTION.as_millis()
            ));
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(connect_timeout))
            .build()
            .map_err(|e| Error::Open {
                path: shown.clone(),
                reason: format!("cannot make a connection pool: {e}"),
            })?;
        let pg = Pg {
            pool,
            shown,
            config,
            connect_timeout,
        };
        drop(pg.client().await?);
        Ok(pg)
    }

    /// A connection from the pool; [`Error::Open`] saying why when none can be made.
    pub async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| Error::Open {
            path: self.shown.clone(),
            reason: connect::explain_pool(
                &e,
                &self.config,
                &url::target(&self.config),
                self.connect_timeout,
            ),
        })
    }

    /// Applies the migrations above the database's schema version up to `target` (at most
    /// [`PG_SCHEMA_VERSION`]); a database already there is left as it is. Safe to run from
    /// several processes at once.
    pub async fn migrate(&self, target: i64) -> Result<()> {
        let mut client = self.client().await?;
        let target_name = url::target(&self.config);
        schema::migrate(&mut client, target, &self.shown, |e| {
            connect::explain(e, &self.config, &target_name)
        })
        .await
    }

    /// The database's schema version (0: cueapi never wrote to it).
    pub async fn schema_version(&self) -> Result<i64> {
        let client = self.client().await?;
        schema::version(&client).await.map_err(|e| Error::Open {
            path: self.shown.clone(),
            reason: format!(
                "reading the schema version failed: {}",
                connect::explain(&e, &self.config, &url::target(&self.config))
            ),
        })
    }

    /// The URL with any password hidden.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// How the pool's connections are made.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Closes the pool: connections in use close when they are returned, idle ones at once.
    pub fn close(&self) {
        self.pool.close();
    }
}

/// Whether PostgreSQL cannot take writes now (the connection is gone, the server is shutting
/// down, out of disk or resources, or a read-only standby) rather than refusing one statement.
pub fn is_unwritable(e: &tokio_postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else {
        // No answer from the server at all: a closed or broken connection.
        return true;
    };
    let code = db.code().code();
    // 08: connection exceptions; 53: insufficient resources (53100 disk full); 57P0x: the
    // server is shutting down or cannot connect; 25006: a read-only transaction (a standby).
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") || code == "25006"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pool_of_no_connections_is_refused_before_connecting() {
        let settings = PgSettings {
            pool_size: 0,
            ..PgSettings::default()
        };
        let e = Pg::open("postgresql://u:pw@127.0.0.1:1/x", settings)
            .await
            .expect_err("no connections");
        assert!(
            matches!(
                e,
                Error::Invalid {
                    field: "pool_size",
                    ..
                }
            ),
            "{e}"
        );
    }
}
