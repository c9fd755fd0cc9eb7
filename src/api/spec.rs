//! The route table, and the OpenAPI 3.1 document made from it (`GET /openapi.json`).
//!
//! Every route is one [`Route`]: method, path, handler, and what a client needs to know about it
//! (operation id, summary, whether it takes the key, its parameters, its request body, its answers
//! by status with their JSON Schemas, and the error codes each error status carries). Each
//! resource file lists its own in a `routes()` function next to its handlers; [`super::router`]
//! registers exactly those, and [`document`] describes exactly those, so a route cannot be served
//! without being documented, nor documented without being served.
//!
//! What every route shares is added here rather than repeated: a route that takes the key can
//! answer 401 `invalid_api_key`; one the rate limiter counts, 429 `rate_limit_exceeded`; one that
//! reads a JSON body, 400 `invalid_json`, 415 `unsupported_media_type` and 422
//! `validation_error`; one that takes a body without a key, 503 `server_busy` (the budget of such
//! bodies is spent); every route, 408 `request_timeout` and 413 `request_too_large` (bodies are
//! read before the route runs, see [`super::intake`]). Schemas are plain JSON Schema (2020-12,
//! the dialect of OpenAPI 3.1) written with `json!`; the shared ones (the error envelope, the
//! resources) are components, referred to with [`r`].

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::body::Bytes;
use axum::handler::Handler;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use serde_json::{json, Map, Value};

