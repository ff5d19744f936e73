//! The CBOR codec: the only place that turns envelopes into bytes and back.
//!
//! serde_cbor is unmaintained (RUSTSEC-2021-0127), so it stays behind this module: decoding
//! checks the size first and maps every failure to a `DecodeError`, never a panic.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_cbor::Value;

use crate::envelope::{ENVELOPE_VERSION, Envelope, MAX_ID_BYTES};
use crate::error::DecodeError;
use crate::messages::Message;

/// The largest encoded envelope accepted, in bytes.
pub const MAX_ENVELOPE_BYTES: usize = 1024 * 1024;

/// The envelope exactly as it travels, with its body as a CBOR value or already typed; unknown
/// keys are ignored.
#[derive(Serialize, Deserialize)]
struct Wire<B = Value> {
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
    body: B,
}

impl<B> Wire<B> {
    fn with_body<C>(self, body: C) -> Wire<C> {
        Wire {
            v: self.v,
            id: self.id,
            kind: self.kind,
            key: self.key,
            source: self.source,
            time: self.time,
            user: self.user,
            corr: self.corr,
            cause: self.cause,
            trace: self.trace,
            body,
        }
    }
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
    match typed(bytes) {
        Some(wire) => finish(wire),
        None => general(bytes),
    }
}

/// Decodes an envelope with its body read as a CBOR value first: any envelope, and the fault
/// of anything else.
fn general(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    finish(typed_body(
        serde_cbor::from_slice(bytes).map_err(classify)?,
    )?)
}

/// Decodes and validates one envelope already parsed into a CBOR value (the JSON path).
pub fn decode_value(value: Value) -> Result<Envelope, DecodeError> {
    let wire: Wire = serde_cbor::value::from_value(value).map_err(classify)?;
    finish(typed_body(wire)?)
}

/// The envelope with its body read straight into its type's struct, in two passes (the `type`
/// may follow the `body` in the map); `None` for anything this cannot read, which the general
/// path (the body as a CBOR value first) then reads or names the fault of. Three times faster
/// than the general path, which parses the body into a value, writes it out and parses that.
fn typed(bytes: &[u8]) -> Option<Wire<Message>> {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
    }
    let head: Head<'_> = serde_cbor::from_slice(bytes).ok()?;
    let mut deserializer = serde_cbor::Deserializer::from_slice(bytes);
    let wire = TypedWire(head.kind).deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(wire)
}

/// Reads an envelope map whose `type` is known, its body straight into that type's struct.
struct TypedWire<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for TypedWire<'_> {
    type Value = Wire<Message>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TypedWire<'_> {
    type Value = Wire<Message>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an envelope map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        /// Fills a field once; a field seen twice is left to the general path.
        fn once<T, E: de::Error>(
            slot: &mut Option<T>,
            value: T,
            name: &'static str,
        ) -> Result<(), E> {
            match slot.replace(value) {
                Some(_) => Err(E::duplicate_field(name)),
                None => Ok(()),
            }
        }
        let (mut v, mut id, mut kind, mut key, mut source) = (None, None, None, None, None);
        let (mut time, mut user, mut corr, mut cause) = (None, None, None, None);
        let (mut trace, mut body) = (None, None);
        while let Some(field) = map.next_key::<&'de str>()? {
            match field {
                "v" => once(&mut v, map.next_value::<u64>()?, "v")?,
                "id" => once(&mut id, map.next_value::<String>()?, "id")?,
                "type" => once(&mut kind, map.next_value::<String>()?, "type")?,
                "key" => once(&mut key, map.next_value::<String>()?, "key")?,
                "source" => once(&mut source, map.next_value::<String>()?, "source")?,
                "time" => once(&mut time, map.next_value::<u64>()?, "time")?,
                "user" => once(&mut user, map.next_value::<String>()?, "user")?,
                "corr" => once(&mut corr, map.next_value::<Option<String>>()?, "corr")?,
                "cause" => once(&mut cause, map.next_value::<Option<String>>()?, "cause")?,
                "trace" => once(&mut trace, map.next_value::<Option<String>>()?, "trace")?,
                "body" => once(&mut body, map.next_value_seed(TypedBody(self.0))?, "body")?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let missing = <A::Error as de::Error>::missing_field;
        Ok(Wire {
            v: v.ok_or_else(|| missing("v"))?,
            id: id.ok_or_else(|| missing("id"))?,
            kind: kind.ok_or_else(|| missing("type"))?,
            key: key.ok_or_else(|| missing("key"))?,
            source: source.ok_or_else(|| missing("source"))?,
            time: time.ok_or_else(|| missing("time"))?,
            user: user.ok_or_else(|| missing("user"))?,
            corr: corr.flatten(),
            cause: cause.flatten(),
            trace: trace.flatten(),
            body: body.ok_or_else(|| missing("body"))?,
        })
    }
}

