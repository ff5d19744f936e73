//! The node's metrics in the Prometheus text format (`GET /metrics`), through the `metrics`
//! facade: any crate records with `metrics::counter!` and the like; this module installs the
//! recorder once per process, records the HTTP front door's own, and renders them all.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::GatewayError;

/// Latency buckets, seconds: from a cache hit to a slow fsync.
const BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0,
];

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// The process's recorder, installed on first use; `None` if another recorder was installed
/// first (then `/metrics` says so).
pub fn recorder() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets(BUCKETS).ok()?;
            let handle = builder.install_recorder().ok()?;
            // Histogram samples are kept one by one until upkeep folds them into buckets: in
            // a node nobody scrapes they would pile up without it.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP);
                        upkeep.run_upkeep();
                    }
                })
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

/// Everything recorded so far, in the Prometheus text format.
pub fn render() -> Option<String> {
    let handle = recorder()?;
    handle.run_upkeep();
    Some(handle.render())
}

/// Middleware: counts each HTTP request and its latency by route and status.
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("switchyard_http_requests_total", &labels).increment(1);
    metrics::histogram!("switchyard_http_request_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Sets the gauges read from the live tree: mailboxes per kind, and restarts below each.
pub fn record_tree(tree: &supervisor::Tree, root: &str) {
    use actors::names;
    for kind in [
        names::TASKS,
        names::AGENTS,
        names::CONVERSATIONS,
        names::CALENDARS,
    ] {
        let path = actors::tree::relative_path(kind).unwrap_or(kind);
        // Shards are one level down, their mailboxes two.
        let (mailboxes, restarts) = tree.census(&format!("{root}/{path}"), 2);
        metrics::gauge!("switchyard_mailboxes", "kind" => kind).set(mailboxes as f64);
        metrics::gauge!("switchyard_mailbox_restarts", "kind" => kind).set(restarts as f64);
    }
    let (_, restarts) = tree.census(root, 1);
    metrics::gauge!("switchyard_restarts").set(restarts as f64);
}

/// Counts a webhook refused before anything was published, by channel and reason.
pub fn webhook_rejected(channel: &str, error: &GatewayError) {
    let reason = match error {
        GatewayError::BadSignature(_) => "signature",
        GatewayError::BadRequest(_) => "malformed",
        _ => "other",
    };
    metrics::counter!(
        "switchyard_webhooks_rejected_total",
        "channel" => channel.to_owned(),
        "reason" => reason
    )
    .increment(1);
}

/// Counts a request refused by a rate limit, by route.
pub fn rate_limited(route: &str) {
    metrics::counter!("switchyard_rate_limited_total", "route" => route.to_owned()).increment(1);
}

/// The gRPC status of a method no service serves.
const UNIMPLEMENTED: &str = "12";

/// A tower layer counting each gRPC call and its latency (to its response headers) by method
/// and status code.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics(inner)
    }
}

/// The service `GrpcMetricsLayer` wraps around the gRPC routes.
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S>(S);

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<axum::http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let started = Instant::now();
        let response = self.0.call(request);
        Box::pin(async move {
            let response = response.await?;
            // An error answered at once carries its status in the headers; a call that got as
            // far as a body reports in trailers, after this: counted as OK (0) here.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("0")
                .to_owned();
            // A path no service serves is whatever a caller sent: one label for them all.
            let method = if code == UNIMPLEMENTED {
                "unknown".to_owned()
            } else {
                method
            };
            let labels = [("method", method), ("code", code)];
            metrics::counter!("switchyard_grpc_requests_total", &labels).increment(1);
            metrics::histogram!("switchyard_grpc_request_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}
