//! Publishing an envelope: encoded by `schemas`, with CloudEvents headers, keyed by its key.

use broker_adapters::{Bus, OutMessage, PublishError, Receipt};
use schemas::{EVENTS_TOPIC, Envelope};

/// Publishes `envelope` on the events topic; returns once the broker holds it durably.
pub async fn publish(bus: &dyn Bus, envelope: &Envelope) -> Result<Receipt, PublishError> {
    publish_message(bus, message(envelope)).await
}

/// Publishes `message` on the events topic, counted and timed in the node's metrics.
pub(crate) async fn publish_message(
    bus: &dyn Bus,
    message: OutMessage,
) -> Result<Receipt, PublishError> {
    let started = std::time::Instant::now();
    let published = bus.publish(EVENTS_TOPIC, message).await;
    let outcome = if published.is_ok() { "ok" } else { "error" };
    metrics::counter!("switchyard_bus_published_total", "topic" => EVENTS_TOPIC, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("switchyard_bus_publish_seconds", "topic" => EVENTS_TOPIC)
        .record(started.elapsed().as_secs_f64());
    published
}

/// `envelope` as the bus carries it.
pub(crate) fn message(envelope: &Envelope) -> OutMessage {
    OutMessage {
        key: envelope.key.clone(),
        payload: schemas::encode(envelope),
        headers: envelope.headers(),
    }
}
