//! Email over SMTP: how an alert leaves. [`SmtpConfig`] is read from the `CUEAPI_SMTP_*`
//! variables and checked once; a [`Mailer`] built from it sends one plain-text UTF-8 message per
//! [`Mailer::send`] within a total deadline and says whether a failure is worth retrying
//! ([`MailError::transient`]). When and what to send is the alerting core's business.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CUEAPI_SMTP_HOST` | unset: email off | relay host name or IP address |
//! | `CUEAPI_SMTP_SECURITY` | `starttls` | `starttls` (required, never falls back to plain text), `tls` (implicit TLS, SMTPS) or `none` |
//! | `CUEAPI_SMTP_PORT` | 587 / 465 / 25 by security | relay port |
//! | `CUEAPI_SMTP_USERNAME`, `CUEAPI_SMTP_PASSWORD` | unset: no AUTH | both or neither |
//! | `CUEAPI_SMTP_FROM` | required | `alerts@example.com` or `cueapi <alerts@example.com>` |
//! | `CUEAPI_SMTP_CA_FILE` | unset | PEM certificates trusted besides the system's roots (a private CA) |
//! | `CUEAPI_SMTP_TIMEOUT_SECONDS` | 10 | total deadline of one send (connect, TLS, AUTH, transfer) |
//!
//! An empty variable counts as unset; an unknown `CUEAPI_SMTP_*` variable is an error (a typo
//! such as `CUEAPI_SMTP_USER` would otherwise silently drop the credentials).
//!
//! Security:
//! - Certificates are always verified, against the system's roots through rustls-platform-verifier
//!   (the verifier webhook delivery uses) plus `CUEAPI_SMTP_CA_FILE`; there is no switch to skip it.
//! - Credentials never travel in clear to another machine: with `none` they are refused unless the
//!   host is a loopback address (a local relay).
//! - No header injection: a recipient is one address (a display name is allowed) without control
//!   characters, or the send is refused; line breaks and other control characters in a subject
//!   become spaces (lettre would otherwise keep them inside an RFC 2047 encoded word).
//!
//! Why one connection per message rather than lettre's pool: lettre's async transport has no
//! read or write timeout (only connect has one), so the total deadline is what stops a stalled
//! server, by dropping the send. The pool would take back a connection dropped in the middle of a
//! command (it discards only connections that returned an error) and the next send would read each
//! reply one command late — a rejected message could then be reported as sent. The pool also spawns
//! tokio tasks when dropped, which panics outside a runtime. Alert mail is rare; a handshake per
//! message buys a failure model that is simple and right. At most [`MAX_CONNECTIONS`] sends talk
//! to the relay at once.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use lettre::message::header::{self, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls as LettreTls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::CertificateError;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

pub const HOST: &str = "CUEAPI_SMTP_HOST";
pub const PORT: &str = "CUEAPI_SMTP_PORT";
pub const SECURITY: &str = "CUEAPI_SMTP_SECURITY";
pub const USERNAME: &str = "CUEAPI_SMTP_USERNAME";
pub const PASSWORD: &str = "CUEAPI_SMTP_PASSWORD";
pub const FROM: &str = "CUEAPI_SMTP_FROM";
pub const CA_FILE: &str = "CUEAPI_SMTP_CA_FILE";
pub const TIMEOUT_SECONDS: &str = "CUEAPI_SMTP_TIMEOUT_SECONDS";
/// Every variable this module reads.
pub const VARIABLES: [&str; 8] = [
    HOST,
    PORT,
    SECURITY,
    USERNAME,
    PASSWORD,
    FROM,
    CA_FILE,
    TIMEOUT_SECONDS,
];
const PREFIX: &str = "CUEAPI_SMTP_";

/// The deadline of one send when `CUEAPI_SMTP_TIMEOUT_SECONDS` is unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest deadline accepted.
const MAX_TIMEOUT_SECONDS: f64 = 600.0;
/// Sends talking to the relay at once (relays limit concurrent connections per client).
pub const MAX_CONNECTIONS: usize = 4;

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain text (a local relay).
    None,
    /// Plain text upgraded by STARTTLS, which must succeed (no fallback to plain text).
    StartTls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

