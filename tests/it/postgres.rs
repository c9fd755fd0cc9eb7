//! The PostgreSQL store's groundwork against a real server: opening, refusing, migrating.
//!
//! The server: the one CUEAPI_TEST_POSTGRES names (a URL to a database on a server where these
//! tests may create databases and roles; `make check` starts one with `tools/pg run`), or, when it
//! is unset, a throw-away server this test binary starts with `tools/pg start` at the first test
//! that needs one and stops at its exit. Each test works in a database of its own, so they run in
//! parallel.
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cueapi::store::postgres::{Pg, PgSettings, PG_SCHEMA_VERSION};
use cueapi::Error;
use tokio_postgres::config::Host;
use tokio_postgres::NoTls;

// ---------------------------------------------------------------------------------------------
// The server and a database per test

static SERVER: OnceLock<String> = OnceLock::new();
/// The directory of the server this binary started, if it started one.
static OWN_SERVER: OnceLock<PathBuf> = OnceLock::new();
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn tools_pg() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/pg")
}

/// The URL of the test server's `cueapi` database (as a superuser, or a user that may create
/// databases and roles).
fn server() -> &'static str {
    SERVER.get_or_init(|| match std::env::var("CUEAPI_TEST_POSTGRES") {
        Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
        _ => start_own_server(),
    })
}

