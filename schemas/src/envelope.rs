//! The envelope of DESIGN §2: routing and tracing metadata around one typed message.

use crate::messages::Message;

/// The envelope version this build writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// The longest accepted message id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// One event: who sent it, where it goes, and its typed body.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique message id, the idempotency key.
    pub id: String,
    /// Routing key: the entity whose mailbox receives it.
    pub key: String,
    /// Producer, e.g. `gateway/http`.
    pub source: String,
    /// Producer's clock, ms since the Unix epoch.
    pub time: u64,
    /// Owning user.
    pub user: String,
    /// Correlation id.
    pub corr: Option<String>,
    /// Causation id: the id of the message that caused this one.
    pub cause: Option<String>,
    /// W3C traceparent.
    pub trace: Option<String>,
    /// The typed payload; it decides the wire `type`.
    pub message: Message,
}

impl Envelope {
    /// An envelope for `message` with its routing key derived and no correlation or trace.
    pub fn new(
        id: impl Into<String>,
        source: impl Into<String>,
        time: u64,
        user: impl Into<String>,
        message: Message,
    ) -> Self {
        let user = user.into();
        Envelope {
            id: id.into(),
            key: message.routing_key(&user),
            source: source.into(),
            time,
            user,
            corr: None,
            cause: None,
            trace: None,
            message,
        }
    }

    /// The wire `type` of the message.
    pub fn type_name(&self) -> &'static str {
        self.message.type_name()
    }
}
