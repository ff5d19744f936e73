//! Inbound channel webhooks (`POST /v1/channels/{sms,slack,discord,telegram,email}`): each
//! request's signature checked by its provider's scheme before anything else, its payload read
//! into one `message.received` keyed by its conversation, rate-limited per sender, and
//! published once per provider message id.

pub mod parse;
pub mod verify;

mod config;
mod route;

pub use config::{ChannelConfig, ChannelsConfig, Secret};
pub use route::{Channels, receive};
