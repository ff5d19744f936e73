//! The `ingest-http` scenario: `POST /v1/events` of CBOR `task.created` envelopes to an
//! in-process node (each answered 202 once durably on the bus), beside an axum hello-world in
//! the same process that does the same work without the bus: it reads the body, decodes the
//! envelope and answers the same 202. One HTTP client drives both, the same way.

use std::net::SocketAddr;
use std::time::Duration;

use actors::store::now_ms;
use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;

use crate::drive::drive;
use crate::node::{LoadNode, NodeOptions};
use crate::report::{Report, Run};

/// The `ingest-http` scenario's settings.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Events posted to each server.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u64,
}

/// The hello-world's one route: decode the envelope, answer as the node does.
async fn accept(body: Bytes) -> Response {
    match schemas::decode(&body) {
        Ok(envelope) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "id": envelope.id })),
        )
            .into_response(),
        Err(error) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": error.to_string() })),
        )
            .into_response(),
    }
}

/// Serves the hello-world on a free loopback port; its address.
async fn hello_world() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().route("/v1/events", post(accept));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Posts `events` numbered envelopes of run `run` to `addr`, `concurrency` at once, each
/// expected to be answered 202.
async fn post_all(
    addr: SocketAddr,
    token: &str,
    run: &str,
    args: &IngestArgs,
) -> anyhow::Result<Run> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency as usize)
        .timeout(Duration::from_secs(30))
        .build()?;
    let (url, token, run) = (
        format!("http://{addr}/v1/events"),
        format!("Bearer {token}"),
        run.to_owned(),
    );
    drive(args.events, args.concurrency, move |i| {
        let body = schemas::encode(&crate::tasks::envelope(&run, i));
        let request = client
            .post(&url)
            .header("authorization", &token)
            .header("content-type", "application/cbor")
            .body(body);
        async move {
            let status = request.send().await?.status();
            anyhow::ensure!(status == StatusCode::ACCEPTED, "answered {status}");
            Ok(())
        }
    })
    .await
}

pub async fn run(args: IngestArgs) -> anyhow::Result<Report> {
    let node = LoadNode::start(NodeOptions::default()).await?;
    let report = compare(&node, &args).await?;
    node.node.shutdown().await.context("stopping the node")?;
    Ok(report)
}

/// Posts to an axum hello-world, then to `node`: the `ingest-http` report.
pub async fn compare(node: &LoadNode, args: &IngestArgs) -> anyhow::Result<Report> {
    println!(
        "ingest-http: {} events to an axum hello-world, then to the node, {} at a time",
        args.events, args.concurrency
    );
    let baseline = post_all(hello_world().await?, "", &format!("hw{}", now_ms()), args).await?;
    let posted = post_all(node.http, &node.admin, &format!("ih{}", now_ms()), args)
        .await
        .context("posting to the node")?;
    Ok(Report {
        scenario: "ingest-http".into(),
        run: posted,
        baseline: Some(baseline),
        settings: serde_json::json!({ "concurrency": args.concurrency, "content_type": "application/cbor" }),
    })
}
