//! HTTP: `POST /v1/events` (CBOR or JSON envelopes), `POST /v1/channels/{channel}`
//! (webhooks), `GET /health`, `GET /ready`, and for operators (admin key unless configured
//! open) `GET /metrics`, `GET /cluster/status`, `GET /cluster/peers`.

use std::time::Duration;

use actors::credentials::Role;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use schemas::{CborValue, Envelope, MAX_ENVELOPE_BYTES};
use serde_json::json;
use sha2::{Digest, Sha256};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

use crate::limits::{KeyedLimit, Limits};
use crate::{GatewayContext, GatewayError, channels, metrics};

/// How the HTTP routes are limited and who may read the operator endpoints.
pub struct HttpPolicy {
    /// The configured limits.
    pub limits: Limits,
    /// `POST /v1/events` per API key.
    events_per_key: KeyedLimit,
    /// `/metrics`, `/cluster/status` and `/cluster/peers` without the admin key.
    pub operator_open: bool,
}

impl HttpPolicy {
    /// The policy of `limits`, operator endpoints open or behind the admin key.
    pub fn new(limits: Limits, operator_open: bool) -> HttpPolicy {
        HttpPolicy {
            events_per_key: KeyedLimit::new(
                limits.events_per_key_per_second,
                Duration::from_secs(1),
            ),
            limits,
            operator_open,
        }
    }
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy::new(Limits::default(), false)
    }
}

/// The HTTP routes, ready to serve or to call with `tower::ServiceExt::oneshot`.
pub fn app(ctx: GatewayContext) -> Router {
    let limits = &ctx.http.limits;
    // Webhook bodies are read whole before their signature is checked: bounded first.
    let webhooks = Router::new()
        .route("/v1/channels/{channel}", post(channels::receive))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(limits.webhook_body_bytes));
    Router::new()
        .route("/v1/events", post(post_event))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/cluster/status", get(cluster_status))
        .route("/cluster/peers", get(cluster_peers))
        .merge(webhooks)
        .route_layer(axum::middleware::from_fn(metrics::track_http))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(limits.request_timeout_ms),
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            limits.concurrent_requests.max(1),
        ))
        .with_state(ctx)
}

/// Lets operators in: anyone when the endpoints are configured open, else the admin key.
async fn operator(
    ctx: &GatewayContext,
    headers: &HeaderMap,
    what: &str,
) -> Result<(), GatewayError> {
    if ctx.http.operator_open {
        return Ok(());
    }
    let principal = ctx.auth.principal(authorization(headers)).await?;
    if principal.role != Role::Admin {
        return Err(GatewayError::Forbidden(format!(
            "{what} needs the admin key"
        )));
    }
    Ok(())
}

