//! `/v1/auth`: registration, the caller's account, key and webhook-secret rotation.
//!
//! Who may register is a server setting ([`Registration`]): nobody, anyone, or — the default on a
//! loopback address — only clients on the server's own machine. "On this machine" is checked, not
//! assumed from where the server listens: the peer must be a loopback address, every address a
//! reverse proxy reports (`X-Forwarded-For`, `X-Real-IP`, `Forwarded`) must be one too (a proxy on
//! the same machine makes every peer loopback), and the `Host` must name this server by address,
//! `localhost` or the public URL's host — a page whose own name resolves to 127.0.0.1 (DNS
//! rebinding) sends its own name. The body must be `application/json` (see
//! [`super::read_body`]), which a cross-site form or `fetch` cannot send without asking first.
//! Addresses registered while registration is open to anyone are not verified, so alert email
//! is never sent to them ([`users::mark_unverified`]).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use serde_json::json;

use super::{ok, read_object, ApiError, ApiResult, AppState, Auth};
use crate::engine::Credential;
use crate::store::users;

/// Who may create a user with `POST /v1/auth/register`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// Nobody: users are created by the operator (`cueapi keys create`).
    Closed,
    /// Clients on the server's own machine only (the default on a loopback address).
    Local,
    /// Anyone who can reach the server; their email addresses are not verified.
    Open,
}

impl Registration {
    /// `closed`, `local` or `open`.
    pub fn parse(word: &str) -> Option<Registration> {
        match word {
            "closed" => Some(Registration::Closed),
            "local" => Some(Registration::Local),
            "open" => Some(Registration::Open),
            _ => None,
        }
    }
}

fn local_only(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "registration_local_only", message)
}

/// Refuses a registration that is not shown to come from this machine (see the module docs).
fn check_local(req: &Request, public_host: Option<&str>) -> ApiResult<()> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if !peer.is_some_and(is_loopback) {
        return Err(local_only(
            "Registration is open only to clients on this server's machine".into(),
        ));
    }
    if let Some(hop) = forwarded_hops(req.headers()).find(|hop| !hop.is_some_and(is_loopback)) {
        let from = hop.map_or_else(
            || "an address it did not name".to_string(),
            |ip| ip.to_string(),
        );
        return Err(local_only(format!(
            "Registration is open only to clients on this server's machine, and a proxy forwarded this request from {from}; ask the operator for a key (`cueapi keys create`)"
        )));
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if !host.is_some_and(|h| host_allowed(h, public_host)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_host",
            "The Host header names neither this server's address, localhost nor its public URL: \
             a page served under another name (DNS rebinding) may not register",
        ));
    }
    Ok(())
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Every client address a reverse proxy reported, in any of the usual headers; `None` for one
/// that is not an address (`unknown`, an obfuscated name).
fn forwarded_hops(headers: &HeaderMap) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    let listed = |name: &'static str| {
        headers
            .get_all(name)
            .iter()
            .flat_map(|v| match v.to_str() {
                Ok(text) => text.split(',').map(|s| Some(s.to_string())).collect(),
                Err(_) => vec![None],
            })
            .map(|hop| hop.as_deref().and_then(hop_address))
    };
    let forwarded = headers
        .get_all(header::FORWARDED)
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(text) => text
                .split(',')
                .flat_map(|element| element.split(';'))
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| hop_address(v.trim().trim_matches('"')))
                })
                .collect(),
            Err(_) => vec![None],
        });
    listed("x-forwarded-for")
        .chain(listed("x-real-ip"))
        .chain(forwarded)
}

/// The address in one hop: `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1` or `[2001:db8::1]:443`.
fn hop_address(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse().ok())
        })
}

/// The host part of a `Host` value or URL authority, lower-cased, without port or trailing dot.
fn host_part(authority: &str) -> String {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        match a.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => a,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a registration's `Host` is one this server answers to without DNS: an IP address,
/// `localhost` (and its subdomains, which resolve to loopback by definition), or the host of the
/// public URL.
fn host_allowed(host: &str, public_host: Option<&str>) -> bool {
    let h = host_part(host);
    !h.is_empty()
        && (h.parse::<IpAddr>().is_ok()
            || h == "localhost"
            || h.ends_with(".localhost")
            || public_host.is_some_and(|p| host_part(p) == h))
}

/// The host of a URL (`https://cues.example.com:8443/base` → `cues.example.com:8443`).
pub(super) fn url_authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!authority.is_empty()).then_some(authority)
}

