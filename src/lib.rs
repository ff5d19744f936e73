//! The composition root: builds a switchyard node from its configuration.
//!
//! This is the only crate that picks concrete adapters and wires the supervision tree.

#![warn(missing_docs)]

mod allocator;
pub mod config;
pub mod doctor;
pub mod migrate;
mod node;
pub mod replay;
pub mod telemetry;
pub mod worker;

pub use allocator::sqlite_on_jemalloc;
pub use config::Config;
pub use node::{Node, ReplaySummary, open_bus, replay};
