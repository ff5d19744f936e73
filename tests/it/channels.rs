//! Channel webhooks over real HTTP: each provider's signed request lands once as a
//! `message.received` on the bus; bad signatures, stale timestamps and malformed bodies are
//! refused and publish nothing; a Slack command becomes a task; limits answer 429.

use std::collections::BTreeMap;
use std::time::Duration;

use broker_adapters::{Bus, ReplayFrom};
use ed25519_dalek::{Signer, SigningKey};
use gateways::channels::verify::{relay_signature, slack_signature, twilio_signature};
use gateways::channels::{ChannelConfig, ChannelsConfig, Secret};
use schemas::Message;
use serde_json::{Value, json};

use crate::harness::*;

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const TWILIO_TOKEN: &str = "12345";
const TELEGRAM_SECRET: &str = "tg-secret";
const EMAIL_SECRET: &str = "relay-secret";
const SMS_URL: &str = "https://switchyard.example/v1/channels/sms";

fn discord_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn channels() -> ChannelsConfig {
    let on = |user: &str| ChannelConfig {
        user: user.into(),
        task_prefix: "task:".into(),
        ..Default::default()
    };
    ChannelsConfig {
        sms: ChannelConfig {
            auth_token: Secret(TWILIO_TOKEN.into()),
            public_url: SMS_URL.into(),
            ..on("u1")
        },
        slack: ChannelConfig {
            signing_secret: Secret(SLACK_SECRET.into()),
            ..on("u1")
        },
        discord: ChannelConfig {
            public_key: hex::encode(discord_key().verifying_key().as_bytes()),
            ..on("u1")
        },
        telegram: ChannelConfig {
            secret_token: Secret(TELEGRAM_SECRET.into()),
            per_sender_per_minute: 3,
            ..on("u1")
        },
        email: ChannelConfig {
            hmac_secret: Secret(EMAIL_SECRET.into()),
            ..on("u1")
        },
    }
}

