//! The SQLite backend of the store: one file, the embedded default.
//!
//! One thread owns the read-write connection and applies write operations sent to it over a
//! channel, many per transaction (each in its own savepoint, so one failing operation does not undo
//! its neighbours); callers learn their result only after the commit. Reads use a small pool of
//! read-only connections, so they never wait for the writer (WAL).
//!
//! A lock file next to the database makes one process the owner of a database: work that a
//! previous owner left in flight is known to be dead when the next owner opens it.
//!
//! The database holds webhook, alert and callback-header secrets in clear, so a database this
//! store creates is readable by its owner only (0600, whatever the umask), and so are its lock
//! file and SQLite's `-wal` and `-shm` files, which SQLite creates with the database's own mode.

pub(crate) mod outcomes;
mod schema;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

pub use schema::SCHEMA_VERSION;

use crate::error::{Error, Result};

/// How many queued write operations one transaction may take.
const MAX_BATCH: usize = 512;

type Reply = Box<dyn FnOnce(Option<&rusqlite::Error>) + Send>;
/// A write operation: run on the writer's connection inside its transaction, or, given `None`
/// (the transaction could not begin), not run at all; either way it returns how to answer once
/// the commit is known.
type Op = Box<dyn FnOnce(Option<&Connection>) -> Reply + Send>;

/// When the writer last failed to write (a full disk, an I/O error, a read-only file), and why.
#[derive(Debug, Clone)]
pub struct WriteFailure {
    pub at: Instant,
    pub error: String,
}

type LastFailure = Arc<Mutex<Option<WriteFailure>>>;

/// Remembers `e` as the writer's latest failure to write, if it is one.
fn note_failure(last: &LastFailure, e: &rusqlite::Error) {
    if is_unwritable(e) {
        *last.lock() = Some(WriteFailure {
            at: Instant::now(),
            error: Error::Storage(clone_sqlite_error(e)).to_string(),
        });
    }
}

/// Whether an SQLite error says the database cannot be written now (no space, an I/O error, a
/// read-only or vanished file) rather than that one operation was refused.
pub fn is_unwritable(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            rusqlite::ErrorCode::DiskFull
                | rusqlite::ErrorCode::SystemIoFailure
                | rusqlite::ErrorCode::ReadOnly
                | rusqlite::ErrorCode::CannotOpen
        )
    )
}

/// What the writer calls after committing notifications.
type NotifyHook = OnceLock<Box<dyn Fn() + Send + Sync>>;

/// The store: owns the writer thread, the read pool and the lock on the database file.
pub struct SqliteStore {
    path: PathBuf,
    /// Called after a commit that queued notifications (set once, by the engine).
    on_notify: Arc<NotifyHook>,
    tx: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
    readers: Mutex<Vec<Connection>>,
    lock: Mutex<Option<File>>,
    last_failure: LastFailure,
}

/// Prepared statements a connection keeps: more than the store uses (about 150 texts), so that
/// the hot ones are never evicted and prepared again (rusqlite keeps 16 by default).
const STATEMENT_CACHE: usize = 256;

fn configure(conn: &Connection) -> Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         -- References are kept by the code (cues::delete cascades): SQLite's enforcement costs
         -- a statement journal on every write.
         PRAGMA foreign_keys = OFF;
         PRAGMA busy_timeout = 5000;
         PRAGMA cache_size = -65536;
         PRAGMA temp_store = MEMORY;",
    )?;
    Ok(())
}

