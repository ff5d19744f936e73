//! Publishing an envelope: encoded by `schemas`, with CloudEvents headers, keyed by its key.

use broker_adapters::{Bus, OutMessage, PublishError, Receipt};
use schemas::{EVENTS_TOPIC, Envelope};

/// Publishes `envelope` on the events topic; returns once the broker holds it durably.
pub async fn publish(bus: &dyn Bus, envelope: &Envelope) -> Result<Receipt, PublishError> {
    bus.publish(EVENTS_TOPIC, message(envelope)).await
}

/// `envelope` as the bus carries it.
pub(crate) fn message(envelope: &Envelope) -> OutMessage {
    OutMessage {
        key: envelope.key.clone(),
        payload: schemas::encode(envelope),
        headers: envelope.headers(),
    }
}
