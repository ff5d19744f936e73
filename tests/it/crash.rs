//! kill -9 (or SIGTERM) in the middle of a stream of events, then a restart on the same data
//! directory: every event that got its 202 is reflected exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

const TASKS: usize = 40;

fn notification(id: &str, n: usize) -> Value {
    event(
        id,
        "notification.requested",
        "notify/u1",
        json!({
            "channel": "webhook", "to": "https://example.org/hook", "subject": format!("n{n}"),
            "text": "hello", "dedupe_key": format!("n{n}"),
        }),
    )
}

/// The stream after setup: per task, started, completed and a notification request.
fn stream() -> Vec<(String, Value)> {
    let mut events = Vec::new();
    for i in 0..TASKS {
        let task = format!("c{i}");
        events.push((format!("s{i}"), task_started(&format!("s{i}"), &task, "a1")));
        events.push((format!("d{i}"), task_completed(&format!("d{i}"), &task)));
        events.push((format!("n{i}"), notification(&format!("n{i}"), i)));
    }
    events
}

/// How the node is stopped mid-stream.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Kill9,
    Sigterm,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing_acknowledged_and_doubles_nothing() {
    stop_mid_stream(Stop::Kill9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_shuts_down_cleanly_and_loses_nothing() {
    stop_mid_stream(Stop::Sigterm).await;
}

async fn stop_mid_stream(how: Stop) {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Proc::start(dir.path()).await;
    let mut c = node.client().await;
    assert_eq!(
        c.post(&agent_registered("agent", "a1", 1000)).await,
        Some(202)
    );
    for i in 0..TASKS {
        assert_eq!(
            c.post(&task_created(&format!("create{i}"), &format!("c{i}")))
                .await,
            Some(202)
        );
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while c.all_tasks(Some("assigned")).await.len() < TASKS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tasks were not all assigned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Stream events from another task; kill the node after a third of them were accepted.
    let accepted = Arc::new(AtomicUsize::new(0));
    let sender = {
        let accepted = accepted.clone();
        let c = Client::new(dir.path(), node.http, node.grpc).await;
        tokio::spawn(async move {
            let mut statuses = BTreeMap::new();
            for (id, event) in stream() {
                let status = c.post(&event).await;
                if status == Some(202) {
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
                statuses.insert(id, status);
            }
            statuses
        })
    };
    while accepted.load(Ordering::SeqCst) < TASKS {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    match how {
        Stop::Kill9 => node.kill9(),
        Stop::Sigterm => assert!(node.sigterm().success(), "a clean exit on SIGTERM"),
    }
    let statuses = sender.await.unwrap();
    let ok: Vec<&String> = statuses
        .iter()
        .filter(|(_, s)| **s == Some(202))
        .map(|(id, _)| id)
        .collect();
    assert!(
        ok.len() >= TASKS && ok.len() < 3 * TASKS,
        "the kill landed mid-stream: {} accepted",
        ok.len()
    );

    let node = Proc::start(dir.path()).await;
    let mut c = node.client().await;
    let store = state_store(dir.path()).await;
    let reflected =
        |tasks: &BTreeMap<String, String>, notes: &BTreeMap<String, usize>, id: &str| -> bool {
            let i: usize = id[1..].parse().unwrap();
            let task = format!("c{i}");
            match &id[..1] {
                "s" => matches!(
                    tasks.get(&task).map(String::as_str),
                    Some("running" | "done")
                ),
                "d" => {
                    tasks.get(&task).map(String::as_str) == Some("done")
                        && notes.get(&format!("task/{task}/finished/1")) == Some(&1)
                }
                _ => notes.get(&format!("u1:n{i}")) == Some(&1),
            }
        };
    let snapshot = |c: &mut Client| {
        let store = store.clone();
        let mut c_tasks = c.tasks.clone();
        let token = c.token.clone();
        async move {
            let mut request = tonic::Request::new(schemas::proto::ListTasksRequest {
                page_size: 500,
                ..Default::default()
            });
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            let tasks: BTreeMap<String, String> = c_tasks
                .list_tasks(request)
                .await
                .unwrap()
                .into_inner()
                .tasks
                .into_iter()
                .map(|t| (t.task_id, t.state))
                .collect();
            let mut notes = BTreeMap::new();
            for n in store.notifications(None).await.unwrap() {
                *notes.entry(n.dedupe_key).or_insert(0) += 1;
            }
            (tasks, notes)
        }
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (tasks, notes) = snapshot(&mut c).await;
        let missing: Vec<_> = ok
            .iter()
            .filter(|id| !reflected(&tasks, &notes, id))
            .collect();
        if missing.is_empty() {
            assert_eq!(tasks.len(), TASKS, "no task lost or invented");
            assert!(notes.values().all(|n| *n == 1));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reflected after restart: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The client now retries everything, accepted or not: each applies once.
    for (_, event) in stream() {
        assert_eq!(c.post(&event).await, Some(202));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (tasks, notes) = snapshot(&mut c).await;
        if tasks.values().all(|s| s == "done") && notes.len() == 2 * TASKS {
            assert!(notes.values().all(|n| *n == 1), "{notes:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retries not applied: {tasks:?} {notes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(node.terminate().success());
}
