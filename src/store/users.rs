//! Users of the server: an email, an API key (stored as its SHA-256, shown once) and the secret
//! their webhooks are signed with.

use crate::store::sql::{params, Db, OptionalExt};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::clock::Millis;
use crate::error::{Error, Result};
use crate::model::new_id;

/// A user as the API sees one.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub email: String,
    pub api_key_prefix: String,
    pub webhook_secret: String,
    pub created_at: Millis,
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// A new API key: `cue_sk_` + 32 hex digits.
pub fn new_api_key() -> String {
    format!("cue_sk_{}", random_hex(16))
}

/// A new webhook signing secret: `whsec_` + 64 hex digits.
pub fn new_webhook_secret() -> String {
    format!("whsec_{}", random_hex(32))
}

/// A new alert webhook signing secret: 64 hex digits (the reference's form, no prefix).
pub fn new_alert_secret() -> String {
    random_hex(32)
}

/// The stored form of an API key.
pub fn key_hash(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks an email address's form and lower-cases its domain.
pub fn normalise_email(email: &str) -> Result<String> {
    let e = email.trim();
    let bad = || Error::invalid("email", format!("{e:?} is not a valid email address"));
    if e.len() > 254 || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = e.rsplit_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || local.len() > 64
        || domain.is_empty()
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains('@')
        || domain.contains("..")
    {
        return Err(bad());
    }
    Ok(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// Creates a user; returns it with its API key (the only time the key is seen).
pub fn create(conn: &Db<'_>, email: &str, now: Millis) -> Result<(User, String)> {
    let email = normalise_email(email)?;
    let exists: Option<String> = conn
        .query_row(
            "SELECT id FROM users WHERE email = ?1",
            params![email],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Err(Error::Conflict(format!(
            "a user with the email {email:?} already exists"
        )));
    }
    let key = new_api_key();
    let user = User {
        id: new_id("usr", now),
        email,
        api_key_prefix: key[..12].to_string(),
        webhook_secret: new_webhook_secret(),
        created_at: now,
    };
    conn.execute(
        "INSERT INTO users (id, email, api_key_hash, api_key_prefix, webhook_secret, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        params![
            user.id,
            user.email,
            key_hash(&key),
            user.api_key_prefix,
            user.webhook_secret,
            now
        ],
    )?;
    Ok((user, key))
}

/// Marks a user's email address as not verified (registered by anyone, over HTTP): alert email
/// is never sent to it.
pub fn mark_unverified(conn: &Db<'_>, user_id: &str) -> Result<()> {
    conn.execute(
        "UPDATE users SET email_verified = FALSE WHERE id = ?1",
        params![user_id],
    )?;
    Ok(())
}

/// The user an API key belongs to.
pub fn by_key(conn: &Db<'_>, key: &str) -> Result<Option<User>> {
    conn
        .prepare_cached(
            "SELECT id, email, api_key_prefix, webhook_secret, created_at FROM users WHERE api_key_hash = ?1",
        )?
        .query_row(params![key_hash(key)], |r| {
            Ok(User {
                id: r.get(0)?,
                email: r.get(1)?,
                api_key_prefix: r.get(2)?,
                webhook_secret: r.get(3)?,
                created_at: r.get(4)?,
            })
        })
        .optional()
}

/// Replaces a user's API key; the old one stops working at once. Returns the new key.
pub fn regenerate_key(conn: &Db<'_>, user_id: &str, now: Millis) -> Result<String> {
    let key = new_api_key();
    conn.execute(
        "UPDATE users SET api_key_hash = ?2, api_key_prefix = ?3, updated_at = ?4 WHERE id = ?1",
        params![user_id, key_hash(&key), &key[..12], now],
    )?;
    Ok(key)
}

/// Replaces a user's webhook secret; deliveries from now on are signed with the new one.
pub fn regenerate_secret(conn: &Db<'_>, user_id: &str, now: Millis) -> Result<String> {
    let secret = new_webhook_secret();
    conn.execute(
        "UPDATE users SET webhook_secret = ?2, updated_at = ?3 WHERE id = ?1",
        params![user_id, secret, now],
    )?;
    Ok(secret)
}

/// How many users there are (a fresh database has none).
pub fn count(conn: &Db<'_>) -> Result<i64> {
    conn.query_row("SELECT count(*) FROM users", params![], |r| r.get(0))
}

/// Everyone who owns cues or is a user: each user by email, then owners of cues that are no user
/// (the embedded App's `local` owner), by id. Returns (owner id, email).
pub fn owners(conn: &Db<'_>) -> Result<Vec<(String, Option<String>)>> {
    let mut stmt = conn.prepare(
        "SELECT id, email FROM users
         UNION ALL
         SELECT DISTINCT owner, NULL FROM cues WHERE owner NOT IN (SELECT id FROM users)",
    )?;
    let mut out = stmt.query_map(params![], |r| {
        Ok((r.get::<String>(0)?, r.get::<Option<String>>(1)?))
    })?;
    out.sort_by(|a, b| (a.1.is_none(), &a.1, &a.0).cmp(&(b.1.is_none(), &b.1, &b.0)));
    Ok(out)
}

/// A user's cue counts by status and executions since an instant.
pub fn usage(conn: &Db<'_>, user_id: &str, since: Millis) -> Result<(i64, i64, i64)> {
    let (active, all): (i64, i64) = conn.query_row(
        "SELECT count(*) FILTER (WHERE status = 'active'), count(*) FROM cues WHERE owner = ?1",
        params![user_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let executions: i64 = conn.query_row(
        "SELECT count(*) FROM executions e JOIN cues c ON c.id = e.cue_id
         WHERE c.owner = ?1 AND e.created_at >= ?2",
        params![user_id, since],
        |r| r.get(0),
    )?;
    Ok((active, all, executions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            normalise_email(" Ann@Example.COM ").unwrap(),
            "Ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "@x.com",
            "ann@",
            "ann@x",
            "a b@x.com",
            "ann@x..com",
        ] {
            assert!(normalise_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_and_secrets_have_the_reference_form() {
        let k = new_api_key();
        assert!(k.starts_with("cue_sk_") && k.len() == 39);
        let s = new_webhook_secret();
        assert!(s.starts_with("whsec_") && s.len() == 70);
        assert_eq!(key_hash("x").len(), 64);
    }
}
