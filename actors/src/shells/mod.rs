//! The actor shells: each runs a part of the pure domain against the store and the bus, and
//! carries out what it asks for (mailboxes, the ingress, the orchestrator, the notifier and its
//! outbox, the providers' mailboxes, the cluster record), plus the routing and relaying between them.

pub(crate) mod automations;
pub(crate) mod calendar;
pub mod cluster;
pub(crate) mod conversation;
pub(crate) mod costs;
pub(crate) mod entity;
pub(crate) mod ingress;
pub(crate) mod notifier;
pub(crate) mod orchestrator;
pub(crate) mod outbox;
pub(crate) mod provider;
pub(crate) mod relay;
pub(crate) mod replay;
pub(crate) mod router;
pub(crate) mod shard;
