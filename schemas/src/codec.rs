//! The CBOR codec: the only place that turns envelopes into bytes and back.
//!
//! serde_cbor is unmaintained (RUSTSEC-2021-0127), so it stays behind this module: decoding
//! checks the size first and maps every failure to a `DecodeError`, never a panic.

use serde::{Deserialize, Serialize};
use serde_cbor::Value;

use crate::envelope::{ENVELOPE_VERSION, Envelope, MAX_ID_BYTES};
use crate::error::DecodeError;
use crate::messages::Message;

/// The largest encoded envelope accepted, in bytes.
pub const MAX_ENVELOPE_BYTES: usize = 1024 * 1024;

/// The envelope exactly as it travels; unknown keys are ignored by serde.
#[derive(Serialize, Deserialize)]
struct Wire {
    v: u64,
    id: String,
    #[serde(rename = "type")]
    kind: String,
    key: String,
    source: String,
    time: u64,
    user: String,
    #[serde(default)]
    corr: Option<String>,
    #[serde(default)]
    cause: Option<String>,
    #[serde(default)]
    trace: Option<String>,
    body: Value,
}

/// Encodes an envelope as a CBOR map with text keys.
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let wire = Wire {
        v: ENVELOPE_VERSION.into(),
        id: envelope.id.clone(),
        kind: envelope.type_name().to_owned(),
        key: envelope.key.clone(),
        source: envelope.source.clone(),
        time: envelope.time,
        user: envelope.user.clone(),
        corr: envelope.corr.clone(),
        cause: envelope.cause.clone(),
        trace: envelope.trace.clone(),
        body: envelope.message.to_body(),
    };
    serde_cbor::to_vec(&wire).expect("an envelope is plain data and always serializes")
}

/// Decodes and validates one envelope from CBOR bytes.
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            max: MAX_ENVELOPE_BYTES,
        });
    }
    let wire: Wire = serde_cbor::from_slice(bytes).map_err(classify)?;
    validate(wire)
}

/// Decodes and validates one envelope already parsed into a CBOR value (the JSON path).
pub fn decode_value(value: Value) -> Result<Envelope, DecodeError> {
    let wire: Wire = serde_cbor::value::from_value(value).map_err(classify)?;
    validate(wire)
}

fn classify(error: serde_cbor::Error) -> DecodeError {
    if error.is_data() {
        DecodeError::Envelope(error.to_string())
    } else {
        DecodeError::Malformed(error.to_string())
    }
}

fn validate(wire: Wire) -> Result<Envelope, DecodeError> {
    if wire.v != u64::from(ENVELOPE_VERSION) {
        return Err(DecodeError::Version(wire.v));
    }
    if wire.id.is_empty() || wire.id.len() > MAX_ID_BYTES {
        return Err(DecodeError::Id {
            len: wire.id.len(),
            max: MAX_ID_BYTES,
        });
    }
    let message = match Message::from_body(&wire.kind, wire.body) {
        Ok(Some(message)) => message,
        Ok(None) => return Err(DecodeError::UnknownType(wire.kind)),
        Err(error) => {
            return Err(DecodeError::Body {
                kind: wire.kind,
                reason: error.to_string(),
            });
        }
    };
    let expected = message.routing_key(&wire.user);
    if wire.key != expected {
        return Err(DecodeError::Key {
            kind: wire.kind,
            expected,
            got: wire.key,
        });
    }
    Ok(Envelope {
        id: wire.id,
        key: wire.key,
        source: wire.source,
        time: wire.time,
        user: wire.user,
        corr: wire.corr,
        cause: wire.cause,
        trace: wire.trace,
        message,
    })
}