impl Security {
    /// The port used when `CUEAPI_SMTP_PORT` is unset: 25, 587 or 465.
    pub fn default_port(self) -> u16 {
        match self {
            Security::None => 25,
            Security::StartTls => 587,
            Security::Tls => 465,
        }
    }

    /// The name `CUEAPI_SMTP_SECURITY` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Security::None => "none",
            Security::StartTls => "starttls",
            Security::Tls => "tls",
        }
    }
}

impl FromStr for Security {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Security::None),
            "starttls" => Ok(Security::StartTls),
            "tls" => Ok(Security::Tls),
            _ => Err(format!("must be none, starttls or tls, not {s:?}")),
        }
    }
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where and how to send; [`SmtpConfig::validate`] states the rules (each error names the variable).
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: String,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SmtpConfig {
    /// Reads the process environment: `Ok(None)` when `CUEAPI_SMTP_HOST` is unset (email off).
    pub fn from_env() -> Result<Option<SmtpConfig>> {
        SmtpConfig::from_vars(std::env::vars_os())
    }

    /// Reads the `CUEAPI_SMTP_*` entries of `vars` (other names are ignored), as [`from_env`]
    /// does for the process environment.
    ///
    /// [`from_env`]: SmtpConfig::from_env
    pub fn from_vars<I, K, V>(vars: I) -> Result<Option<SmtpConfig>>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let mut set: BTreeMap<&'static str, String> = BTreeMap::new();
        for (name, value) in vars {
            let name: OsString = name.into();
            let Some(name) = name.to_str().filter(|n| n.starts_with(PREFIX)) else {
                continue;
            };
            let Some(&known) = VARIABLES.iter().find(|v| **v == name) else {
                return Err(unknown_variable(name));
            };
            let value = value
                .into()
                .into_string()
                .map_err(|_| Error::invalid(known, "is not valid UTF-8"))?;
            if !value.is_empty() {
                set.insert(known, value);
            }
        }

        let Some(host) = set.get(HOST) else {
            if let Some(other) = set.keys().next() {
                return Err(Error::invalid(
                    HOST,
                    format!("is not set, but {other} is: set {HOST} to send email, or unset the other {PREFIX}* variables"),
                ));
            }
            return Ok(None);
        };
        let host = normalise_host(host).map_err(|m| Error::invalid(HOST, m))?;
        let security = match set.get(SECURITY) {
            Some(s) => s.parse().map_err(|m: String| Error::invalid(SECURITY, m))?,
            None => Security::StartTls,
        };
        let port = match set.get(PORT) {
            Some(p) => parse_port(p).map_err(|m| Error::invalid(PORT, m))?,
            None => security.default_port(),
        };
        let from = set
            .get(FROM)
            .ok_or_else(|| Error::invalid(FROM, "must be set (the sender address of alert email)"))?
            .trim()
            .to_owned();
        let timeout = match set.get(TIMEOUT_SECONDS) {
            Some(t) => parse_timeout(t).map_err(|m| Error::invalid(TIMEOUT_SECONDS, m))?,
            None => DEFAULT_TIMEOUT,
        };
        let config = SmtpConfig {
            host,
            port,
            security,
            username: set.get(USERNAME).cloned(),
            password: set.get(PASSWORD).cloned(),
            from,
            ca_file: set.get(CA_FILE).map(PathBuf::from),
            timeout,
        };
        config.validate()?;
        Ok(Some(config))
    }

    /// Checks every field and the rules between them: a valid host, port and sender; username
    /// and password together; no credentials in clear except to a loopback relay; a CA file only
    /// with TLS, readable and holding certificates; a deadline of (0, 600] seconds.
    pub fn validate(&self) -> Result<()> {
        self.check().map(drop)
    }

    /// [`validate`](SmtpConfig::validate), keeping what it parsed.
    fn check(&self) -> Result<Checked> {
        let host = normalise_host(&self.host).map_err(|m| Error::invalid(HOST, m))?;
        if self.port == 0 {
            return Err(Error::invalid(PORT, "must be from 1 to 65535, not 0"));
        }
        let from = parse_mailbox(&self.from).map_err(|m| Error::invalid(FROM, m))?;
        match (&self.username, &self.password) {
            (Some(_), None) => {
                return Err(Error::invalid(
                    PASSWORD,
                    format!("must be set when {USERNAME} is"),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::invalid(
                    USERNAME,
                    format!("must be set when {PASSWORD} is"),
                ))
            }
            (Some(_), Some(_)) if self.security == Security::None && !is_loopback(&host) => {
                return Err(Error::invalid(
                    SECURITY,
                    format!(
                        "is none, which would send {USERNAME} and {PASSWORD} in clear to {host}: \
                         use starttls or tls, or a relay on a loopback address (127.0.0.1, ::1, localhost)"
                    ),
                ));
            }
            _ => {}
        }
        let roots = match &self.ca_file {
            Some(_) if self.security == Security::None => {
                return Err(Error::invalid(
                    CA_FILE,
                    format!("is set but {SECURITY} is none: there is no TLS to verify"),
                ));
            }
            Some(path) => load_ca(path).map_err(|m| Error::invalid(CA_FILE, m))?,
            None => Vec::new(),
        };
        let secs = self.timeout.as_secs_f64();
        if secs <= 0.0 || secs > MAX_TIMEOUT_SECONDS {
            return Err(Error::invalid(
                TIMEOUT_SECONDS,
                format!(
                    "must be more than 0 and at most {MAX_TIMEOUT_SECONDS} seconds, not {secs}"
                ),
            ));
        }
        let server = if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        };
        Ok(Checked {
            host,
            server,
            from,
            roots,
        })
    }
}

