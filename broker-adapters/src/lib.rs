//! The `Bus` trait that every broker adapter implements, and the adapters themselves.
//!
//! Adapters move bytes: they never decode envelopes (meaning belongs to `schemas`). Every adapter
//! gives the same semantics (DESIGN §3): keyed partitions with per-key order, consumer groups,
//! at-least-once delivery with ack / nack, dead-lettering to `<topic>.dlq`, and replay.

#![warn(missing_docs)]

mod bus;
pub mod embedded;
mod inbox;
pub mod kafka;
mod partition;
pub mod rabbitmq;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use bus::{
    Bus, BusError, DEFAULT_MAX_ATTEMPTS, Delivery, Event, Header, OutMessage, Outcome,
    PublishError, Receipt, Record, Replay, ReplayFrom, Revocation, Settle, StartAt,
    SubscribeOptions, Subscription, dlq_topic,
};
pub use embedded::EmbeddedBus;
pub use kafka::KafkaBus;
pub use partition::partition_for;
pub use rabbitmq::RabbitBus;
