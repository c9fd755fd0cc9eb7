//! Database URLs: read into a connection config, and shown with any password hidden.
//!
//! Both of libpq's spellings are accepted (tokio-postgres reads them): a URL,
//! `postgresql://user:password@host:port/database?param=value` (or `postgres://`), and key/value
//! pairs, `host=… port=… user=… password=… dbname=…`.

use std::borrow::Cow;
use std::str::FromStr;

use tokio_postgres::config::{Config, Host, SslMode};

use crate::error::{Error, Result};

/// What stands in for a password in anything shown.
const HIDDEN: &str = "***";

/// `url` as it may be shown in a message or a log: a password in it — in the user info
/// (`user:password@`), as a `password=` query parameter or as a `password=` pair — is replaced by
/// `***`. It errs on the side of hiding: in a URL, everything from the user info's first `:` to
/// the last `@` goes, so that an `@` left unencoded in a password shows none of it.
pub fn redact(url: &str) -> String {
    match url.find("://") {
        Some(i) => {
            let (scheme, rest) = url.split_at(i + 3);
            let rest = match rest.rfind('@') {
                Some(at) => {
                    let (creds, host_on) = rest.split_at(at);
                    match creds.find(':') {
                        Some(colon) => Cow::Owned(format!("{}:{HIDDEN}{host_on}", &creds[..colon])),
                        None => Cow::Borrowed(rest),
                    }
                }
                None => Cow::Borrowed(rest),
            };
            format!("{scheme}{}", redact_query(&rest))
        }
        None => redact_pairs(url),
    }
}

/// A URL's `?a=b&password=c` parameters with the password's value hidden.
fn redact_query(s: &str) -> String {
    let Some((head, query)) = s.split_once('?') else {
        return s.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if is_password_key(&percent_decoded(k)) => format!("{k}={HIDDEN}"),
            _ => p.to_string(),
        })
        .collect();
    format!("{head}?{}", params.join("&"))
}

/// libpq's `key = value` pairs (a value quoted with `'…'` or bare, `\` escaping) with the
/// password's value hidden; past anything it cannot read after a password key, all is hidden.
fn redact_pairs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        rest = copy_whitespace(rest, &mut out);
        if rest.is_empty() {
            return out;
        }
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(rest.len());
        let key = &rest[..end];
        out.push_str(key);
        rest = copy_whitespace(&rest[end..], &mut out);
        let Some(after) = rest.strip_prefix('=') else {
            if is_password_key(key) && !rest.is_empty() {
                out.push_str(HIDDEN);
                return out;
            }
            continue;
        };
        out.push('=');
        rest = copy_whitespace(after, &mut out);
        let len = value_len(rest);
        if is_password_key(key) {
            out.push_str(HIDDEN);
        } else {
            out.push_str(&rest[..len]);
        }
        rest = &rest[len..];
    }
}

fn copy_whitespace<'a>(s: &'a str, out: &mut String) -> &'a str {
    let trimmed = s.trim_start();
    out.push_str(&s[..s.len() - trimmed.len()]);
    trimmed
}

/// The length of the value at the start of `s`: a quoted one up to its closing quote, a bare one
/// up to the next white space.
fn value_len(s: &str) -> usize {
    let quoted = s.starts_with('\'');
    let mut chars = s.char_indices().skip(usize::from(quoted));
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' if quoted => return i + 1,
            c if !quoted && c.is_whitespace() => return i,
            _ => {}
        }
    }
    s.len()
}

fn is_password_key(key: &str) -> bool {
    key.trim().eq_ignore_ascii_case("password")
}

/// `%xx` sequences decoded (what tokio-postgres does to a URL's keys), lossily.
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads `url` into a connection config, refusing what cueapi cannot use with a reason that says
/// what to write instead. `shown` is the URL as it may be shown ([`redact`]).
pub(super) fn parse(url: &str, shown: &str) -> Result<Config> {
    let refuse = |reason: String| Error::Open {
        path: shown.to_string(),
        reason,
    };
    let is_url = url.starts_with("postgresql://") || url.starts_with("postgres://");
    if !is_url && url.contains("://") {
        return Err(refuse(
            "not a PostgreSQL URL: it must start with postgresql:// or postgres:// \
             (postgresql://user:password@host:port/database)"
                .into(),
        ));
    }
    let config = Config::from_str(url).map_err(|e| {
        let mut why = e.to_string();
        if let Some(source) = std::error::Error::source(&e) {
            // The parser quotes a character it did not expect, which can be a password's.
            let source = source.to_string();
            let source = source.split(" but got").next().unwrap_or_default();
            why = format!("{why}: {source}");
        }
        let tls = if url.contains("sslmode") {
            " (sslmode may be disable or prefer: cueapi's PostgreSQL store speaks no TLS yet)"
        } else {
            ""
        };
        refuse(format!(
            "cannot read it ({why}){tls}; write it as postgresql://user:password@host:port/database"
        ))
    })?;
    if !matches!(config.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) {
        return Err(refuse(
            "it asks for TLS (sslmode=require), which cueapi's PostgreSQL store does not speak \
             yet: reach the server over a network you trust or a Unix socket, with sslmode=prefer \
             or disable (prefer, the default, connects without TLS)"
                .into(),
        ));
    }
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        return Err(refuse(
            "it names no host: write it as postgresql://user:password@host:port/database".into(),
        ));
    }
    Ok(config)
}