/// What [`SmtpConfig::check`] parsed.
struct Checked {
    /// Normalised.
    host: String,
    /// `host:port` (`[v6]:port`), as messages show it.
    server: String,
    from: Mailbox,
    /// The CA file's certificates.
    roots: Vec<CertificateDer<'static>>,
}

/// Why a message was not sent, and whether trying again later may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MailError {
    /// Worth retrying later: an SMTP 4xx reply, a connection or network failure, the deadline.
    /// Not: a 5xx reply, a refused recipient, a certificate that does not verify.
    pub transient: bool,
    /// The relay's reply code, when the failure is a reply.
    pub code: Option<u16>,
    /// What happened, for a person (never contains the password).
    pub message: String,
}

impl MailError {
    fn permanent(message: String) -> MailError {
        MailError {
            transient: false,
            code: None,
            message,
        }
    }
}

/// Sends mail through one relay. Build it once; it is `Send + Sync` and may be shared.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    server: String,
    timeout: Duration,
    slots: Semaphore,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Checks `config` ([`SmtpConfig::validate`]) and prepares TLS (system roots plus the CA
    /// file). Connects to nothing and needs no runtime.
    pub fn new(config: SmtpConfig) -> Result<Mailer, String> {
        let Checked {
            host,
            server,
            from,
            roots,
        } = config.check().map_err(|e| e.to_string())?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(config.port)
            .timeout(Some(config.timeout));
        if config.security != Security::None {
            let mut tls = TlsParameters::builder(host);
            for der in roots {
                let cert = Certificate::from_der(der.to_vec())
                    .map_err(|e| format!("invalid {CA_FILE}: {e}"))?;
                tls = tls.add_root_certificate(cert);
            }
            let tls = tls
                .build()
                .map_err(|e| format!("cannot set up TLS for {server}: {}", chain(&e)))?;
            builder = builder.tls(match config.security {
                Security::Tls => LettreTls::Wrapper(tls),
                Security::StartTls | Security::None => LettreTls::Required(tls),
            });
        }
        if let (Some(user), Some(password)) = (config.username, config.password) {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            server,
            timeout: config.timeout,
            slots: Semaphore::new(MAX_CONNECTIONS),
        })
    }

    /// Sends one plain-text UTF-8 message to `to` (one address, optionally `Name <address>`),
    /// within the configured deadline. Must run on a tokio runtime.
    pub async fn send(&self, to: &str, subject: &str, text_body: &str) -> Result<(), MailError> {
        let message = compose(&self.from, to, subject, text_body)?;
        let attempt = async {
            let _slot = self
                .slots
                .acquire()
                .await
                .map_err(|_| MailError::permanent("the mailer is closed".into()))?;
            self.transport
                .send(message)
                .await
                .map(drop)
                .map_err(|e| classify(&e, &self.server))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(MailError {
                transient: true,
                code: None,
                message: format!(
                    "the SMTP server {} did not finish within {} s ({TIMEOUT_SECONDS})",
                    self.server,
                    self.timeout.as_secs_f64()
                ),
            }),
        }
    }
}