pub(super) async fn register(State(st): State<AppState>, req: Request) -> ApiResult {
    match st.opts.registration {
        Registration::Closed => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "registration_closed",
                "Registration is closed on this server; ask its operator for a key (`cueapi keys create`)",
            ))
        }
        Registration::Local => {
            check_local(&req, st.opts.public_url.as_deref().and_then(url_authority))?;
        }
        Registration::Open => {}
    }
    let verified = st.opts.registration != Registration::Open;
    let body = read_object(req, true).await?;
    let email = match body.get("email") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::field("body.email", "must be a string")),
        None => return Err(ApiError::field("body.email", "is required")),
    };
    let (user, key) = st
        .engine
        .register(&email, verified)
        .await
        .map_err(|e| ApiError::from(e).conflict_code("duplicate_email"))?;
    ok(
        StatusCode::CREATED,
        json!({"api_key": key, "email": user.email, "webhook_secret": user.webhook_secret}),
    )
}

pub(super) async fn me(State(st): State<AppState>, Auth(user): Auth) -> ApiResult {
    let now = st.engine.clock().now();
    let month = month_start(now);
    let (active, all, executions) = st.engine.read(|c| c.user_usage(&user.id, month))?;
    let alert_url = st.engine.read(|c| c.alert_webhook_url(&user.id))?;
    ok(
        StatusCode::OK,
        json!({
            "email": user.email,
            "plan": "self-hosted",
            "active_cues": active,
            "cues": all,
            // Nothing is capped: the word, which the official CLI prints as "3 / unlimited".
            "active_cue_limit": "unlimited",
            "executions_this_month": executions,
            "monthly_execution_limit": "unlimited",
            "has_webhook_secret": true,
            "alert_webhook_url": alert_url,
            "api_key_prefix": user.api_key_prefix,
            "created_at": super::iso(user.created_at),
        }),
    )
}

pub(super) fn month_start(now: crate::clock::Millis) -> crate::clock::Millis {
    use chrono::{Datelike, TimeZone};
    let dt = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default();
    chrono::Utc
        .with_ymd_and_hms(dt.year(), dt.month(), 1, 0, 0, 0)
        .single()
        .map_or(0, |d| d.timestamp_millis())
}

/// Replaces a credential at once (after the destructive-action confirmation) and answers the new
/// one under `name`, with `revoked` true.
async fn rotate(
    st: AppState,
    user: users::User,
    headers: &HeaderMap,
    which: Credential,
    name: &str,
    revoked: &str,
) -> ApiResult {
    super::confirmed(
        headers,
        "This replaces a credential at once; send the header X-Confirm-Destructive: true to confirm",
    )?;
    let fresh = st.engine.rotate(&user.id, which).await?;
    let mut out = json!({ revoked: true });
    out[name] = fresh.into();
    ok(StatusCode::OK, out)
}

pub(super) async fn regenerate_key(
    State(st): State<AppState>,
    Auth(user): Auth,
    headers: HeaderMap,
) -> ApiResult {
    rotate(
        st,
        user,
        &headers,
        Credential::ApiKey,
        "api_key",
        "previous_key_revoked",
    )
    .await
}

pub(super) async fn webhook_secret(Auth(user): Auth) -> ApiResult {
    ok(
        StatusCode::OK,
        json!({"webhook_secret": user.webhook_secret}),
    )
}

pub(super) async fn regenerate_secret(
    State(st): State<AppState>,
    Auth(user): Auth,
    headers: HeaderMap,
) -> ApiResult {
    rotate(
        st,
        user,
        &headers,
        Credential::WebhookSecret,
        "webhook_secret",
        "previous_secret_revoked",
    )
    .await
}

