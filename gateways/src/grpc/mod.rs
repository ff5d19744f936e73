//! gRPC, package `switchyard.v1`: `Tasks`, `Agents`, `Keys`, `Worker`, `Calendar`,
//! `Notifications`, `Costs`, `Models` and `Cluster`, plus
//! server reflection (v1 and v1alpha) and the standard health service, which stay open without
//! a key.

mod agents;
mod calendar;
pub mod convert;
mod costs;
mod models;
mod notifications;
mod tasks;
mod worker;

use actors::credentials::Principal;
use schemas::proto::{
    self, ActorNode, GetSupervisionTreeRequest, SupervisionTree,
    agents_server::AgentsServer,
    calendar_server::CalendarServer,
    cluster_server::{Cluster, ClusterServer},
    costs_server::CostsServer,
    keys_server::KeysServer,
    models_server::ModelsServer,
    notifications_server::NotificationsServer,
    tasks_server::TasksServer,
    worker_server::WorkerServer,
};
use supervisor::TreeNode;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use crate::{GatewayContext, GatewayError};

pub use agents::{AgentsService, KeysService};
pub use calendar::CalendarService;
pub use costs::CostsService;
pub use models::ModelsService;
pub use notifications::NotificationsService;
pub use tasks::TasksService;
pub use worker::WorkerService;

/// Whom the request's bearer key stands for.
async fn principal<T>(ctx: &GatewayContext, request: &Request<T>) -> Result<Principal, Status> {
    let authorization = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    Ok(ctx.auth.principal(authorization).await?)
}

/// `switchyard.v1.Cluster`.
#[derive(Clone)]
pub struct ClusterService(pub GatewayContext);

fn to_node(node: TreeNode) -> ActorNode {
    ActorNode {
        name: node.name,
        status: node.status.as_str().to_owned(),
        restart_count: node.restarts,
        children: node.children.into_iter().map(to_node).collect(),
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn get_supervision_tree(
        &self,
        request: Request<GetSupervisionTreeRequest>,
    ) -> Result<Response<SupervisionTree>, Status> {
        principal(&self.0, &request).await?;
        let root = self
            .0
            .tree
            .snapshot(&self.0.root)
            .ok_or_else(|| GatewayError::Unavailable("the node is starting".into()))?;
        Ok(Response::new(SupervisionTree {
            root: Some(to_node(root)),
        }))
    }
}

/// Every gRPC service of the node: the API, reflection (v1 and v1alpha) and health.
pub async fn grpc_routes(ctx: GatewayContext) -> Result<Routes, GatewayError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<TasksServer<TasksService>>().await;
    health.set_serving::<ClusterServer<ClusterService>>().await;
    health.set_serving::<AgentsServer<AgentsService>>().await;
    health.set_serving::<KeysServer<KeysService>>().await;
    health.set_serving::<WorkerServer<WorkerService>>().await;
    health
        .set_serving::<CalendarServer<CalendarService>>()
        .await;
    health
        .set_serving::<NotificationsServer<NotificationsService>>()
        .await;
    health.set_serving::<CostsServer<CostsService>>().await;
    health.set_serving::<ModelsServer<ModelsService>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let internal = |e: tonic_reflection::server::Error| GatewayError::Internal(e.to_string());
    let mut routes = Routes::builder();
    routes
        .add_service(TasksServer::new(TasksService(ctx.clone())))
        .add_service(AgentsServer::new(AgentsService(ctx.clone())))
        .add_service(KeysServer::new(KeysService(ctx.clone())))
        .add_service(WorkerServer::new(WorkerService(ctx.clone())))
        .add_service(CalendarServer::new(CalendarService(ctx.clone())))
        .add_service(NotificationsServer::new(NotificationsService(ctx.clone())))
        .add_service(CostsServer::new(CostsService(ctx.clone())))
        .add_service(ModelsServer::new(ModelsService(ctx.clone())))
        .add_service(ClusterServer::new(ClusterService(ctx)))
        .add_service(health_service)
        .add_service(reflection().build_v1().map_err(internal)?)
        .add_service(reflection().build_v1alpha().map_err(internal)?);
    Ok(routes.routes())
}
