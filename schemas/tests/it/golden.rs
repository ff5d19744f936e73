//! Golden vectors: the exact bytes switchyard writes, one file per message type.
//!
//! `UPDATE_GOLDEN=1 cargo test -p schemas` rewrites them after a deliberate format change.

use std::collections::BTreeMap;

use schemas::*;

fn samples() -> Vec<Envelope> {
    let caps = Capabilities {
        repos: vec!["switchyard".into()],
        languages: vec!["rust".into()],
        environments: vec!["linux".into()],
        tools: vec!["cargo".into()],
        tags: vec!["fast".into()],
    };
    let messages = vec![
        Message::AgentRegistered(AgentRegistered {
            agent_id: "a1".into(),
            name: "builder".into(),
            capabilities: caps.clone(),
            max_concurrent: 2,
        }),
        Message::AgentHeartbeat(AgentHeartbeat {
            agent_id: "a1".into(),
        }),
        Message::TaskCreated(TaskCreated {
            task_id: "t1".into(),
            title: "compile".into(),
            spec: "cargo build".into(),
            priority: Priority::Urgent,
            requirements: caps,
            depends_on: vec![Dependency {
                task_id: "t0".into(),
                kind: DependencyKind::Input,
                contract_key: Some("api_schema".into()),
            }],
            ..Default::default()
        }),
        Message::TaskAssigned(TaskAssigned {
            task_id: "t1".into(),
            agent_id: "a1".into(),
        }),
        Message::TaskStarted(TaskStarted {
            task_id: "t1".into(),
            agent_id: "a1".into(),
        }),
        Message::TaskCompleted(TaskCompleted {
            task_id: "t1".into(),
            result: BTreeMap::from([
                ("ok".into(), CborValue::Bool(true)),
                ("lines".into(), CborValue::Integer(42)),
            ]),
            agent_id: None,
        }),
        Message::TaskFailed(TaskFailed {
            task_id: "t1".into(),
            error: "exit status 2".into(),
            agent_id: None,
        }),
        Message::NotificationRequested(NotificationRequested {
            channel: "webhook".into(),
            to: "https://example.org/hook".into(),
            subject: "t1 done".into(),
            text: "compile finished".into(),
            dedupe_key: Some("t1-done".into()),
        }),
        Message::TaskPlanSubmitted(TaskPlanSubmitted {
            task_id: "t1".into(),
            agent_id: "a1".into(),
            plan: "1. build 2. test".into(),
        }),
        Message::TaskPlanApproved(TaskPlanApproved {
            task_id: "t1".into(),
        }),
        Message::TaskPlanRejected(TaskPlanRejected {
            task_id: "t1".into(),
            feedback: "test first".into(),
        }),
        Message::TaskHelpRequested(TaskHelpRequested {
            task_id: "t1".into(),
            agent_id: "a1".into(),
            question: "which database?".into(),
        }),
        Message::TaskAnswered(TaskAnswered {
            task_id: "t1".into(),
            answer: "PostgreSQL".into(),
        }),
        Message::TaskReviewRequested(TaskReviewRequested {
            task_id: "t1".into(),
            agent_id: "a1".into(),
            result: BTreeMap::from([("api_schema".into(), CborValue::Text("v2".into()))]),
        }),
        Message::TaskApproved(TaskApproved {
            task_id: "t1".into(),
        }),
        Message::TaskRevisionRequested(TaskRevisionRequested {
            task_id: "t1".into(),
            feedback: "add a test".into(),
        }),
        Message::TaskCancelled(TaskCancelled {
            task_id: "t1".into(),
            reason: Some("no longer needed".into()),
        }),
        Message::TaskRetried(TaskRetried {
            task_id: "t1".into(),
        }),
        Message::TaskRequeued(TaskRequeued {
            task_id: "t1".into(),
            agent_id: "a1".into(),
            reason: "its agent went offline".into(),
        }),
        Message::TaskDependencyAdded(TaskDependencyAdded {
            task_id: "t2".into(),
            dependency: Dependency {
                task_id: "t1".into(),
                kind: DependencyKind::Blocks,
                contract_key: None,
            },
        }),
        Message::TaskDependencyResolved(TaskDependencyResolved {
            task_id: "t2".into(),
            upstream: "t1".into(),
            value: Some(CborValue::Text("v2".into())),
        }),
        Message::TaskDependencyFailed(TaskDependencyFailed {
            task_id: "t2".into(),
            upstream: "t1".into(),
            reason: "was cancelled".into(),
        }),
        Message::TaskOutput(TaskOutput {
            task_id: "t1".into(),
            agent_id: "a1".into(),
            lines: vec!["Compiling switchyard".into(), "Finished".into()],
        }),
        Message::AgentOffline(AgentOffline {
            agent_id: "a1".into(),
            reason: "no heartbeat for 31000 ms".into(),
        }),
        Message::MessageReceived(MessageReceived {
            channel: "slack".into(),
            conversation: "C024BE91L".into(),
            sender: "U2147483697".into(),
            text: "task: book the dentist".into(),
            provider_id: "Ev0PV52K25".into(),
            received: 1_795_500_000_000,
            attachments: vec![Attachment {
                name: "note.png".into(),
                content_type: "image/png".into(),
                size: 2048,
            }],
        }),
        Message::CalendarBookRequested(CalendarBookRequested {
            calendar_id: "family".into(),
            request_id: "req-1".into(),
            title: "dentist".into(),
            start: 1_795_500_000_000,
            end: 1_795_503_600_000,
        }),
        Message::CalendarBooked(CalendarBooked {
            calendar_id: "family".into(),
            request_id: "req-1".into(),
        }),
        Message::CalendarConflict(CalendarConflict {
            calendar_id: "family".into(),
            request_id: "req-2".into(),
            conflicts_with: "req-1".into(),
        }),
        Message::InvocationRecorded(InvocationRecorded {
            invocation_id: "inv-1".into(),
            provider: "anthropic".into(),
            model: "claude-sonnet".into(),
            tokens_in: 1200,
            tokens_out: 350,
            cost: 0.0089,
            latency_ms: 2140,
            task_id: Some("t1".into()),
        }),
        Message::BudgetSet(BudgetSet {
            daily: Some(5.0),
            monthly: Some(100.0),
        }),
        Message::AutomationDefined(AutomationDefined {
            automation_id: "nightly".into(),
            schedule: "0 2 * * *".into(),
            time_zone: Some("Europe/Paris".into()),
            missed: Some("catch_up".into()),
            tasks: vec![TaskCreated {
                task_id: "backup".into(),
                title: "back up the database".into(),
                spec: "pg_dump".into(),
                priority: Priority::High,
                requirements: Capabilities::default(),
                depends_on: Vec::new(),
                contracts: Vec::new(),
                require_plan_approval: false,
                max_attempts: None,
                preferred_agent: None,
            }],
            paused: false,
        }),
        Message::AutomationRunRequested(AutomationRunRequested {
            automation_id: "nightly".into(),
        }),
    ];
    messages
        .into_iter()
        .enumerate()
        .map(|(i, message)| {
            let mut envelope = Envelope::new(
                format!("0192f0c8-0000-7000-8000-00000000010{i}"),
                "test/golden",
                1_795_500_000_000,
                "u1",
                message,
            );
            envelope.corr = Some("corr-1".into());
            envelope.trace = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
            envelope
        })
        .collect()
}

#[test]
fn golden_vectors_round_trip_byte_for_byte() {
    let dir = super::vectors("golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let samples = samples();
    assert_eq!(samples.len(), Message::TYPES.len());
    for envelope in samples {
        let path = dir.join(format!("{}.cbor", envelope.type_name()));
        let bytes = encode(&envelope);
        if update {
            std::fs::write(&path, &bytes).unwrap();
        }
        let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(bytes, golden, "{} encodes differently", path.display());
        assert_eq!(decode(&golden).unwrap(), envelope, "{}", path.display());
    }
}

#[test]
fn the_cddl_names_every_message_type() {
    let cddl = include_str!("../../wire.cddl");
    for name in Message::TYPES {
        assert!(
            cddl.contains(&format!("\"{name}\"")),
            "`{name}` is missing from wire.cddl"
        );
    }
}