/// Where `config` connects, for messages: `host:port`, or a Unix socket's directory and port;
/// several hosts (tried in turn) separated by commas.
pub(super) fn target(config: &Config) -> String {
    let ports = config.get_ports();
    let port = |i: usize| {
        ports
            .get(i)
            .or_else(|| ports.first())
            .copied()
            .unwrap_or(5432)
    };
    let mut shown: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| match host {
            Host::Tcp(name) if name.contains(':') => format!("[{name}]:{}", port(i)),
            Host::Tcp(name) => format!("{name}:{}", port(i)),
            #[cfg(unix)]
            Host::Unix(dir) => format!("the Unix socket in {} (port {})", dir.display(), port(i)),
        })
        .collect();
    if shown.is_empty() {
        shown = config
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, addr)| match addr {
                std::net::IpAddr::V6(a) => format!("[{a}]:{}", port(i)),
                std::net::IpAddr::V4(a) => format!("{a}:{}", port(i)),
            })
            .collect();
    }
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_user_info_is_hidden() {
        assert_eq!(
            redact("postgresql://app:s3cret@db.example:5433/cueapi"),
            "postgresql://app:***@db.example:5433/cueapi"
        );
        // An unencoded `@` in the password: none of it shows.
        assert_eq!(
            redact("postgres://app:p@ss:w@rd@db/cueapi"),
            "postgres://app:***@db/cueapi"
        );
        // No password: nothing to hide.
        assert_eq!(
            redact("postgresql://postgres@127.0.0.1:5432/cueapi"),
            "postgresql://postgres@127.0.0.1:5432/cueapi"
        );
        assert_eq!(redact("postgresql://db/x"), "postgresql://db/x");
    }

    #[test]
    fn a_password_parameter_is_hidden() {
        assert_eq!(
            redact("postgresql://db/cueapi?user=app&password=s3cret&application_name=x"),
            "postgresql://db/cueapi?user=app&password=***&application_name=x"
        );
        assert_eq!(
            redact("postgresql://db/cueapi?pass%77ord=s3cret"),
            "postgresql://db/cueapi?pass%77ord=***"
        );
    }

    #[test]
    fn a_password_pair_is_hidden() {
        assert_eq!(
            redact("host=db user=app password=s3cret dbname=cueapi"),
            "host=db user=app password=*** dbname=cueapi"
        );
        assert_eq!(
            redact("host=db password = 'two words\\' here' dbname=cueapi"),
            "host=db password = *** dbname=cueapi"
        );
        assert_eq!(redact("host=db PASSWORD=s3cret"), "host=db PASSWORD=***");
        // Unreadable after the key: the rest is hidden.
        assert_eq!(redact("host=db password s3cret"), "host=db password ***");
    }

    #[test]
    fn a_url_that_cannot_be_read_is_refused_without_its_password() {
        for url in [
            "postgresql://app:s3cret@db:notaport/cueapi",
            "postgresql://app:s3cret@db/cueapi?bogus_option=1",
            "host=db password s3cret",
            "mysql://app:s3cret@db/cueapi",
            "postgresql://app:s3cret@/cueapi",
        ] {
            let shown = redact(url);
            let e = parse(url, &shown).expect_err(url);
            let text = format!("{e} {e:?}");
            assert!(!text.contains("s3cret"), "{text}");
            assert!(matches!(e, Error::Open { .. }), "{text}");
            assert!(
                text.contains("postgresql://"),
                "says how to write it: {text}"
            );
        }
    }

    #[test]
    fn tls_is_refused_for_now_and_says_so() {
        for url in [
            "postgresql://db/cueapi?sslmode=require",
            "postgresql://db/cueapi?sslmode=verify-full",
        ] {
            let e = parse(url, url).expect_err(url).to_string();
            assert!(e.contains("TLS"), "{e}");
        }
        assert!(parse("postgresql://db/cueapi?sslmode=prefer", "").is_ok());
        assert!(parse("postgresql://db/cueapi?sslmode=disable", "").is_ok());
    }

    #[test]
    fn the_target_names_hosts_and_ports() {
        let c = parse("postgresql://u@db.example:5433/x", "").unwrap();
        assert_eq!(target(&c), "db.example:5433");
        let c = parse("postgresql://u@a,b:5444/x", "").unwrap();
        assert_eq!(target(&c), "a:5432, b:5444");
        let c = parse("host=/tmp/pg port=6000 dbname=x", "").unwrap();
        assert_eq!(target(&c), "the Unix socket in /tmp/pg (port 6000)");
        let c = parse("postgresql://u@[::1]:5433/x", "").unwrap();
        assert_eq!(target(&c), "[::1]:5433");
    }
}
