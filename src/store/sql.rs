//! One way to run SQL on either backend, so that the store's units of work are written once.
//!
//! [`Db`] is a connection inside a transaction: SQLite's writer (or a reader), or a PostgreSQL
//! transaction. Its surface is rusqlite's, reduced to what the store uses: statements prepared
//! (and cached) by their text, run with [`params!`] to one row, many rows or a count, rows read
//! by column index with [`Row::get`]. Statements are written in the SQL both databases share,
//! with SQLite's `?N` placeholders, which PostgreSQL receives as `$N`; the few constructs the two
//! spell differently branch on [`Db::dialect`].
//!
//! On SQLite every call goes straight to rusqlite (one `match` in between). On PostgreSQL each
//! statement is a round trip made synchronously on the calling thread, which is a blocking
//! thread of the runtime (see `postgres::tx`), never one of its workers.

use std::borrow::Cow;

use crate::error::{Error, Result};

/// A value bound to a statement's parameter: anything both drivers can send. PostgreSQL is told
/// each parameter's type when a statement is prepared, so that a parameter it cannot place
/// (`?2 IS NULL OR …`, `CASE WHEN … THEN ?4 END`) still has one.
pub trait Param:
    rusqlite::ToSql + tokio_postgres::types::ToSql + PgTyped + Sync + std::fmt::Debug
{
}

impl<T: rusqlite::ToSql + tokio_postgres::types::ToSql + PgTyped + Sync + std::fmt::Debug> Param
    for T
{
}

/// The PostgreSQL type a parameter is sent as.
pub trait PgTyped {
    fn pg_type(&self) -> tokio_postgres::types::Type;
    /// Whether it is text holding a NUL character, which PostgreSQL text cannot store.
    fn has_nul(&self) -> bool {
        false
    }
}

macro_rules! pg_typed {
    ($($t:ty => $ty:ident),+ $(,)?) => {
        $(impl PgTyped for $t {
            fn pg_type(&self) -> tokio_postgres::types::Type {
                tokio_postgres::types::Type::$ty
            }
        })+
    };
}

pg_typed!(i64 => INT8, bool => BOOL, f64 => FLOAT8);

impl PgTyped for str {
    fn pg_type(&self) -> tokio_postgres::types::Type {
        tokio_postgres::types::Type::TEXT
    }
    fn has_nul(&self) -> bool {
        self.contains('\0')
    }
}

impl PgTyped for String {
    fn pg_type(&self) -> tokio_postgres::types::Type {
        tokio_postgres::types::Type::TEXT
    }
    fn has_nul(&self) -> bool {
        self.contains('\0')
    }
}

impl<T: PgTyped + ?Sized> PgTyped for &T {
    fn pg_type(&self) -> tokio_postgres::types::Type {
        (**self).pg_type()
    }
    fn has_nul(&self) -> bool {
        (**self).has_nul()
    }
}

impl<T: PgTyped + Default> PgTyped for Option<T> {
    fn pg_type(&self) -> tokio_postgres::types::Type {
        match self {
            Some(v) => v.pg_type(),
            None => T::default().pg_type(),
        }
    }
    fn has_nul(&self) -> bool {
        self.as_ref().is_some_and(PgTyped::has_nul)
    }
}

impl PgTyped for Value {
    fn pg_type(&self) -> tokio_postgres::types::Type {
        match self {
            Value::Int(_) => tokio_postgres::types::Type::INT8,
            Value::Text(_) => tokio_postgres::types::Type::TEXT,
        }
    }
    fn has_nul(&self) -> bool {
        matches!(self, Value::Text(t) if t.contains('\0'))
    }
}

/// Parameters for a statement, in order: `params![id, now]`.
#[macro_export]
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::store::sql::Param]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::store::sql::Param),+] as &[&dyn $crate::store::sql::Param]
    };
}
pub use params;

/// A parameter built at run time (a filter's values).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Text(String),
}

/// Run-time parameters as a statement takes them.
pub fn as_params(values: &[Value]) -> Vec<&dyn Param> {
    values.iter().map(|v| v as &dyn Param).collect()
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Value::Int(i) => i.to_sql(),
            Value::Text(s) => s.to_sql(),
        }
    }
}

