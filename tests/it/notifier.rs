//! Notification delivery against real peers on loopback: a webhook receiver that checks the
//! signature, Twilio's Messages API as a fake that checks each request as Twilio documents
//! it, a real SMTP server (Python's aiosmtpd), quiet hours under a test clock, retries, and
//! notifications that cannot be delivered.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::providers::config::{
    ChatConfig, EmailConfig, SmsConfig, SmtpTls, UserConfig, WebhookConfig,
};
use actors::providers::{Limit, NotifierConfig};
use actors::signature;
use actors::store::Notification;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use broker_adapters::{ReplayFrom, dlq_topic};
use gateways::channels::Secret;
use schemas::proto::ListNotificationsRequest;
use schemas::proto::notifications_client::NotificationsClient;
use serde_json::{Value, json};

use crate::harness::*;

pub(crate) const SECRET: &str = "webhook-secret";

/// One request a fake provider received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

/// An HTTP peer on loopback (port 0) recording what it receives; `answer` decides each reply
/// from the requests so far, this one included.
#[derive(Clone)]
pub(crate) struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    pub async fn start(answer: fn(&[Seen]) -> (StatusCode, String)) -> Fake {
        let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let record = seen.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let record = record.clone();
                async move {
                    let mut seen = record.lock().unwrap();
                    seen.push(Seen {
                        method,
                        path: uri.path().to_owned(),
                        headers,
                        body,
                        at: Instant::now(),
                    });
                    answer(&seen)
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Fake { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A webhook receiver as its owner would write one: 401 unless the signature verifies.
pub(crate) fn verifying_receiver(seen: &[Seen]) -> (StatusCode, String) {
    let last = seen.last().unwrap();
    let signature = last
        .headers
        .get(signature::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match signature::verify(SECRET, &last.body, signature) {
        Ok(()) => (StatusCode::OK, "{}".into()),
        Err(e) => (StatusCode::UNAUTHORIZED, e.to_string()),
    }
}

fn notification(id: &str, channel: &str, to: &str, dedupe_key: &str) -> Value {
    event(
        id,
        "notification.requested",
        "notify/u1",
        json!({"channel": channel, "to": to, "subject": format!("subject {id}"),
               "text": format!("text {id}"), "dedupe_key": dedupe_key}),
    )
}

/// Twilio at `url` for account `sid`, held to `per_second` with a queue of `queue`.
fn twilio_api(url: String, sid: &str, per_second: u32, queue: usize) -> SmsConfig {
    SmsConfig {
        api_url: url,
        account_sid: sid.into(),
        auth_token: Secret("twilio-token".into()),
        from: "+15550000".into(),
        limit: Limit {
            per_second,
            burst: 1,
            queue,
        },
    }
}

/// A webhook to `url`, signed with `SECRET`.
pub(crate) fn webhook(url: String) -> WebhookConfig {
    WebhookConfig {
        url,
        secret: Secret(SECRET.into()),
        limit: Limit::default(),
    }
}

fn quick(config: &mut NotifierConfig) {
    config.poll_ms = 20;
    config.retry_initial_ms = 50;
    config.retry_max_ms = 200;
    config.max_attempts = 3;
}

/// Polls the outbox until `done` holds for what it holds, or panics after `WAIT`.
async fn wait_outbox(
    dir: &std::path::Path,
    done: impl Fn(&[Notification]) -> bool,
) -> Vec<Notification> {
    let store = state_store(dir).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let all = store.notifications(None).await.unwrap();
        if done(&all) {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox never got there: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn settled(all: &[Notification], n: usize) -> bool {
    all.len() == n
        && all
            .iter()
            .all(|n| n.status == "sent" || n.status == "failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_gets_each_notification_once_and_failures_are_retried_or_given_up() {
    let _one_at_a_time = IN_PROCESS.lock().await;
    // deploy-1's first request answers 503: it is tried again; `refused-1` is refused for good.
    let receiver = Fake::start(|seen| {
        let body = &seen.last().unwrap().body;
        let deploy1 = |s: &Seen| String::from_utf8_lossy(&s.body).contains("deploy-1");
        if deploy1(seen.last().unwrap()) && seen.iter().filter(|s| deploy1(s)).count() == 1 {
            (StatusCode::SERVICE_UNAVAILABLE, "busy".into())
        } else if String::from_utf8_lossy(body).contains("refused-1") {
            (StatusCode::BAD_REQUEST, "unknown recipient".into())
        } else {
            verifying_receiver(seen)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = receiver.url();
    let (node, http, grpc) = in_process_with(dir.path(), |c| {
        quick(&mut c.notifier);
        c.notifier.webhook = Some(webhook(format!("{url}/hooks/switchyard")));
    })
    .await;
    let client = Client::new(dir.path(), http, grpc).await;
    for envelope in [
        notification("n1", "webhook", "ops", "deploy-1"),
        // The same notification asked for again, under another message id.
        notification("n2", "webhook", "ops", "deploy-1"),
        notification("n3", "webhook", "ops", "deploy-2"),
        // Nothing carries this channel.
        notification("n4", "pager", "ops", "page-1"),
        notification("n5", "webhook", "ops", "refused-1"),
    ] {
        assert_eq!(client.post(&envelope).await, Some(202));
    }
    let all = wait_outbox(dir.path(), |all| settled(all, 4)).await;

    let seen = receiver.seen();
    // deploy-1 twice (503, then accepted), deploy-2 and refused-1 once.
    assert_eq!(seen.len(), 4, "{seen:#?}");
    for request in &seen {
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, "/hooks/switchyard");
        let signature = request.headers[signature::HEADER].to_str().unwrap();
        assert_eq!(signature::verify(SECRET, &request.body, signature), Ok(()));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["to"], "ops");
        assert_eq!(
            request.headers["x-switchyard-delivery"].to_str().unwrap(),
            body["dedupe_key"].as_str().unwrap()
        );
    }
    let keys: Vec<_> = seen
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["dedupe_key"].clone())
        .collect();
    let deploy1 = keys.iter().filter(|k| *k == "u1:deploy-1").count();
    assert_eq!((deploy1, keys.len() - deploy1), (2, 2), "{keys:?}");

    let by_key = |k: &str| all.iter().find(|n| n.dedupe_key == k).unwrap();
    let first = by_key("u1:deploy-1");
    assert_eq!(
        (first.status.as_str(), first.attempts),
        ("sent", 2),
        "{first:?}"
    );
    assert_eq!(first.destination.as_deref(), Some("webhook:ops"));
    assert_eq!(by_key("u1:deploy-2").attempts, 1);
    let paged = by_key("u1:page-1");
    assert_eq!(paged.status, "failed");
    assert!(
        paged
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("no provider is configured for channel `pager`"),
        "{paged:?}"
    );

    let refused = by_key("u1:refused-1");
    assert_eq!((refused.status.as_str(), refused.attempts), ("failed", 1));
    assert!(
        refused
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("400"),
        "{refused:?}"
    );

    // The one refused after trying is dead-lettered with its reason, as one that can be
    // resent; the one with nowhere to go is not.
    let mut replay = node
        .bus()
        .replay(&dlq_topic(schemas::EVENTS_TOPIC), ReplayFrom::Start)
        .await
        .unwrap();
    let mut reasons = Vec::new();
    while let Some(record) = replay.next().await.unwrap() {
        let envelope = schemas::decode(&record.payload).unwrap();
        let reason = record.headers.iter().find(|(k, _)| k == "dlq_reason");
        reasons.push((envelope.type_name(), reason.map(|(_, v)| v.clone())));
    }
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert_eq!(reasons[0].0, "notification.requested");
    assert!(
        reasons[0].1.as_deref().unwrap().contains("400"),
        "{reasons:?}"
    );

    // Delivery status over gRPC: the failed one, with its reason; pages follow each other.
    let channel = channel(&client.grpc_url).await;
    let mut notifications = NotificationsClient::new(channel);
    let failed = notifications
        .list_notifications(client.authed(ListNotificationsRequest {
            status: "failed".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.notifications.len(), 2);
    assert_eq!(failed.notifications[0].dedupe_key, "u1:page-1");
    assert!(failed.notifications[0].last_error.contains("`pager`"));
    let first = notifications
        .list_notifications(client.authed(ListNotificationsRequest {
            page_size: 2,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let rest = notifications
        .list_notifications(client.authed(ListNotificationsRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<_> = first
        .notifications
        .iter()
        .chain(&rest.notifications)
        .map(|n| (n.dedupe_key.as_str(), n.status.as_str(), n.attempts))
        .collect();
    assert_eq!(
        keys,
        [
            ("u1:deploy-1", "sent", 2),
            ("u1:deploy-2", "sent", 1),
            ("u1:page-1", "failed", 0),
            ("u1:refused-1", "failed", 1)
        ]
    );
    assert!(
        !rest.next_page_token.is_empty(),
        "a full page says there may be more"
    );
    let bad = notifications
        .list_notifications(client.authed(ListNotificationsRequest {
            status: "lost".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_provider_at_10_per_second_sees_at_most_its_quota_and_every_message_once() {
    const BURST: usize = 100;
    let _one_at_a_time = IN_PROCESS.lock().await;
    // Twilio's Messages API as documented: 201 and the message's sid.
    let twilio = Fake::start(|seen| {
        (
            StatusCode::CREATED,
            json!({"sid": format!("SM{}", seen.len()), "status": "queued"}).to_string(),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = twilio.url();
    let (node, http, grpc) = in_process_with(dir.path(), |c| {
        quick(&mut c.notifier);
        c.notifier.sms = Some(twilio_api(url, "AC123", 10, 1000));
    })
    .await;
    let client = Client::new(dir.path(), http, grpc).await;
    // The process's metrics are shared by its tests: this one's calls are the difference.
    let sent_before = metric(
        http,
        &client.token,
        r#"switchyard_provider_calls_total{provider="sms",outcome="sent"}"#,
    )
    .await;
    let posts = (0..BURST).map(|i| {
        let client = &client;
        async move {
            let to = format!("+1555{i:04}");
            client
                .post(&notification(
                    &format!("s{i}"),
                    "sms",
                    &to,
                    &format!("sms-{i}"),
                ))
                .await
        }
    });
    let statuses = futures::future::join_all(posts).await;
    assert!(statuses.iter().all(|s| *s == Some(202)), "{statuses:?}");
    let all = wait_outbox(dir.path(), |all| settled(all, BURST)).await;
    assert!(all.iter().all(|n| n.status == "sent"), "{all:#?}");

    let seen = twilio.seen();
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "AC123:twilio-token"
        )
    );
    let mut recipients = Vec::new();
    for request in &seen {
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, "/2010-04-01/Accounts/AC123/Messages.json");
        assert_eq!(request.headers["authorization"], auth.as_str());
        assert_eq!(
            request.headers["content-type"],
            "application/x-www-form-urlencoded"
        );
        let form: std::collections::BTreeMap<String, String> =
            serde_urlencoded::from_bytes(&request.body).unwrap();
        assert_eq!(form["From"], "+15550000");
        assert!(form["Body"].starts_with("text s"), "{form:?}");
        recipients.push(form["To"].clone());
    }
    recipients.sort();
    recipients.dedup();
    assert_eq!((seen.len(), recipients.len()), (BURST, BURST), "each once");
    // At most the quota in any second (less 50 ms for loopback's jitter).
    for (i, request) in seen.iter().enumerate() {
        let window = request.at + Duration::from_millis(950);
        let inside = seen[i..].iter().take_while(|r| r.at < window).count();
        assert!(inside <= 10, "{inside} requests within a second of #{i}");
    }
    let spread = seen.last().unwrap().at - seen[0].at;
    assert!(spread >= Duration::from_millis(9_500), "{spread:?}");
    let refs: Vec<_> = all.iter().filter_map(|n| n.provider_ref.clone()).collect();
    assert!(refs.iter().all(|r| r.starts_with("SM")), "{refs:?}");

    // The limiter shows in the tree and in /metrics.
    let mut client = client;
    let root = client.tree().await.unwrap();
    let limiters = root
        .children
        .iter()
        .find(|n| n.name == "integrations")
        .and_then(|n| n.children.iter().find(|n| n.name == "limiters"))
        .expect("integrations/limiters");
    let names: Vec<_> = limiters.children.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["sms"]);
    let sent = r#"switchyard_provider_calls_total{provider="sms",outcome="sent"}"#;
    let token = &client.token;
    assert_eq!(metric(http, token, sent).await - sent_before, BURST as f64);
    let quota = r#"switchyard_provider_quota_per_second{provider="sms"}"#;
    assert_eq!(metric(http, token, quota).await, 10.0);
    let queued = r#"switchyard_provider_queued{provider="sms"}"#;
    assert_eq!(metric(http, token, queued).await, 0.0);
    node.shutdown().await.unwrap();
}

/// Python's aiosmtpd on loopback (port 0), printing its port and then each message it takes
/// as a JSON line.
const SMTP_SERVER: &str = r#"
import asyncio, json, socket, sys
from aiosmtpd.smtp import SMTP

class Record:
    async def handle_DATA(self, server, session, envelope):
        print(json.dumps({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                          "data": envelope.content.decode("utf8", "replace")}), flush=True)
        return "250 Message accepted for delivery"

async def main():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = await asyncio.get_running_loop().create_server(lambda: SMTP(Record()), sock=sock)
    print(sock.getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"#;

/// A real SMTP server, and the lines it prints.
struct SmtpServer(PythonServer);

impl SmtpServer {
    async fn start() -> SmtpServer {
        SmtpServer(PythonServer::start(SMTP_SERVER, &[], "aiosmtpd").await)
    }

    async fn next_mail(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.0.lines.next_line())
            .await
            .expect("a mail arrives")
            .unwrap()
            .expect("the SMTP server is running");
        serde_json::from_str(&line).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_arrives_at_a_real_smtp_server_with_the_right_headers() {
    let _one_at_a_time = IN_PROCESS.lock().await;
    let mut smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = smtp.0.port;
    let (node, http, grpc) = in_process_with(dir.path(), |c| {
        quick(&mut c.notifier);
        c.notifier.email = Some(EmailConfig {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::None,
            from: "switchyard <noreply@switchyard.test>".into(),
            ..EmailConfig::default()
        });
    })
    .await;
    let client = Client::new(dir.path(), http, grpc).await;
    let envelope = notification("m1", "email", "alice@example.com", "build-7");
    assert_eq!(client.post(&envelope).await, Some(202));
    let mail = smtp.next_mail().await;
    assert_eq!(mail["from"], "noreply@switchyard.test");
    assert_eq!(mail["to"], json!(["alice@example.com"]));
    let data = mail["data"].as_str().unwrap();
    let header = |name: &str| {
        data.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} header in {data}"))
            .to_owned()
    };
    assert_eq!(header("From"), "switchyard <noreply@switchyard.test>");
    assert_eq!(header("To"), "alice@example.com");
    assert_eq!(header("Subject"), "subject m1");
    assert!(
        header("Message-ID").ends_with("@switchyard.test>"),
        "{data}"
    );
    assert!(data.contains("text m1"), "{data}");
    let all = wait_outbox(dir.path(), |all| settled(all, 1)).await;
    assert_eq!(all[0].status, "sent", "{all:?}");
    assert_eq!(
        all[0].destination.as_deref(),
        Some("email:alice@example.com")
    );
    node.shutdown().await.unwrap();
    drop(smtp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_a_notification_and_release_it_after() {
    let _one_at_a_time = IN_PROCESS.lock().await;
    let receiver = Fake::start(verifying_receiver).await;
    let (clock, shift) = shifted_clock();
    // Quiet from a minute ago to an hour from now, UTC.
    let minute = |ms: u64| (ms / 60_000 % 1440) as u32;
    let now = actors::store::now_ms();
    let hhmm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
    let quiet = format!(
        "{}-{}",
        hhmm(minute(now - 60_000)),
        hhmm(minute(now + 3_600_000))
    );
    let dir = tempfile::tempdir().unwrap();
    let url = receiver.url();
    let (node, http, grpc) = in_process_at(dir.path(), clock, |c| {
        quick(&mut c.notifier);
        c.notifier.webhook = Some(webhook(url));
        c.notifier.users.insert(
            "u1".into(),
            UserConfig {
                default_channel: "webhook".into(),
                quiet_hours: quiet,
                ..UserConfig::default()
            },
        );
    })
    .await;
    let client = Client::new(dir.path(), http, grpc).await;
    let envelope = notification("q1", "default", "u1", "nightly");
    assert_eq!(client.post(&envelope).await, Some(202));
    let held = wait_outbox(dir.path(), |all| all.len() == 1 && all[0].status == "held").await;
    let release = held[0].due_at;
    assert!(release > now + 3_500_000, "held until {release}, now {now}");
    assert!(receiver.seen().is_empty(), "sent during quiet hours");

    // An hour and a bit later, the window is over.
    shift.store((release - now + 1_000) as i64, Ordering::SeqCst);
    let all = wait_outbox(dir.path(), |all| settled(all, 1)).await;
    assert_eq!(all[0].status, "sent");
    assert_eq!(all[0].destination.as_deref(), Some("webhook:u1"));
    assert_eq!(receiver.seen().len(), 1);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_from_a_conversation_is_answered_in_that_conversation() {
    let _one_at_a_time = IN_PROCESS.lock().await;
    let slack = Fake::start(|seen| {
        let ts = format!("1700000000.{:06}", seen.len());
        (StatusCode::OK, json!({"ok": true, "ts": ts}).to_string())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = slack.url();
    let (node, http, grpc) = in_process_with(dir.path(), |c| {
        quick(&mut c.notifier);
        c.channels.slack = gateways::channels::ChannelConfig {
            signing_secret: Secret("slack-signing".into()),
            user: "u1".into(),
            task_prefix: "task:".into(),
            ..Default::default()
        };
        c.notifier.slack = Some(ChatConfig {
            api_url: url,
            bot_token: Secret("xoxb-test".into()),
            limit: Limit::default(),
        });
    })
    .await;
    let mut client = Client::new(dir.path(), http, grpc).await;
    // A Slack message that asks for a task, signed as Slack signs it.
    let body = json!({"type": "event_callback", "event_id": "Ev1", "team_id": "T1",
        "event": {"type": "message", "channel": "C42", "user": "U7", "text": "task: water the plants",
                  "ts": "1700000000.000100"}})
    .to_string();
    let timestamp = (actors::store::now_ms() / 1000).to_string();
    let signature =
        gateways::channels::verify::slack_signature("slack-signing", &timestamp, body.as_bytes());
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http}/v1/channels/slack"))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", &timestamp)
        .header("x-slack-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let store = state_store(dir.path()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let task_id = loop {
        let messages = store
            .conversation_messages("conversation/slack/C42")
            .await
            .unwrap();
        if let Some(task_id) = messages.first().and_then(|m| m.task_id.clone()) {
            break task_id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no task from the message"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    client.wait_task(&task_id, |_| true).await;
    let cancel = event(
        "cancel-1",
        "task.cancelled",
        &format!("task/{task_id}"),
        json!({"task_id": task_id, "reason": "done by hand"}),
    );
    assert_eq!(client.post(&cancel).await, Some(202));
    let all = wait_outbox(dir.path(), |all| settled(all, 1)).await;
    assert_eq!(all[0].status, "sent", "{all:?}");
    assert_eq!(all[0].destination.as_deref(), Some("slack:C42"));
    let seen = slack.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/chat.postMessage");
    assert_eq!(seen[0].headers["authorization"], "Bearer xoxb-test");
    let posted: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(posted["channel"], "C42");
    assert!(
        posted["text"]
            .as_str()
            .unwrap()
            .contains("water the plants"),
        "{posted}"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_provider_queue_defers_notifications_without_spending_their_attempts() {
    const MANY: usize = 30;
    let _one_at_a_time = IN_PROCESS.lock().await;
    let twilio = Fake::start(|seen| {
        let sid = format!("SM{}", seen.len());
        (StatusCode::CREATED, json!({ "sid": sid }).to_string())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = twilio.url();
    let (node, http, grpc) = in_process_with(dir.path(), |c| {
        quick(&mut c.notifier);
        c.notifier.sms = Some(twilio_api(url, "AC9", 50, 3));
    })
    .await;
    let client = Client::new(dir.path(), http, grpc).await;
    for i in 0..MANY {
        let envelope = notification(&format!("f{i}"), "sms", "+15551111", &format!("f-{i}"));
        assert_eq!(client.post(&envelope).await, Some(202));
    }
    let all = wait_outbox(dir.path(), |all| settled(all, MANY)).await;
    // Three attempts at most (`quick`), yet none failed: a refusal by a full queue is no attempt.
    assert!(
        all.iter().all(|n| n.status == "sent" && n.attempts == 1),
        "{all:#?}"
    );
    assert_eq!(twilio.seen().len(), MANY);
    let refused = r#"switchyard_provider_calls_total{provider="sms",outcome="refused"}"#;
    assert!(
        metric(http, &client.token, refused).await > 0.0,
        "the queue never filled"
    );
    node.shutdown().await.unwrap();
}