/// The message: From, To, Subject (control characters made spaces), Date, Message-ID,
/// `Auto-Submitted: auto-generated` (RFC 3834: no vacation replies to alerts), MIME 1.0
/// `text/plain; charset=utf-8` in 7bit, quoted-printable or base64, whichever is smallest (so
/// the relay needs neither 8BITMIME nor SMTPUTF8).
fn compose(from: &Mailbox, to: &str, subject: &str, body: &str) -> Result<Message, MailError> {
    let to = parse_mailbox(to)
        .map_err(|m| MailError::permanent(format!("invalid recipient {to:?}: {m}")))?;
    let id = format!(
        "<{:016x}.{}@{}>",
        rand::random::<u64>(),
        crate::clock::system_now(),
        from.email.domain()
    );
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(clean_subject(subject))
        .message_id(Some(id))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_owned(),
        ))
        .header(header::MIME_VERSION_1_0)
        .header(ContentType::TEXT_PLAIN)
        .body(text_body(body))
        .map_err(|e| MailError::permanent(format!("cannot build the message: {e}")))
}

/// The body with CRLF line endings in its best transfer encoding, less one final CRLF: the SMTP
/// transfer ends the data with `CRLF . CRLF`, whose CRLF ends the last line, and lettre writes it
/// whether or not the data already ends a line. Without this every body would arrive with one more
/// empty line (and a `SinglePart` adds yet another).
fn text_body(text: &str) -> Body {
    let body = Body::new(text.to_owned());
    let encoding = body.encoding();
    let mut bytes = body.into_vec();
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    }
    Body::dangerous_pre_encoded(bytes, encoding)
}

/// Characters that end a header line somewhere: C0/C1 controls (CR, LF, NEL…) and the Unicode
/// line and paragraph separators.
fn breaks_line(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// The subject on one line: control characters become spaces, and runs of spaces one space.
fn clean_subject(subject: &str) -> String {
    let spaced: String = subject
        .chars()
        .map(|c| if breaks_line(c) { ' ' } else { c })
        .collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One address, `user@domain` or `Name <user@domain>` (lettre's parser, which refuses lists and
/// trailing text), with a message that says what is wrong.
fn parse_mailbox(raw: &str) -> Result<Mailbox, String> {
    if raw.chars().any(breaks_line) {
        return Err("contains a line break or another control character".into());
    }
    let s = raw.trim();
    if s.is_empty() {
        return Err("is empty".into());
    }
    s.parse::<Mailbox>().map_err(|e| {
        format!("{s:?} is not one email address (user@domain or Name <user@domain>): {e}")
    })
}

/// A host name or IP address (brackets around IPv6 removed), lower-cased.
fn normalise_host(raw: &str) -> Result<String, String> {
    let h = raw.trim();
    if h.is_empty() {
        return Err("is empty".into());
    }
    if h.contains("://") {
        return Err(format!(
            "must be a host name or IP address, not a URL ({h:?}): the port goes in {PORT}, TLS in {SECURITY}"
        ));
    }
    let bare = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    if h.contains(':') {
        return Err(format!(
            "{h:?} looks like host:port: put the port in {PORT}"
        ));
    }
    let name = h.strip_suffix('.').unwrap_or(h);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("{h:?} is not a host name or IP address"));
    }
    Ok(name.to_ascii_lowercase())
}

/// `localhost` or a loopback IP address: the only hosts credentials may reach in clear.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || normalise_host(host)
            .ok()
            .and_then(|h| h.parse::<IpAddr>().ok())
            .is_some_and(|ip| ip.is_loopback())
}

