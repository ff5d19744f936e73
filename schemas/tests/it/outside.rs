//! Envelopes encoded by an outside client (Python cbor2) decode to the values of their JSON twins.

use schemas::{CborValue, Envelope, Message, decode, decode_value, encode};

fn decode_pair(stem: &str) -> (Envelope, Envelope) {
    let dir = super::vectors("outside");
    let cbor = std::fs::read(dir.join(format!("{stem}.cbor"))).unwrap();
    let json = std::fs::read(dir.join(format!("{stem}.json"))).unwrap();
    let from_cbor = decode(&cbor).unwrap_or_else(|e| panic!("{stem}.cbor: {e}"));
    let value: CborValue = serde_json::from_slice(&json).unwrap();
    let from_json = decode_value(value).unwrap_or_else(|e| panic!("{stem}.json: {e}"));
    (from_cbor, from_json)
}

#[test]
fn every_outside_vector_matches_its_json_and_survives_reencoding() {
    let stems = [
        "agent_registered",
        "agent_heartbeat",
        "task_created",
        "task_assigned",
        "task_started",
        "task_completed",
        "task_failed",
        "notification_requested",
        "task_plan_submitted",
        "task_plan_approved",
        "task_plan_rejected",
        "task_help_requested",
        "task_answered",
        "task_review_requested",
        "task_approved",
        "task_revision_requested",
        "task_cancelled",
        "task_retried",
        "task_requeued",
        "task_dependency_added",
        "task_dependency_resolved",
        "task_dependency_failed",
        "task_output",
        "agent_offline",
        "message_received",
        "calendar_book_requested",
        "calendar_booked",
        "calendar_conflict",
        "invocation_recorded",
        "budget_set",
        "automation_defined",
        "automation_run_requested",
    ];
    let mut seen = Vec::new();
    for stem in stems {
        let (from_cbor, from_json) = decode_pair(stem);
        assert_eq!(from_cbor, from_json, "{stem}");
        assert_eq!(decode(&encode(&from_cbor)).unwrap(), from_cbor, "{stem}");
        seen.push(from_cbor.type_name());
    }
    seen.sort();
    let mut all = Message::TYPES.to_vec();
    all.sort();
    assert_eq!(seen, all, "one outside vector per message type");
}

#[test]
fn outside_task_created_carries_its_typed_fields() {
    let (envelope, _) = decode_pair("task_created");
    let Message::TaskCreated(task) = &envelope.message else {
        panic!("not a task.created: {envelope:?}");
    };
    assert_eq!(task.priority, schemas::Priority::High);
    assert_eq!(task.requirements.languages, ["rust"]);
    assert_eq!(task.depends_on[0].kind, schemas::DependencyKind::Input);
    assert_eq!(
        task.depends_on[0].contract_key.as_deref(),
        Some("api_schema")
    );
    assert_eq!(envelope.time, 1_795_500_000_000);
    assert_eq!(envelope.corr, None);
}

#[test]
fn unknown_keys_are_ignored() {
    let bytes = std::fs::read(super::vectors("outside").join("forward_compatible.cbor")).unwrap();
    let envelope = decode(&bytes).unwrap();
    assert_eq!(
        envelope.message,
        Message::AgentHeartbeat(schemas::AgentHeartbeat {
            agent_id: "a1".into()
        })
    );
}