impl tokio_postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        match self {
            Value::Int(i) => i.to_sql(ty, out),
            Value::Text(s) => s.to_sql(ty, out),
        }
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <i64 as tokio_postgres::types::ToSql>::accepts(ty)
            || <String as tokio_postgres::types::ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

/// The SQL dialect of a connection, for the few statements the two databases spell differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection inside a transaction.
pub enum Db<'a> {
    Sqlite(&'a rusqlite::Connection),
    Postgres(&'a crate::store::postgres::Tx<'a>),
}

/// A prepared statement.
pub enum Stmt<'a> {
    Sqlite(rusqlite::CachedStatement<'a>),
    SqliteOnce(rusqlite::Statement<'a>),
    /// Prepared when it runs, with its parameters' types.
    Postgres {
        tx: &'a crate::store::postgres::Tx<'a>,
        sql: String,
    },
}

/// One row of a result.
pub enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a tokio_postgres::Row),
}

impl<'a> Db<'a> {
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// A statement, prepared once per connection and kept.
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'a>> {
        match self {
            Db::Sqlite(c) => Ok(Stmt::Sqlite(c.prepare_cached(sql)?)),
            Db::Postgres(tx) => Ok(Stmt::Postgres {
                tx,
                sql: postgres_text(sql).into_owned(),
            }),
        }
    }

    /// A statement used once (its text is built at run time).
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'a>> {
        match self {
            Db::Sqlite(c) => Ok(Stmt::SqliteOnce(c.prepare(sql)?)),
            Db::Postgres(_) => self.prepare_cached(sql),
        }
    }

    /// Runs a statement that returns exactly one row; [`OptionalExt::optional`] makes "no row"
    /// a `None`.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Runs a statement; returns how many rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
}

fn sqlite_params<'p>(
    params: &'p [&'p dyn Param],
) -> rusqlite::ParamsFromIter<impl Iterator<Item = &'p dyn rusqlite::ToSql>> {
    rusqlite::params_from_iter(params.iter().map(|p| *p as &dyn rusqlite::ToSql))
}

fn postgres_params<'p>(
    params: &'p [&'p dyn Param],
) -> Vec<&'p (dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| *p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// A PostgreSQL statement prepared for these parameters' types.
fn postgres_stmt(
    tx: &crate::store::postgres::Tx<'_>,
    sql: &str,
    params: &[&dyn Param],
) -> Result<tokio_postgres::Statement> {
    if params.iter().any(|p| p.has_nul()) {
        return Err(Error::invalid(
            "text",
            "holds a NUL character (\\u0000), which the database (PostgreSQL) cannot store",
        ));
    }
    let types: Vec<_> = params.iter().map(|p| p.pg_type()).collect();
    tx.prepare(sql, &types)
}

impl<'a> Stmt<'a> {
    fn sqlite(&mut self) -> Option<&mut rusqlite::Statement<'a>> {
        match self {
            Stmt::Sqlite(s) => Some(s),
            Stmt::SqliteOnce(s) => Some(s),
            Stmt::Postgres { .. } => None,
        }
    }

    /// Runs the statement for exactly one row (the first, when there are more).
    pub fn query_row<T>(
        &mut self,
        params: &[&dyn Param],
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        if let Some(s) = self.sqlite() {
            let mut rows = s.query(sqlite_params(params))?;
            return match rows.next()? {
                Some(r) => f(&Row::Sqlite(r)),
                None => Err(no_rows()),
            };
        }
        let Stmt::Postgres { tx, sql } = self else {
            unreachable!("a SQLite statement was handled above")
        };
        let stmt = postgres_stmt(tx, sql, params)?;
        match tx.query_opt(&stmt, &postgres_params(params))? {
            Some(r) => f(&Row::Postgres(&r)),
            None => Err(no_rows()),
        }
    }

    /// Runs the statement and reads every row with `f`.
    pub fn query_map<T>(
        &mut self,
        params: &[&dyn Param],
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        if let Some(s) = self.sqlite() {
            let mut rows = s.query(sqlite_params(params))?;
            while let Some(r) = rows.next()? {
                out.push(f(&Row::Sqlite(r))?);
            }
            return Ok(out);
        }
        let Stmt::Postgres { tx, sql } = self else {
            unreachable!("a SQLite statement was handled above")
        };
        let stmt = postgres_stmt(tx, sql, params)?;
        for r in tx.query(&stmt, &postgres_params(params))? {
            out.push(f(&Row::Postgres(&r))?);
        }
        Ok(out)
    }

    /// Runs the statement; returns how many rows it changed.
    pub fn execute(&mut self, params: &[&dyn Param]) -> Result<usize> {
        if let Some(s) = self.sqlite() {
            return Ok(s.execute(sqlite_params(params))?);
        }
        let Stmt::Postgres { tx, sql } = self else {
            unreachable!("a SQLite statement was handled above")
        };
        let stmt = postgres_stmt(tx, sql, params)?;
        Ok(tx.execute(&stmt, &postgres_params(params))? as usize)
    }
}