fn parse_port(raw: &str) -> Result<u16, String> {
    match raw.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "must be a port number from 1 to 65535, not {raw:?}"
        )),
    }
}

fn parse_timeout(raw: &str) -> Result<Duration, String> {
    let secs: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("must be a number of seconds, not {raw:?}"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= MAX_TIMEOUT_SECONDS) {
        return Err(format!(
            "must be more than 0 and at most {MAX_TIMEOUT_SECONDS} seconds, not {raw:?}"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The certificates of a PEM file, each checked to be usable as a trust anchor.
fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown} is not a valid PEM file: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    let mut check = rustls::RootCertStore::empty();
    for cert in &certs {
        check.add(cert.clone()).map_err(|e| {
            format!("{shown} holds a certificate that cannot be a trust anchor: {e}")
        })?;
    }
    Ok(certs)
}

fn unknown_variable(name: &str) -> Error {
    let close = VARIABLES
        .iter()
        .find(|v| v.starts_with(name) || name.starts_with(**v))
        .map(|v| format!(" (did you mean {v}?)"))
        .unwrap_or_default();
    Error::invalid(
        "environment",
        format!(
            "{name} is not a cueapi setting{close}; the SMTP settings are {}",
            VARIABLES.join(", ")
        ),
    )
}

/// The error and its causes on one line, skipping a cause its parent already shows.
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = cause.source();
    }
    out
}

/// The rustls error behind a failed handshake, if that is what failed (tokio-rustls wraps it
/// in an `io::Error`, whose `source()` skips it).
fn tls_cause<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        cur = err.source();
    }
    None
}

