//! `/v1/auth`: registration, the caller's account, key and webhook-secret rotation.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;

use super::{ok, read_object, ApiError, ApiResult, AppState, Auth};
use crate::store::{alerts, users};

pub(super) async fn register(State(st): State<AppState>, req: Request) -> ApiResult {
    if !st.opts.allow_register {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "registration_closed",
            "Registration is closed on this server; ask its operator for a key (`cueapi keys create`)",
        ));
    }
    let body = read_object(req, true).await?;
    let email = match body.get("email") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::field("body.email", "must be a string")),
        None => return Err(ApiError::field("body.email", "is required")),
    };
    let now = st.engine.clock().now();
    let (user, key) = st
        .engine
        .store()
        .write_async(move |c| users::create(c, &email, now))
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
    let (active, all, executions) = st
        .engine
        .store()
        .read(|c| users::usage(c, &user.id, month))?;
    let alert_url: Option<String> = st.engine.store().read(|c| {
        Ok(c.query_row(
            "SELECT alert_webhook_url FROM users WHERE id = ?1",
            [&user.id],
            |r| r.get(0),
        )?)
    })?;
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
    replace: fn(&rusqlite::Connection, &str, crate::clock::Millis) -> crate::Result<String>,
    name: &str,
    revoked: &str,
) -> ApiResult {
    super::confirmed(
        headers,
        "This replaces a credential at once; send the header X-Confirm-Destructive: true to confirm",
    )?;
    let now = st.engine.clock().now();
    let fresh = st
        .engine
        .store()
        .write_async(move |c| replace(c, &user.id, now))
        .await?;
    let mut out = json!({ revoked: true });
    out[name] = fresh.into();
    ok(StatusCode::OK, out)
}

pub(super) async fn regenerate_key(
    State(st): State<AppState>,
    Auth(user): Auth,
    headers: HeaderMap,
) -> ApiResult {
    let replace = users::regenerate_key;
    rotate(
        st,
        user,
        &headers,
        replace,
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
    let replace = users::regenerate_secret;
    rotate(
        st,
        user,
        &headers,
        replace,
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
    let now = st.engine.clock().now();
    let stored = url.clone();
    st.engine
        .store()
        .write_async(move |c| alerts::set_alert_webhook(c, &user.id, stored.as_deref(), now))
        .await?;
    ok(
        StatusCode::OK,
        json!({"updated_at": super::iso(now), "alert_webhook_url": url, "warning": warning}),
    )
}

pub(super) async fn alert_secret(State(st): State<AppState>, Auth(user): Auth) -> ApiResult {
    let now = st.engine.clock().now();
    let (_, secret) = st
        .engine
        .store()
        .write_async(move |c| alerts::alert_webhook(c, &user.id, now))
        .await?;
    ok(StatusCode::OK, json!({"alert_webhook_secret": secret}))
}

pub(super) async fn regenerate_alert_secret(
    State(st): State<AppState>,
    Auth(user): Auth,
    headers: HeaderMap,
) -> ApiResult {
    let replace = alerts::regenerate_alert_secret;
    rotate(
        st,
        user,
        &headers,
        replace,
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
                .describe("Open only when the server allows it (by default on a loopback address); the key is shown once.")
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
                .errors(403, &["registration_closed"])
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