use super::AppState;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One route: how it is served and how it is described.
pub(super) struct Route {
    method: Method,
    pub(super) path: &'static str,
    pub(super) handler: MethodRouter<AppState>,
    id: &'static str,
    summary: &'static str,
    description: Option<&'static str>,
    tag: &'static str,
    auth: bool,
    params: Vec<Value>,
    body: Option<(Value, bool)>,
    /// Whether the body is read as JSON (then 400 `invalid_json` and 422 `validation_error`).
    json_body: bool,
    responses: Vec<(u16, Value)>,
    errors: Vec<(u16, &'static str)>,
}

macro_rules! constructor {
    ($name:ident, $method:ident, $routing:path) => {
        /// A route taking the key; chain the builder methods to describe it.
        pub(super) fn $name<H, T>(
            path: &'static str,
            id: &'static str,
            summary: &'static str,
            handler: H,
        ) -> Route
        where
            H: Handler<T, AppState>,
            T: 'static,
        {
            Route::new(Method::$method, path, id, summary, $routing(handler))
        }
    };
}

constructor!(get, GET, axum::routing::get);
constructor!(post, POST, axum::routing::post);
constructor!(patch, PATCH, axum::routing::patch);
constructor!(delete, DELETE, axum::routing::delete);

impl Route {
    fn new(
        method: Method,
        path: &'static str,
        id: &'static str,
        summary: &'static str,
        handler: MethodRouter<AppState>,
    ) -> Route {
        Route {
            method,
            path,
            handler,
            id,
            summary,
            description: None,
            tag: "",
            auth: true,
            params: Vec::new(),
            body: None,
            json_body: false,
            responses: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Longer text than the summary.
    pub(super) fn describe(mut self, text: &'static str) -> Route {
        self.description = Some(text);
        self
    }

    /// Answers without an API key.
    pub(super) fn public(mut self) -> Route {
        self.auth = false;
        self
    }

    fn param(
        mut self,
        place: &str,
        name: &str,
        required: bool,
        text: &str,
        schema: Value,
    ) -> Route {
        self.params.push(json!({
            "name": name, "in": place, "required": required, "description": text, "schema": schema,
        }));
        self
    }

    /// A query parameter (all are optional).
    pub(super) fn query(self, name: &str, text: &str, schema: Value) -> Route {
        self.param("query", name, false, text, schema)
    }

    /// An optional request header.
    pub(super) fn header(self, name: &str, text: &str, schema: Value) -> Route {
        self.param("header", name, false, text, schema)
    }

    /// Describes a `{name}` of the path (undescribed ones are non-empty strings).
    pub(super) fn path_param(self, name: &str, text: &str, schema: Value) -> Route {
        self.param("path", name, true, text, schema)
    }

    /// A JSON request body with an example of a valid one.
    pub(super) fn body_example(mut self, schema: Value, required: bool, example: Value) -> Route {
        let content = json!({"application/json": {"schema": schema, "example": example}});
        self.body = Some((content, required));
        self.json_body = true;
        self
    }

    /// A request body of any media type (`content` is the OpenAPI content map).
    pub(super) fn raw_body(mut self, content: Value) -> Route {
        self.body = Some((content, false));
        self
    }

    /// A JSON answer.
    pub(super) fn answers(mut self, status: u16, text: &str, schema: Value) -> Route {
        self.responses.push((
            status,
            json!({"description": text, "content": {"application/json": {"schema": schema}}}),
        ));
        self
    }

    /// An answer that is not JSON (`media` without parameters; they are not compared).
    pub(super) fn answers_text(mut self, status: u16, text: &str, media: &str) -> Route {
        self.responses.push((
            status,
            json!({"description": text, "content": {media: {"schema": {"type": "string"}}}}),
        ));
        self
    }

    /// An answer without a body.
    pub(super) fn answers_empty(mut self, status: u16, text: &str) -> Route {
        self.responses.push((status, json!({"description": text})));
        self
    }

    /// Error codes the route answers with `status`, in the error envelope.
    pub(super) fn errors(mut self, status: u16, codes: &[&'static str]) -> Route {
        self.errors.extend(codes.iter().map(|c| (status, *c)));
        self
    }

    /// Whether the route answers without a key.
    pub(super) fn is_public(&self) -> bool {
        !self.auth
    }

    /// Whether the route reads a request body.
    pub(super) fn takes_body(&self) -> bool {
        self.body.is_some()
    }

    pub(super) fn method(&self) -> &Method {
        &self.method
    }

    /// Whether the rate limiter counts requests to this route.
    fn limited(&self) -> bool {
        !super::limit::EXEMPT.contains(&self.path)
    }

    /// Every error (status, code) the route may answer, with the shared ones added.
    fn all_errors(&self) -> BTreeMap<u16, Vec<&'static str>> {
        let mut all = self.errors.clone();
        if self.auth {
            all.push((401, "invalid_api_key"));
            // A full disk or a read-only database file: nothing was changed.
            all.push((503, "storage_unavailable"));
        }
        if self.limited() {
            all.push((429, "rate_limit_exceeded"));
        }
        if self.json_body {
            all.push((400, "invalid_json"));
            all.push((415, "unsupported_media_type"));
            all.push((422, "validation_error"));
        }
        if self.body.is_some() && !self.auth {
            all.push((503, "server_busy"));
        }
        all.push((408, "request_timeout"));
        all.push((413, "request_too_large"));
        let mut by = BTreeMap::<u16, Vec<&'static str>>::new();
        for (status, code) in all {
            let codes = by.entry(status).or_default();
            if !codes.contains(&code) {
                codes.push(code);
            }
        }
        by
    }

    /// The path's `{name}` segments.
    fn path_names(&self) -> impl Iterator<Item = &'static str> {
        self.path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
    }

    /// The OpenAPI operation object.
    fn operation(&self) -> Value {
        let mut params = self.params.clone();
        for name in self.path_names() {
            let described = params
                .iter()
                .any(|p| p["in"] == "path" && p["name"] == name);
            if !described {
                params.push(json!({
                    "name": name, "in": "path", "required": true,
                    "schema": {"type": "string", "minLength": 1},
                }));
            }
        }
        let mut responses = Map::new();
        for (status, response) in &self.responses {
            responses.insert(status.to_string(), response.clone());
        }
        for (status, codes) in self.all_errors() {
            responses.insert(status.to_string(), error_response(status, &codes));
        }
        let mut op = json!({
            "operationId": self.id,
            "summary": self.summary,
            "tags": [self.tag],
            "responses": responses,
        });
        let mut text: Vec<&str> = self.description.into_iter().collect();
        if super::limit::is_report(&self.method, self.path) {
            text.push(
                "With a valid key this is never refused by the rate limit, nor counted against it: \
                 a worker's report is never dropped (requests without a valid key count against the \
                 client address as everywhere).",
            );
        }
        if !text.is_empty() {
            op["description"] = text.join("\n\n").into();
        }
        if !params.is_empty() {
            op["parameters"] = params.into();
        }
        if let Some((content, required)) = &self.body {
            op["requestBody"] = json!({"required": required, "content": content});
        }
        op["security"] = if self.auth {
            json!([{"apiKey": []}])
        } else {
            json!([])
        };
        op
    }
}

/// Tags every route of a resource file.
pub(super) fn tagged(tag: &'static str, routes: Vec<Route>) -> Vec<Route> {
    routes
        .into_iter()
        .map(|mut r| {
            r.tag = tag;
            r
        })
        .collect()
}

/// An error answer: the envelope, with the codes this status carries on this route.
fn error_response(status: u16, codes: &[&str]) -> Value {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let list: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
    let mut out = json!({
        "description": format!("{reason}: {}", list.join(", ")),
        "content": {"application/json": {"schema": {"allOf": [
            r("Error"),
            {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "code": {"enum": codes}, "status": {"const": status},
            }}}},
        ]}}},
    });
    if status == 429 {
        out["headers"] = json!({"Retry-After": {
            "description": "Seconds until a request is allowed again (at least 1)",
            "schema": {"type": "integer", "minimum": 1},
        }});
    }
    out
}