/// A webhook request: its headers and body, built as the provider builds it.
struct Webhook {
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn now_secs() -> u64 {
    actors::store::now_ms() / 1000
}

fn slack(body: &Value, at: u64) -> Webhook {
    let body = serde_json::to_vec(body).unwrap();
    let timestamp = at.to_string();
    Webhook {
        headers: vec![
            ("x-slack-request-timestamp", timestamp.clone()),
            (
                "x-slack-signature",
                slack_signature(SLACK_SECRET, &timestamp, &body),
            ),
            ("content-type", "application/json".into()),
        ],
        body,
    }
}

fn slack_message(event_id: &str, text: &str) -> Webhook {
    let event = json!({
        "type": "event_callback", "event_id": event_id, "team_id": "T1",
        "event": {"type": "message", "channel": "C024BE91L", "user": "U2147483697",
                  "text": text, "ts": "1355517523.000005"}
    });
    slack(&event, now_secs())
}

fn sms(sid: &str, body: &str) -> Webhook {
    let params: Vec<(String, String)> = [
        ("MessageSid", sid),
        ("AccountSid", "AC1"),
        ("From", "+15551230000"),
        ("To", "+15559990000"),
        ("Body", body),
        ("NumMedia", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let form = serde_urlencoded::to_string(&params).unwrap();
    Webhook {
        headers: vec![
            (
                "x-twilio-signature",
                twilio_signature(TWILIO_TOKEN, SMS_URL, &params),
            ),
            ("content-type", "application/x-www-form-urlencoded".into()),
        ],
        body: form.into_bytes(),
    }
}

fn discord(body: &Value) -> Webhook {
    let body = serde_json::to_vec(body).unwrap();
    let timestamp = now_secs().to_string();
    let mut signed = timestamp.clone().into_bytes();
    signed.extend_from_slice(&body);
    Webhook {
        headers: vec![
            ("x-signature-timestamp", timestamp),
            (
                "x-signature-ed25519",
                hex::encode(discord_key().sign(&signed).to_bytes()),
            ),
            ("content-type", "application/json".into()),
        ],
        body,
    }
}

fn discord_command(id: &str) -> Webhook {
    discord(&json!({
        "type": 2, "id": id, "channel_id": "D1", "member": {"user": {"id": "80351110224678912"}},
        "data": {"name": "remind", "options": [{"name": "what", "value": "stretch"}]}
    }))
}

fn telegram(update_id: u64, sender: u64, secret: &str) -> Webhook {
    let update = json!({
        "update_id": update_id,
        "message": {"message_id": update_id, "date": 1_700_000_000, "text": "hello",
                    "chat": {"id": 777, "type": "private"}, "from": {"id": sender}}
    });
    Webhook {
        headers: vec![
            ("x-telegram-bot-api-secret-token", secret.into()),
            ("content-type", "application/json".into()),
        ],
        body: serde_json::to_vec(&update).unwrap(),
    }
}

fn email(message_id: &str) -> Webhook {
    let mail = format!(
        "From: Ada <ada@example.org>\r\nTo: inbox@switchyard.example\r\n\
         Subject: lunch on friday?\r\nMessage-ID: <{message_id}>\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nShall we?\r\n"
    )
    .into_bytes();
    Webhook {
        headers: vec![
            (
                "x-switchyard-signature",
                relay_signature(EMAIL_SECRET, &mail),
            ),
            ("content-type", "message/rfc822".into()),
        ],
        body: mail,
    }
}

/// `hook` with a byte added to its body: its signature no longer matches.
fn tampered(mut hook: Webhook) -> Webhook {
    hook.body.push(b' ');
    hook
}

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(port: u16) -> Http {
        Http {
            client: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn send(&self, channel: &str, hook: &Webhook) -> (u16, String, Option<String>) {
        let mut request = self
            .client
            .post(format!("{}/v1/channels/{channel}", self.base))
            .body(hook.body.clone());
        for (name, value) in &hook.headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, response.text().await.unwrap(), retry_after)
    }

    async fn status(&self, channel: &str, hook: &Webhook) -> u16 {
        self.send(channel, hook).await.0
    }

    async fn metrics(&self, token: &str) -> BTreeMap<String, f64> {
        metrics_at(&self.base, token).await
    }
}

/// Every envelope on the bus, in order.
async fn on_bus(bus: &dyn Bus) -> Vec<schemas::Envelope> {
    let mut replay = bus
        .replay(schemas::EVENTS_TOPIC, ReplayFrom::Start)
        .await
        .unwrap();
    let mut found = Vec::new();
    while let Some(record) = replay.next().await.unwrap() {
        found.push(schemas::decode(&record.payload).unwrap());
    }
    found
}

/// The `message.received` on the bus, as (channel, provider id), in order.
async fn received_on_bus(bus: &dyn Bus) -> Vec<(String, String)> {
    on_bus(bus)
        .await
        .into_iter()
        .filter_map(|envelope| match envelope.message {
            Message::MessageReceived(m) => Some((m.channel, m.provider_id)),
            _ => None,
        })
        .collect()
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, name: &str) -> f64 {
    after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_channel_publishes_a_signed_message_once_and_refuses_the_rest() {
    let _one_at_a_time = IN_PROCESS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, http, grpc) = in_process_with(dir.path(), |c| c.channels = channels()).await;
    let admin = Client::new(dir.path(), http, grpc).await.token;
    let web = Http::new(http);
    let before = web.metrics(&admin).await;

    let valid = [
        ("sms", sms("SM1", "hi")),
        ("slack", slack_message("Ev1", "hello")),
        ("discord", discord_command("1001")),
        ("telegram", telegram(9001, 5, TELEGRAM_SECRET)),
        ("email", email("m1@example.org")),
    ];
    for (channel, hook) in &valid {
        assert_eq!(web.status(channel, hook).await, 200, "{channel}");
        assert_eq!(web.status(channel, hook).await, 200, "{channel} sent again");
    }
    let (_, twiml, _) = web.send("sms", &sms("SM1", "hi")).await;
    assert!(twiml.contains("<Response>"), "{twiml}");
    let (_, answer, _) = web.send("discord", &discord_command("1001")).await;
    assert_eq!(serde_json::from_str::<Value>(&answer).unwrap()["type"], 4);

    // Handshakes are answered and publish nothing.
    let challenge = slack(
        &json!({"type": "url_verification", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}),
        now_secs(),
    );
    let (status, answer, _) = web.send("slack", &challenge).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&answer).unwrap()),
        (
            200,
            json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
        )
    );
    let (status, pong, _) = web.send("discord", &discord(&json!({"type": 1}))).await;
    assert_eq!((status, pong.as_str()), (200, r#"{"type":1}"#));

    // Refused: bad signatures, a stale timestamp, no signature, malformed bodies.
    let stale = slack(
        &json!({"type": "event_callback", "event_id": "Ev9", "event": {}}),
        now_secs() - 301,
    );
    let refused = [
        ("sms", tampered(sms("SM2", "hi")), 401),
        ("slack", tampered(slack_message("Ev2", "hello")), 401),
        ("slack", stale, 401),
        ("discord", tampered(discord_command("1002")), 401),
        ("telegram", telegram(9002, 5, "wrong"), 401),
        ("email", tampered(email("m2@example.org")), 401),
        (
            "slack",
            Webhook {
                headers: Vec::new(),
                ..slack_message("Ev3", "x")
            },
            401,
        ),
        (
            "slack",
            slack(&json!({"type": "event_callback"}), now_secs()),
            400,
        ),
        ("discord", discord(&json!({"no": "type"})), 400),
        (
            "email",
            {
                let junk = b"this is no mail".to_vec();
                Webhook {
                    headers: vec![(
                        "x-switchyard-signature",
                        relay_signature(EMAIL_SECRET, &junk),
                    )],
                    body: junk,
                }
            },
            400,
        ),
    ];
    for (channel, hook, want) in &refused {
        let (status, answer, _) = web.send(channel, hook).await;
        assert_eq!(status, *want, "{channel}: {answer}");
        let reason = serde_json::from_str::<Value>(&answer).unwrap()["error"].clone();
        assert!(reason.as_str().is_some_and(|r| !r.is_empty()), "{answer}");
    }
    assert_eq!(web.status("whatsapp", &sms("SM3", "x")).await, 404);
    // Without their signature headers, every channel refuses.
    let unsigned = [
        ("sms", sms("SM4", "hi")),
        ("slack", slack_message("Ev4", "hello")),
        ("discord", discord_command("1004")),
        ("telegram", telegram(9004, 5, TELEGRAM_SECRET)),
        ("email", email("m4@example.org")),
    ];
    for (channel, hook) in unsigned {
        let stripped = Webhook {
            headers: hook
                .headers
                .into_iter()
                .filter(|(name, _)| *name == "content-type")
                .collect(),
            body: hook.body,
        };
        let (status, answer, _) = web.send(channel, &stripped).await;
        assert_eq!(status, 401, "{channel} unsigned: {answer}");
        assert!(answer.contains("missing header"), "{channel}: {answer}");
    }
    // Copies of one message arriving at once: one is published.
    let copies = (0..8).map(|_| {
        let hook = slack_message("Ev5", "all at once");
        let web = &web;
        async move { web.status("slack", &hook).await }
    });
    let statuses = futures::future::join_all(copies).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // Only the webhooks publish messages of a channel: a user's key may not forge one.
    let user_key = actors::credentials::new_token().unwrap();
    let store = state_store(dir.path()).await;
    store
        .add_key(&user_key, "u1", actors::credentials::Role::User, None)
        .await
        .unwrap();
    let forged = event(
        "forged",
        "message.received",
        "conversation/slack/C1",
        json!({"channel": "slack", "conversation": "C1", "sender": "U1", "text": "task: x",
               "provider_id": "Ev666", "received": 1}),
    );
    let forged = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http}/v1/events"))
        .bearer_auth(&user_key)
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);