/// `PATCH /v1/auth/me`: sets the alert webhook (`alert_webhook_url`; `""` or null clears it).
/// The URL is checked like a callback URL; its signing secret is made on first use.
pub(super) async fn update_me(
    State(st): State<AppState>,
    Auth(user): Auth,
    req: Request,
) -> ApiResult {
    let body = read_object(req, true).await?;
    if let Some(k) = body.keys().find(|k| k.as_str() != "alert_webhook_url") {
        return Err(ApiError::field(
            format!("body.{k}"),
            "unknown field; only alert_webhook_url can be changed here",
        ));
    }
    let url = match body.get("alert_webhook_url") {
        None => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_fields",
                "Send alert_webhook_url (a URL, or \"\" to clear it)",
            ))
        }
        Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => None,
        Some(serde_json::Value::String(s)) => Some(s.trim().to_string()),
        Some(_) => {
            return Err(ApiError::field(
                "body.alert_webhook_url",
                "must be a URL string (or \"\" to clear it)",
            ))
        }
    };
    let mut warning = None;
    if let Some(u) = &url {
        warning = super::cues::check_url(&st, "alert_webhook_url", u, "invalid_alert_webhook_url")
            .await?;
    }
    let now = st.engine.set_alert_webhook(&user.id, url.clone()).await?;
    ok(
        StatusCode::OK,
        json!({"updated_at": super::iso(now), "alert_webhook_url": url, "warning": warning}),
    )
}

pub(super) async fn alert_secret(State(st): State<AppState>, Auth(user): Auth) -> ApiResult {
    let (_, secret) = st.engine.alert_webhook(&user.id).await?;
    ok(StatusCode::OK, json!({"alert_webhook_secret": secret}))
}

pub(super) async fn regenerate_alert_secret(
    State(st): State<AppState>,
    Auth(user): Auth,
    headers: HeaderMap,
) -> ApiResult {
    rotate(
        st,
        user,
        &headers,
        Credential::AlertWebhookSecret,
        "alert_webhook_secret",
        "previous_secret_revoked",
    )
    .await
}

// -- routes ------------------------------------------------------------------------------------

