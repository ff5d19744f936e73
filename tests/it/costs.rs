//! The cost monitor: model invocations counted once against a daily budget; once it is spent
//! the user's tasks that need a model wait, visibly and with the reason, the user is told, and
//! raising the budget releases them. Other work goes on meanwhile.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actors::domain::costs::Periods;
use actors::store::now_ms;

use actors::providers::Limit;
use actors::providers::config::UserConfig;
use schemas::proto::CostSummaryRequest;
use schemas::proto::costs_client::CostsClient;
use serde_json::{Value, json};

use crate::harness::*;
use crate::notifier::{Fake, verifying_receiver, webhook};

fn invocation(id: &str, invocation_id: &str, cost: f64) -> Value {
    event(
        id,
        "invocation.recorded",
        "costs/u1",
        json!({"invocation_id": invocation_id, "provider": "anthropic", "model": "claude-sonnet",
               "tokens_in": 1000, "tokens_out": 200, "cost": cost, "latency_ms": 900}),
    )
}

fn model_task(id: &str, task: &str, tools: &[&str]) -> Value {
    event(
        id,
        "task.created",
        &format!("task/{task}"),
        json!({"task_id": task, "title": format!("title {task}"), "spec": "true",
               "requirements": {"tools": tools}}),
    )
}

/// `u1`'s spending today, asked with the admin key.
async fn summary(
    client: &Client,
    costs: &mut CostsClient<tonic::transport::Channel>,
) -> schemas::proto::CostSummary {
    let request = client.authed(CostSummaryRequest {
        user: "u1".into(),
        ..Default::default()
    });
    costs.summary(request).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_holds_model_tasks_and_notifies_and_a_raise_releases_them() {
    let _one_at_a_time = IN_PROCESS.lock().await;
    let receiver = Fake::start(verifying_receiver).await;
    let dir = tempfile::tempdir().unwrap();
    let url = receiver.url();
    let (clock, shift) = shifted_clock();
    let (node, http, grpc) = in_process_at(dir.path(), clock, |c| {
        c.costs.daily_budget = actors::budgets::Dollars(1.0);
        c.notifier.poll_ms = 20;
        c.notifier.webhook = Some(webhook(url));
        c.notifier.users.insert(
            "u1".into(),
            UserConfig {
                default_channel: "webhook".into(),
                ..UserConfig::default()
            },
        );
    })
    .await;
    let mut client = Client::new(dir.path(), http, grpc).await;
    let mut costs = CostsClient::new(channel(&client.grpc_url).await);
    let agent = event(
        "a1",
        "agent.registered",
        "agent/a1",
        json!({"agent_id": "a1", "name": "a1", "capabilities": {"tools": ["model"]},
               "max_concurrent": 4}),
    );
    assert_eq!(client.post(&agent).await, Some(202));
    for envelope in [
        invocation("i1", "inv-1", 0.60),
        // The same invocation reported twice: counted once.
        invocation("i1-again", "inv-1", 0.60),
        invocation("i2", "inv-2", 0.50),
    ] {
        assert_eq!(client.post(&envelope).await, Some(202));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    let spent = loop {
        let s = summary(&client, &mut costs).await;
        if s.held {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "never held: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((spent.invocations, spent.tokens_in), (2, 2000));
    assert!((spent.spent - 1.10).abs() < 1e-9, "{spent:?}");
    assert!((spent.budget - 1.0).abs() < 1e-9);
    assert_eq!(spent.models.len(), 1);
    assert!(
        spent
            .hold_reason
            .contains("daily model budget of $1.00 is spent ($1.10")
    );

    // A task that needs a model waits, and says why; one that does not is assigned.
    assert_eq!(
        client
            .post(&model_task("t1", "needs-model", &["model"]))
            .await,
        Some(202)
    );
    client
        .wait_task("needs-model", |t| t.state == "pending")
        .await;
    assert_eq!(
        client.post(&model_task("t2", "plain", &[])).await,
        Some(202)
    );
    client.wait_task("plain", |t| t.state == "assigned").await;
    let waiting = client.task("needs-model").await.unwrap();
    assert_eq!(waiting.state, "pending");
    assert!(
        waiting.blocked_reason.contains("daily model budget"),
        "{waiting:?}"
    );
    let listed = client.all_tasks(Some("pending")).await;
    let in_list = listed.iter().find(|t| t.task_id == "needs-model").unwrap();
    assert_eq!(
        in_list.blocked_reason, waiting.blocked_reason,
        "ListTasks says so too"
    );

    // The user was told, once, on their default channel.
    let deadline = tokio::time::Instant::now() + WAIT;
    while receiver.seen().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "nobody was told");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let told: Value = serde_json::from_slice(&receiver.seen()[0].body).unwrap();
    assert_eq!(told["subject"], "daily model budget spent");

    // The next day (UTC) starts from nothing: the task is assigned.
    let tomorrow = Periods::of(now_ms()).day_end() + 60_000;
    shift.store(tomorrow as i64 - now_ms() as i64, Ordering::SeqCst);
    client
        .wait_task("needs-model", |t| t.state == "assigned")
        .await;
    let fresh = summary(&client, &mut costs).await;
    assert!(!fresh.held && fresh.invocations == 0, "{fresh:?}");

    // Spent again that day: the next model task waits; a raise releases it.
    assert_eq!(
        client.post(&invocation("i3", "inv-3", 1.25)).await,
        Some(202)
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while !summary(&client, &mut costs).await.held {
        assert!(tokio::time::Instant::now() < deadline, "never held again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        client
            .post(&model_task("t3", "needs-model-2", &["model"]))
            .await,
        Some(202)
    );
    client
        .wait_task("needs-model-2", |t| t.state == "pending")
        .await;
    assert_eq!(
        client.post(&model_task("t4", "plain-2", &[])).await,
        Some(202)
    );
    client.wait_task("plain-2", |t| t.state == "assigned").await;
    assert_eq!(client.task("needs-model-2").await.unwrap().state, "pending");
    let raise = event("b1", "budget.set", "costs/u1", json!({"daily": 5}));
    assert_eq!(client.post(&raise).await, Some(202));
    client
        .wait_task("needs-model-2", |t| t.state == "assigned")
        .await;
    let after = summary(&client, &mut costs).await;
    assert!(
        !after.held && (after.budget - 5.0).abs() < 1e-9,
        "{after:?}"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while receiver.seen().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not told the second time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(receiver.seen().len(), 2, "told once each day");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_calls_to_a_model_provider_keep_to_its_limit() {
    use schemas::proto::AcquireRequest;
    use schemas::proto::models_client::ModelsClient;
    let _one_at_a_time = IN_PROCESS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, http, grpc) = in_process_with(dir.path(), |c| {
        let limit = Limit {
            per_second: 10,
            burst: 1,
            queue: 10,
        };
        c.models.insert("anthropic".into(), limit);
    })
    .await;
    let client = Client::new(dir.path(), http, grpc).await;
    let models = ModelsClient::new(channel(&client.grpc_url).await);
    let acquire = |provider: &str| {
        let mut models = models.clone();
        let request = client.authed(AcquireRequest {
            provider: provider.into(),
        });
        async move {
            let answer = models.acquire(request).await;
            (answer, tokio::time::Instant::now())
        }
    };
    // Five at once: each answered in its turn, a tenth of a second apart.
    let started = tokio::time::Instant::now();
    let answers = futures::future::join_all((0..5).map(|_| acquire("anthropic"))).await;
    let mut times = Vec::new();
    for (answer, at) in answers {
        let answer = answer.unwrap().into_inner();
        assert!(answer.limited);
        times.push(at - started);
    }
    times.sort();
    assert!(
        times[4] - times[0] >= Duration::from_millis(350),
        "{times:?}"
    );
    // Thirty at once overflow its queue of ten: the rest are refused at once.
    let answers = futures::future::join_all((0..30).map(|_| acquire("anthropic"))).await;
    let refused = answers
        .iter()
        .filter(|(a, _)| {
            a.as_ref()
                .is_err_and(|s| s.code() == tonic::Code::ResourceExhausted)
        })
        .count();
    let granted = answers.iter().filter(|(a, _)| a.is_ok()).count();
    assert_eq!(refused + granted, 30);
    assert!(
        refused >= 15 && granted >= 10,
        "{refused} refused, {granted} granted"
    );
    // A provider without a limit here is answered at once.
    let (free, _) = acquire("openai").await;
    assert!(!free.unwrap().into_inner().limited);
    node.shutdown().await.unwrap();
}