    let mut on_bus = received_on_bus(node.bus().as_ref()).await;
    on_bus.sort();
    let want: Vec<(String, String)> = [
        ("discord", "1001"),
        ("email", "m1@example.org"),
        ("slack", "Ev1"),
        ("slack", "Ev5"),
        ("sms", "SM1"),
        ("telegram", "9001"),
    ]
    .iter()
    .map(|(c, p)| (c.to_string(), p.to_string()))
    .collect();
    assert_eq!(on_bus, want, "one message.received per provider message");

    let after = web.metrics(&admin).await;
    let rejected = |channel: &str, reason: &str| {
        delta(
            &before,
            &after,
            &format!(
                "switchyard_webhooks_rejected_total{{channel=\"{channel}\",reason=\"{reason}\"}}"
            ),
        )
    };
    let published = "switchyard_bus_published_total{topic=\"switchyard.events\",outcome=\"ok\"}";
    assert_eq!(
        delta(&before, &after, published),
        6.0,
        "one publish per message"
    );
    assert_eq!(rejected("slack", "signature"), 4.0);
    assert_eq!(rejected("slack", "malformed"), 1.0);
    assert_eq!(rejected("email", "malformed"), 1.0);
    let requests = |status: &str| {
        delta(
            &before,
            &after,
            &format!(
                "switchyard_http_requests_total{{route=\"/v1/channels/{{channel}}\",method=\"POST\",status=\"{status}\"}}"
            ),
        )
    };
    // 5 twice, the SMS and Discord answers read again, the two handshakes, the 8 copies.
    assert_eq!(requests("200"), 22.0);
    assert_eq!(requests("401"), 12.0);
    assert_eq!(requests("400"), 3.0);