pub(super) fn routes() -> Vec<super::spec::Route> {
    use super::spec::{get, instant, obj, patch, post, tagged, text_or_null};
    let confirm = json!({"type": "string", "enum": ["true"]});
    let confirm_text = "`true` to confirm: the credential is replaced at once";
    let secret = json!({"type": "string", "pattern": "^whsec_[0-9a-f]{64}$"});
    let rotated = |name: &str, revoked: &str| {
        let mut props = serde_json::Map::new();
        props.insert(name.into(), json!({"type": "string"}));
        props.insert(revoked.into(), json!({"const": true}));
        obj(props.into())
    };
    tagged(
        "account",
        vec![
            post("/v1/auth/register", "register", "Create a user and its API key", register)
                .public()
                .describe("Open only when the server allows it: by default, on a loopback address, only to clients on the server's machine (a loopback peer, no forwarded address from elsewhere, a Host naming the server by address, localhost or its public URL); the key is shown once. The body must be application/json.")
                .body_example(
                    json!({"type": "object", "properties": {"email": {"type": "string", "format": "email"}},
                           "required": ["email"]}),
                    true,
                    json!({"email": "ops@example.com"}),
                )
                .answers(201, "The user, its key and its webhook signing secret", obj(json!({
                    "api_key": {"type": "string"},
                    "email": {"type": "string"},
                    "webhook_secret": secret,
                })))
                .errors(403, &["registration_closed", "registration_local_only", "invalid_host"])
                .errors(409, &["duplicate_email"]),
            get("/v1/auth/me", "getMe", "Your account", me)
                .answers(200, "The account", obj(json!({
                    "email": {"type": "string"},
                    "plan": {"const": "self-hosted"},
                    "active_cues": {"type": "integer"},
                    "cues": {"type": "integer"},
                    "active_cue_limit": {"const": "unlimited", "description": "Nothing is capped on a self-hosted server"},
                    "executions_this_month": {"type": "integer"},
                    "monthly_execution_limit": {"const": "unlimited", "description": "Nothing is capped on a self-hosted server"},
                    "has_webhook_secret": {"const": true},
                    "alert_webhook_url": text_or_null(),
                    "api_key_prefix": {"type": "string"},
                    "created_at": instant(),
                }))),
            patch("/v1/auth/me", "updateMe", "Set or clear your alert webhook", update_me)
                .body_example(
                    obj(json!({"alert_webhook_url": {
                        "type": ["string", "null"],
                        "description": "An http(s) URL, checked like a callback URL; \"\" or null clears it",
                    }})),
                    true,
                    json!({"alert_webhook_url": ""}),
                )
                .answers(200, "Changed", obj(json!({
                    "updated_at": instant(),
                    "alert_webhook_url": text_or_null(),
                    "warning": text_or_null(),
                })))
                .errors(400, &["invalid_alert_webhook_url"])
                .errors(422, &["no_fields"]),
            get("/v1/auth/alert-webhook-secret", "getAlertWebhookSecret",
                "The secret alert webhooks are signed with (made on first use)", alert_secret)
                .answers(200, "The secret", obj(json!({"alert_webhook_secret": {"type": "string"}}))),
            post("/v1/auth/alert-webhook-secret/regenerate", "regenerateAlertWebhookSecret",
                 "Replace the alert webhook secret", regenerate_alert_secret)
                .header("X-Confirm-Destructive", confirm_text, confirm.clone())
                .answers(200, "The new secret", rotated("alert_webhook_secret", "previous_secret_revoked"))
                .errors(400, &["confirmation_required"]),
            post("/v1/auth/key/regenerate", "regenerateApiKey", "Replace your API key", regenerate_key)
                .describe("The old key stops working at once.")
                .header("X-Confirm-Destructive", confirm_text, confirm.clone())
                .answers(200, "The new key", rotated("api_key", "previous_key_revoked"))
                .errors(400, &["confirmation_required"]),
            get("/v1/auth/webhook-secret", "getWebhookSecret", "The secret your webhooks are signed with", webhook_secret)
                .answers(200, "The secret", obj(json!({"webhook_secret": secret}))),
            post("/v1/auth/webhook-secret/regenerate", "regenerateWebhookSecret",
                 "Replace the webhook signing secret", regenerate_secret)
                .header("X-Confirm-Destructive", confirm_text, confirm)
                .answers(200, "The new secret", rotated("webhook_secret", "previous_secret_revoked"))
                .errors(400, &["confirmation_required"]),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hops(pairs: &[(&str, &str)]) -> Vec<Option<IpAddr>> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        forwarded_hops(&h).collect()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn every_forwarded_address_is_read() {
        assert_eq!(hops(&[]), vec![]);
        assert_eq!(
            hops(&[("x-forwarded-for", "127.0.0.1, 203.0.113.9:443")]),
            vec![ip("127.0.0.1"), ip("203.0.113.9")]
        );
        assert_eq!(hops(&[("x-real-ip", "::1")]), vec![ip("::1")]);
        assert_eq!(
            hops(&[(
                "forwarded",
                r#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711""#
            )]),
            vec![ip("192.0.2.60"), ip("2001:db8:cafe::17")]
        );
        assert_eq!(
            hops(&[("forwarded", "for=unknown"), ("x-forwarded-for", "_hidden")]),
            vec![None, None]
        );
    }

    #[test]
    fn hosts_that_need_no_dns_are_allowed() {
        for yes in [
            "127.0.0.1:8000",
            "[::1]:8000",
            "localhost",
            "LOCALHOST:8000",
            "app.localhost:1",
            "10.1.2.3",
            "cues.example.com:8443",
            "cues.example.com.",
        ] {
            assert!(host_allowed(yes, Some("cues.example.com:8443")), "{yes}");
        }
        for no in [
            "evil.example",
            "evil.example:8000",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "",
            "cues.example.com.evil",
        ] {
            assert!(!host_allowed(no, Some("cues.example.com")), "{no}");
        }
        assert!(!host_allowed("cues.example.com", None));
        assert_eq!(
            url_authority("https://u:p@cues.example.com:8443/base?x"),
            Some("cues.example.com:8443")
        );
    }
}
