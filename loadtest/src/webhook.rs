//! The `webhook` scenario: signed Slack events to `POST /v1/channels/slack` of an in-process
//! node (each verified, read, rate-limited, deduplicated and answered once durably on the
//! bus), beside an axum hello-world in the same process that reads the same JSON bodies and
//! answers 200 without checking or keeping anything; then `ingest-http` in the same run, so
//! the webhook's figure stands next to `POST /v1/events` and both next to their hello-worlds.

use std::net::SocketAddr;
use std::time::Duration;

use actors::store::now_ms;
use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use gateways::channels::verify::slack_signature;
use gateways::channels::{ChannelConfig, Secret};

use crate::drive::drive;
use crate::ingest_http::{self, IngestArgs};
use crate::node::{LoadNode, NodeOptions};
use crate::report::{Report, Run};

/// The signing secret the scenario's node and client share.
const SECRET: &str = "loadtest-signing-secret";

/// The `webhook` scenario's settings.
#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    /// Events posted to each server.
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
}

/// The hello-world's route: read the JSON body as the node does, answer 200.
async fn accept(body: Bytes) -> StatusCode {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

async fn hello_world() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().route("/v1/channels/slack", post(accept));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// A Slack `event_callback` of message `i` of run `run`, from one of many people.
fn event(run: &str, i: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": "event_callback", "team_id": "T1", "event_id": format!("{run}-{i}"),
        "event": {"type": "message", "channel": format!("C{}", i % 64), "user": format!("U{i}"),
                  "text": "hello from the load test", "ts": format!("{i}.000100")}
    }))
    .expect("a JSON value serializes")
}

/// Posts `events` signed Slack events of run `run` to `addr`, each expected to be answered 200.
async fn post_all(addr: SocketAddr, run: &str, args: &WebhookArgs) -> anyhow::Result<Run> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency as usize)
        .timeout(Duration::from_secs(30))
        .build()?;
    let (url, run) = (format!("http://{addr}/v1/channels/slack"), run.to_owned());
    drive(args.events, args.concurrency, move |i| {
        let body = event(&run, i);
        let timestamp = (now_ms() / 1000).to_string();
        let request = client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", &timestamp)
            .header(
                "x-slack-signature",
                slack_signature(SECRET, &timestamp, &body),
            )
            .body(body);
        async move {
            let status = request.send().await?.status();
            anyhow::ensure!(status == StatusCode::OK, "answered {status}");
            Ok(())
        }
    })
    .await
}

pub async fn run(args: WebhookArgs) -> anyhow::Result<Vec<Report>> {
    let slack = ChannelConfig {
        signing_secret: Secret(SECRET.into()),
        user: "loadtest".into(),
        ..Default::default()
    };
    let node = LoadNode::start(NodeOptions {
        slack: Some(slack),
        ..Default::default()
    })
    .await?;
    println!(
        "webhook: {} signed Slack events to an axum hello-world, then to the node, {} at a time; \
         then ingest-http in the same run",
        args.events, args.concurrency
    );
    let baseline = post_all(hello_world().await?, &format!("hw{}", now_ms()), &args).await?;
    let posted = post_all(node.http, &format!("wh{}", now_ms()), &args)
        .await
        .context("posting to the node")?;
    let webhook = Report {
        scenario: "webhook".into(),
        run: posted,
        baseline: Some(baseline),
        settings: serde_json::json!({ "concurrency": args.concurrency, "channel": "slack" }),
    };
    let ingest = IngestArgs {
        events: args.events,
        concurrency: args.concurrency,
    };
    let events = ingest_http::compare(&node, &ingest).await?;
    node.node.shutdown().await.context("stopping the node")?;
    Ok(vec![webhook, events])
}