    // The consumer lag of each partition the node owns, once everything is consumed: none.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lag: Vec<f64> = web
            .metrics(&admin)
            .await
            .into_iter()
            .filter(|(name, _)| name.starts_with("switchyard_consumer_lag{"))
            .map(|(_, value)| value)
            .collect();
        if lag.len() == 8 && lag.iter().all(|behind| *behind == 0.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer lag {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_message_with_the_prefix_becomes_a_task_of_the_channels_user() {
    let _one_at_a_time = IN_PROCESS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, http, grpc) = in_process_with(dir.path(), |c| c.channels = channels()).await;
    let mut c = Client::new(dir.path(), http, grpc).await;
    let web = Http::new(http);
    assert_eq!(
        web.status(
            "slack",
            &slack_message("Ev10", "task: book the dentist\nnext week")
        )
        .await,
        200
    );
    assert_eq!(
        web.status("slack", &slack_message("Ev11", "just saying hi"))
            .await,
        200
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let task = loop {
        let tasks = c.all_tasks(None).await;
        if let Some(task) = tasks.into_iter().find(|t| t.title == "book the dentist") {
            break task;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no task from the message"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((task.user.as_str(), task.state.as_str()), ("u1", "pending"));
    let store = state_store(dir.path()).await;
    let key = "conversation/slack/C024BE91L";
    let deadline = tokio::time::Instant::now() + WAIT;
    let messages = loop {
        let messages = store.conversation_messages(key).await.unwrap();
        if messages.len() == 2 {
            break messages;
        }
        assert!(tokio::time::Instant::now() < deadline, "{messages:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let from_task = store.message_of_task(&task.task_id).await.unwrap().unwrap();
    assert_eq!(
        (from_task.key.as_str(), from_task.provider_id.as_str()),
        (key, "Ev10"),
        "the task finds its way back to its conversation"
    );
    assert_eq!(messages.iter().filter(|m| m.task_id.is_some()).count(), 1);
    let conversation = store.conversation(key).await.unwrap().unwrap();
    assert_eq!((conversation.messages, conversation.tasks), (2, 1));
    assert_eq!(
        c.all_tasks(None).await.len(),
        1,
        "the greeting made no task"
    );

    // gRPC calls are counted by method and code.
    let before = web.metrics(&c.token).await;
    c.task(&task.task_id).await.unwrap();
    assert_eq!(
        c.task("no-such-task").await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    let after = web.metrics(&c.token).await;
    let calls = |code: &str| {
        let name = format!(
            "switchyard_grpc_requests_total{{method=\"/switchyard.v1.Tasks/GetTask\",code=\"{code}\"}}"
        );
        delta(&before, &after, &name)
    };
    assert_eq!((calls("0"), calls("5")), (1.0, 1.0));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_limit_the_answer_is_429_with_retry_after_and_nothing_is_published() {
    let _one_at_a_time = IN_PROCESS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, http, grpc) = in_process_with(dir.path(), |c| {
        c.channels = channels();
        c.limits.events_per_key_per_second = 1;
    })
    .await;
    let c = Client::new(dir.path(), http, grpc).await;
    let web = Http::new(http);
    // Telegram allows 3 a minute per sender.
    for update in 1..=3 {
        assert_eq!(
            web.status("telegram", &telegram(update, 5, TELEGRAM_SECRET))
                .await,
            200
        );
    }
    let (status, _, retry_after) = web.send("telegram", &telegram(4, 5, TELEGRAM_SECRET)).await;
    let wait: u64 = retry_after.expect("a Retry-After").parse().unwrap();
    assert_eq!(status, 429);
    assert!((1..=20).contains(&wait), "{wait}");
    assert_eq!(
        web.status("telegram", &telegram(5, 6, TELEGRAM_SECRET))
            .await,
        200,
        "another sender has a limit of its own"
    );
    let received = received_on_bus(node.bus().as_ref()).await;
    let ids: Vec<&str> = received.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3", "5"]);

    // /v1/events: 1 a second per key, however the header is spaced.
    assert_eq!(c.post(&task_created("r1", "r1")).await, Some(202));
    let respaced = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http}/v1/events"))
        .header("authorization", format!("Bearer   {}", c.token))
        .json(&task_created("r2", "r2"))
        .send()
        .await
        .unwrap();
    assert_eq!(respaced.status().as_u16(), 429);
    assert!(respaced.headers().get("retry-after").is_some());
    let ids: Vec<String> = on_bus(node.bus().as_ref())
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert!(
        ids.contains(&"r1".to_owned()) && !ids.contains(&"r2".to_owned()),
        "{ids:?}"
    );
    node.shutdown().await.unwrap();
}
