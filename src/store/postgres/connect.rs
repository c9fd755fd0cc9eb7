//! Why a connection to PostgreSQL could not be made, said for the person who can fix it.

use std::error::Error as _;
use std::io;
use std::time::Duration;

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;
use tokio_postgres::Config;

/// The reason a pool could not hand out a connection to `target` ([`super::url::target`]).
pub(super) fn explain_pool(
    e: &PoolError,
    config: &Config,
    target: &str,
    timeout: Duration,
) -> String {
    match e {
        PoolError::Timeout(_) => format!(
            "no answer from a PostgreSQL server at {target} within {timeout:?} (the connect \
             timeout): check the host and port, that the server runs there, and that nothing on \
             the way drops the connection"
        ),
        PoolError::Backend(e) => explain(e, config, target),
        PoolError::Closed => "the store's connection pool is closed".into(),
        other => format!("cannot connect to {target}: {other}"),
    }
}

/// The reason `e` gives, in words that say what to change: the URL's user, password, host, port
/// or database, or the server's settings. Never the password itself (the server's messages do
/// not carry it, and the URL is not quoted here).
pub(super) fn explain(e: &tokio_postgres::Error, config: &Config, target: &str) -> String {
    let user = config.get_user().unwrap_or("(your system user name)");
    if let Some(db) = e.as_db_error() {
        let message = db.message();
        let code = db.code();
        return if *code == SqlState::INVALID_PASSWORD {
            format!(
                "the server at {target} refused the password of user \"{user}\" ({message}): \
                 check the user name and password in the URL"
            )
        } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            format!(
                "the server at {target} does not let user \"{user}\" in ({message}): check the \
                 user name in the URL, and that the server's pg_hba.conf admits it from here"
            )
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            let name = config.get_dbname().unwrap_or(user);
            format!(
                "the server at {target} has no database \"{name}\": create it (CREATE DATABASE \
                 \"{name}\") or put the right name at the end of the URL"
            )
        } else if *code == SqlState::TOO_MANY_CONNECTIONS {
            format!(
                "the server at {target} has no connection to spare ({message}): raise its \
                 max_connections, or lower cueapi's pool size"
            )
        } else if *code == SqlState::CANNOT_CONNECT_NOW {
            format!("the server at {target} is starting or stopping ({message}); try again shortly")
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            format!(
                "user \"{user}\" may not do this on the server at {target} ({message}): cueapi \
                 creates its tables in the database it is given, so the user needs CREATE on \
                 its schema (GRANT CREATE ON SCHEMA public TO \"{user}\"), or its own database"
            )
        } else {
            format!(
                "the server at {target} answered: {message} (SQLSTATE {})",
                code.code()
            )
        };
    }
    let cause = e.source().map(|s| s.to_string()).unwrap_or_default();
    if cause == "password missing" {
        return format!(
            "the server at {target} asks user \"{user}\" for a password and the URL gives none: \
             write it as postgresql://user:password@host:port/database"
        );
    }
    if let Some(io) = e.source().and_then(|s| s.downcast_ref::<io::Error>()) {
        let hint = match io.kind() {
            io::ErrorKind::ConnectionRefused => {
                "nothing listens there: check the host and port in the URL, and that the server \
                 runs and accepts TCP connections on that address (listen_addresses)"
            }
            io::ErrorKind::TimedOut => {
                "check the host and port, and that no firewall drops the connection"
            }
            io::ErrorKind::NotFound => {
                "no server socket there: check the socket directory and port, and that the \
                 server runs"
            }
            _ => "check the host and port in the URL, and that the server runs there",
        };
        return format!("cannot reach a PostgreSQL server at {target} ({io}): {hint}");
    }
    if cause.is_empty() {
        format!("cannot use the server at {target}: {e}")
    } else {
        format!("cannot use the server at {target}: {e}: {cause}")
    }
}
