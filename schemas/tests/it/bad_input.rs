//! Bad bytes give a typed error that names the reason, never a panic.

use schemas::{CborValue, DecodeError, MAX_ENVELOPE_BYTES, decode, decode_value};

fn envelope_json(kind: &str, key: &str, body: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "v": 1, "id": "m1", "type": kind, "key": key, "source": "test",
        "time": 1, "user": "u1", "body": body,
    })
}

fn check(json: serde_json::Value) -> String {
    let value: CborValue = serde_json::from_value(json).unwrap();
    let bytes = serde_cbor::to_vec(&value).unwrap();
    let from_bytes = decode(&bytes).unwrap_err();
    assert_eq!(decode_value(value).unwrap_err(), from_bytes);
    from_bytes.to_string()
}

#[test]
fn malformed_cbor_is_a_typed_error() {
    for bytes in [
        &b""[..],
        b"\xff",
        b"\xbf\x61",
        b"hello world",
        &[0x9f; 10_000],
    ] {
        assert!(
            matches!(
                decode(bytes),
                Err(DecodeError::Malformed(_) | DecodeError::Envelope(_))
            ),
            "{bytes:?}"
        );
    }
}

#[test]
fn oversize_envelope_is_refused_before_parsing() {
    let bytes = vec![0u8; MAX_ENVELOPE_BYTES + 1];
    assert!(matches!(decode(&bytes), Err(DecodeError::TooLarge { .. })));
}

#[test]
fn errors_name_the_field_or_reason() {
    let missing_user = serde_json::json!({
        "v": 1, "id": "m1", "type": "agent.heartbeat", "key": "agent/a1",
        "source": "test", "time": 1, "body": {"agent_id": "a1"},
    });
    assert_eq!(
        check(missing_user),
        "invalid envelope: missing field `user`"
    );
    assert_eq!(
        check(envelope_json(
            "task.exploded",
            "task/t1",
            serde_json::json!({})
        )),
        "unknown message type `task.exploded`"
    );
    assert_eq!(
        check(envelope_json(
            "task.created",
            "task/t1",
            serde_json::json!({"task_id": "t1", "spec": "x"})
        )),
        "invalid body for `task.created`: missing field `title`"
    );
    assert_eq!(
        check(envelope_json(
            "agent.heartbeat",
            "task/t1",
            serde_json::json!({"agent_id": "a1"})
        )),
        "key `task/t1` does not match `agent/a1` required by `agent.heartbeat`"
    );
    let mut long_id = envelope_json(
        "agent.heartbeat",
        "agent/a1",
        serde_json::json!({"agent_id": "a1"}),
    );
    long_id["id"] = serde_json::json!("x".repeat(129));
    assert_eq!(
        check(long_id),
        "id must be between 1 and 128 bytes, got 129"
    );
    let mut v2 = envelope_json(
        "agent.heartbeat",
        "agent/a1",
        serde_json::json!({"agent_id": "a1"}),
    );
    v2["v"] = serde_json::json!(2);
    assert_eq!(check(v2), "unsupported envelope version 2");
    assert!(
        check(envelope_json(
            "task.created",
            "task/t1",
            serde_json::json!({"task_id": "t1", "title": "x", "spec": "x", "priority": "meh"})
        ))
        .starts_with("invalid body for `task.created`: unknown variant `meh`")
    );
}