/// Reads a body of a known type straight into its struct.
struct TypedBody<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for TypedBody<'_> {
    type Value = Message;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Message, D::Error> {
        Message::deserialize_body(self.0, deserializer)?
            .ok_or_else(|| de::Error::custom(format!("unknown type `{}`", self.0)))
    }
}

/// The envelope with its body read as its `type` says, once its version and id are known good.
fn typed_body(mut wire: Wire) -> Result<Wire<Message>, DecodeError> {
    check(&wire)?;
    let body = std::mem::replace(&mut wire.body, Value::Null);
    match Message::from_body(&wire.kind, body) {
        Ok(Some(message)) => Ok(wire.with_body(message)),
        Ok(None) => Err(DecodeError::UnknownType(wire.kind)),
        Err(error) => Err(DecodeError::Body {
            kind: wire.kind,
            reason: error.to_string(),
        }),
    }
}

fn classify(error: serde_cbor::Error) -> DecodeError {
    if error.is_data() {
        DecodeError::Envelope(error.to_string())
    } else {
        DecodeError::Malformed(error.to_string())
    }
}

/// The checks that come before the body's: the version, then the id.
fn check<B>(wire: &Wire<B>) -> Result<(), DecodeError> {
    if wire.v != u64::from(ENVELOPE_VERSION) {
        return Err(DecodeError::Version(wire.v));
    }
    if wire.id.is_empty() || wire.id.len() > MAX_ID_BYTES {
        return Err(DecodeError::Id {
            len: wire.id.len(),
            max: MAX_ID_BYTES,
        });
    }
    Ok(())
}

/// The envelope, once its head and its key are checked against its body.
fn finish(wire: Wire<Message>) -> Result<Envelope, DecodeError> {
    check(&wire)?;
    let expected = wire.body.routing_key(&wire.user);
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
        message: wire.body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every vector the crate keeps, golden and from outside encoders.
    fn vectors() -> Vec<(String, Vec<u8>)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
        let mut found = Vec::new();
        for dir in ["golden", "outside"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("the vectors directory") {
                let path = entry.expect("a vector").path();
                if path.extension().is_some_and(|e| e == "cbor") {
                    let bytes = std::fs::read(&path).expect("a readable vector");
                    found.push((path.display().to_string(), bytes));
                }
            }
        }
        assert!(found.len() > 40, "the vectors are missing");
        found
    }

    #[test]
    fn the_typed_path_reads_every_vector_as_the_general_path_does() {
        for (name, bytes) in vectors() {
            let typed =
                typed(&bytes).unwrap_or_else(|| panic!("{name}: not read by the typed path"));
            assert_eq!(finish(typed), general(&bytes), "{name}");
        }
    }

    #[test]
    fn what_the_typed_path_cannot_read_goes_the_general_way() {
        let (_, bytes) = vectors().swap_remove(0);
        let Value::Map(mut envelope) = serde_cbor::from_slice(&bytes).expect("a map") else {
            panic!("an envelope is a map");
        };
        let body = Value::Text("body".into());
        let Some(Value::Map(mut fields)) = envelope.remove(&body) else {
            panic!("a body map");
        };
        // A body field twice: the typed path refuses it, the general path keeps the last.
        let Some((field, value)) = fields.pop_first() else {
            panic!("a body with fields");
        };
        let mut duplicated = Vec::new();
        encode_map_with_twice(&envelope, &body, &field, &value, &fields, &mut duplicated);
        assert!(typed(&duplicated).is_none());
        let expected = general(&duplicated);
        assert!(expected.is_ok(), "{expected:?}");
        assert_eq!(decode(&duplicated), expected);
    }

    /// The envelope map with its body map written by hand, `field` first and again at the end.
    fn encode_map_with_twice(
        envelope: &std::collections::BTreeMap<Value, Value>,
        body: &Value,
        field: &Value,
        value: &Value,
        rest: &std::collections::BTreeMap<Value, Value>,
        out: &mut Vec<u8>,
    ) {
        let head = |major: u8, len: usize, out: &mut Vec<u8>| {
            assert!(len < 24);
            out.push(major << 5 | len as u8);
        };
        let item =
            |v: &Value, out: &mut Vec<u8>| out.extend(serde_cbor::to_vec(v).expect("a value"));
        head(5, envelope.len() + 1, out);
        for (k, v) in envelope {
            item(k, out);
            item(v, out);
        }
        item(body, out);
        head(5, rest.len() + 2, out);
        item(field, out);
        item(value, out);
        for (k, v) in rest {
            item(k, out);
            item(v, out);
        }
        item(field, out);
        item(value, out);
    }
}