/// A column's value as a Rust type, read the same way from either database: integers of any
/// width as `i64`, booleans as `bool` (SQLite's 0/1 too).
pub trait FromCol: Sized {
    fn sqlite(r: &rusqlite::Row<'_>, i: usize) -> Result<Self>;
    fn postgres(r: &tokio_postgres::Row, i: usize) -> Result<Self>;
}

impl Row<'_> {
    /// Column `i` (from 0) as a `T`.
    pub fn get<T: FromCol>(&self, i: usize) -> Result<T> {
        match self {
            Row::Sqlite(r) => T::sqlite(r, i),
            Row::Postgres(r) => T::postgres(r, i),
        }
    }
}

fn pg_int(r: &tokio_postgres::Row, i: usize) -> Result<Option<i64>> {
    use tokio_postgres::types::Type;
    let ty = r.columns()[i].type_().clone();
    Ok(if ty == Type::INT8 {
        r.try_get::<_, Option<i64>>(i)?
    } else if ty == Type::INT4 {
        r.try_get::<_, Option<i32>>(i)?.map(i64::from)
    } else if ty == Type::INT2 {
        r.try_get::<_, Option<i16>>(i)?.map(i64::from)
    } else if ty == Type::BOOL {
        r.try_get::<_, Option<bool>>(i)?.map(i64::from)
    } else {
        // A mismatch tokio-postgres explains (the column's type and the one asked for).
        r.try_get::<_, Option<i64>>(i)?
    })
}

fn pg_bool(r: &tokio_postgres::Row, i: usize) -> Result<Option<bool>> {
    use tokio_postgres::types::Type;
    if r.columns()[i].type_() == &Type::BOOL {
        Ok(r.try_get::<_, Option<bool>>(i)?)
    } else {
        Ok(pg_int(r, i)?.map(|n| n != 0))
    }
}

fn pg_float(r: &tokio_postgres::Row, i: usize) -> Result<Option<f64>> {
    use tokio_postgres::types::Type;
    let ty = r.columns()[i].type_().clone();
    if ty == Type::FLOAT8 {
        Ok(r.try_get::<_, Option<f64>>(i)?)
    } else if ty == Type::FLOAT4 {
        Ok(r.try_get::<_, Option<f32>>(i)?.map(f64::from))
    } else {
        Ok(pg_int(r, i)?.map(|n| n as f64))
    }
}

fn missing(i: usize) -> Error {
    Error::Storage(rusqlite::Error::InvalidColumnType(
        i,
        format!("column {i}"),
        rusqlite::types::Type::Null,
    ))
}

macro_rules! from_col {
    ($t:ty, $pg:expr) => {
        impl FromCol for $t {
            fn sqlite(r: &rusqlite::Row<'_>, i: usize) -> Result<Self> {
                Ok(r.get::<_, $t>(i)?)
            }
            fn postgres(r: &tokio_postgres::Row, i: usize) -> Result<Self> {
                $pg(r, i)?.ok_or_else(|| missing(i))
            }
        }
        impl FromCol for Option<$t> {
            fn sqlite(r: &rusqlite::Row<'_>, i: usize) -> Result<Self> {
                Ok(r.get::<_, Option<$t>>(i)?)
            }
            fn postgres(r: &tokio_postgres::Row, i: usize) -> Result<Self> {
                $pg(r, i)
            }
        }
    };
}

