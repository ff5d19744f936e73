//! Publishing an envelope: encoded by `schemas`, with CloudEvents headers, keyed by its key.

use broker_adapters::{Bus, OutMessage, PublishError, Receipt};
use schemas::{EVENTS_TOPIC, Envelope};

/// Publishes `envelope` on the events topic; returns once the broker holds it durably.
pub async fn publish(bus: &dyn Bus, envelope: &Envelope) -> Result<Receipt, PublishError> {
    let message = OutMessage {
        key: envelope.key.clone(),
        payload: schemas::encode(envelope),
        headers: envelope.headers(),
    };
    bus.publish(EVENTS_TOPIC, message).await
}
