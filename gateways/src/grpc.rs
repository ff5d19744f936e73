//! gRPC, package `switchyard.v1`: `Tasks` and `Cluster`, plus server reflection (v1 and
//! v1alpha) and the standard health service, which stay open without a key.

use actors::domain::task::{Task, TaskState};
use actors::store::cbor_to_json;
use actors::store::keys::{Principal, Role};
use schemas::proto::{
    self, ActorNode, GetSupervisionTreeRequest, GetTaskRequest, ListTasksRequest,
    ListTasksResponse, SupervisionTree,
    cluster_server::{Cluster, ClusterServer},
    tasks_server::{Tasks, TasksServer},
};
use supervisor::TreeNode;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use crate::{GatewayContext, GatewayError};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

async fn principal<T>(ctx: &GatewayContext, request: &Request<T>) -> Result<Principal, Status> {
    let authorization = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    Ok(ctx.auth.principal(authorization).await?)
}

/// Whether `principal` may see `task`: admins all, users their own, agents their assignments.
fn may_see(principal: &Principal, task: &Task) -> bool {
    match principal.role {
        Role::Admin => true,
        Role::User => principal.user == task.user,
        Role::Agent => {
            principal.user == task.user
                && principal.agent_id.is_some()
                && principal.agent_id == task.agent_id
        }
    }
}

fn to_proto(task: Task) -> proto::Task {
    proto::Task {
        result: task
            .result
            .map(|r| {
                serde_json::Value::Object(
                    r.iter()
                        .map(|(k, v)| (k.clone(), cbor_to_json(v)))
                        .collect(),
                )
                .to_string()
            })
            .unwrap_or_default(),
        state: task.state.as_str().to_owned(),
        agent_id: task.agent_id.unwrap_or_default(),
        error: task.error.unwrap_or_default(),
        priority: task.priority.as_str().to_owned(),
        created_at: task.created_at,
        updated_at: task.updated_at,
        task_id: task.task_id,
        title: task.title,
        spec: task.spec,
        user: task.user,
    }
}

/// `switchyard.v1.Tasks`.
#[derive(Clone)]
pub struct TasksService(pub GatewayContext);

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn get_task(
        &self,
        request: Request<GetTaskRequest>,
    ) -> Result<Response<proto::Task>, Status> {
        let principal = principal(&self.0, &request).await?;
        let task_id = &request.get_ref().task_id;
        let not_found = || GatewayError::NotFound(format!("no task `{task_id}`"));
        let task = self
            .0
            .store
            .task(task_id)
            .await
            .map_err(GatewayError::from)?
            .ok_or_else(not_found)?;
        // Someone else's task is reported as absent, so ids do not leak.
        if !may_see(&principal, &task) {
            return Err(not_found().into());
        }
        Ok(Response::new(to_proto(task)))
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let principal = principal(&self.0, &request).await?;
        let query = request.get_ref();
        let state = match query.state.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(name) => Some(
                TaskState::parse(name)
                    .ok_or_else(|| GatewayError::BadRequest(format!("unknown state `{name}`")))?,
            ),
        };
        let page_size = match query.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let user = (principal.role != Role::Admin).then_some(principal.user.as_str());
        let token = Some(query.page_token.as_str()).filter(|t| !t.is_empty());
        let page = self
            .0
            .store
            .list_tasks(user, state, u64::from(page_size), token)
            .await
            .map_err(GatewayError::from)?;
        Ok(Response::new(ListTasksResponse {
            tasks: page
                .tasks
                .into_iter()
                .filter(|t| may_see(&principal, t))
                .map(to_proto)
                .collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }
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
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let internal = |e: tonic_reflection::server::Error| GatewayError::Internal(e.to_string());
    let mut routes = Routes::builder();
    routes
        .add_service(TasksServer::new(TasksService(ctx.clone())))
        .add_service(ClusterServer::new(ClusterService(ctx)))
        .add_service(health_service)
        .add_service(reflection().build_v1().map_err(internal)?)
        .add_service(reflection().build_v1alpha().map_err(internal)?);
    Ok(routes.routes())
}
