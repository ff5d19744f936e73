//! Bad input gets a 400 naming the reason over HTTP; on the bus it goes to the dead-letter
//! topic with the reason; the node keeps running.

use std::time::Duration;

use broker_adapters::{OutMessage, ReplayFrom, dlq_topic};
use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_reasons_and_dead_lettered() {
    let _one_at_a_time = IN_PROCESS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, http, grpc) = in_process(dir.path()).await;
    let mut c = Client::new(dir.path(), http, grpc).await;
    let token = c.token.clone();

    let json_body = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "application/cbor",
            b"\xff\x00garbage".to_vec(),
            "malformed CBOR",
        ),
        ("application/json", b"{not json".to_vec(), "malformed JSON"),
        (
            "application/json",
            b"[1, 2]".to_vec(),
            "an envelope must be a JSON object",
        ),
        (
            "application/json",
            json_body(event("b1", "task.exploded", "task/t1", json!({}))),
            "unknown message type `task.exploded`",
        ),
        (
            "application/json",
            json_body(event(
                "b2",
                "task.created",
                "task/t1",
                json!({"task_id": "t1", "spec": "x"}),
            )),
            "missing field `title`",
        ),
        (
            "application/json",
            json_body(
                json!({"type": "agent.heartbeat", "key": "agent/a1", "body": {"agent_id": "a1"}}),
            ),
            "missing field `user`",
        ),
        (
            "application/json",
            vec![b' '; schemas::MAX_ENVELOPE_BYTES + 1],
            "body exceeds 1048576 bytes",
        ),
        (
            "text/plain",
            b"hello".to_vec(),
            "unsupported content type `text/plain`",
        ),
        (
            "application/json",
            json_body({
                let mut e = event(
                    "b3",
                    "invocation.recorded",
                    "costs/u1",
                    json!({
                    "invocation_id": "i", "provider": "p", "model": "m",
                    "tokens_in": 1, "tokens_out": 1, "cost": 0.1}),
                );
                e["time"] = json!(actors::store::now_ms() + 86_400_000);
                e
            }),
            "ms ahead of this node's clock",
        ),
    ];
    for (content_type, body, reason) in cases {
        let (status, answer) = c.post_raw(content_type, body, Some(&token)).await.unwrap();
        let error = answer["error"].as_str().unwrap_or_default().to_owned();
        assert_eq!(status, 400, "{reason}: {answer}");
        assert!(error.contains(reason), "wanted `{reason}` in `{error}`");
    }

    // Straight onto the bus: undecodable bytes, and a valid event the domain refuses.
    let bus = node.bus();
    let garbage = OutMessage {
        key: "task/x".into(),
        payload: b"\x00\x01not cbor".to_vec(),
        headers: vec![],
    };
    bus.publish(schemas::EVENTS_TOPIC, garbage).await.unwrap();
    assert_eq!(
        c.post(&task_started("ghost-start", "ghost", "a1")).await,
        Some(202)
    );
    // Transitions the task's state does not allow, and dependencies that would loop.
    assert_eq!(c.post(&task_created("p-create", "p")).await, Some(202));
    c.wait_task("p", |t| t.state == "pending").await;
    assert_eq!(c.post(&task_completed("p-complete", "p")).await, Some(202));
    let depends = |id: &str, task: &str, upstream: &str| {
        let body = json!({ "task_id": task, "title": "loop", "spec": "true",
                           "depends_on": [{"task_id": upstream, "type": "blocks"}] });
        event(id, "task.created", &format!("task/{task}"), body)
    };
    assert_eq!(
        c.post(&depends("self-create", "self", "self")).await,
        Some(202)
    );
    assert_eq!(c.post(&depends("l1-create", "l1", "l2")).await, Some(202));
    c.wait_task("l1", |t| t.state == "blocked").await;
    assert_eq!(c.post(&depends("l2-create", "l2", "l1")).await, Some(202));
    let wanted = [
        "task.started: no task `ghost`",
        "task.completed: task `p` is pending, but must be running",
        "task.created: task `self` cannot depend on itself",
        "task.created: it would close a cycle: l1 → l2 → l1",
    ];

    let deadline = tokio::time::Instant::now() + WAIT;
    let reasons = loop {
        let mut replay = bus
            .replay(&dlq_topic(schemas::EVENTS_TOPIC), ReplayFrom::Start)
            .await
            .unwrap();
        let mut reasons = Vec::new();
        while let Some(record) = replay.next().await.unwrap() {
            reasons.push(record.header("dlq_reason").unwrap_or_default().to_owned());
        }
        if wanted.iter().all(|w| reasons.iter().any(|r| r == w)) {
            break reasons;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead letters: {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("invalid envelope") || r.starts_with("malformed CBOR")),
        "{reasons:?}"
    );
    assert_eq!(
        c.task("l2").await.unwrap_err().code(),
        tonic::Code::NotFound,
        "the task that would close the loop was not created"
    );

    // Still alive and working.
    assert_eq!(
        reqwest::get(format!("http://127.0.0.1:{http}/ready"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(c.post(&task_created("ok1", "t-ok")).await, Some(202));
    c.wait_task("t-ok", |t| t.state == "pending").await;
    node.shutdown().await.unwrap();
}
