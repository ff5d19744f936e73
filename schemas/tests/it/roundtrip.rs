//! Property: any envelope survives encode then decode; any bytes decode without panicking.

use proptest::prelude::*;
use schemas::*;

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 /._é-]{0,24}"
}

fn caps() -> impl Strategy<Value = Capabilities> {
    (
        prop::collection::vec(text(), 0..3),
        prop::collection::vec(text(), 0..3),
        prop::collection::vec(text(), 0..3),
        prop::collection::vec(text(), 0..3),
        prop::collection::vec(text(), 0..3),
    )
        .prop_map(
            |(repos, languages, environments, tools, tags)| Capabilities {
                repos,
                languages,
                environments,
                tools,
                tags,
            },
        )
}

fn cbor_leaf() -> impl Strategy<Value = CborValue> {
    prop_oneof![
        any::<i64>().prop_map(|i| CborValue::Integer(i.into())),
        any::<bool>().prop_map(CborValue::Bool),
        text().prop_map(CborValue::Text),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(CborValue::Bytes),
        Just(CborValue::Null),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    let priority = prop_oneof![
        Just(Priority::Low),
        Just(Priority::Normal),
        Just(Priority::High),
        Just(Priority::Urgent)
    ];
    let dependency = (
        text(),
        prop_oneof![
            Just(DependencyKind::Blocks),
            Just(DependencyKind::Input),
            Just(DependencyKind::Related)
        ],
        prop::option::of(text()),
    )
        .prop_map(|(task_id, kind, contract_key)| Dependency {
            task_id,
            kind,
            contract_key,
        });
    prop_oneof![
        (text(), text(), caps(), any::<u32>()).prop_map(
            |(agent_id, name, capabilities, max_concurrent)| {
                Message::AgentRegistered(AgentRegistered {
                    agent_id,
                    name,
                    capabilities,
                    max_concurrent,
                })
            }
        ),
        text().prop_map(|agent_id| Message::AgentHeartbeat(AgentHeartbeat { agent_id })),
        (
            text(),
            text(),
            text(),
            priority,
            caps(),
            prop::collection::vec(dependency, 0..3)
        )
            .prop_map(
                |(task_id, title, spec, priority, requirements, depends_on)| {
                    Message::TaskCreated(TaskCreated {
                        task_id,
                        title,
                        spec,
                        priority,
                        requirements,
                        depends_on,
                        ..Default::default()
                    })
                }
            ),
        (text(), text()).prop_map(|(task_id, agent_id)| Message::TaskAssigned(TaskAssigned {
            task_id,
            agent_id
        })),
        (text(), text()).prop_map(|(task_id, agent_id)| Message::TaskStarted(TaskStarted {
            task_id,
            agent_id
        })),
        (
            text(),
            prop::collection::btree_map(text(), cbor_leaf(), 0..4),
            prop::option::of(text())
        )
            .prop_map(|(task_id, result, agent_id)| Message::TaskCompleted(
                TaskCompleted {
                    task_id,
                    result,
                    agent_id
                }
            )),
        (text(), text(), prop::option::of(text())).prop_map(|(task_id, error, agent_id)| {
            Message::TaskFailed(TaskFailed {
                task_id,
                error,
                agent_id,
            })
        }),
        (text(), text(), text(), text(), prop::option::of(text())).prop_map(
            |(channel, to, subject, text, dedupe_key)| {
                Message::NotificationRequested(NotificationRequested {
                    channel,
                    to,
                    subject,
                    text,
                    dedupe_key,
                })
            }
        ),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        "[a-zA-Z0-9-]{1,128}",
        text(),
        any::<u64>(),
        text(),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        message(),
    )
        .prop_map(|(id, source, time, user, corr, cause, trace, message)| {
            let mut envelope = Envelope::new(id, source, time, user, message);
            envelope.corr = corr;
            envelope.cause = cause;
            envelope.trace = trace;
            envelope
        })
}

proptest! {
    #[test]
    fn any_envelope_round_trips(envelope in envelope()) {
        prop_assert_eq!(decode(&encode(&envelope)).unwrap(), envelope);
    }

    #[test]
    fn any_bytes_decode_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn truncated_envelopes_are_errors(envelope in envelope(), cut in 1usize..64) {
        let bytes = encode(&envelope);
        let end = bytes.len().saturating_sub(cut);
        prop_assert!(decode(&bytes[..end]).is_err());
    }
}
