//! The `Bus` trait that every broker adapter implements, and the adapters themselves.
//!
//! Adapters move bytes: they never decode envelopes (meaning belongs to `schemas`). Every adapter
//! gives the same semantics (DESIGN §3): keyed partitions with per-key order, consumer groups,
//! at-least-once delivery with ack / nack, dead-lettering to `<topic>.dlq`, and replay.

#![warn(missing_docs)]

mod bus;
pub mod embedded;
mod partition;

pub use bus::{
    Bus, BusError, DEFAULT_MAX_ATTEMPTS, Delivery, Header, OutMessage, Outcome, PublishError,
    Record, Replay, ReplayFrom, Settle, SubscribeOptions, Subscription, dlq_topic,
};
pub use embedded::EmbeddedBus;
pub use partition::partition_for;