from_col!(i64, pg_int);
from_col!(bool, pg_bool);
from_col!(f64, pg_float);
from_col!(String, |r: &tokio_postgres::Row,
                   i|
 -> Result<Option<String>> {
    Ok(r.try_get::<_, Option<String>>(i)?)
});

/// A subquery of the text items of the JSON list `arg` (a parameter or a column holding one).
pub fn json_items(d: Dialect, arg: &str) -> String {
    match d {
        Dialect::Sqlite => format!("(SELECT value FROM json_each({arg}))"),
        Dialect::Postgres => format!("(SELECT json_array_elements_text(CAST({arg} AS json)))"),
    }
}

/// The error a statement gives when it returns no row where one was expected.
pub fn no_rows() -> Error {
    Error::Storage(rusqlite::Error::QueryReturnedNoRows)
}

/// Whether `e` says a statement returned no row.
pub fn is_no_rows(e: &Error) -> bool {
    matches!(e, Error::Storage(rusqlite::Error::QueryReturnedNoRows))
}

/// Whether `e` is a constraint the database enforced (a unique key, most often).
pub fn is_constraint(e: &Error) -> bool {
    match e {
        Error::Storage(rusqlite::Error::SqliteFailure(f, _)) => {
            f.code == rusqlite::ErrorCode::ConstraintViolation
        }
        Error::Postgres(p) => p.code().is_some_and(|c| c.code().starts_with("23")),
        _ => false,
    }
}

/// `optional()` on a row's result, as rusqlite has it.
pub trait OptionalExt<T> {
    /// `None` when the statement returned no row.
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExt<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_no_rows(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A statement's text as PostgreSQL takes it: `?N` (and bare `?`, numbered in order) become
/// `$N`; quoted text is left alone.
pub fn postgres_text(sql: &str) -> Cow<'_, str> {
    if sql.contains(" CROSS JOIN ") {
        // SQLite's way to fix the join order; PostgreSQL's CROSS JOIN takes no ON.
        return Cow::Owned(postgres_text(&sql.replace(" CROSS JOIN ", " JOIN ")).into_owned());
    }
    if let Some(at) = sql.find(" INDEXED BY ") {
        // SQLite's index hints: PostgreSQL's planner chooses for itself.
        let rest = &sql[at + " INDEXED BY ".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let unhinted = format!("{}{}", &sql[..at], &rest[end..]);
        return Cow::Owned(postgres_text(&unhinted).into_owned());
    }
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 0u32;
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    next += 1;
                    out.push_str(&next.to_string());
                } else {
                    out.push_str(&digits);
                }
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_outside_quotes() {
        assert_eq!(postgres_text("SELECT 1"), "SELECT 1");
        assert_eq!(
            postgres_text("SELECT a FROM t WHERE a = ?1 AND b = ?12 AND c = '?1'"),
            "SELECT a FROM t WHERE a = $1 AND b = $12 AND c = '?1'"
        );
        assert_eq!(
            postgres_text("x IN (?, ?) AND y = ?"),
            "x IN ($1, $2) AND y = $3"
        );
        assert_eq!(
            postgres_text(
                "FROM executions e INDEXED BY executions_waiting CROSS JOIN c WHERE a = ?1"
            ),
            "FROM executions e JOIN c WHERE a = $1"
        );
    }

    #[test]
    fn sqlite_rows_read_through_the_shared_surface() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (a INTEGER, b TEXT, f INTEGER)")
            .unwrap();
        let db = Db::Sqlite(&c);
        db.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3)",
            params![7_i64, "x", true],
        )
        .unwrap();
        let (a, b, f): (i64, String, bool) = db
            .query_row("SELECT a, b, f FROM t", params![], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((a, b.as_str(), f), (7, "x", true));
        let none = db
            .query_row("SELECT a FROM t WHERE a = ?1", params![8_i64], |r| {
                r.get::<i64>(0)
            })
            .optional()
            .unwrap();
        assert_eq!(none, None);
        let all = db
            .prepare("SELECT b FROM t")
            .unwrap()
            .query_map(params![], |r| r.get::<String>(0))
            .unwrap();
        assert_eq!(all, vec!["x".to_string()]);
    }
}
