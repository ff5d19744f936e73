//! Why an envelope could not be decoded.

/// A decode failure; its text names the field or the reason, for HTTP answers and dead letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes exceed the envelope size limit.
    #[error("envelope is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// Bytes received.
        size: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// The bytes are not well-formed CBOR.
    #[error("malformed CBOR: {0}")]
    Malformed(String),
    /// The CBOR is well formed but is not an envelope (a missing or mistyped key).
    #[error("invalid envelope: {0}")]
    Envelope(String),
    /// The envelope version is not one this build reads.
    #[error("unsupported envelope version {0}")]
    Version(u64),
    /// The `id` is empty or longer than allowed.
    #[error("id must be between 1 and {max} bytes, got {len}")]
    Id {
        /// Its length in bytes.
        len: usize,
        /// The longest allowed.
        max: usize,
    },
    /// The `type` names no known message.
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    /// The `body` does not fit its `type`.
    #[error("invalid body for `{kind}`: {reason}")]
    Body {
        /// The message type.
        kind: String,
        /// What does not fit.
        reason: String,
    },
    /// The routing `key` is not the one the body implies.
    #[error("key `{got}` does not match `{expected}` required by `{kind}`")]
    Key {
        /// The message type.
        kind: String,
        /// The key the body implies.
        expected: String,
        /// The key given.
        got: String,
    },
}
