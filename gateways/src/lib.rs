//! switchyard's front doors: the HTTP ingest and probes (axum) and the gRPC API (tonic).
//!
//! Both check bearer keys through one `Auth`; both turn `GatewayError` into their own answer.

#![warn(missing_docs)]

mod auth;
mod error;
mod grpc;
mod http;
mod servers;

use std::sync::Arc;

use actors::Store;
use broker_adapters::Bus;

pub use auth::Auth;
pub use error::GatewayError;
pub use grpc::{ClusterService, TasksService, grpc_routes};
pub use http::app;
pub use servers::{ServerAddrs, ServersActor};

/// What the gateways need from the node.
#[derive(Clone)]
pub struct GatewayContext {
    /// The state database, for reads and key checks.
    pub store: Store,
    /// The bus that accepted events are published on.
    pub bus: Arc<dyn Bus>,
    /// Bearer-key checks, cached.
    pub auth: Auth,
    /// The live supervision tree.
    pub tree: supervisor::Tree,
    /// The tree's root path (`node`).
    pub root: String,
    /// This node's id.
    pub node_id: String,
}
