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

impl Envelope {
    /// The CloudEvents binary-mode headers that travel beside the CBOR body on every bus.
    pub fn headers(&self) -> Vec<(String, String)> {
        vec![
            ("ce_specversion".into(), "1.0".into()),
            ("ce_id".into(), self.id.clone()),
            ("ce_type".into(), self.type_name().into()),
            ("ce_source".into(), self.source.clone()),
            ("ce_time".into(), rfc3339(self.time)),
            ("content-type".into(), "application/cbor".into()),
        ]
    }
}

/// `ms` since the Unix epoch as an RFC 3339 UTC timestamp with milliseconds.
fn rfc3339(ms: u64) -> String {
    let (days, rest) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_795_500_000_123),
            "2026-11-24T06:00:00.123Z"
        );
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