/// Sorts lettre's error into worth-retrying or not, with a message naming the relay.
fn classify(e: &lettre::transport::smtp::Error, server: &str) -> MailError {
    let detail = e.source().map(chain).unwrap_or_else(|| e.to_string());
    if let Some(code) = e.status() {
        let code = u16::from(code);
        let hint = match code {
            535 => format!(" (authentication failed: check {USERNAME} and {PASSWORD})"),
            530 => format!(" (the relay wants authentication: set {USERNAME} and {PASSWORD})"),
            _ => String::new(),
        };
        return MailError {
            transient: e.is_transient(),
            code: Some(code),
            message: format!("the SMTP server {server} answered {code} {detail}{hint}"),
        };
    }
    if let Some(tls) = tls_cause(e) {
        let (transient, hint) = match tls {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => (
                false,
                format!(" ({HOST} must be a name the relay's certificate is issued for)"),
            ),
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            ) => (
                false,
                format!(" (is the relay's CA among the system's roots or in {CA_FILE}?)"),
            ),
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                (false, String::new())
            }
            rustls::Error::PeerIncompatible(_) | rustls::Error::UnsupportedNameType => {
                (false, String::new())
            }
            _ => (true, String::new()),
        };
        return MailError {
            transient,
            code: None,
            message: format!("TLS with the SMTP server {server} failed: {tls}{hint}"),
        };
    }
    let (transient, what) = if e.is_client() {
        (false, "cannot send through")
    } else if e.is_transport_shutdown() {
        (false, "the transport is shut down for")
    } else if e.is_response() {
        (true, "unreadable answer from")
    } else if e.is_tls() {
        (false, "TLS failed with")
    } else {
        (true, "cannot reach")
    };
    MailError {
        transient,
        code: None,
        message: format!("{what} the SMTP server {server}: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Result<Option<SmtpConfig>> {
        SmtpConfig::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn base<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut v = vec![(HOST, "mail.example.com"), (FROM, "alerts@example.com")];
        v.extend_from_slice(extra);
        v
    }

    /// The variable an error names, and its message.
    fn refused(pairs: &[(&str, &str)]) -> (&'static str, String) {
        match vars(pairs) {
            Err(Error::Invalid { field, message }) => (field, message),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn pem_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn unset_host_means_email_is_off() {
        assert_eq!(vars(&[]).unwrap(), None);
        assert_eq!(vars(&[("PATH", "/bin"), ("CUEAPI_DB", "x")]).unwrap(), None);
        assert_eq!(vars(&[(HOST, "")]).unwrap(), None, "empty counts as unset");
    }

    #[test]
    fn other_smtp_variables_without_a_host_are_an_error() {
        let (field, message) = refused(&[(FROM, "a@example.com")]);
        assert_eq!(field, HOST);
        assert!(message.contains(FROM), "{message}");
    }

    #[test]
    fn defaults() {
        let c = vars(&base(&[])).unwrap().unwrap();
        assert_eq!(c.host, "mail.example.com");
        assert_eq!(c.security, Security::StartTls);
        assert_eq!(c.port, 587);
        assert_eq!(c.username, None);
        assert_eq!(c.password, None);
        assert_eq!(c.ca_file, None);
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.from, "alerts@example.com");
    }

    #[test]
    fn port_follows_security() {
        let port = |s: &'static str| vars(&base(&[(SECURITY, s)])).unwrap().unwrap().port;
        assert_eq!(port("starttls"), 587);
        assert_eq!(port("TLS"), 465);
        assert_eq!(port(" none "), 25);
        let c = vars(&base(&[(SECURITY, "tls"), (PORT, "2465")]))
            .unwrap()
            .unwrap();
        assert_eq!((c.security, c.port), (Security::Tls, 2465));
    }

    #[test]
    fn every_bad_value_names_its_variable() {
        let cases: &[(&str, &str, &str)] = &[
            (PORT, "0", "1 to 65535"),
            (PORT, "65536", "1 to 65535"),
            (PORT, "smtp", "1 to 65535"),
            (SECURITY, "ssl", "none, starttls or tls"),
            (TIMEOUT_SECONDS, "0", "more than 0"),
            (TIMEOUT_SECONDS, "-1", "more than 0"),
            (TIMEOUT_SECONDS, "NaN", "more than 0"),
            (TIMEOUT_SECONDS, "10s", "number of seconds"),
            (TIMEOUT_SECONDS, "601", "at most 600"),
            (FROM, "not an address", "not one email address"),
            (
                FROM,
                "a@example.com, b@example.com",
                "not one email address",
            ),
            (FROM, "a@example.com\r\nBcc: x@example.com", "line break"),
            (HOST, "smtp://mail.example.com", "not a URL"),
            (HOST, "mail.example.com:587", "host:port"),
            (HOST, "mail example.com", "not a host name"),
            (HOST, "mail..example.com", "not a host name"),
        ];
        for (name, value, expected) in cases {
            let mut pairs = base(&[]);
            pairs.retain(|(k, _)| k != name);
            pairs.push((name, value));
            let (field, message) = refused(&pairs);
            assert_eq!(field, *name, "{name}={value:?}: {message}");
            assert!(message.contains(expected), "{name}={value:?}: {message}");
        }
    }

    #[test]
    fn from_is_required_and_may_have_a_name() {
        let (field, _) = refused(&[(HOST, "mail.example.com")]);
        assert_eq!(field, FROM);
        let c = vars(&[
            (HOST, "h.example"),
            (FROM, "\"cueapi, alerts\" <a@example.com>"),
        ])
        .unwrap()
        .unwrap();
        let mailbox = parse_mailbox(&c.from).unwrap();
        assert_eq!(mailbox.name.as_deref(), Some("cueapi, alerts"));
        assert_eq!(mailbox.email.to_string(), "a@example.com");
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(
            normalise_host(" Mail.Example.COM. ").unwrap(),
            "mail.example.com"
        );
        assert_eq!(normalise_host("[::1]").unwrap(), "::1");
        assert_eq!(normalise_host("127.0.0.1").unwrap(), "127.0.0.1");
        let c = vars(&[(HOST, "[::1]"), (FROM, "a@example.com")])
            .unwrap()
            .unwrap();
        assert_eq!(c.check().unwrap().server, "[::1]:587");
    }

    #[test]
    fn username_and_password_go_together() {
        let (field, _) = refused(&base(&[(USERNAME, "u")]));
        assert_eq!(field, PASSWORD);
        let (field, _) = refused(&base(&[(PASSWORD, "p")]));
        assert_eq!(field, USERNAME);
    }

    #[test]
    fn credentials_never_go_in_clear_to_another_host() {
        let (field, message) = refused(&base(&[
            (SECURITY, "none"),
            (USERNAME, "u"),
            (PASSWORD, "p"),
        ]));
        assert_eq!(field, SECURITY);
        assert!(
            message.contains("in clear to mail.example.com"),
            "{message}"
        );
        assert!(message.contains("loopback"), "{message}");
        for host in ["127.0.0.1", "127.5.6.7", "::1", "[::1]", "LOCALHOST"] {
            let c = vars(&[
                (HOST, host),
                (FROM, "a@example.com"),
                (SECURITY, "none"),
                (USERNAME, "u"),
                (PASSWORD, "p"),
            ]);
            assert!(c.is_ok(), "{host}: {c:?}");
        }
        for host in ["10.0.0.1", "localhost.example.com", "::ffff:127.0.0.1"] {
            let (field, _) = refused(&[
                (HOST, host),
                (FROM, "a@example.com"),
                (SECURITY, "none"),
                (USERNAME, "u"),
                (PASSWORD, "p"),
            ]);
            assert_eq!(field, SECURITY, "{host}");
        }
        // Without credentials, plain text to a remote relay is the operator's choice.
        assert!(vars(&base(&[(SECURITY, "none")])).is_ok());
    }

    #[test]
    fn unknown_variables_are_refused_with_a_suggestion() {
        let (field, message) = refused(&base(&[("CUEAPI_SMTP_USER", "u")]));
        assert_eq!(field, "environment");
        assert!(
            message.contains("CUEAPI_SMTP_USER is not a cueapi setting"),
            "{message}"
        );
        assert!(
            message.contains("did you mean CUEAPI_SMTP_USERNAME?"),
            "{message}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_non_utf8_value_names_its_variable() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![0x66, 0xff]);
        let r = SmtpConfig::from_vars([
            (OsString::from(HOST), OsString::from("h.example")),
            (OsString::from(FROM), bad),
        ]);
        assert!(
            matches!(r, Err(Error::Invalid { field: FROM, .. })),
            "{r:?}"
        );
    }

    #[test]
    fn ca_file_must_hold_certificates_and_needs_tls() {
        let missing = "/nonexistent/ca.pem";
        let (field, message) = refused(&base(&[(CA_FILE, missing)]));
        assert_eq!(field, CA_FILE);
        assert!(
            message.contains("cannot read /nonexistent/ca.pem"),
            "{message}"
        );

        let empty = pem_file("no certificates here\n");
        let path = empty.path().to_str().unwrap().to_owned();
        let (field, message) = refused(&base(&[(CA_FILE, path.as_str())]));
        assert_eq!(field, CA_FILE);
        assert!(message.contains("holds no PEM certificate"), "{message}");

        let garbage = pem_file("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let path = garbage.path().to_str().unwrap().to_owned();
        let (field, message) = refused(&base(&[(CA_FILE, path.as_str())]));
        assert_eq!(field, CA_FILE);
        assert!(message.contains("cannot be a trust anchor"), "{message}");

        let (field, message) = refused(&base(&[(CA_FILE, path.as_str()), (SECURITY, "none")]));
        assert_eq!(field, CA_FILE);
        assert!(message.contains("no TLS to verify"), "{message}");
    }

    #[test]
    fn debug_hides_the_password() {
        let c = vars(&base(&[(USERNAME, "u"), (PASSWORD, "hunter2")]))
            .unwrap()
            .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn a_mailer_needs_no_network_or_runtime_to_build() {
        let c = vars(&base(&[(SECURITY, "none")])).unwrap().unwrap();
        let m = Mailer::new(c).unwrap();
        assert!(format!("{m:?}").contains("mail.example.com:25"));
        let mut bad = vars(&base(&[])).unwrap().unwrap();
        bad.port = 0;
        assert!(Mailer::new(bad).unwrap_err().contains(PORT));
    }

    fn formatted(to: &str, subject: &str, body: &str) -> String {
        let from = parse_mailbox("cueapi <alerts@example.com>").unwrap();
        let message = compose(&from, to, subject, body).unwrap();
        String::from_utf8(message.formatted()).unwrap()
    }

    fn headers(text: &str) -> Vec<&str> {
        text.split("\r\n\r\n")
            .next()
            .unwrap()
            .split("\r\n")
            .collect()
    }

    #[test]
    fn a_subject_cannot_inject_headers() {
        let text = formatted(
            "ops@example.com",
            "cue failed\r\nBcc: evil@example.com\n\nbody?\u{2028}x\u{85}y",
            "hi",
        );
        let hs = headers(&text);
        assert!(
            hs.contains(&"Subject: cue failed Bcc: evil@example.com body? x y"),
            "{hs:?}"
        );
        assert!(!hs.iter().any(|h| h.starts_with("Bcc")), "{hs:?}");
        assert_eq!(clean_subject(" a \r\n b\t c "), "a b c");
        assert_eq!(clean_subject("\r\n"), "");
    }

    #[test]
    fn a_recipient_is_one_address_without_line_breaks() {
        let from = parse_mailbox("alerts@example.com").unwrap();
        for bad in [
            "ops@example.com\r\nBcc: evil@example.com",
            "ops@example.com\n",
            "ops@example.com, evil@example.com",
            "ops@example.com evil@example.com",
            "Ops <ops@example.com",
            "",
            "nobody",
        ] {
            let e = compose(&from, bad, "s", "b").unwrap_err();
            assert!(!e.transient, "{bad:?}");
            assert!(e.message.starts_with("invalid recipient"), "{}", e.message);
        }
        let text = formatted("Ops Team <ops@example.com>", "s", "b");
        assert!(
            headers(&text).contains(&"To: \"Ops Team\" <ops@example.com>"),
            "{text}"
        );
    }

    #[test]
    fn the_message_is_plain_utf8_text_marked_automatic() {
        let text = formatted("ops@example.com", "Größe ✓", "Grüße\n.\nline");
        let hs = headers(&text);
        assert!(hs.contains(&"From: cueapi <alerts@example.com>"), "{hs:?}");
        assert!(hs.contains(&"Auto-Submitted: auto-generated"), "{hs:?}");
        assert!(hs.contains(&"MIME-Version: 1.0"), "{hs:?}");
        assert!(
            hs.contains(&"Content-Type: text/plain; charset=utf-8"),
            "{hs:?}"
        );
        assert!(hs.iter().any(|h| h.starts_with("Date: ")), "{hs:?}");
        assert!(
            hs.iter()
                .any(|h| h.starts_with("Message-ID: <") && h.ends_with("@example.com>")),
            "{hs:?}"
        );
        assert!(text.is_ascii(), "headers and body are encoded: {text}");
    }
}