/// Why the database at `path` cannot be opened, said for the person who can fix it: a storage
/// or file-system error becomes [`Error::Open`] naming the file; others pass through.
pub fn open_error(path: &Path, e: Error) -> Error {
    use rusqlite::ErrorCode as C;
    let shown = path.display();
    let reason = match &e {
        Error::Storage(s) => match s.sqlite_error_code() {
            Some(C::NotADatabase) => {
                format!("{s} (not a SQLite file, or one whose header is damaged)")
            }
            Some(C::DatabaseCorrupt) => {
                format!("{s}: the file is damaged or cut short; restore it from a backup")
            }
            Some(C::ReadOnly) => format!(
                "{s}: the file or its directory is read-only to cueapi, which needs to write them"
            ),
            Some(C::CannotOpen) => format!(
                "{s}: check that its directory exists and that cueapi may read and write there"
            ),
            _ => s.to_string(),
        },
        Error::Io(io) => io.to_string(),
        Error::SchemaTooNew {
            found, supported, ..
        } => {
            return Error::SchemaTooNew {
                path: shown.to_string(),
                found: *found,
                supported: *supported,
            }
        }
        _ => return e,
    };
    Error::Open {
        path: shown.to_string(),
        reason,
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, migrating it to the current schema.
    /// A file that is read-only, not a database or damaged is refused here, unchanged, with an
    /// [`Error::Open`] that names it.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        SqliteStore::open_checked(&path).map_err(|e| open_error(&path, e))
    }

    fn open_checked(path: &Path) -> Result<SqliteStore> {
        let path = path.to_path_buf();
        let lock_path = lock_path_for(&path);
        let lock = private(OpenOptions::new().create(true).truncate(false).write(true))
            .open(&lock_path)
            .map_err(|e| Error::Open {
                path: path.display().to_string(),
                reason: format!(
                    "cannot create its lock file {}: {e} (cueapi needs to write the database's \
                     directory)",
                    lock_path.display()
                ),
            })?;
        owner_only(&lock)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked(format!(
                    "{} (lock file {})",
                    path.display(),
                    lock_path.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::Io(e)),
        }
        create_private(&path)?;
        let mut conn = Connection::open(&path)?;
        // SQLite opens a file it may not write read-only without a word; every write would fail.
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(Error::Open {
                path: path.display().to_string(),
                reason: "the file is read-only to cueapi, which needs to write it (check its \
                         permissions, and that its file system is mounted read-write)"
                    .into(),
            });
        }
        configure(&conn)?;
        // A damaged file is refused before anything is written to it, rather than failing here
        // and there later (SQLite's page-level check: about 0.1 s per 100 MB).
        let check: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
        if check != "ok" {
            // One line: "*** in database main ***\nTree 2 page 2: …" says the page.
            let found: Vec<&str> = check.lines().filter(|l| !l.starts_with("***")).collect();
            return Err(Error::Open {
                path: path.display().to_string(),
                reason: format!(
                    "the file is damaged (SQLite's quick_check: {}); restore it from a backup",
                    found.join("; ")
                ),
            });
        }
        schema::migrate(&mut conn, SCHEMA_VERSION)?;
        outcomes::install_outcome_counter(&conn)?;
        // Checkpoints (copying the WAL back into the database, with an fsync) run on a thread
        // of their own: on the writer they stall every operation queued behind them.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        let checkpointer = spawn_checkpointer(&path)?;
        let (tx, rx) = mpsc::channel::<Op>();
        let on_notify: Arc<NotifyHook> = Arc::new(OnceLock::new());
        let hook = Arc::clone(&on_notify);
        let last_failure: LastFailure = Arc::new(Mutex::new(None));
        let failures = Arc::clone(&last_failure);
        let writer = std::thread::Builder::new()
            .name("cueapi-writer".into())
            .spawn(move || writer_loop(conn, rx, hook, failures))?;
        Ok(SqliteStore {
            path,
            on_notify,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            checkpointer: Mutex::new(Some(checkpointer)),
            readers: Mutex::new(Vec::new()),
            lock: Mutex::new(Some(lock)),
            last_failure,
        })
    }

    /// The writer's latest failure to write, if it happened within `within`: a write that needs
    /// room can fail on a full disk while a smaller one still fits, so one probe that succeeds
    /// does not show that the store takes writes.
    pub fn write_failed_within(&self, within: Duration) -> Option<WriteFailure> {
        self.last_failure
            .lock()
            .clone()
            .filter(|f| f.at.elapsed() <= within)
    }

    /// Sets what to call after a commit that queued notifications (the first call wins).
    pub fn on_notify(&self, f: impl Fn() + Send + Sync + 'static) {
        let _ = self.on_notify.set(Box::new(f));
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R> + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<R>>> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let failures = Arc::clone(&self.last_failure);
        let op: Op = Box::new(move |conn| {
            let result = conn.map(|c| savepoint(c, "op", f));
            if let Some(Err(Error::Storage(e))) = &result {
                note_failure(&failures, e);
            }
            Box::new(move |commit_err| {
                let result = match (result, commit_err) {
                    (Some(Ok(_)) | None, Some(e)) => Err(Error::Storage(clone_sqlite_error(e))),
                    (Some(r), _) => r,
                    (None, None) => Err(Error::Closed),
                };
                let _ = reply_tx.send(result);
            })
        });
        let guard = self.tx.lock();
        let tx = guard.as_ref().ok_or(Error::Closed)?;
        tx.send(op).map_err(|_| Error::Closed)?;
        Ok(reply_rx)
    }

    /// Runs `f` in the writer's transaction and waits (blocking) until it is committed.
    /// Must not be called from inside the tokio runtime.
    pub fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.submit(f)?.blocking_recv().map_err(|_| Error::Closed)?
    }

    /// Runs `f` in the writer's transaction; resolves once it is committed.
    pub async fn write_async<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.submit(f)?.await.map_err(|_| Error::Closed)?
    }

    /// Runs `f` on a read-only connection.
    pub fn read<R>(&self, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        let conn = match self.readers.lock().pop() {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.execute_batch("PRAGMA busy_timeout = 5000;")?;
                c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                c
            }
        };
        let out = f(&conn);
        let mut pool = self.readers.lock();
        if pool.len() < 8 {
            pool.push(conn);
        }
        out
    }

    /// Stops the writer after it has committed everything already sent. Idempotent.
    pub fn close(&self) {
        drop(self.tx.lock().take());
        if let Some((stop, h)) = self.checkpointer.lock().take() {
            drop(stop);
            let _ = h.join();
        }
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
        self.readers.lock().clear();
        // Dropping the file releases the lock: another process may now open the database.
        drop(self.lock.lock().take());
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// `opts` creating files readable and writable by their owner only (before the umask).
fn private(opts: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts
}

/// Sets a file this store created to 0600 exactly: the umask may have taken bits from the mode
/// it was created with, but cannot add any.
fn owner_only(file: &File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if file.metadata()?.permissions().mode() & 0o777 != 0o600 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// Creates the database file, empty (which SQLite reads as an empty database) and 0600, when it
/// does not exist yet: SQLite would create it 0644 less the umask, and gives its `-wal` and
/// `-shm` files the database's mode. An existing database keeps its mode; one that others may
/// read is reported once.
fn create_private(path: &Path) -> Result<()> {
    match private(OpenOptions::new().write(true).create_new(true)).open(path) {
        Ok(file) => Ok(owner_only(&file)?),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        "{} is readable by others (mode {:o}) and holds webhook secrets in clear: chmod 600 it",
                        path.display(),
                        mode & 0o777
                    );
                }
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn lock_path_for(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

fn savepoint<R>(
    conn: &Connection,
    name: &str,
    f: impl FnOnce(&Connection) -> Result<R>,
) -> Result<R> {
    conn.prepare_cached(&format!("SAVEPOINT {name}"))?
        .execute([])?;
    match f(conn) {
        Ok(r) => {
            conn.prepare_cached(&format!("RELEASE {name}"))?
                .execute([])?;
            Ok(r)
        }
        // SQLite rolled the whole transaction back on its own (it may after an I/O error or a
        // full disk): no savepoint is left to roll back to, and `e` is the reason to tell.
        Err(e) if conn.is_autocommit() => Err(e),
        Err(e) => {
            conn.prepare_cached(&format!("ROLLBACK TO {name}"))?
                .execute([])?;
            conn.prepare_cached(&format!("RELEASE {name}"))?
                .execute([])?;
            Err(e)
        }
    }
}

fn clone_sqlite_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

/// How often the checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// A thread with a connection of its own that checkpoints the WAL (PASSIVE: it never blocks the
/// writer or readers) every [`CHECKPOINT_EVERY`], until its sender is dropped.
fn spawn_checkpointer(path: &Path) -> Result<(mpsc::Sender<()>, JoinHandle<()>)> {
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA wal_autocheckpoint = 0;")?;
    let (stop, stopped) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("cueapi-checkpoint".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!("WAL checkpoint failed: {e}");
                }
            }
        })?;
    Ok((stop, handle))
}

fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<Op>,
    on_notify: Arc<NotifyHook>,
    last_failure: LastFailure,
) {
    let mut replies: Vec<Reply> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        let began = conn.execute_batch("BEGIN IMMEDIATE");
        if let Err(e) = began {
            // Run nothing (outside a transaction each statement would commit on its own while
            // its caller is told it failed): every waiter learns why.
            note_failure(&last_failure, &e);
            first(None)(Some(&e));
            continue;
        }
        replies.push(first(Some(&conn)));
        // SQLite may roll the whole transaction back on its own after an I/O error or a full
        // disk; the operations after that would each commit on their own. Stop the batch there:
        // the rest wait in the channel for the next transaction.
        let mut rolled_back = conn.is_autocommit();
        while !rolled_back && replies.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => {
                    replies.push(op(Some(&conn)));
                    rolled_back = conn.is_autocommit();
                }
                Err(_) => break,
            }
        }
        let committed = if rolled_back {
            Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                Some("the transaction was rolled back after a write failed".into()),
            ))
        } else {
            conn.execute_batch("COMMIT")
        };
        if let Err(e) = &committed {
            // (When SQLite rolled back, the operation that failed noted its own reason.)
            if !rolled_back {
                note_failure(&last_failure, e);
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        let err = committed.as_ref().err();
        for reply in replies.drain(..) {
            reply(err);
        }
        // A rolled-back notification is harmless: the notifier finds nothing new.
        if crate::store::alerts::take_queued() {
            if let Some(wake) = on_notify.get() {
                wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_of_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let first = SqliteStore::open(&path).unwrap();
        assert!(matches!(SqliteStore::open(&path), Err(Error::Locked(_))));
        first.close();
        drop(first);
        assert!(SqliteStore::open(&path).is_ok());
    }

    #[test]
    fn a_failing_operation_does_not_undo_its_batch_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("b.db")).unwrap();
        store
            .write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER UNIQUE)")?))
            .unwrap();
        store
            .write(|c| Ok(c.execute("INSERT INTO t VALUES (1)", [])?))
            .unwrap();
        assert!(store
            .write(|c| Ok(c.execute("INSERT INTO t VALUES (1)", [])?))
            .is_err());
        store
            .write(|c| Ok(c.execute("INSERT INTO t VALUES (2)", [])?))
            .unwrap();
        let n: i64 = store
            .read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(n, 2);
    }

    fn rows(store: &SqliteStore) -> Vec<i64> {
        store
            .read(|c| {
                let mut stmt = c.prepare("SELECT x FROM t ORDER BY x")?;
                let xs = stmt.query_map([], |r| r.get(0))?;
                Ok(xs.collect::<rusqlite::Result<Vec<i64>>>()?)
            })
            .unwrap()
    }

    fn insert(x: i64) -> impl FnOnce(&Connection) -> Result<()> + Send + 'static {
        move |c| {
            c.execute("INSERT INTO t VALUES (?1)", [x])?;
            Ok(())
        }
    }

    #[test]
    fn an_operation_is_not_run_when_its_transaction_cannot_begin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let store = SqliteStore::open(&path).unwrap();
        store
            .write(|c| {
                c.execute_batch("CREATE TABLE t (x INTEGER)")?;
                c.busy_timeout(Duration::from_millis(1))?;
                Ok(())
            })
            .unwrap();
        // Another connection holds the write lock, so the writer's BEGIN IMMEDIATE fails; the
        // lock is gone by the time the operation would run.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let got = store.write(move |c| {
            other.execute_batch("COMMIT")?;
            insert(1)(c)
        });
        assert!(got.is_err());
        // Told it failed, and it did not happen.
        assert_eq!(rows(&store), Vec::<i64>::new());
        store.write(insert(2)).unwrap();
        assert_eq!(rows(&store), vec![2]);
    }

    #[test]
    fn a_transaction_sqlite_rolled_back_ends_the_batch_and_every_answer_is_true() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("d.db")).unwrap();
        store
            .write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER)")?))
            .unwrap();
        // The writer waits in the first operation until the others are queued: all five go
        // into one transaction.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let first = store
            .submit(move |c| {
                wait.recv().ok();
                insert(1)(c)
            })
            .unwrap();
        let before = store.submit(insert(2)).unwrap();
        // What SQLite does on its own after some I/O errors: the whole transaction is gone.
        let failing = store
            .submit(|c| {
                c.execute_batch("ROLLBACK")?;
                Err(Error::Storage(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                    Some("disk I/O error".into()),
                )))
            })
            .unwrap();
        let after = [
            store.submit(insert(3)).unwrap(),
            store.submit(insert(4)).unwrap(),
        ];
        go.send(()).unwrap();
        let answers: Vec<bool> = [first, before, failing]
            .into_iter()
            .chain(after)
            .map(|r| r.blocking_recv().unwrap().is_ok())
            .collect();
        // Rolled back and told so; the failing one told its own reason; the ones queued after it
        // were written in a transaction of their own and told so.
        assert_eq!(answers, vec![false, false, false, true, true]);
        assert_eq!(rows(&store), vec![3, 4]);
        let failure = store.write_failed_within(Duration::from_secs(60)).unwrap();
        assert!(failure.error.contains("disk I/O error"), "{failure:?}");
    }
}