fn start_own_server() -> String {
    let dir = tempfile::Builder::new()
        .prefix("cueapi-pg-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let out = Command::new("bash")
        .arg(tools_pg())
        .arg("start")
        .arg(&dir)
        .stderr(Stdio::inherit())
        .output()
        .expect("run tools/pg");
    assert!(
        out.status.success(),
        "`tools/pg start {}` failed (its messages are above); set CUEAPI_TEST_POSTGRES to use \
         another server",
        dir.display()
    );
    OWN_SERVER.set(dir).expect("one server per test binary");
    // SAFETY: a function without arguments or unwinding, as atexit requires; it runs once the
    // tests have finished, passed or failed.
    unsafe { libc::atexit(stop_own_server) };
    String::from_utf8(out.stdout)
        .expect("a URL")
        .trim()
        .to_string()
}

extern "C" fn stop_own_server() {
    if let Some(dir) = OWN_SERVER.get() {
        let _ = Command::new("bash")
            .arg(tools_pg())
            .arg("stop")
            .arg(dir)
            .stdout(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `url` with its database replaced by `name` (a `postgresql://` URL).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_at = base.find("://").expect("a postgresql:// URL") + 3;
    let authority_end = base[authority_at..]
        .find('/')
        .map_or(base.len(), |i| authority_at + i);
    format!("{}/{name}{query}", &base[..authority_end])
}

/// The test server's TCP address, for URLs with other users and passwords.
fn server_address() -> (String, u16) {
    let config: tokio_postgres::Config = server().parse().expect("CUEAPI_TEST_POSTGRES");
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        _ => panic!("these tests need CUEAPI_TEST_POSTGRES to reach the server over TCP"),
    };
    (host, config.get_ports().first().copied().unwrap_or(5432))
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(server(), NoTls)
        .await
        .expect("connect to the test server");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A fresh database of a test's own, dropped by [`TestDb::drop`].
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    async fn new() -> TestDb {
        TestDb::owned_by(None).await
    }

    async fn owned_by(owner: Option<&str>) -> TestDb {
        let name = unique("cueapi_test");
        let owner = owner.map(|o| format!(" OWNER {o}")).unwrap_or_default();
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}{owner}"))
            .await
            .expect("create a test database");
        TestDb {
            url: with_database(server(), &name),
            name,
        }
    }

    async fn drop(self) {
        admin()
            .await
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .await
            .expect("drop the test database");
    }
}

async fn open(url: &str) -> Pg {
    Pg::open(url, PgSettings::default())
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

// ---------------------------------------------------------------------------------------------
// The schema, as both backends describe it

/// A column as both schemas can state it: SQLite's declared type (a PostgreSQL BIGINT or BOOLEAN
/// is an INTEGER there), whether it may be NULL, and its default as text.
#[derive(Debug, PartialEq, Eq)]
struct Column {
    name: String,
    kind: String,
    not_null: bool,
    default: Option<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Table {
    columns: Vec<Column>,
    primary_key: Vec<String>,
    unique: BTreeSet<Vec<String>>,
    /// (columns, referenced table, referenced columns, on delete: c = cascade, a = no action).
    foreign_keys: BTreeSet<(Vec<String>, String, Vec<String>, String)>,
    /// Indexes made by CREATE INDEX: (name, unique, partial).
    indexes: BTreeSet<(String, bool, bool)>,
}

fn unquoted(default: &str) -> String {
    let d = default.trim();
    let d = d
        .strip_suffix("::text")
        .or_else(|| d.strip_suffix("::bigint"))
        .unwrap_or(d);
    match d {
        "false" => "0".into(),
        "true" => "1".into(),
        d if d.len() >= 2 && d.starts_with('\'') && d.ends_with('\'') => {
            d[1..d.len() - 1].replace("''", "'")
        }
        d => d.into(),
    }
}

/// The schema `cueapi::store::Store::open` gives a new SQLite file.
fn sqlite_schema() -> BTreeMap<String, Table> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("schema.db");
    drop(cueapi::store::Store::open(&path).expect("open a SQLite store"));
    let c = rusqlite::Connection::open(&path).expect("read it");
    let names: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let strings = |sql: &str, arg: &str| -> Vec<String> {
        c.prepare(sql)
            .unwrap()
            .query_map([arg], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let mut tables = BTreeMap::new();
    for name in names {
        let mut t = Table::default();
        let mut stmt = c
            .prepare(
                "SELECT name, type, \"notnull\" OR pk > 0, dflt_value FROM pragma_table_info(?1)
                 ORDER BY cid",
            )
            .unwrap();
        t.columns = stmt
            .query_map([&name], |r| {
                Ok(Column {
                    name: r.get(0)?,
                    kind: r.get(1)?,
                    not_null: r.get(2)?,
                    default: r.get::<_, Option<String>>(3)?.map(|d| unquoted(&d)),
                })
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        t.primary_key = strings(
            "SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk",
            &name,
        );
        for index in strings(
            "SELECT name FROM pragma_index_list(?1) WHERE origin = 'u'",
            &name,
        ) {
            t.unique.insert(strings(
                "SELECT name FROM pragma_index_info(?1) ORDER BY seqno",
                &index,
            ));
        }
        let mut stmt = c
            .prepare(
                "SELECT id, \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list(?1)
                 ORDER BY id, seq",
            )
            .unwrap();
        let mut fks: BTreeMap<i64, (Vec<String>, String, Vec<String>, String)> = BTreeMap::new();
        let rows = stmt
            .query_map([&name], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .unwrap();
        for row in rows {
            let (id, to_table, from, to, on_delete) = row.unwrap();
            let action = match on_delete.as_str() {
                "CASCADE" => "c",
                "NO ACTION" => "a",
                other => panic!("on delete {other}: add it to this test"),
            };
            let fk = fks
                .entry(id)
                .or_insert_with(|| (vec![], to_table, vec![], action.into()));
            fk.0.push(from);
            fk.2.push(to);
        }
        t.foreign_keys = fks.into_values().collect();
        let mut stmt = c
            .prepare(
                "SELECT name, \"unique\", partial FROM pragma_index_list(?1) WHERE origin = 'c'",
            )
            .unwrap();
        t.indexes = stmt
            .query_map([&name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        tables.insert(name, t);
    }
    tables
}

/// The schema of the database `pg` opened (its version table aside), and the text columns whose
/// collation is not "C".
async fn postgres_schema(pg: &Pg) -> (BTreeMap<String, Table>, Vec<String>) {
    let c = pg.client().await.expect("a connection");
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    let mut not_c = Vec::new();
    for r in c
        .query(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text = 'NO',
                    column_default::text, collation_name::text
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name NOT LIKE 'cueapi\\_%'
             ORDER BY table_name, ordinal_position",
            &[],
        )
        .await
        .unwrap()
    {
        let table: String = r.get(0);
        let name: String = r.get(1);
        let kind: String = r.get(2);
        if kind == "text" && r.get::<_, Option<String>>(5).as_deref() != Some("C") {
            not_c.push(format!("{table}.{name}"));
        }
        let kind = match kind.as_str() {
            "bigint" | "boolean" => "INTEGER".to_string(),
            "text" => "TEXT".to_string(),
            other => other.to_string(),
        };
        tables.entry(table).or_default().columns.push(Column {
            name,
            kind,
            not_null: r.get(3),
            default: r.get::<_, Option<String>>(4).map(|d| unquoted(&d)),
        });
    }
    for r in c
        .query(
            "SELECT t.relname::text, c.contype::text,
                    ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k (n, i)
                          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                          ORDER BY k.i),
                    coalesce(f.relname::text, ''),
                    ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k (n, i)
                          JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                          ORDER BY k.i),
                    c.confdeltype::text
             FROM pg_constraint c
             JOIN pg_class t ON t.oid = c.conrelid
             JOIN pg_namespace ns ON ns.oid = t.relnamespace
             LEFT JOIN pg_class f ON f.oid = c.confrelid
             WHERE ns.nspname = current_schema() AND t.relname NOT LIKE 'cueapi\\_%'
               AND c.contype IN ('p', 'u', 'f')",
            &[],
        )
        .await
        .unwrap()
    {
        let t = tables.entry(r.get(0)).or_default();
        let columns: Vec<String> = r.get(2);
        match r.get::<_, String>(1).as_str() {
            "p" => t.primary_key = columns,
            "u" => {
                t.unique.insert(columns);
            }
            _ => {
                t.foreign_keys
                    .insert((columns, r.get(3), r.get(4), r.get(5)));
            }
        }
    }
    for r in c
        .query(
            "SELECT t.relname::text, i.relname::text, x.indisunique, x.indpred IS NOT NULL
             FROM pg_index x
             JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_class t ON t.oid = x.indrelid
             JOIN pg_namespace ns ON ns.oid = t.relnamespace
             WHERE ns.nspname = current_schema()
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)",
            &[],
        )
        .await
        .unwrap()
    {
        tables
            .entry(r.get(0))
            .or_default()
            .indexes
            .insert((r.get(1), r.get(2), r.get(3)));
    }
    (tables, not_c)
}

fn listed<T: std::fmt::Debug>(s: &BTreeSet<T>) -> Vec<String> {
    s.iter().map(|x| format!("{x:?}")).collect()
}

/// How table `name` differs between PostgreSQL (`pg`) and SQLite (`lite`), one line each.
fn differences(name: &str, pg: &Table, lite: &Table) -> Vec<String> {
    let mut out = Vec::new();
    let pg_columns: Vec<&str> = pg.columns.iter().map(|c| c.name.as_str()).collect();
    let lite_columns: Vec<&str> = lite.columns.iter().map(|c| c.name.as_str()).collect();
    if pg_columns != lite_columns {
        out.push(format!(
            "{name}: columns {pg_columns:?} on PostgreSQL, {lite_columns:?} on SQLite"
        ));
    } else {
        for (p, l) in pg.columns.iter().zip(&lite.columns) {
            if p != l {
                out.push(format!("{name}: {p:?} on PostgreSQL, {l:?} on SQLite"));
            }
        }
    }
    for (what, p, l) in [
        (
            "primary key",
            vec![format!("{:?}", pg.primary_key)],
            vec![format!("{:?}", lite.primary_key)],
        ),
        ("unique", listed(&pg.unique), listed(&lite.unique)),
        (
            "foreign keys",
            listed(&pg.foreign_keys),
            listed(&lite.foreign_keys),
        ),
        ("indexes", listed(&pg.indexes), listed(&lite.indexes)),
    ] {
        if p != l {
            out.push(format!(
                "{name}: {what} [{}] on PostgreSQL, [{}] on SQLite",
                p.join(", "),
                l.join(", ")
            ));
        }
    }
    out
}

/// The rows of the version table: (version, applied_at).
async fn versions(pg: &Pg) -> Vec<(i64, i64)> {
    pg.client()
        .await
        .unwrap()
        .query(
            "SELECT version, applied_at FROM cueapi_schema ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Tables, indexes, sequences and the like in the database's schema.
async fn relation_count(pg: &Pg) -> i64 {
    pg.client()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

// ---------------------------------------------------------------------------------------------
// Migrations

#[tokio::test]
async fn a_fresh_database_gets_sqlite_s_tables_columns_keys_and_indexes() {
    let db = TestDb::new().await;
    let pg = open(&db.url).await;
    assert_eq!(pg.schema_version().await.unwrap(), PG_SCHEMA_VERSION);
    let (postgres, not_c) = postgres_schema(&pg).await;
    let sqlite = sqlite_schema();
    assert_eq!(
        postgres.keys().collect::<Vec<_>>(),
        sqlite.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    let drift: Vec<String> = sqlite
        .iter()
        .flat_map(|(name, table)| differences(name, &postgres[name], table))
        .collect();
    assert!(
        drift.is_empty(),
        "the PostgreSQL schema differs from SQLite's:\n{}",
        drift.join("\n")
    );
    assert!(
        not_c.is_empty(),
        "text columns compare byte by byte, as in SQLite: {not_c:?} lack COLLATE \"C\""
    );
    pg.close();
    db.drop().await;
}

#[tokio::test]
async fn migrating_a_database_already_there_changes_nothing() {
    let db = TestDb::new().await;
    let pg = open(&db.url).await;
    let rows = versions(&pg).await;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=PG_SCHEMA_VERSION).collect::<Vec<_>>()
    );
    let relations = relation_count(&pg).await;
    pg.migrate(PG_SCHEMA_VERSION).await.expect("migrate again");
    let again = open(&db.url).await;
    assert_eq!(versions(&again).await, rows, "no migration applied twice");
    assert_eq!(relation_count(&again).await, relations);
    assert_eq!(again.schema_version().await.unwrap(), PG_SCHEMA_VERSION);
    pg.close();
    again.close();
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_nodes_opening_one_fresh_database_at_once_all_succeed_with_one_schema() {
    let db = TestDb::new().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(4));
    let nodes: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                Pg::open(&url, PgSettings::default()).await
            })
        })
        .collect();
    let mut opened = Vec::new();
    for node in nodes {
        opened.push(node.await.expect("task").expect("every node opens"));
    }
    assert_eq!(
        versions(&opened[0])
            .await
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        (1..=PG_SCHEMA_VERSION).collect::<Vec<_>>(),
        "each migration applied once"
    );
    let (schema, _) = postgres_schema(&opened[0]).await;
    assert_eq!(schema.len(), sqlite_schema().len());
    for pg in &opened {
        pg.close();
    }
    db.drop().await;
}

#[tokio::test]
async fn a_database_written_by_a_newer_cueapi_is_refused_and_left_alone() {
    let db = TestDb::new().await;
    let pg = open(&db.url).await;
    let newer = PG_SCHEMA_VERSION + 1;
    pg.client()
        .await
        .unwrap()
        .execute(
            "INSERT INTO cueapi_schema (version, applied_at, cueapi) VALUES ($1, 0, 'a newer one')",
            &[&newer],
        )
        .await
        .unwrap();
    let rows = versions(&pg).await;
    match Pg::open(&db.url, PgSettings::default()).await {
        Err(Error::SchemaTooNew {
            path,
            found,
            supported,
        }) => {
            assert_eq!((found, supported), (newer, PG_SCHEMA_VERSION));
            assert_eq!(path, db.url);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(matches!(
        pg.migrate(PG_SCHEMA_VERSION).await,
        Err(Error::SchemaTooNew { .. })
    ));
    assert_eq!(versions(&pg).await, rows);
    pg.close();
    db.drop().await;
}

#[test]
fn open_blocking_opens_from_synchronous_code_and_refuses_inside_a_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(TestDb::new());
    let pg = Pg::open_blocking(rt.handle(), &db.url, PgSettings::default()).expect("open");
    assert_eq!(rt.block_on(pg.schema_version()).unwrap(), PG_SCHEMA_VERSION);
    let handle = rt.handle().clone();
    let inside = rt
        .block_on(async { Pg::open_blocking(&handle, &db.url, PgSettings::default()).map(|_| ()) });
    match inside {
        Err(Error::Open { reason, .. }) => assert!(reason.contains("inside a tokio runtime")),
        other => panic!("expected a refusal, got {other:?}"),
    }
    pg.close();
    rt.block_on(db.drop());
}

// ---------------------------------------------------------------------------------------------
// Refusals: clear, bounded in time, and never showing a password

fn reason_of(e: &Error) -> &str {
    match e {
        Error::Open { reason, .. } => reason,
        other => panic!("expected Error::Open, got {other:?}"),
    }
}

/// `e` as shown and as debugged: neither may carry `secret`.
fn assert_hidden(e: &Error, secret: &str) {
    let text = format!("{e} / {e:?}");
    assert!(!text.contains(secret), "the password shows: {text}");
}

#[tokio::test]
async fn an_unreachable_server_is_refused_at_once_naming_host_and_port() {
    let port = closed_port();
    let url = format!("postgresql://cueapi:hunter2-pw@127.0.0.1:{port}/cueapi");
    let settings = PgSettings {
        connect_timeout: Duration::from_secs(3),
        ..PgSettings::default()
    };
    let started = Instant::now();
    let e = Pg::open(&url, settings).await.expect_err("nothing listens");
    assert!(
        started.elapsed() < settings.connect_timeout,
        "took {:?}",
        started.elapsed()
    );
    let reason = reason_of(&e);
    assert!(reason.contains(&format!("127.0.0.1:{port}")), "{reason}");
    assert!(reason.contains("nothing listens"), "{reason}");
    assert!(e
        .to_string()
        .contains(&format!("postgresql://cueapi:***@127.0.0.1:{port}/cueapi")));
    assert_hidden(&e, "hunter2-pw");
}

#[tokio::test]
async fn a_server_that_never_answers_is_given_up_after_the_connect_timeout() {
    // Accepts connections (the kernel completes them) and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().unwrap().port();
    let url = format!("postgresql://cueapi:hunter2-pw@127.0.0.1:{port}/cueapi");
    let settings = PgSettings {
        connect_timeout: Duration::from_millis(300),
        ..PgSettings::default()
    };
    let started = Instant::now();
    let e = Pg::open(&url, settings).await.expect_err("no answer");
    let took = started.elapsed();
    assert!(
        took >= settings.connect_timeout && took < Duration::from_secs(5),
        "took {took:?}"
    );
    let reason = reason_of(&e);
    assert!(reason.contains("no answer"), "{reason}");
    assert!(reason.contains(&format!("127.0.0.1:{port}")), "{reason}");
    assert_hidden(&e, "hunter2-pw");
    drop(silent);
}

#[tokio::test]
async fn a_missing_database_is_named_without_the_password() {
    let (host, port) = server_address();
    let missing = unique("cueapi_missing");
    let url = format!("postgresql://postgres:hunter2-pw@{host}:{port}/{missing}");
    let e = Pg::open(&url, PgSettings::default())
        .await
        .expect_err("no such database");
    let reason = reason_of(&e);
    assert!(
        reason.contains(&format!("no database \"{missing}\"")),
        "{reason}"
    );
    assert!(reason.contains("CREATE DATABASE"), "{reason}");
    assert_hidden(&e, "hunter2-pw");
}

#[tokio::test]
async fn an_unknown_user_is_named() {
    let (host, port) = server_address();
    let user = unique("cueapi_nobody");
    let url = format!("postgresql://{user}@{host}:{port}/cueapi");
    let e = Pg::open(&url, PgSettings::default())
        .await
        .expect_err("no such user");
    let reason = reason_of(&e);
    assert!(reason.contains(&format!("user \"{user}\"")), "{reason}");
}

#[tokio::test]
async fn a_wrong_password_is_refused_without_showing_either_password() {
    let admin = admin().await;
    // tools/pg's server asks members of this role for their password (everyone else is trusted).
    admin
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE cueapi_password_login NOLOGIN;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
        )
        .await
        .unwrap();
    let role = unique("cueapi_pw");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'right-horse-battery' IN ROLE cueapi_password_login"
        ))
        .await
        .unwrap();
    let db = TestDb::owned_by(Some(&role)).await;
    let (host, port) = server_address();
    let url = |pw: &str| format!("postgresql://{role}:{pw}@{host}:{port}/{}", db.name);

    let e = Pg::open(&url("wrong-staple"), PgSettings::default())
        .await
        .expect_err(
            "a wrong password is refused (a server of your own in CUEAPI_TEST_POSTGRES must ask \
             members of cueapi_password_login for a password over TCP, as tools/pg's does)",
        );
    let reason = reason_of(&e);
    assert!(reason.contains("refused the password"), "{reason}");
    assert!(reason.contains(&format!("user \"{role}\"")), "{reason}");
    assert_hidden(&e, "wrong-staple");
    assert_hidden(&e, "right-horse-battery");

    let pg = Pg::open(&url("right-horse-battery"), PgSettings::default())
        .await
        .expect("the right password opens it");
    assert_eq!(pg.schema_version().await.unwrap(), PG_SCHEMA_VERSION);
    assert!(!format!("{pg:?}").contains("right-horse-battery"));
    pg.close();
    db.drop().await;
    admin
        .batch_execute(&format!("DROP ROLE {role}"))
        .await
        .unwrap();
}

/// A fresh database for the store conformance suite (tests/it/store.rs), dropped with its guard.
pub struct StoreDb(Option<TestDb>);

impl Drop for StoreDb {
    fn drop(&mut self) {
        if let Some(db) = self.0.take() {
            let rt = cueapi::Engine::shared_runtime().expect("runtime");
            rt.block_on(db.drop());
        }
    }
}

/// A store over a fresh PostgreSQL database of its own.
pub fn open_store() -> (StoreDb, cueapi::store::Store) {
    let rt = cueapi::Engine::shared_runtime().expect("runtime");
    let db = rt.block_on(TestDb::new());
    let store = cueapi::store::Store::open(&db.url).expect("open the PostgreSQL store");
    (StoreDb(Some(db)), store)
}

#[test]
fn text_with_a_nul_is_refused_as_invalid_on_postgres_and_nothing_is_stored() {
    let (_db, store) = open_store();
    let spec: cueapi::store::CueSpec =
        serde_json::from_value(serde_json::json!({"name": "a\u{0}b", "every": "1h"}))
            .expect("a spec");
    let got = store.write(move |c| c.insert_cues("usr_nul", std::slice::from_ref(&spec), 0));
    match got {
        Err(Error::Invalid { field, message }) => {
            assert_eq!(field, "text");
            assert!(message.contains("NUL"), "{message}");
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    let ids = store.read(|c| c.cue_ids("usr_nul")).expect("read");
    assert!(ids.is_empty(), "{ids:?}");
    store.close();
}

#[test]
fn a_unit_that_carries_on_after_a_refused_statement_is_rolled_back_whole() {
    // PostgreSQL ends a transaction at its first refused statement; a unit that takes the error
    // and goes on must not be committed (PostgreSQL would turn the COMMIT into a ROLLBACK
    // without a word), and its caller hears of the failure.
    let (_db, store) = open_store();
    let spec = |name: &str| -> cueapi::store::CueSpec {
        serde_json::from_value(serde_json::json!({"name": name, "every": "1h"})).expect("a spec")
    };
    let (a, dup, c) = (spec("a"), spec("a"), spec("c"));
    let got = store.write(move |w| {
        w.insert_cues("usr_poison", std::slice::from_ref(&a), 0)?;
        let refused = w.insert_cues("usr_poison", std::slice::from_ref(&dup), 0);
        assert!(refused.is_err(), "a duplicate name is refused");
        let after = w.insert_cues("usr_poison", std::slice::from_ref(&c), 0);
        assert!(after.is_err(), "nothing runs after a refused statement");
        Ok(())
    });
    assert!(got.is_err(), "the unit fails: {got:?}");
    let ids = store.read(|r| r.cue_ids("usr_poison")).expect("read");
    assert!(ids.is_empty(), "nothing of the unit was kept: {ids:?}");
    store.close();
}

/// One beat of `node` with a lease of `lease_ms`: the partitions it holds after it.
fn beat(store: &cueapi::store::Store, node: &'static str, lease_ms: i64) -> u32 {
    let m = store
        .write(move |c| c.beat(node, "{}", lease_ms))
        .expect("a beat");
    m.held.count_ones()
}

#[test]
fn live_nodes_share_the_partitions_evenly_and_take_over_a_silent_one() {
    let (_db, store) = open_store();
    // A long lease while the shares settle: nobody's runs out meanwhile.
    let long = 60_000;
    assert_eq!(
        beat(&store, "node-a", long),
        60,
        "alone, it takes every partition"
    );
    assert_eq!(beat(&store, "node-b", long), 0, "nothing is free yet");
    assert_eq!(
        beat(&store, "node-a", long),
        30,
        "a releases down to its share"
    );
    assert_eq!(beat(&store, "node-b", long), 30, "b takes what a released");
    assert_eq!(beat(&store, "node-c", long), 0);
    assert_eq!(beat(&store, "node-a", long), 20);
    assert_eq!(beat(&store, "node-b", long), 20);
    assert_eq!(beat(&store, "node-c", long), 20);
    let m = store
        .write(|c| c.beat("node-a", "{\"host\": \"h\"}", 60_000))
        .expect("a beat");
    let live: Vec<&str> = m.live.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(live, ["node-a", "node-b", "node-c"]);
    assert_eq!(
        m.live[0].info["host"], "h",
        "what a node says of itself is kept"
    );

    // c goes silent: once its lease (here 300 ms, renewed by its last beat) has run out, a and b
    // share its partitions, and c is no longer live.
    assert_eq!(beat(&store, "node-c", 300), 20);
    let started = Instant::now();
    loop {
        let (a, b) = (beat(&store, "node-a", 300), beat(&store, "node-b", 300));
        if a + b == 60 {
            assert_eq!((a, b), (30, 30));
            let m = store
                .write(|c| c.beat("node-a", "{}", 300))
                .expect("a beat");
            assert_eq!(m.live.len(), 2, "c is no longer live");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a and b never took c's partitions: {a} + {b}"
        );
        std::thread::sleep(Duration::from_millis(20)); // beats, as a node's loop makes them
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before c's lease ran out"
    );
    store.close();
}

#[test]
fn a_node_that_leaves_frees_its_partitions_at_once() {
    let (_db, store) = open_store();
    let long = 60_000;
    assert_eq!(beat(&store, "node-a", long), 60);
    assert_eq!(beat(&store, "node-b", long), 0);
    store.write(|c| c.leave("node-a")).expect("leave");
    assert_eq!(
        beat(&store, "node-b", long),
        60,
        "b takes everything, no lease to wait out"
    );
    store.close();
}
