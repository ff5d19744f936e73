//! switchyard's front doors: the HTTP ingest, channel webhooks, probes and operator endpoints
//! (axum) and the gRPC API (tonic).
//!
//! Both check bearer keys through one `Auth`; both turn `GatewayError` into their own answer.

#![warn(missing_docs)]

mod auth;
pub mod channels;
mod error;
mod grpc;
mod http;
pub mod limits;
pub mod metrics;
mod servers;

use actors::NodeApi;

pub use auth::Auth;
pub use error::GatewayError;
pub use grpc::convert::{from_struct, to_struct};
pub use grpc::{
    AgentsService, CalendarService, ClusterService, CostsService, KeysService, ModelsService,
    NotificationsService, TasksService, WorkerService, grpc_routes,
};
pub use http::{Defaults, HttpPolicy, app, parse as parse_events_body};
pub use servers::{ServerAddrs, ServersActor};

/// What the gateways need from the node.
#[derive(Clone)]
pub struct GatewayContext {
    /// The node: publishing, outcomes, reads.
    pub node: NodeApi,
    /// Bearer-key checks, cached.
    pub auth: Auth,
    /// The live supervision tree.
    pub tree: supervisor::Tree,
    /// The tree's root path (`node`).
    pub root: String,
    /// This node's id.
    pub node_id: String,
    /// The inbound channels that are on.
    pub channels: std::sync::Arc<channels::Channels>,
    /// Limits and openness of the HTTP routes.
    pub http: std::sync::Arc<HttpPolicy>,
}