/// `GET /metrics`: the Prometheus text format.
async fn metrics_text(
    State(ctx): State<GatewayContext>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    operator(&ctx, &headers, "the metrics").await?;
    metrics::record_tree(&ctx.tree, &ctx.root);
    let text = metrics::render().ok_or_else(|| {
        GatewayError::Unavailable("another metrics recorder is installed in this process".into())
    })?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// `GET /cluster/peers`: the other live members and how to reach them.
async fn cluster_peers(
    State(ctx): State<GatewayContext>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    operator(&ctx, &headers, "the cluster's peers").await?;
    let now = ctx.node.now_ms();
    let peers: Vec<_> = ctx
        .node
        .live_members()
        .await?
        .into_iter()
        .filter(|m| m.node_id != ctx.node_id)
        .map(|m| {
            json!({
                "node_id": m.node_id,
                "http": m.http,
                "grpc": m.grpc,
                "partitions": m.partitions,
                "seen_ms_ago": now.saturating_sub(m.seen_at),
            })
        })
        .collect();
    Ok(Json(json!({ "node_id": ctx.node_id, "peers": peers })).into_response())
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(ctx): State<GatewayContext>) -> Response {
    let bus = ctx.node.bus().ping().await.err().map(|e| e.to_string());
    let database = ctx.node.store().ping().await.err().map(|e| e.to_string());
    let status = if bus.is_none() && database.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let show = |e: Option<String>| e.unwrap_or_else(|| "ok".into());
    (
        status,
        Json(json!({ "bus": show(bus), "database": show(database) })),
    )
        .into_response()
}

/// The `Authorization` header's value, if it is text.
fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The members this node sees (recorded within `MEMBER_TTL`) and the partitions each owns.
async fn cluster_status(
    State(ctx): State<GatewayContext>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    operator(&ctx, &headers, "the cluster's status").await?;
    let now = ctx.node.now_ms();
    let members = ctx.node.live_members().await?;
    let partitions = ctx
        .node
        .bus()
        .partitions(schemas::EVENTS_TOPIC)
        .await
        .map_err(|e| GatewayError::Unavailable(format!("bus: {e}")))?;
    let owned: std::collections::BTreeSet<u32> = members
        .iter()
        .flat_map(|m| m.partitions.iter().copied())
        .collect();
    let unowned: Vec<u32> = (0..partitions).filter(|p| !owned.contains(p)).collect();
    let members: Vec<_> = members
        .iter()
        .map(|m| {
            json!({
                "node_id": m.node_id,
                "this_node": m.node_id == ctx.node_id,
                "http": m.http,
                "grpc": m.grpc,
                "partitions": m.partitions,
                "seen_ms_ago": now.saturating_sub(m.seen_at),
                "up_ms": now.saturating_sub(m.started_at),
            })
        })
        .collect();
    Ok(Json(json!({
        "node_id": ctx.node_id,
        "topic": schemas::EVENTS_TOPIC,
        "partitions": partitions,
        "members": members,
        "unowned": unowned,
    }))
    .into_response())
}

async fn post_event(
    State(ctx): State<GatewayContext>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let authorization = authorization(&headers);
    let principal = ctx.auth.principal(authorization).await?;
    // Keyed by a digest of the token as `Auth` reads it: the limiter's table need not hold
    // the keys themselves, and spacing in the header does not make a new key.
    let token = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .map_or("", str::trim);
    let key = Sha256::digest(token.as_bytes());
    if let Err(wait) = ctx.http.events_per_key.check(&hex::encode(&key[..8])) {
        metrics::rate_limited("/v1/events");
        return Err(GatewayError::TooManyRequests(wait));
    }
    let bytes = axum::body::to_bytes(body, MAX_ENVELOPE_BYTES)
        .await
        .map_err(|_| {
            GatewayError::BadRequest(format!("body exceeds {MAX_ENVELOPE_BYTES} bytes"))
        })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let now = ctx.node.now_ms();
    let defaults = Defaults {
        id: ctx.node.new_message_id(),
        time: now,
    };
    let mut envelope = parse(content_type, &bytes, defaults)?;
    // State keeps the messages' own times (so a replay rebuilds it): none from the future.
    if envelope.time > now.saturating_add(MAX_AHEAD_MS) {
        return Err(GatewayError::BadRequest(format!(
            "time {} is {} ms ahead of this node's clock; at most {MAX_AHEAD_MS}",
            envelope.time,
            envelope.time - now
        )));
    }
    principal
        .admit(&mut envelope)
        .map_err(GatewayError::Forbidden)?;
    let span = tracing::info_span!("http.ingest", route = "/v1/events", id = %envelope.id);
    // The caller's trace: its `traceparent` header, else the envelope's own.
    let caller = traceparent_header(&headers).or(envelope.trace.take());
    trace_under(&span, &mut envelope, caller);
    ctx.node.publish(&envelope).instrument(span).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": envelope.id }))).into_response())
}

/// The request's W3C `traceparent` header, if any.
pub(crate) fn traceparent_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Makes `span` continue the `caller`'s trace and `envelope` carry `span` on, so the span of
/// the mailbox that handles it is its child; with traces off the caller's trace travels on.
pub(crate) fn trace_under(span: &tracing::Span, envelope: &mut Envelope, caller: Option<String>) {
    actors::trace::continue_trace(span, caller.as_deref());
    envelope.trace = actors::trace::traceparent(span).or(caller);
}

/// How far ahead of the node's clock an envelope's `time` may be.
const MAX_AHEAD_MS: u64 = 5 * 60_000;

/// What a JSON envelope that leaves out its id or time gets.
pub struct Defaults {
    /// The id of an envelope that names none.
    pub id: String,
    /// The time (ms since the Unix epoch) of an envelope that gives none.
    pub time: u64,
}

/// Reads an envelope from a `/v1/events` body, CBOR or JSON by its content type.
pub fn parse(
    content_type: &str,
    bytes: &[u8],
    defaults: Defaults,
) -> Result<Envelope, GatewayError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    let bad = |e: schemas::DecodeError| GatewayError::BadRequest(e.to_string());
    match media {
        "application/cbor" => schemas::decode(bytes).map_err(bad),
        "application/json" => {
            let value: CborValue = serde_json::from_slice(bytes)
                .map_err(|e| GatewayError::BadRequest(format!("malformed JSON: {e}")))?;
            schemas::decode_value(with_defaults(value, defaults)?).map_err(bad)
        }
        other => Err(GatewayError::BadRequest(format!(
            "unsupported content type `{other}`: use application/cbor or application/json"
        ))),
    }
}

/// Fills `v`, `id`, `time` and `source` where a JSON client left them out.
fn with_defaults(value: CborValue, fill: Defaults) -> Result<CborValue, GatewayError> {
    let CborValue::Map(mut map) = value else {
        return Err(GatewayError::BadRequest(
            "an envelope must be a JSON object".into(),
        ));
    };
    let text = |s: &str| CborValue::Text(s.to_owned());
    let defaults = [
        ("v", CborValue::Integer(schemas::ENVELOPE_VERSION.into())),
        ("id", CborValue::Text(fill.id)),
        ("time", CborValue::Integer(fill.time.into())),
        ("source", text("gateway/http")),
    ];
    for (key, default) in defaults {
        map.entry(text(key)).or_insert(default);
    }
    Ok(CborValue::Map(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            id: "fresh".into(),
            time: 7,
        }
    }

    #[test]
    fn json_defaults_fill_only_what_is_missing() {
        let value: CborValue = serde_json::from_str(r#"{"id": "mine", "user": "u1"}"#).unwrap();
        let CborValue::Map(map) = with_defaults(value, defaults()).unwrap() else {
            panic!()
        };
        assert_eq!(
            map[&CborValue::Text("id".into())],
            CborValue::Text("mine".into())
        );
        assert_eq!(map[&CborValue::Text("v".into())], CborValue::Integer(1));
        assert!(with_defaults(CborValue::Array(vec![]), defaults()).is_err());
    }

    #[test]
    fn unknown_content_types_are_named() {
        let error = parse("text/plain", b"x", defaults()).unwrap_err();
        assert!(error.to_string().contains("`text/plain`"), "{error}");
    }
}