// -- schema helpers ----------------------------------------------------------------------------

/// A reference to a component schema.
pub(super) fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// An object with exactly these properties, every one of them present.
pub(super) fn obj(props: Value) -> Value {
    let required: Vec<String> = props
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

/// An object with these properties only, `required` among them always present.
pub(super) fn obj_some(props: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

/// Adds properties (present in every answer) to an object schema.
pub(super) fn extend(mut base: Value, props: Value) -> Value {
    if let Value::Object(more) = props {
        for (k, v) in more {
            if let Some(req) = base["required"].as_array_mut() {
                req.push(k.clone().into());
            }
            base["properties"][k] = v;
        }
    }
    base
}

/// `schema` or null.
pub(super) fn or_null(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

/// An ISO-8601 UTC instant as the API writes it.
pub(super) fn instant() -> Value {
    json!({"type": "string", "format": "date-time"})
}

/// An instant or null.
pub(super) fn instant_or_null() -> Value {
    json!({"type": ["string", "null"], "format": "date-time"})
}

/// A string or null.
pub(super) fn text_or_null() -> Value {
    json!({"type": ["string", "null"]})
}

/// An integer query parameter's schema.
pub(super) fn int_between(min: i64, max: i64, default: i64) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": max, "default": default})
}

/// A non-negative offset.
pub(super) fn offset() -> Value {
    json!({"type": "integer", "minimum": 0, "default": 0})
}

/// One page of a list, under `key` (the reference's name) and `data` (the article's).
pub(super) fn page(key: &str, item: Value) -> Value {
    obj(json!({
        "data": {"type": "array", "items": item},
        key: {"type": "array", "items": item},
        "total": {"type": "integer", "minimum": 0},
        "limit": {"type": "integer"},
        "offset": {"type": "integer"},
        "has_more": {"type": "boolean"},
    }))
}

/// The error envelope: the error under `error`, mirrored under `detail.error`.
fn error_schema() -> Value {
    let error = obj_some(
        json!({
            "code": {"type": "string", "description": "A stable, machine-readable code"},
            "message": {"type": "string"},
            "status": {"type": "integer", "description": "The HTTP status, repeated"},
            "details": {
                "type": "array",
                "description": "For validation errors: the field at fault (`body.retry.max_attempts`, `query.limit`, ...) and what is wrong with it",
                "items": obj(json!({"field": {"type": "string"}, "message": {"type": "string"}})),
            },
            "execution_id": {
                "type": "string",
                "description": "`idempotency_key_conflict`: the execution the key was first used for",
            },
            "missing_keys": {
                "type": "array",
                "items": {"type": "string"},
                "description": "`missing_payload_keys`: the required keys the payload lacks",
            },
        }),
        &["code", "message", "status"],
    );
    let mut out = obj(json!({
        "error": error,
        "detail": obj(json!({"error": error})),
    }));
    out["properties"]["detail"]["description"] =
        json!("The same error again, where FastAPI-shaped clients (the official CLI) read it");
    out
}

// -- the document ------------------------------------------------------------------------------

/// The shared schemas, by name.
fn components() -> Value {
    let mut m = Map::new();
    m.insert("Error".into(), error_schema());
    for (name, schema) in super::cues::schemas()
        .into_iter()
        .chain(super::executions::schemas())
        .chain(super::alerts::schemas())
        .chain(super::workers::schemas())
    {
        m.insert(name.into(), schema);
    }
    Value::Object(m)
}

/// The OpenAPI 3.1 document describing `routes`.
pub(super) fn document(routes: &[Route]) -> Value {
    let mut paths = Map::new();
    let mut tags: Vec<&str> = Vec::new();
    for route in routes {
        let item = paths
            .entry(route.path)
            .or_insert_with(|| Value::Object(Map::new()));
        item[route.method.as_str().to_ascii_lowercase()] = route.operation();
        if !tags.contains(&route.tag) {
            tags.push(route.tag);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "cueapi",
            "version": VERSION,
            "summary": "Accountable scheduled work: cues fire on schedule, every run is recorded with its outcome and evidence",
            "description": "The HTTP API of `cueapi serve`, compatible with the CueAPI reference server. \
                Errors use the envelope `{\"error\": {\"code\", \"message\", \"status\", \"details\"?}}`, \
                mirrored under `detail.error` for FastAPI-shaped clients; \
                each error answer below lists the codes it carries. Instants are ISO-8601 UTC.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": tags.iter().map(|t| json!({"name": t})).collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "schemas": components(),
            "securitySchemes": {"apiKey": {
                "type": "http", "scheme": "bearer",
                "description": "The user's API key: `Authorization: Bearer cue_sk_...`",
            }},
        },
    })
}

/// `GET /openapi.json`: the document, made once from the route table.
async fn openapi() -> Response {
    static DOCUMENT: OnceLock<Vec<u8>> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| {
        serde_json::to_vec(&document(&super::routes())).unwrap_or_else(|_| b"{}".to_vec())
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from_static(body),
    )
        .into_response()
}

pub(super) fn routes() -> Vec<Route> {
    tagged(
        "meta",
        vec![get(
            "/openapi.json",
            "getOpenApi",
            "This document: every route of the server",
            openapi,
        )
        .public()
        .describe("Made from the same table the server's router is built from.")
        .answers(
            200,
            "An OpenAPI 3.1 document",
            json!({"type": "object", "required": ["openapi", "info", "paths"]}),
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(s)) = m.get("$ref") {
                    out.push(s);
                }
                m.values().for_each(|x| all_refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| all_refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn operations_are_unique_named_summarised_and_have_an_error_answer() {
        let routes = super::super::routes();
        let mut ids = std::collections::HashSet::new();
        let mut pairs = std::collections::HashSet::new();
        for r in &routes {
            assert!(ids.insert(r.id), "operation id {} twice", r.id);
            assert!(
                pairs.insert((r.method.clone(), r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
            assert!(!r.summary.is_empty() && !r.tag.is_empty(), "{}", r.id);
            assert!(!r.responses.is_empty(), "{} documents no success", r.id);
            assert!(r.all_errors().keys().any(|s| *s >= 400));
            // Described path parameters exist in the path.
            for p in r.params.iter().filter(|p| p["in"] == "path") {
                assert!(r.path_names().any(|n| p["name"] == n), "{}", r.id);
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document(&super::super::routes());
        let mut refs = Vec::new();
        all_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for reference in refs {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{reference}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{reference} is not a component"
            );
        }
    }

    #[test]
    fn shared_errors_follow_auth_limits_and_bodies() {
        let doc = document(&super::super::routes());
        let op = |path: &str, m: &str| doc["paths"][path][m].clone();
        let codes = |op: &Value, status: &str| {
            op["responses"][status]["content"]["application/json"]["schema"]["allOf"][1]
                ["properties"]["error"]["properties"]["code"]["enum"]
                .clone()
        };
        // A worker's reports say that the limit spares them.
        for (path, m) in [
            ("/v1/executions/{id}/outcome", "post"),
            ("/v1/executions/{id}/heartbeat", "post"),
            ("/v1/worker/heartbeat", "post"),
        ] {
            let text = op(path, m)["description"]
                .as_str()
                .unwrap_or("")
                .to_string();
            assert!(text.contains("never refused by the rate limit"), "{path}");
        }
        assert!(op("/v1/executions/claim", "post")
            .get("description")
            .is_none());
        let health = op("/health", "get");
        assert!(health["responses"].get("401").is_none());
        assert!(health["responses"].get("429").is_none());
        let create = op("/v1/cues", "post");
        assert_eq!(codes(&create, "401"), json!(["invalid_api_key"]));
        assert_eq!(codes(&create, "429"), json!(["rate_limit_exceeded"]));
        assert!(codes(&create, "400")
            .as_array()
            .is_some_and(|c| c.contains(&json!("invalid_json"))));
        assert_eq!(create["security"], json!([{"apiKey": []}]));
        let get_cue = op("/v1/cues/{id}", "get");
        assert_eq!(get_cue["parameters"][0]["in"], "query");
        assert!(get_cue["parameters"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["in"] == "path" && p["name"] == "id")));
    }
}
